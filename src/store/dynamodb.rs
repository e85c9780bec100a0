//! The production store: one DynamoDB table.
//!
//! Items share a key schema of `pk` (partition) and `sk` (sort):
//!
//! | item                | pk               | sk      |
//! |---------------------|------------------|---------|
//! | token record        | `tok#<token>`    | `tok`   |
//! | fingerprint holder  | `fp#<hmac>`      | `fp`    |
//! | preserving name     | `name#<token>`   | `name`  |
//! | wrapped key         | `keys`           | `<id>`  |
//! | idempotency entry   | `idem#<hash>`    | `idem`  |
//!
//! Wrapped keys share one partition so `rewrap` lists them with a Query,
//! never a Scan of every record; there are a few hundred and the keyring
//! caches them. `expires_at` is the table's TTL attribute: DynamoDB deletes
//! expired items lazily (within days), so readers filter on it too.
//!
//! Expressions name every attribute through `#placeholders`: DynamoDB
//! reserves hundreds of words (`wrapped`, `status`, `token`...).
//!
//! Every write is conditional (`attribute_not_exists`), a token and its
//! fingerprint item (and a preserving token's name, kept for good so the
//! token is never issued again) go in one `TransactWriteItems`, and reads
//! that decide a write are strongly consistent. A preserving token
//! issued before name items existed gets its name when it is deleted;
//! one such removed by the TTL instead does not.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, ReturnValue, TransactWriteItem,
};

use super::{IdempotencyClaim, InsertOutcome, KeyItem, StoreError, TokenRecord, TokenStore};
use crate::aws::Failure;
use crate::telemetry::Metrics;

type Item = HashMap<String, AttributeValue>;

/// BatchGetItem takes at most 100 keys per call.
const BATCH_GET_MAX: usize = 100;
/// Rounds of retrying keys DynamoDB left unprocessed before giving up.
const UNPROCESSED_ROUNDS: usize = 8;
/// The partition holding every wrapped key.
const KEYS_PK: &str = "keys";
/// Tries of a transaction DynamoDB cancelled for contention (a concurrent
/// transaction on the same items: `TransactionConflict`), and the pause
/// before each retry. Two requests for one value race this way; once the
/// first commits, the second meets its condition instead.
const CONTENDED_TRIES: u32 = 4;
const CONTENDED_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Why a transaction did not commit.
enum Refused {
    /// Cancelled; per item, whether its own condition failed (none did:
    /// contention).
    Cancelled(Vec<bool>),
    Failed(StoreError),
}

/// A transaction's outcome: done, failed for good, or cancelled for
/// contention (worth another try).
enum Try<T> {
    Done(Result<T, StoreError>),
    Contended(&'static str),
}

/// Runs `attempt` until it is not cancelled for contention, up to
/// [`CONTENDED_TRIES`] times, pausing longer before each retry; past them
/// the contention is answered as unavailable (503, retry later).
async fn retry_contended<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Try<T>>,
{
    let mut why = "";
    for n in 0..CONTENDED_TRIES {
        if n > 0 {
            tokio::time::sleep(CONTENDED_PAUSE * n).await;
        }
        match attempt().await {
            Try::Done(r) => return r,
            Try::Contended(w) => why = w,
        }
    }
    Err(StoreError::Unavailable(format!(
        "TransactWriteItems: {why} after {CONTENDED_TRIES} tries"
    )))
}

/// The DynamoDB token store.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    metrics: Arc<Metrics>,
}

