//! Where records live. The store keeps opaque bytes: it knows nothing of
//! crypto, and nothing in it is a value in the clear.
//!
//! - [`sqlite`]: the embedded default, one file in the data directory
//!   (`sqlite/vfs.rs`: the writer's VFS, one write a commit, and the
//!   checkpointer's, the database synced in steps).
//! - [`dynamodb`]: production, one DynamoDB table.
//! - [`migrate`]: creates and configures that table.

pub mod dynamodb;
pub mod migrate;
pub mod sqlite;

use async_trait::async_trait;
use futures_util::StreamExt;

/// An expired record, as [`TokenStore::expired_tokens`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub token: String,
    /// As for [`TokenStore::get_token`].
    pub slot: Option<i64>,
    pub classification: String,
}

/// One tokenized value as stored. `ciphertext` is the only field derived
/// from the value; `last4`/`first6` are the parts PCI DSS lets us show.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenRecord {
    pub token: String,
    pub classification: String,
    pub format_version: u8,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub data_key_id: String,
    pub fingerprint: Option<String>,
    pub brand: Option<String>,
    pub last4: Option<String>,
    pub first6: Option<String>,
    pub value_len: u32,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// Caller metadata as a JSON object.
    pub metadata: String,
    /// Where a store with slots keeps the record (the embedded store: its
    /// row number), from [`TokenStore::reserve_slot`]; `None` elsewhere.
    pub slot: Option<i64>,
    /// The token itself names `slot` (a random token made with a
    /// [`crate::crypto::slot::SlotKey`]), so the record is found by its
    /// slot (and its token there); otherwise (a preserving token, one
    /// from before slots) it is found through an index on tokens.
    pub slot_in_token: bool,
}

/// A wrapped key (an epoch data key or a service-held secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyItem {
    pub id: String,
    pub classification: String,
    /// The root key that wrapped it (KMS ARN or `local:<id>`).
    pub wrapping_key_id: String,
    pub wrapped: Vec<u8>,
    pub created_at: i64,
}

/// The result of a conditional token insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    Inserted,
    /// The token already exists (a random collision): pick another.
    TokenTaken,
    /// Another token already holds this fingerprint: use it.
    FingerprintTaken {
        token: String,
    },
    /// Not stored because another record of its group could not be (see
    /// [`Noted::Group`]): try again.
    Withdrawn,
}

/// The audit notes [`TokenStore::insert_tokens_noted`] commits with its
/// records.
pub enum Noted {
    /// `notes[i]` for `records[i]`, kept for each record that is stored.
    Each(Vec<Vec<u8>>),
    /// One row standing for the events of all the records (a batch's):
    /// stored with them only when every record is; when one is not, none
    /// is, and the others answer [`InsertOutcome::Withdrawn`]. It counts
    /// as one note a record: its sequence number is the last of a range
    /// as long as the group, so numbers still count events.
    Group(Vec<u8>),
}

/// The state of an idempotency key when a request tries to claim it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// This request owns the key now and must complete or release it.
    Claimed,
    /// Another request with this key is still running.
    InProgress { request_hash: String },
    /// A finished request: replay its answer if the body matches.
    Done {
        request_hash: String,
        status: u16,
        response: String,
    },
}

/// Store failures. Messages never hold record contents.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store is down or busy: answer 503 and let the caller retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or a corrupt store.
    #[error("store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether a write that failed so may still have landed: its request
    /// went out and no readable answer came back (DynamoDB's timeouts).
    /// Throttled, unreachable or refused writes did not land, nor did the
    /// embedded store's (a failed write rolls back).
    pub fn may_have_landed(&self) -> bool {
        matches!(self, StoreError::Unavailable(m)
            if m.ends_with(crate::aws::OUTCOME_UNKNOWN_TIMEOUT)
                || m.ends_with(crate::aws::OUTCOME_UNKNOWN_RESPONSE))
    }
}

/// Called after a commit that added notes to an outbox, so its consumer
/// looks; it must not block (the store's writer calls it).
pub type Nudge = Box<dyn Fn() + Send + Sync>;

/// Notes committed in the same transaction as the records they describe
/// (audit events, for the embedded store), for one consumer that copies
/// them elsewhere and then acknowledges them. Notes are opaque bytes here.
/// Sequence numbers only grow within an epoch; a new database is a new
/// epoch, so a consumer's record of how far it copied cannot be mistaken
/// for another database's. A row holding a group of `n` notes
/// ([`Noted::Group`]) is numbered by the last of its `n` numbers, so a
/// consumer can say how far into a row it copied.
pub trait Outbox: Send {
    /// This outbox's epoch: a random name made with the database.
    fn epoch(&self) -> &str;

