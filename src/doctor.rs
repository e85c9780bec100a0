//! `tokenvault doctor`: the AWS practices an auditor asks about, one
//! pass/fail line each. KMS keys: enabled, yearly rotation on, no deletion
//! pending. The table: encrypted at rest, point-in-time recovery, TTL and
//! deletion protection on. The certificate: valid for more than 30 days.

use std::fmt;
use std::path::Path;

use aws_sdk_kms::types::KeyState;

use crate::aws::{Clients, Failure};
use crate::config::{KeyKind, Settings, StoreKind};

/// A certificate must stay valid at least this long.
const CERT_MIN_DAYS: i64 = 30;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// Not applicable to this configuration (local keys, SQLite).
    Skip(String),
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Pass => write!(f, "PASS  {}", self.name),
            Outcome::Fail(why) => write!(f, "FAIL  {}: {why}", self.name),
            Outcome::Skip(why) => write!(f, "SKIP  {}: {why}", self.name),
        }
    }
}

fn check(name: impl Into<String>, outcome: Outcome) -> Check {
    Check {
        name: name.into(),
        outcome,
    }
}

fn pass_if(ok: bool, why: impl FnOnce() -> String) -> Outcome {
    if ok {
        Outcome::Pass
    } else {
        Outcome::Fail(why())
    }
}

/// Runs every check that applies to `settings`. `aws` is needed when the
/// settings name KMS or DynamoDB; `now` is Unix seconds.
pub async fn run(settings: &Settings, aws: Option<&Clients>, cert: &Path, now: i64) -> Vec<Check> {
    let mut out = Vec::new();
    match (settings.keys.kind, aws) {
        (KeyKind::Kms, Some(aws)) => {
            for (class, key) in &settings.keys.kms {
                kms_checks(&aws.kms, class, key, &mut out).await;
            }
        }
        _ => out.push(check(
            "KMS keys",
            Outcome::Skip("the local key provider is in use".into()),
        )),
    }
    match (settings.store.kind, aws, settings.store.table.as_deref()) {
        (StoreKind::Dynamodb, Some(aws), Some(table)) => {
            table_checks(&aws.dynamodb, table, &mut out).await;
        }
        _ => out.push(check(
            "DynamoDB table",
            Outcome::Skip("the SQLite store is in use".into()),
        )),
    }
    out.push(cert_check(cert, now));
    out
}

async fn kms_checks(client: &aws_sdk_kms::Client, class: &str, key: &str, out: &mut Vec<Check>) {
    let name = |what: &str| format!("KMS key {class} ({key}) {what}");
    let meta = match client.describe_key().key_id(key).send().await {
        Ok(o) => o.key_metadata,
        Err(e) => {
            out.push(check(
                name("readable"),
                Outcome::Fail(Failure::of("DescribeKey", &e).text().to_owned()),
            ));
            return;
        }
    };
    let Some(meta) = meta else {
        out.push(check(
            name("readable"),
            Outcome::Fail("no key metadata".into()),
        ));
        return;
    };
    let state = meta.key_state.clone();
    out.push(check(
        name("enabled"),
        pass_if(meta.enabled && state == Some(KeyState::Enabled), || {
            format!(
                "key state {}",
                state.as_ref().map_or("unknown", |s| s.as_str())
            )
        }),
    ));
    out.push(check(
        name("has no deletion pending"),
        pass_if(
            state != Some(KeyState::PendingDeletion)
                && state != Some(KeyState::PendingReplicaDeletion)
                && meta.deletion_date.is_none(),
            || "the key is scheduled for deletion".into(),
        ),
    ));
    // GetKeyRotationStatus takes a key id or ARN, not an alias.
    let key_id = meta.arn.clone().unwrap_or_else(|| meta.key_id.clone());
    let rotation = match client.get_key_rotation_status().key_id(key_id).send().await {
        Ok(o) => pass_if(o.key_rotation_enabled, || {
            "automatic rotation is off (aws kms enable-key-rotation)".into()
        }),
        Err(e) => Outcome::Fail(Failure::of("GetKeyRotationStatus", &e).text().to_owned()),
    };
    out.push(check(name("rotates yearly"), rotation));
}

async fn table_checks(client: &aws_sdk_dynamodb::Client, table: &str, out: &mut Vec<Check>) {
    let name = |what: &str| format!("table {table} {what}");
    let desc = match client.describe_table().table_name(table).send().await {
        Ok(o) => o.table,
        Err(e) => {
            out.push(check(
                name("exists"),
                Outcome::Fail(format!(
                    "{} (run tokenvault migrate)",
                    Failure::of("DescribeTable", &e).text()
                )),
            ));
            return;
        }
    };
    let desc = desc.unwrap_or_else(|| aws_sdk_dynamodb::types::TableDescription::builder().build());
    let sse = desc
        .sse_description
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .map(|s| s.as_str().to_owned());
    out.push(check(
        name("is encrypted at rest with KMS"),
        pass_if(sse.as_deref() == Some("ENABLED"), || {
            format!("SSE status {}", sse.as_deref().unwrap_or("off"))
        }),
    ));
    let pitr = match crate::store::migrate::pitr_enabled(client, table).await {
        Ok(on) => pass_if(on, || "point-in-time recovery is off".into()),
        Err(e) => Outcome::Fail(e.0),
    };
    out.push(check(name("has point-in-time recovery"), pitr));
    let ttl = match client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
    {
        Ok(o) => {
            let status = o
                .time_to_live_description
                .and_then(|d| d.time_to_live_status)
                .map(|s| s.as_str().to_owned());
            pass_if(status.as_deref() == Some("ENABLED"), || {
                format!("TTL status {}", status.as_deref().unwrap_or("off"))
            })
        }
        Err(e) => Outcome::Fail(Failure::of("DescribeTimeToLive", &e).text().to_owned()),
    };
    out.push(check(name("has TTL on"), ttl));
    out.push(check(
        name("has deletion protection"),
        pass_if(desc.deletion_protection_enabled.unwrap_or(false), || {
            "deletion protection is off".into()
        }),
    ));
}

fn cert_check(path: &Path, now: i64) -> Check {
    let name = format!(
        "certificate {} valid for more than {CERT_MIN_DAYS} days",
        path.display()
    );
    let outcome = match crate::tls::not_after(path) {
        Ok(not_after) => {
            let days = (not_after - now).div_euclid(86_400);
            pass_if(not_after - now > CERT_MIN_DAYS * 86_400, || {
                if not_after <= now {
                    "expired".into()
                } else {
                    format!("expires in {days} days")
                }
            })
        }
        Err(e) => Outcome::Fail(e),
    };
    check(name, outcome)
}