/// Times a DynamoDB call into the metrics (and the current request's
/// waiting time).
trait Metered: Future + Sized {
    async fn metered(self, metrics: &Metrics, operation: &'static str) -> Self::Output;
}

impl<T, E, F: Future<Output = Result<T, E>>> Metered for F {
    async fn metered(self, metrics: &Metrics, operation: &'static str) -> Result<T, E> {
        let started = Instant::now();
        let r = self.await;
        metrics.dependency("dynamodb", operation, r.is_ok(), started.elapsed());
        r
    }
}

impl DynamoStore {
    /// Runs one `TransactWriteItems`.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), Refused> {
        let r = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .metered(&self.metrics, "TransactWriteItems")
            .await;
        let Err(e) = r else { return Ok(()) };
        Err(match cancelled(&e) {
            Some(reasons) => Refused::Cancelled(
                reasons
                    .iter()
                    .map(|c| c.as_deref() == Some("ConditionalCheckFailed"))
                    .collect(),
            ),
            None => Refused::Failed(store_error(Failure::of("TransactWriteItems", &e))),
        })
    }

    /// One try of [`TokenStore::insert_token`]'s transaction.
    async fn try_insert(&self, record: &TokenRecord) -> Try<InsertOutcome> {
        let put = |item| put_new(&self.table, item);
        let mut items = match put(token_item(record)) {
            Ok(i) => vec![i],
            Err(e) => return Try::Done(Err(e)),
        };
        if let Some(fp) = &record.fingerprint {
            let mut i = Item::new();
            i.insert("pk".into(), s(fp_pk(fp)));
            i.insert("sk".into(), s("fp"));
            i.insert("token".into(), s(&record.token));
            if let Some(e) = record.expires_at {
                i.insert("expires_at".into(), n(e));
            }
            match put(i) {
                Ok(i) => items.push(i),
                Err(e) => return Try::Done(Err(e)),
            }
        }
        // A preserving token's name, kept for good (no TTL, no delete):
        // about a million candidates a card, so once its record goes
        // (deleted, or expired by TTL) it could be drawn again, and a
        // holder of the old token reach another customer's card.
        let named_at = is_preserving(&record.token).then(|| {
            let mut i = Item::new();
            i.insert("pk".into(), s(name_pk(&record.token)));
            i.insert("sk".into(), s("name"));
            put(i)
        });
        let named_at = match named_at {
            Some(Ok(i)) => {
                items.push(i);
                Some(items.len() - 1)
            }
            Some(Err(e)) => return Try::Done(Err(e)),
            None => None,
        };
        // Which condition failed: the token (a random collision) or the
        // fingerprint (another request holds this value).
        let failed = match self.transact(items).await {
            Ok(()) => return Try::Done(Ok(InsertOutcome::Inserted)),
            Err(Refused::Failed(e)) => return Try::Done(Err(e)),
            Err(Refused::Cancelled(failed)) => failed,
        };
        let failed = |i: usize| failed.get(i).copied().unwrap_or(false);
        if failed(0) || named_at.is_some_and(failed) {
            return Try::Done(Ok(InsertOutcome::TokenTaken));
        }
        if failed(1)
            && let Some(fp) = &record.fingerprint
        {
            return match self.token_for_fingerprint(fp).await {
                Ok(Some(token)) => Try::Done(Ok(InsertOutcome::FingerprintTaken { token })),
                // Deleted between our write and this read: a retry wins.
                Ok(None) => Try::Contended("the fingerprint's holder changed"),
                Err(e) => Try::Done(Err(e)),
            };
        }
        // Cancelled for contention (TransactionConflict): passing.
        Try::Contended("cancelled for contention")
    }