    /// The rows numbered after `after`, in order, up to the first whose
    /// number reaches `after + limit`: about `limit` notes, however many
    /// a row holds.
    fn pending(&mut self, after: u64, limit: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// The highest sequence number this outbox ever issued (0: none).
    fn issued(&mut self) -> Result<u64, StoreError>;

    /// Every note up to `upto` is copied and durable elsewhere: the store
    /// may delete them (with a later write).
    fn acknowledge(&self, upto: u64);
}

/// Inserts [`TokenStore::insert_tokens`] keeps in flight by default.
const PARALLEL_INSERTS: usize = 16;

/// The persistence seam: SQLite on the embedded default, DynamoDB in
/// production. Every insert is conditional so nothing is ever overwritten.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Inserts the record and, when it has one, its fingerprint item, in one
    /// transaction: both or neither.
    async fn insert_token(&self, record: &TokenRecord) -> Result<InsertOutcome, StoreError>;

    /// Inserts each record as [`TokenStore::insert_token`] would, answers
    /// in order, each on its own. By default a few at a time (on DynamoDB
    /// each is a round trip); SQLite writes them all in one job.
    async fn insert_tokens(
        &self,
        records: &[TokenRecord],
    ) -> Vec<Result<InsertOutcome, StoreError>> {
        // Made before the stream: a closure in the stream trips the
        // compiler's Send inference.
        let work: Vec<_> = records.iter().map(|r| self.insert_token(r)).collect();
        futures_util::stream::iter(work)
            .buffered(PARALLEL_INSERTS)
            .collect()
            .await
    }

    /// Opens the store's outbox for its one consumer, which `nudge` wakes
    /// after each commit that added notes; from then on
    /// [`TokenStore::insert_tokens_noted`] keeps notes. `None`: this store
    /// has none (DynamoDB), and callers record their events themselves.
    fn open_outbox(&self, nudge: Nudge) -> Result<Option<Box<dyn Outbox>>, StoreError> {
        drop(nudge);
        Ok(None)
    }

    /// Notes the outbox holds that its consumer has not yet acknowledged,
    /// for the backlog gauge. `None`: no outbox is open.
    fn outbox_backlog(&self) -> Option<u64> {
        None
    }

    /// Whether [`TokenStore::insert_tokens_noted`] would keep notes now
    /// (an outbox is open and not backlogged). A deterministic record the
    /// store will not note has its event written before it is stored
    /// instead: recorded after, a failing event would withdraw a record
    /// whose token another request may hold already.
    fn keeps_notes(&self) -> bool {
        false
    }

    /// As [`TokenStore::insert_tokens`], and in the same transaction adds
    /// `notes` to the outbox for the records inserted, so a record and its
    /// note are committed together or not at all. The flag says whether
    /// notes were kept; when false (no outbox open), the caller must record
    /// them itself. A record with a fingerprint is never stored without
    /// its note where an outbox is open: past the backlog's bound it fails
    /// (unavailable) instead, see [`TokenStore::keeps_notes`].
    async fn insert_tokens_noted(
        &self,
        records: &[TokenRecord],
        notes: Noted,
    ) -> (Vec<Result<InsertOutcome, StoreError>>, bool) {
        drop(notes);
        (self.insert_tokens(records).await, false)
    }

    /// Whether this store keeps records in slots
    /// ([`TokenStore::reserve_slot`]). No default: a wrapper that did not
    /// pass it on would get a vault without the slot key, and every
    /// record whose token names its slot would answer 404.
    fn has_slots(&self) -> bool;

    /// Whether some record's token names its slot: the slot key must then
    /// exist already (a new one would find none of them).
    async fn holds_slotted_tokens(&self) -> Result<bool, StoreError>;

    /// A slot no record holds, for a record about to be inserted; `None`
    /// on a store without slots (DynamoDB: records are found by their
    /// key, whatever it is). Within one run a store hands a slot out once;
    /// after a restart, slots freed at the top (deleted records, inserts
    /// rolled back) may be handed out again, which is harmless: a token
    /// finds the record in its slot only if that record holds it. A slot
    /// taken meanwhile by another process sharing the store answers the
    /// insert [`InsertOutcome::TokenTaken`].
    fn reserve_slot(&self) -> Option<i64>;

