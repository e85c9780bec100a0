//! `tokenvault migrate`: creates the DynamoDB table from
//! `migrations/dynamodb/table.json` and turns on what the table definition
//! cannot (TTL, point-in-time recovery). Idempotent: it compares what is
//! there with what should be, changes only the difference, and reports each
//! change.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, PointInTimeRecoverySpecification,
    ScalarAttributeType, SseSpecification, SseStatus, SseType, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use serde::Deserialize;

use crate::aws::Failure;

/// The table definition, kept beside the SQLite migrations.
const DEFINITION: &str = include_str!("../../migrations/dynamodb/table.json");
/// How often to look whether a table became ACTIVE.
const POLL: Duration = Duration::from_millis(500);
/// How long to wait for ACTIVE before giving up.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Definition {
    create_table: CreateTable,
    update_time_to_live: UpdateTtl,
    update_continuous_backups: UpdateBackups,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateTable {
    attribute_definitions: Vec<Attr>,
    key_schema: Vec<KeyElem>,
    billing_mode: String,
    #[serde(rename = "SSESpecification")]
    sse_specification: Sse,
    deletion_protection_enabled: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Attr {
    attribute_name: String,
    attribute_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyElem {
    attribute_name: String,
    key_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Sse {
    enabled: bool,
    #[serde(rename = "SSEType")]
    sse_type: String,
    #[serde(rename = "KMSMasterKeyId")]
    kms_master_key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateTtl {
    time_to_live_specification: TtlSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TtlSpec {
    attribute_name: String,
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateBackups {
    point_in_time_recovery_specification: PitrSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PitrSpec {
    point_in_time_recovery_enabled: bool,
}

/// Migration failures; each names the call and AWS error code.
#[derive(Debug, thiserror::Error)]
#[error("migrate: {0}")]
pub struct MigrateError(pub String);

fn aws(f: Failure) -> MigrateError {
    MigrateError(f.text().to_owned())
}

/// Brings `table` to the definition. `sse_kms_key` is the KMS key for the
/// table's encryption at rest (`None`: the AWS managed key for DynamoDB).
/// Returns one line per change made; empty when the table was up to date.
pub async fn migrate(
    client: &Client,
    table: &str,
    sse_kms_key: Option<&str>,
) -> Result<Vec<String>, MigrateError> {
    let def: Definition = serde_json::from_str(DEFINITION)
        .map_err(|e| MigrateError(format!("migrations/dynamodb/table.json: {e}")))?;
    let mut changes = Vec::new();

    let existing = match client.describe_table().table_name(table).send().await {
        Ok(out) => out.table,
        Err(e) => {
            let f = Failure::of("DescribeTable", &e);
            if f.code() != Some("ResourceNotFoundException") {
                return Err(aws(f));
            }
            None
        }
    };
    match existing {
        None => {
            create(client, table, &def.create_table, sse_kms_key).await?;
            changes.push(format!("created table {table}"));
        }
        Some(t) => {
            if !t.deletion_protection_enabled.unwrap_or(false)
                && def.create_table.deletion_protection_enabled
            {
                wait_active(client, table).await?;
                client
                    .update_table()
                    .table_name(table)
                    .deletion_protection_enabled(true)
                    .send()
                    .await
                    .map_err(|e| aws(Failure::of("UpdateTable", &e)))?;
                changes.push("turned on deletion protection".to_owned());
            }
            let sse_on = t
                .sse_description
                .as_ref()
                .and_then(|d| d.status.as_ref())
                .is_some_and(|s| *s == SseStatus::Enabled || *s == SseStatus::Enabling);
            if !sse_on {
                wait_active(client, table).await?;
                client
                    .update_table()
                    .table_name(table)
                    .sse_specification(sse_spec(&def.create_table.sse_specification, sse_kms_key))
                    .send()
                    .await
                    .map_err(|e| aws(Failure::of("UpdateTable", &e)))?;
                changes.push("turned on encryption at rest with a KMS key".to_owned());
            }
        }
    }
    wait_active(client, table).await?;

    let ttl = &def.update_time_to_live.time_to_live_specification;
    let current = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| aws(Failure::of("DescribeTimeToLive", &e)))?
        .time_to_live_description;
    let ttl_on = current.as_ref().is_some_and(|d| {
        matches!(
            d.time_to_live_status,
            Some(TimeToLiveStatus::Enabled) | Some(TimeToLiveStatus::Enabling)
        ) && d.attribute_name.as_deref() == Some(&ttl.attribute_name)
    });
    if ttl.enabled && !ttl_on {
        let spec = TimeToLiveSpecification::builder()
            .attribute_name(&ttl.attribute_name)
            .enabled(true)
            .build()
            .map_err(|e| MigrateError(e.to_string()))?;
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(|e| aws(Failure::of("UpdateTimeToLive", &e)))?;
        changes.push(format!("turned on TTL on {}", ttl.attribute_name));
    }

    let pitr_wanted = def
        .update_continuous_backups
        .point_in_time_recovery_specification
        .point_in_time_recovery_enabled;
    if pitr_wanted && !pitr_enabled(client, table).await? {
        let spec = PointInTimeRecoverySpecification::builder()
            .point_in_time_recovery_enabled(true)
            .build()
            .map_err(|e| MigrateError(e.to_string()))?;
        client
            .update_continuous_backups()
            .table_name(table)
            .point_in_time_recovery_specification(spec)
            .send()
            .await
            .map_err(|e| aws(Failure::of("UpdateContinuousBackups", &e)))?;
        changes.push("turned on point-in-time recovery".to_owned());
    }
    Ok(changes)
}

/// Whether point-in-time recovery is on for `table`.
pub async fn pitr_enabled(client: &Client, table: &str) -> Result<bool, MigrateError> {
    let out = client
        .describe_continuous_backups()
        .table_name(table)
        .send()
        .await
        .map_err(|e| aws(Failure::of("DescribeContinuousBackups", &e)))?;
    Ok(out
        .continuous_backups_description
        .and_then(|d| d.point_in_time_recovery_description)
        .and_then(|p| p.point_in_time_recovery_status)
        .is_some_and(|s| s.as_str() == "ENABLED"))
}

fn sse_spec(sse: &Sse, sse_kms_key: Option<&str>) -> SseSpecification {
    let key = sse
        .kms_master_key_id
        .replace("${sse_kms_key}", sse_kms_key.unwrap_or(""));
    SseSpecification::builder()
        .enabled(sse.enabled)
        .sse_type(SseType::from(sse.sse_type.as_str()))
        .set_kms_master_key_id((!key.is_empty()).then_some(key))
        .build()
}

async fn create(
    client: &Client,
    table: &str,
    def: &CreateTable,
    sse_kms_key: Option<&str>,
) -> Result<(), MigrateError> {
    let mut req = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::from(def.billing_mode.as_str()))
        .sse_specification(sse_spec(&def.sse_specification, sse_kms_key))
        .deletion_protection_enabled(def.deletion_protection_enabled);
    for a in &def.attribute_definitions {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(&a.attribute_name)
                .attribute_type(ScalarAttributeType::from(a.attribute_type.as_str()))
                .build()
                .map_err(|e| MigrateError(e.to_string()))?,
        );
    }
    for k in &def.key_schema {
        req = req.key_schema(
            KeySchemaElement::builder()
                .attribute_name(&k.attribute_name)
                .key_type(KeyType::from(k.key_type.as_str()))
                .build()
                .map_err(|e| MigrateError(e.to_string()))?,
        );
    }
    match req.send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let f = Failure::of("CreateTable", &e);
            // Another migrate made it meanwhile: fine.
            if f.code() == Some("ResourceInUseException") {
                Ok(())
            } else {
                Err(aws(f))
            }
        }
    }
}

async fn wait_active(client: &Client, table: &str) -> Result<(), MigrateError> {
    let start = std::time::Instant::now();
    loop {
        let status = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| aws(Failure::of("DescribeTable", &e)))?
            .table
            .and_then(|t| t.table_status);
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        if start.elapsed() > ACTIVE_TIMEOUT {
            return Err(MigrateError(format!(
                "table {table} not ACTIVE after {} s",
                ACTIVE_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}