    /// One try of [`TokenStore::delete_token`]'s transaction: the record,
    /// and its fingerprint item while that still names it.
    async fn try_delete(&self, token: &str, fingerprint: Option<&str>) -> Try<bool> {
        let build = |with_fp: bool| -> Result<Vec<TransactWriteItem>, StoreError> {
            let token_delete = Delete::builder()
                .table_name(&self.table)
                .key("pk", s(token_pk(token)))
                .key("sk", s("tok"))
                .condition_expression("attribute_exists(pk)")
                .build()
                .map_err(|e| StoreError::Internal(format!("building Delete: {e}")))?;
            let mut items = vec![TransactWriteItem::builder().delete(token_delete).build()];
            if let Some(fp) = fingerprint.filter(|_| with_fp) {
                // Only while it still names this token: a new holder stays.
                let d = Delete::builder()
                    .table_name(&self.table)
                    .key("pk", s(fp_pk(fp)))
                    .key("sk", s("fp"))
                    .condition_expression("attribute_not_exists(pk) OR #t = :t")
                    .expression_attribute_names("#t", "token")
                    .expression_attribute_values(":t", s(token))
                    .build()
                    .map_err(|e| StoreError::Internal(format!("building Delete: {e}")))?;
                items.push(TransactWriteItem::builder().delete(d).build());
            }
            if is_preserving(token) {
                // Its name is kept, for a token issued before names were
                // (one issued since has it already: the put changes
                // nothing). Last: it has no condition to fail.
                let mut i = Item::new();
                i.insert("pk".into(), s(name_pk(token)));
                i.insert("sk".into(), s("name"));
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(i))
                    .build()
                    .map_err(|e| StoreError::Internal(format!("building Put: {e}")))?;
                items.push(TransactWriteItem::builder().put(put).build());
            }
            Ok(items)
        };
        let mut with_fp = true;
        loop {
            let items = match build(with_fp) {
                Ok(i) => i,
                Err(e) => return Try::Done(Err(e)),
            };
            let failed = match self.transact(items).await {
                Ok(()) => return Try::Done(Ok(true)),
                Err(Refused::Failed(e)) => return Try::Done(Err(e)),
                Err(Refused::Cancelled(failed)) => failed,
            };
            let failed = |i: usize| failed.get(i).copied().unwrap_or(false);
            if failed(0) {
                // Deleted meanwhile.
                return Try::Done(Ok(false));
            }
            if failed(1) && with_fp {
                // The fingerprint item names another token (a newer
                // holder of the value): it stays, and the record goes
                // alone. Before, this answered 503 on every try.
                with_fp = false;
                continue;
            }
            return Try::Contended("delete cancelled for contention");
        }
    }

    /// A store on `table`; checks that the table exists so a missing
    /// migration is named at start-up, not on the first request.
    pub async fn open(
        client: Client,
        table: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        match client
            .describe_table()
            .table_name(table)
            .send()
            .metered(&metrics, "DescribeTable")
            .await
        {
            Ok(_) => Ok(Self {
                client,
                table: table.to_owned(),
                metrics,
            }),
            Err(e) => {
                let f = Failure::of("DescribeTable", &e);
                if f.code() == Some("ResourceNotFoundException") {
                    Err(StoreError::Internal(format!(
                        "DynamoDB table {table} does not exist: run `tokenvault migrate --config FILE`"
                    )))
                } else {
                    Err(StoreError::Unavailable(f.text().to_owned()))
                }
            }
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .metered(&self.metrics, "GetItem")
            .await
            .map(|o| o.item)
            .map_err(|e| store_error(Failure::of("GetItem", &e)))
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn b(v: &[u8]) -> AttributeValue {
    AttributeValue::B(Blob::new(v.to_vec()))
}

fn token_pk(token: &str) -> String {
    format!("tok#{token}")
}

/// A preserving token's name, issued once (see [`DynamoStore::try_insert`]).
fn name_pk(token: &str) -> String {
    format!("name#{token}")
}

/// A preserving token is digits; a random one is `tok_…`.
fn is_preserving(token: &str) -> bool {
    token.bytes().all(|b| b.is_ascii_digit())
}

fn fp_pk(fp: &str) -> String {
    format!("fp#{fp}")
}

fn idem_pk(key: &str) -> String {
    format!("idem#{key}")
}

fn store_error(f: Failure) -> StoreError {
    match f {
        Failure::Unavailable(t) => StoreError::Unavailable(t),
        // A missing table or a permission problem: an operator must act,
        // but the service recovers once they have, so it is 503 too.
        Failure::Code { code, text }
            if matches!(
                code.as_str(),
                "ResourceNotFoundException"
                    | "AccessDeniedException"
                    | "UnrecognizedClientException"
            ) =>
        {
            StoreError::Unavailable(text)
        }
        Failure::Code { text, .. } => StoreError::Internal(text),
    }
}

fn get_s(item: &Item, k: &str) -> Result<String, StoreError> {
    opt_s(item, k)?.ok_or_else(|| bad(k))
}

fn opt_s(item: &Item, k: &str) -> Result<Option<String>, StoreError> {
    match item.get(k) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
        Some(_) => Err(bad(k)),
    }
}

fn get_n(item: &Item, k: &str) -> Result<i64, StoreError> {
    opt_n(item, k)?.ok_or_else(|| bad(k))
}

fn opt_n(item: &Item, k: &str) -> Result<Option<i64>, StoreError> {
    match item.get(k) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| bad(k)),
        Some(_) => Err(bad(k)),
    }
}