    /// The record of `token`. `slot` is the slot the token names, where it
    /// names one (the vault reads it from the token): the record there is
    /// answered only if it holds that very token. A store without slots
    /// ignores it.
    async fn get_token(
        &self,
        token: &str,
        slot: Option<i64>,
    ) -> Result<Option<TokenRecord>, StoreError>;

    /// Several records at once, in the order asked (DynamoDB: BatchGetItem);
    /// each token with its slot, as [`TokenStore::get_token`] takes them.
    async fn get_tokens(
        &self,
        tokens: &[(&str, Option<i64>)],
    ) -> Result<Vec<Option<TokenRecord>>, StoreError> {
        let mut out = Vec::with_capacity(tokens.len());
        for (t, slot) in tokens {
            out.push(self.get_token(t, *slot).await?);
        }
        Ok(out)
    }

    /// The token holding a fingerprint, if any.
    async fn token_for_fingerprint(&self, fingerprint: &str) -> Result<Option<String>, StoreError>;

    /// Removes a record and its fingerprint item; false when absent (a
    /// fingerprint item whose record is already gone is
    /// [`TokenStore::release_fingerprint`]'s). `slot` as for
    /// [`TokenStore::get_token`].
    async fn delete_token(&self, token: &str, slot: Option<i64>) -> Result<bool, StoreError>;

    /// Removes `record` only if the store holds this very record (its
    /// token with its nonce, which no other record shares): for a write
    /// whose outcome is unknown, where the token may be another record's
    /// (a preserving token met in a collision). False when absent. For
    /// records without a fingerprint.
    async fn withdraw_record(&self, record: &TokenRecord) -> Result<bool, StoreError>;

    /// Up to `limit` records expired as of `now`, for the sweeper to audit
    /// and delete: they already answer as absent, and deleting them takes
    /// their ciphertext off the disk. DynamoDB's TTL deletes expired items
    /// on its own, so by default there are none.
    async fn expired_tokens(&self, now: i64, limit: usize) -> Result<Vec<Expired>, StoreError> {
        let _ = (now, limit);
        Ok(Vec::new())
    }

    /// Deletes up to `limit` idempotency entries expired as of `now` (their
    /// answers hold last fours and metadata); how many. DynamoDB's TTL
    /// does it there.
    async fn purge_idempotency(&self, now: i64, limit: usize) -> Result<usize, StoreError> {
        let _ = (now, limit);
        Ok(0)
    }

    /// Removes the fingerprint item `fp` if it still names `token`: for a
    /// holder whose record is gone (DynamoDB's TTL deletes the two items
    /// separately, sometimes days apart).
    async fn release_fingerprint(&self, fp: &str, token: &str) -> Result<(), StoreError>;

    /// Puts a key item unless one with its id exists; returns the existing
    /// one when it does (the loser of a race uses the winner's key).
    async fn put_key_item(&self, item: &KeyItem) -> Result<Option<KeyItem>, StoreError>;

    async fn get_key_item(&self, id: &str) -> Result<Option<KeyItem>, StoreError>;

    /// Up to `limit` key items in id order, after `after` (for `rewrap`).
    async fn key_items_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyItem>, StoreError>;

    /// Replaces a key item's wrapping only if it still holds `old` (a
    /// concurrent change is never overwritten); whether it was replaced.
    async fn rewrap_key_item(
        &self,
        id: &str,
        old: &[u8],
        new_key_id: &str,
        new: &[u8],
    ) -> Result<bool, StoreError>;

    /// Claims an idempotency key for `request_hash` on behalf of `owner` (a
    /// random id per request), leased until `lease_until` so a claim whose
    /// request died frees itself; an expired entry is replaced.
    async fn claim_idempotency(
        &self,
        key: &str,
        request_hash: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<IdempotencyClaim, StoreError>;

    /// Records the answer of a key `owner` still holds, kept until
    /// `expires_at`; does nothing if the claim passed to another request.
    async fn complete_idempotency(
        &self,
        key: &str,
        owner: &str,
        status: u16,
        response: &str,
        expires_at: i64,
    ) -> Result<(), StoreError>;

    /// Gives up a key `owner` still holds, so a retry can run.
    async fn release_idempotency(&self, key: &str, owner: &str) -> Result<(), StoreError>;

    /// Whether the store answers; for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}