fn get_b(item: &Item, k: &str) -> Result<Vec<u8>, StoreError> {
    match item.get(k) {
        Some(AttributeValue::B(v)) => Ok(v.as_ref().to_vec()),
        _ => Err(bad(k)),
    }
}

fn bad(attr: &str) -> StoreError {
    StoreError::Internal(format!("malformed item: attribute {attr}"))
}

fn token_item(r: &TokenRecord) -> Item {
    let mut i = Item::new();
    i.insert("pk".into(), s(token_pk(&r.token)));
    i.insert("sk".into(), s("tok"));
    i.insert("token".into(), s(&r.token));
    i.insert("classification".into(), s(&r.classification));
    i.insert("format_version".into(), n(r.format_version.into()));
    i.insert("ciphertext".into(), b(&r.ciphertext));
    i.insert("nonce".into(), b(&r.nonce));
    i.insert("data_key_id".into(), s(&r.data_key_id));
    for (k, v) in [
        ("fingerprint", &r.fingerprint),
        ("brand", &r.brand),
        ("last4", &r.last4),
        ("first6", &r.first6),
    ] {
        if let Some(v) = v {
            i.insert(k.into(), s(v));
        }
    }
    i.insert("value_len".into(), n(r.value_len.into()));
    i.insert("created_at".into(), n(r.created_at));
    if let Some(e) = r.expires_at {
        i.insert("expires_at".into(), n(e));
    }
    i.insert("metadata".into(), s(&r.metadata));
    i
}

fn record_from_item(i: &Item) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        token: get_s(i, "token")?,
        classification: get_s(i, "classification")?,
        format_version: u8::try_from(get_n(i, "format_version")?)
            .map_err(|_| bad("format_version"))?,
        ciphertext: get_b(i, "ciphertext")?,
        nonce: get_b(i, "nonce")?,
        data_key_id: get_s(i, "data_key_id")?,
        fingerprint: opt_s(i, "fingerprint")?,
        brand: opt_s(i, "brand")?,
        last4: opt_s(i, "last4")?,
        first6: opt_s(i, "first6")?,
        value_len: u32::try_from(get_n(i, "value_len")?).map_err(|_| bad("value_len"))?,
        created_at: get_n(i, "created_at")?,
        expires_at: opt_n(i, "expires_at")?,
        metadata: get_s(i, "metadata")?,
        slot: None,
        slot_in_token: false,
    })
}

fn key_item(k: &KeyItem) -> Item {
    let mut i = Item::new();
    i.insert("pk".into(), s(KEYS_PK));
    i.insert("sk".into(), s(&k.id));
    i.insert("classification".into(), s(&k.classification));
    i.insert("wrapping_key_id".into(), s(&k.wrapping_key_id));
    i.insert("wrapped".into(), b(&k.wrapped));
    i.insert("created_at".into(), n(k.created_at));
    i
}

fn key_from_item(i: &Item) -> Result<KeyItem, StoreError> {
    Ok(KeyItem {
        id: get_s(i, "sk")?,
        classification: get_s(i, "classification")?,
        wrapping_key_id: get_s(i, "wrapping_key_id")?,
        wrapped: get_b(i, "wrapped")?,
        created_at: get_n(i, "created_at")?,
    })
}

/// A conditional write's outcome: `true` written, `false` its condition did
/// not hold (another writer got there first, or it is already done).
fn conditional<T, E: ProvideErrorMetadata>(
    operation: &str,
    r: Result<
        T,
        aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    >,
) -> Result<bool, StoreError> {
    match r {
        Ok(_) => Ok(true),
        Err(e) => match Failure::of(operation, &e) {
            f if f.code() == Some("ConditionalCheckFailedException") => Ok(false),
            f => Err(store_error(f)),
        },
    }
}

/// The per-item cancellation codes of a cancelled transaction.
fn cancelled(
    err: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        aws_sdk_dynamodb::config::http::HttpResponse,
    >,
) -> Option<Vec<Option<String>>> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    match err.as_service_error() {
        Some(E::TransactionCanceledException(c)) => Some(
            c.cancellation_reasons()
                .iter()
                .map(|r| r.code().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

/// A conditional put of a new item.
fn put_new(table: &str, item: Item) -> Result<TransactWriteItem, StoreError> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .map_err(|e| StoreError::Internal(format!("building Put: {e}")))?;
    Ok(TransactWriteItem::builder().put(put).build())
}

#[async_trait]
impl TokenStore for DynamoStore {
    async fn insert_token(&self, record: &TokenRecord) -> Result<InsertOutcome, StoreError> {
        retry_contended(|| self.try_insert(record)).await
    }

    fn has_slots(&self) -> bool {
        false
    }

    async fn holds_slotted_tokens(&self) -> Result<bool, StoreError> {
        Ok(false)
    }

    fn reserve_slot(&self) -> Option<i64> {
        None
    }

    async fn get_token(
        &self,
        token: &str,
        _slot: Option<i64>,
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.get(token_pk(token), "tok")
            .await?
            .as_ref()
            .map(record_from_item)
            .transpose()
    }

    async fn get_tokens(
        &self,
        tokens: &[(&str, Option<i64>)],
    ) -> Result<Vec<Option<TokenRecord>>, StoreError> {
        let mut found: HashMap<String, TokenRecord> = HashMap::new();
        let mut unique: Vec<&str> = tokens.iter().map(|(t, _)| *t).collect();
        unique.sort_unstable();
        unique.dedup();
        for chunk in unique.chunks(BATCH_GET_MAX) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|t| {
                    HashMap::from([
                        ("pk".to_owned(), s(token_pk(t))),
                        ("sk".to_owned(), s("tok")),
                    ])
                })
                .collect();
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Internal(format!("building BatchGetItem: {e}")))?,
            );
            let mut rounds = 0;
            while let Some(ka) = pending.take() {
                rounds += 1;
                if rounds > UNPROCESSED_ROUNDS {
                    return Err(StoreError::Unavailable(
                        "BatchGetItem: keys left unprocessed".into(),
                    ));
                }
                if rounds > 1 {
                    // Unprocessed keys mean throttling: back off.
                    tokio::time::sleep(std::time::Duration::from_millis(25 << rounds.min(6))).await;
                }
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, ka)
                    .send()
                    .metered(&self.metrics, "BatchGetItem")
                    .await
                    .map_err(|e| store_error(Failure::of("BatchGetItem", &e)))?;
                if let Some(mut r) = out.responses
                    && let Some(items) = r.remove(&self.table)
                {
                    for i in &items {
                        let rec = record_from_item(i)?;
                        found.insert(rec.token.clone(), rec);
                    }
                }
                pending = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .filter(|ka| !ka.keys().is_empty());
            }
        }
        Ok(tokens.iter().map(|(t, _)| found.get(*t).cloned()).collect())
    }

    async fn token_for_fingerprint(&self, fingerprint: &str) -> Result<Option<String>, StoreError> {
        self.get(fp_pk(fingerprint), "fp")
            .await?
            .map(|i| get_s(&i, "token"))
            .transpose()
    }

    async fn delete_token(&self, token: &str, _slot: Option<i64>) -> Result<bool, StoreError> {
        let Some(item) = self.get(token_pk(token), "tok").await? else {
            return Ok(false);
        };
        let fingerprint = opt_s(&item, "fingerprint")?;
        retry_contended(|| self.try_delete(token, fingerprint.as_deref())).await
    }

    async fn release_fingerprint(&self, fp: &str, token: &str) -> Result<(), StoreError> {
        let r = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(fp_pk(fp)))
            .key("sk", s("fp"))
            .condition_expression("#t = :t")
            .expression_attribute_names("#t", "token")
            .expression_attribute_values(":t", s(token))
            .send()
            .metered(&self.metrics, "DeleteItem")
            .await;
        conditional("DeleteItem", r).map(|_| ())
    }

    async fn withdraw_record(&self, record: &TokenRecord) -> Result<bool, StoreError> {
        let r = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(token_pk(&record.token)))
            .key("sk", s("tok"))
            .condition_expression("#n = :n")
            .expression_attribute_names("#n", "nonce")
            .expression_attribute_values(":n", b(&record.nonce))
            .send()
            .metered(&self.metrics, "DeleteItem")
            .await;
        conditional("DeleteItem", r)
    }

    async fn put_key_item(&self, item: &KeyItem) -> Result<Option<KeyItem>, StoreError> {
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(key_item(item)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .metered(&self.metrics, "PutItem")
            .await;
        match r {
            Ok(_) => Ok(None),
            Err(e) => {
                let f = Failure::of("PutItem", &e);
                if f.code() != Some("ConditionalCheckFailedException") {
                    return Err(store_error(f));
                }
                // Lost the race: the winner's key is the one to use.
                match self.get_key_item(&item.id).await? {
                    Some(winner) => Ok(Some(winner)),
                    None => Err(StoreError::Unavailable(
                        "PutItem: key item vanished after a conflict".into(),
                    )),
                }
            }
        }
    }

    async fn get_key_item(&self, id: &str) -> Result<Option<KeyItem>, StoreError> {
        self.get(KEYS_PK.to_owned(), id)
            .await?
            .as_ref()
            .map(key_from_item)
            .transpose()
    }

    /// Every wrapped key item, in id order, starting after `after`.
    async fn key_items_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyItem>, StoreError> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_values(":pk", s(KEYS_PK))
            .consistent_read(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX));
        if let Some(a) = after {
            q = q
                .exclusive_start_key("pk", s(KEYS_PK))
                .exclusive_start_key("sk", s(a));
        }
        let out = q
            .send()
            .metered(&self.metrics, "Query")
            .await
            .map_err(|e| store_error(Failure::of("Query", &e)))?;
        out.items
            .unwrap_or_default()
            .iter()
            .map(key_from_item)
            .collect()
    }

    /// Replaces a key item's wrapping, only if it still holds `old` (a
    /// concurrent rewrap or a changed item is never overwritten). Returns
    /// whether it was replaced.
    async fn rewrap_key_item(
        &self,
        id: &str,
        old: &[u8],
        new_key_id: &str,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(KEYS_PK))
            .key("sk", s(id))
            .update_expression("SET #k = :k, #w = :w")
            .condition_expression("#w = :old")
            .expression_attribute_names("#k", "wrapping_key_id")
            .expression_attribute_names("#w", "wrapped")
            .expression_attribute_values(":k", s(new_key_id))
            .expression_attribute_values(":w", b(new))
            .expression_attribute_values(":old", b(old))
            .send()
            .metered(&self.metrics, "UpdateItem")
            .await;
        conditional("UpdateItem", r)
    }

    async fn claim_idempotency(
        &self,
        key: &str,
        request_hash: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<IdempotencyClaim, StoreError> {
        // Two rounds: an entry that expires between our put and our read
        // is claimed on the second.
        for _ in 0..2 {
            let mut item = Item::new();
            item.insert("pk".into(), s(idem_pk(key)));
            item.insert("sk".into(), s("idem"));
            item.insert("request_hash".into(), s(request_hash));
            item.insert("claim_owner".into(), s(owner));
            item.insert("expires_at".into(), n(lease_until));
            let r = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR #e <= :now")
                .expression_attribute_names("#e", "expires_at")
                .expression_attribute_values(":now", n(now))
                .send()
                .metered(&self.metrics, "PutItem")
                .await;
            match r {
                Ok(_) => return Ok(IdempotencyClaim::Claimed),
                Err(e) => {
                    let f = Failure::of("PutItem", &e);
                    if f.code() != Some("ConditionalCheckFailedException") {
                        return Err(store_error(f));
                    }
                }
            }
            let Some(held) = self.get(idem_pk(key), "idem").await? else {
                continue;
            };
            if get_n(&held, "expires_at")? <= now {
                continue;
            }
            let request_hash = get_s(&held, "request_hash")?;
            return Ok(
                match (opt_n(&held, "answer_status")?, opt_s(&held, "answer")?) {
                    (Some(status), Some(response)) => IdempotencyClaim::Done {
                        request_hash,
                        status: u16::try_from(status).map_err(|_| bad("answer_status"))?,
                        response,
                    },
                    _ => IdempotencyClaim::InProgress { request_hash },
                },
            );
        }
        Err(StoreError::Unavailable(
            "idempotency key contended, retry".into(),
        ))
    }

    async fn complete_idempotency(
        &self,
        key: &str,
        owner: &str,
        status: u16,
        response: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(idem_pk(key)))
            .key("sk", s("idem"))
            .update_expression("SET #s = :s, #r = :r, #e = :e")
            .condition_expression("#o = :o AND attribute_not_exists(#s)")
            .expression_attribute_names("#s", "answer_status")
            .expression_attribute_names("#r", "answer")
            .expression_attribute_names("#e", "expires_at")
            .expression_attribute_names("#o", "claim_owner")
            .expression_attribute_values(":s", n(status.into()))
            .expression_attribute_values(":r", s(response))
            .expression_attribute_values(":e", n(expires_at))
            .expression_attribute_values(":o", s(owner))
            .return_values(ReturnValue::None)
            .send()
            .metered(&self.metrics, "UpdateItem")
            .await;
        conditional("UpdateItem", r).map(|_| ())
    }

    async fn release_idempotency(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        let r = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(idem_pk(key)))
            .key("sk", s("idem"))
            .condition_expression("#o = :o AND attribute_not_exists(#s)")
            .expression_attribute_names("#o", "claim_owner")
            .expression_attribute_names("#s", "answer_status")
            .expression_attribute_values(":o", s(owner))
            .send()
            .metered(&self.metrics, "DeleteItem")
            .await;
        conditional("DeleteItem", r).map(|_| ())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.get("ping".to_owned(), "ping").await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::{CONTENDED_TRIES, StoreError, Try, retry_contended};
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn contention_is_retried_then_answered_as_unavailable() {
        let tries = AtomicU32::new(0);
        let r = retry_contended(|| async {
            match tries.fetch_add(1, Ordering::Relaxed) {
                0 | 1 => Try::Contended("conflict"),
                _ => Try::Done(Ok(7)),
            }
        })
        .await;
        assert_eq!((r.unwrap(), tries.load(Ordering::Relaxed)), (7, 3));

        let tries = AtomicU32::new(0);
        let r: Result<u8, _> = retry_contended(|| async {
            tries.fetch_add(1, Ordering::Relaxed);
            Try::Contended("conflict")
        })
        .await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        assert_eq!(tries.load(Ordering::Relaxed), CONTENDED_TRIES);

        // A failure for good is not retried.
        let tries = AtomicU32::new(0);
        let r: Result<u8, _> = retry_contended(|| async {
            tries.fetch_add(1, Ordering::Relaxed);
            Try::Done(Err(StoreError::Internal("bad".into())))
        })
        .await;
        assert!(matches!(r, Err(StoreError::Internal(_))), "{r:?}");
        assert_eq!(tries.load(Ordering::Relaxed), 1);
    }
}
