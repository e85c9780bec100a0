//! The vault: tokenize, detokenize, read metadata, delete.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::config::TokenSettings;
use crate::crypto::envelope::{self, Binding, EnvelopeError, FORMAT_VERSION};
use crate::crypto::fingerprint::FingerprintKey;
use crate::crypto::keyring::{Keyring, KeyringError};
use crate::crypto::slot::SlotKey;
use crate::crypto::{DataKey, Randomness};
use crate::store::{InsertOutcome, Noted, StoreError, TokenRecord, TokenStore};

use super::metadata::{self, MetadataError};
use super::pan::mask_with_last4;
use super::token::{FormatError, Token, TokenFormat, block_of};
use super::value::{Classification, Value, ValueError};

/// Attempts at a fresh token before giving up; a collision of 131 random
/// bits never happens, of a preserving token's few digits rarely.
const INSERT_ATTEMPTS: usize = 16;

/// What can go wrong in the vault. Messages never hold a value.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    InvalidValue(#[from] ValueError),
    #[error(transparent)]
    InvalidMetadata(#[from] MetadataError),
    #[error("{0}")]
    UnsupportedFormat(String),
    #[error("ttl_seconds must be between 1 and 3153600000 (100 years)")]
    InvalidTtl,
    #[error("no such token")]
    NotFound,
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for VaultError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => VaultError::Unavailable(m),
            StoreError::Internal(m) => VaultError::Internal(m),
        }
    }
}

/// Whether a record whose write failed with `e` is taken back: only when
/// the write may have landed (a timeout); a throttled or refused write
/// did not, and taking it back would add writes to a store in trouble.
fn may_take_back(e: &StoreError) -> bool {
    e.may_have_landed()
}

impl VaultError {
    /// The same error for another item of a batch.
    fn again(&self) -> VaultError {
        match self {
            VaultError::Unavailable(m) => VaultError::Unavailable(m.clone()),
            VaultError::Internal(m) => VaultError::Internal(m.clone()),
            e => VaultError::Internal(e.to_string()),
        }
    }
}

impl From<KeyringError> for VaultError {
    fn from(e: KeyringError) -> Self {
        if e.is_unavailable() {
            VaultError::Unavailable(e.to_string())
        } else {
            VaultError::Internal(e.to_string())
        }
    }
}

impl From<EnvelopeError> for VaultError {
    fn from(e: EnvelopeError) -> Self {
        VaultError::Internal(e.to_string())
    }
}

impl From<FormatError> for VaultError {
    fn from(e: FormatError) -> Self {
        VaultError::UnsupportedFormat(e.to_string())
    }
}

/// Options of one tokenization, defaults already applied.
#[derive(Debug, Clone)]
pub struct TokenizeOptions {
    pub classification: Classification,
    pub format: TokenFormat,
    pub deterministic: bool,
    /// None or 0: never expires.
    pub ttl_seconds: Option<i64>,
    pub metadata: BTreeMap<String, String>,
}

/// The answer to a tokenization.
#[derive(Debug, Clone)]
pub struct Tokenized {
    pub token: String,
    pub classification: String,
    pub brand: Option<String>,
    pub last4: Option<String>,
    pub expires_at: Option<i64>,
    /// False when a deterministic request found the value's existing token.
    pub created: bool,
    /// Its audit event's note was committed with the record (the store's
    /// outbox), or the event was written before it (the herald): the
    /// caller must not record the event again.
    pub audited: bool,
}

impl Tokenized {
    fn from_record(r: &TokenRecord, created: bool) -> Self {
        Self {
            token: r.token.clone(),
            classification: r.classification.clone(),
            brand: r.brand.clone(),
            last4: r.last4.clone(),
            expires_at: r.expires_at,
            created,
            audited: false,
        }
    }
}

/// One value to tokenize, checked against its request's options.
struct Item {
    value: Value,
    /// The metadata, as stored.
    metadata: String,
    ttl: Option<i64>,
}

impl Item {
    fn check(input: &str, opts: &TokenizeOptions) -> Result<Item, VaultError> {
        let value = Value::parse(opts.classification, input)?;
        let metadata = metadata::validate(&opts.metadata)?;
        if opts.classification != Classification::Pan && opts.format != TokenFormat::Random {
            return Err(VaultError::UnsupportedFormat(format!(
                "format {} is for cards only; use random",
                opts.format.as_str()
            )));
        }
        let ttl = match opts.ttl_seconds {
            None | Some(0) => None,
            Some(t) if (1..=3_153_600_000).contains(&t) => Some(t),
            Some(_) => return Err(VaultError::InvalidTtl),
        };
        Ok(Item {
            value,
            metadata,
            ttl,
        })
    }
}

/// Values of one request tokenized at once when each is its own store call
/// (deterministic ones; on DynamoDB each is a round trip, and a batch of
/// 1,000 one after another would take seconds).
const PARALLEL_ITEMS: usize = 16;

/// Makes the audit notes of a request's tokenizations from their tokens,
/// for [`Vault::tokenize_many`] and [`Vault::tokenize_noted`] to commit
/// with the records.
pub trait Notes: Send + Sync {
    /// The note of the tokenization that stored `token`.
    fn one(&self, token: &str) -> Vec<u8>;

    /// One note standing for the tokenizations that stored `tokens`, in
    /// order (a batch's): one outbox row, sealed once, instead of one per
    /// card.
    fn group(&self, tokens: &[&str]) -> Vec<u8>;
}

/// Writes a tokenization's audit event on its own, before its record is
/// stored: for a deterministic record the store will not commit with its
/// note. Written after, an event that failed would take the record back,
/// and a request for the same card may have been answered with its token
/// in between (on another replica, say), holding a token that resolves
/// to nothing. Written first, a failing event leaves no record at all.
#[async_trait::async_trait]
pub trait Herald: Send + Sync {
    /// Writes the event of the tokenization about to store `token`;
    /// returns once it is durable.
    async fn announce(&self, token: &str) -> Result<(), VaultError>;

    /// Best effort: writes that `token`, announced, was not stored after
    /// all (another request stored the card first, or the token was
    /// taken), and why.
    async fn retract(&self, token: &str, why: &'static str);
}

/// How a tokenization's audit events are kept with its records.
#[derive(Clone, Copy, Default)]
pub struct Audit<'a> {
    /// Notes for the store to commit with the records, where it has an
    /// outbox ([`TokenStore::keeps_notes`]).
    pub notes: Option<&'a dyn Notes>,
    /// Writes a deterministic record's event first where the store keeps
    /// no note of it. Without it (and without notes) every event is the
    /// caller's to write, after.
    pub herald: Option<&'a dyn Herald>,
}

/// The tokenization service.
pub struct Vault {
    store: Arc<dyn TokenStore>,
    keyring: Arc<Keyring>,
    fingerprints: FingerprintKey,
    /// Random tokens name their record's slot, on a store with slots.
    slots: Option<SlotKey>,
    clock: Arc<dyn Clock>,
    defaults: TokenSettings,
}

impl Vault {
    /// `slots` is for a store with slots ([`TokenStore::has_slots`]):
    /// random tokens then name their records' slots. Without it, they are
    /// drawn at random.
    pub fn new(
        store: Arc<dyn TokenStore>,
        keyring: Arc<Keyring>,
        fingerprints: FingerprintKey,
        slots: Option<SlotKey>,
        clock: Arc<dyn Clock>,
        defaults: TokenSettings,
    ) -> Self {
        Self {
            store,
            keyring,
            fingerprints,
            slots,
            clock,
            defaults,
        }
    }

    /// The slot `token` would name under this vault's key: any random
    /// token spells one (one from before slots spells a number at
    /// random), and the store answers only if it holds that very token
    /// there.
    fn slot_of(&self, token: &str) -> Option<i64> {
        self.slots.as_ref()?.open(block_of(token)?)
    }

    pub fn defaults(&self) -> &TokenSettings {
        &self.defaults
    }

    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    pub fn fingerprints(&self) -> &FingerprintKey {
        &self.fingerprints
    }

    /// Stores `input` and returns its token. Deterministic requests for the
    /// same value converge on one token even when they race: the token item
    /// and the fingerprint item are inserted together, conditionally.
    pub async fn tokenize(
        &self,
        input: &str,
        opts: &TokenizeOptions,
    ) -> Result<Tokenized, VaultError> {
        self.tokenize_noted(input, opts, Audit::default()).await
    }

    /// As [`Vault::tokenize`]; with `audit.notes`, a record stored is
    /// committed with its audit note when the store has an outbox, and
    /// with `audit.herald`, a deterministic record the store would not
    /// note has its event written before it is stored (the answer says so
    /// in `audited`). A value whose token exists already (deterministic)
    /// stores nothing, so its event is the caller's to record.
    pub async fn tokenize_noted(
        &self,
        input: &str,
        opts: &TokenizeOptions,
        audit: Audit<'_>,
    ) -> Result<Tokenized, VaultError> {
        let item = Item::check(input, opts)?;
        let class = opts.classification.as_str();
        let fingerprint = opts.deterministic.then(|| {
            self.fingerprints
                .fingerprint(class, item.value.normalized())
        });
        if let Some(fp) = &fingerprint
            && let Some(existing) = self.live_holder(fp).await?
        {
            return Ok(Tokenized::from_record(&existing, false));
        }
        let (dk_id, dk) = self.keyring.current(class).await?;
        let mut rng = Randomness::for_records(1);
        // Where the store will not commit a deterministic record's note
        // with it, its event goes first.
        let mut herald = match audit.herald {
            Some(h) if fingerprint.is_some() => {
                (audit.notes.is_none() || !self.store.keeps_notes()).then_some(h)
            }
            _ => None,
        };
        for _ in 0..INSERT_ATTEMPTS {
            let record =
                self.seal_record(&item, opts, fingerprint.clone(), &dk_id, &dk, &mut rng)?;
            if let Some(h) = herald {
                h.announce(&record.token).await?;
            }
            let (outcome, audited) = match audit.notes.filter(|_| herald.is_none()) {
                Some(note) => {
                    let notes = Noted::Each(vec![note.one(&record.token)]);
                    let (mut out, kept) = self
                        .store
                        .insert_tokens_noted(std::slice::from_ref(&record), notes)
                        .await;
                    let outcome = out.pop().unwrap_or_else(|| {
                        Err(StoreError::Internal("the store answered no insert".into()))
                    });
                    // Refused: the outbox went past its bound since the
                    // check. Again, with the event first.
                    if outcome.is_err()
                        && fingerprint.is_some()
                        && audit.herald.is_some()
                        && !self.store.keeps_notes()
                    {
                        herald = audit.herald;
                        continue;
                    }
                    (outcome, kept)
                }
                None => (self.store.insert_token(&record).await, herald.is_some()),
            };
            // A store error leaves the announced event standing: the write
            // may have landed (a timeout), and the event then covers it. A
            // record without a fingerprint has no event to cover it, and
            // nobody will hold its token: it is taken back.
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(e) => {
                    if fingerprint.is_none() && may_take_back(&e) {
                        self.take_back(&[&record]).await;
                    }
                    return Err(e.into());
                }
            };
            if let Some(h) = herald {
                match outcome {
                    InsertOutcome::Inserted => {}
                    InsertOutcome::FingerprintTaken { .. } => {
                        h.retract(&record.token, "not stored: the value has a token already")
                            .await
                    }
                    _ => {
                        h.retract(&record.token, "not stored: the token was taken")
                            .await
                    }
                }
            }
            match outcome {
                InsertOutcome::Inserted => {
                    return Ok(Tokenized {
                        audited,
                        ..Tokenized::from_record(&record, true)
                    });
                }
                InsertOutcome::TokenTaken | InsertOutcome::Withdrawn => continue,
                InsertOutcome::FingerprintTaken { .. } => {
                    // Lost a race to a concurrent request for the same value,
                    // or found an expired holder: use or clear it.
                    if let Some(existing) = self
                        .live_holder(fingerprint.as_deref().unwrap_or_default())
                        .await?
                    {
                        return Ok(Tokenized::from_record(&existing, false));
                    }
                }
            }
        }
        Err(VaultError::Internal("could not find a free token".into()))
    }

    /// Tokenizes the values of one request; answers in order, each on its
    /// own. Random tokens are made and sealed here and stored in one store
    /// call: on SQLite one job for the writer thread instead of one per
    /// value, which was half the writer's time at 1,000-card batches.
    /// Deterministic values (each looks up its fingerprint first), and a
    /// value whose token collided, go through [`Vault::tokenize_noted`].
    ///
    /// With `audit`, each record stored is committed with its audit note
    /// when the store has an outbox, or, deterministic, follows its event
    /// (answers say so in `audited`): see [`Vault::tokenize_noted`].
    pub async fn tokenize_many(
        &self,
        inputs: &[String],
        opts: &TokenizeOptions,
        audit: Audit<'_>,
    ) -> Vec<Result<Tokenized, VaultError>> {
        let one_by_one = || {
            // Made before the stream: a closure in the stream trips the
            // compiler's Send inference for axum handlers.
            let work: Vec<_> = inputs
                .iter()
                .map(|v| self.tokenize_noted(v, opts, audit))
                .collect();
            futures_util::stream::iter(work)
                .buffered(PARALLEL_ITEMS)
                .collect::<Vec<_>>()
        };
        if opts.deterministic {
            return one_by_one().await;
        }
        let class = opts.classification.as_str();
        let (dk_id, dk) = match self.keyring.current(class).await {
            Ok(current) => current,
            // Every valid value gets the key's error, with no call of its
            // own to a key provider already failing.
            Err(e) => {
                let e = VaultError::from(e);
                return inputs
                    .iter()
                    .map(|input| {
                        Item::check(input, opts)?;
                        Err(e.again())
                    })
                    .collect();
            }
        };
        let mut answers: Vec<Option<Result<Tokenized, VaultError>>> = Vec::new();
        let mut records = Vec::new();
        let mut rng = Randomness::for_records(inputs.len());
        for input in inputs {
            match Item::check(input, opts)
                .and_then(|item| self.seal_record(&item, opts, None, &dk_id, &dk, &mut rng))
            {
                Ok(r) => {
                    answers.push(None);
                    records.push(r);
                }
                Err(e) => answers.push(Some(Err(e))),
            }
        }
        let (stored, noted) = match audit.notes {
            Some(note) => {
                let tokens: Vec<&str> = records.iter().map(|r| r.token.as_str()).collect();
                // One row for the batch only where a collision is as good
                // as impossible: one withdraws the whole group. Preserving
                // tokens have a million or so candidates a card, and a
                // batch can collide with itself.
                let notes = match tokens[..] {
                    [_, _, ..] if opts.format == TokenFormat::Random => {
                        Noted::Group(note.group(&tokens))
                    }
                    _ => Noted::Each(tokens.iter().map(|t| note.one(t)).collect()),
                };
                self.store.insert_tokens_noted(&records, notes).await
            }
            None => (self.store.insert_tokens(&records).await, false),
        };
        let mut stored = stored.into_iter();
        let mut records = records.iter();
        let mut again = Vec::new();
        let mut failed = Vec::new();
        for (i, answer) in answers.iter_mut().enumerate() {
            if answer.is_some() {
                continue;
            }
            let (Some(record), Some(outcome)) = (records.next(), stored.next()) else {
                *answer = Some(Err(VaultError::Internal(
                    "the store answered fewer inserts than it was given".into(),
                )));
                continue;
            };
            match outcome {
                Ok(InsertOutcome::Inserted) => {
                    *answer = Some(Ok(Tokenized {
                        audited: noted,
                        ..Tokenized::from_record(record, true)
                    }));
                }
                // A collision (or a fingerprint, which these records do
                // not carry), or a record withdrawn with its group for
                // one: try again the long way, with a note of its own.
                Ok(_) => again.push(i),
                Err(e) => {
                    if may_take_back(&e) {
                        failed.push(record);
                    }
                    *answer = Some(Err(e.into()));
                }
            }
        }
        if !failed.is_empty() {
            self.take_back(&failed).await;
        }
        // A few at a time, so a withdrawn group's records share commits.
        // Skipped when nothing collided, as nearly always: the stream
        // allocates its task queue even when empty.
        if !again.is_empty() {
            let work: Vec<_> = again
                .iter()
                .map(|&i| self.tokenize_noted(&inputs[i], opts, audit))
                .collect();
            let retried: Vec<_> = futures_util::stream::iter(work)
                .buffered(PARALLEL_ITEMS)
                .collect()
                .await;
            for (i, r) in again.into_iter().zip(retried) {
                answers[i] = Some(r);
            }
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(VaultError::Internal("no answer".into()))))
            .collect()
    }

    /// A sealed record for `item` under a fresh token.
    fn seal_record(
        &self,
        item: &Item,
        opts: &TokenizeOptions,
        fingerprint: Option<String>,
        dk_id: &str,
        dk: &DataKey,
        rng: &mut Randomness,
    ) -> Result<TokenRecord, VaultError> {
        let class = opts.classification.as_str();
        let value = &item.value;
        let slot = self.store.reserve_slot();
        let (token, slot_in_token) = match (value, opts.format, &self.slots, slot) {
            (Value::Pan(p), TokenFormat::Preserving, ..) => {
                (Token::preserving_from(p, false, rng)?, false)
            }
            (Value::Pan(p), TokenFormat::PreservingBin, ..) => {
                (Token::preserving_from(p, true, rng)?, false)
            }
            (_, _, Some(key), Some(slot)) => (Token::slotted(key, slot, rng), true),
            _ => (Token::random_from(rng), false),
        };
        let sealed = envelope::seal_with(
            dk,
            &Binding {
                token: token.as_str(),
                classification: class,
                data_key_id: dk_id,
                format_version: FORMAT_VERSION,
            },
            value.normalized(),
            rng,
        )?;
        let now = self.clock.unix();
        let (brand, last4, first6) = match value {
            Value::Pan(p) => (
                Some(p.brand().as_str().to_owned()),
                Some(p.last4()),
                (opts.format == TokenFormat::PreservingBin).then(|| p.first6()),
            ),
            Value::Pii(_) => (None, None, None),
        };
        Ok(TokenRecord {
            token: token.into_string(),
            classification: class.to_owned(),
            format_version: FORMAT_VERSION,
            ciphertext: sealed.ciphertext,
            nonce: sealed.nonce,
            data_key_id: dk_id.to_owned(),
            fingerprint,
            brand,
            last4,
            first6,
            value_len: value.display_len() as u32,
            created_at: now,
            expires_at: item.ttl.map(|t| now + t),
            metadata: item.metadata.clone(),
            slot,
            slot_in_token,
        })
    }

    /// The live record holding `fp`; an expired or dangling holder is
    /// deleted so the value can be tokenized afresh.
    async fn live_holder(&self, fp: &str) -> Result<Option<TokenRecord>, VaultError> {
        let Some(token) = self.store.token_for_fingerprint(fp).await? else {
            return Ok(None);
        };
        let slot = self.slot_of(&token);
        match self.store.get_token(&token, slot).await? {
            Some(r) if !self.expired(&r) => Ok(Some(r)),
            _ => {
                // Only the value is freed for a new token. An expired
                // record is deleted where deletions are audited (the
                // embedded store's sweeper) or by DynamoDB's TTL, not
                // here on a caller's tokenization. The record may also be
                // gone already without its fingerprint item (DynamoDB's
                // TTL deletes the two separately).
                self.store.release_fingerprint(fp, &token).await?;
                Ok(None)
            }
        }
    }

    fn expired(&self, r: &TokenRecord) -> bool {
        r.expires_at.is_some_and(|e| e <= self.clock.unix())
    }

    /// The live record of a token: unknown, deleted and expired are one
    /// answer (404), so a caller learns nothing from the difference.
    pub async fn record(&self, token: &Token) -> Result<TokenRecord, VaultError> {
        let slot = self.slot_of(token.as_str());
        match self.store.get_token(token.as_str(), slot).await? {
            Some(r) if !self.expired(&r) => Ok(r),
            _ => Err(VaultError::NotFound),
        }
    }

    /// The live records of several tokens in one store round trip
    /// (DynamoDB BatchGetItem), by token; absent, deleted and expired ones
    /// are simply missing.
    pub async fn records(
        &self,
        tokens: &[&Token],
    ) -> Result<std::collections::HashMap<String, TokenRecord>, VaultError> {
        let names: Vec<(&str, Option<i64>)> = tokens
            .iter()
            .map(|t| (t.as_str(), self.slot_of(t.as_str())))
            .collect();
        let found = self.store.get_tokens(&names).await?;
        Ok(found
            .into_iter()
            .flatten()
            .filter(|r| !self.expired(r))
            .map(|r| (r.token.clone(), r))
            .collect())
    }

    /// The full value of a record.
    pub async fn reveal(&self, r: &TokenRecord) -> Result<Zeroizing<String>, VaultError> {
        let dk = self.keyring.by_id(&r.data_key_id).await?;
        let plain = envelope::open(
            &dk,
            &Binding {
                token: &r.token,
                classification: &r.classification,
                data_key_id: &r.data_key_id,
                format_version: r.format_version,
            },
            &r.nonce,
            &r.ciphertext,
        )?;
        let s = std::str::from_utf8(&plain)
            .map_err(|_| VaultError::Internal("stored value is not UTF-8".into()))?;
        Ok(Zeroizing::new(s.to_owned()))
    }

    /// The masked value of a record, made without decrypting: a card keeps
    /// its length and last four, anything else is all `*`.
    pub fn masked(r: &TokenRecord) -> String {
        match (&r.classification[..], &r.last4) {
            ("pan", Some(last4)) => mask_with_last4(r.value_len as usize, last4),
            _ => "*".repeat(r.value_len as usize),
        }
    }

    /// Takes back records without a fingerprint whose write failed yet may
    /// have landed (DynamoDB's operation timeout): answered with an error,
    /// their tokens reach nobody, and a record kept would have no event.
    /// Each only if the store holds that very record (its nonce): a
    /// preserving token's failed write may have met another customer's
    /// record of the token, which stays. Best effort: a store still
    /// failing keeps them, and the log says so; a write still in flight
    /// that lands after its delete is not caught. Only what
    /// [`may_take_back`] allows.
    async fn take_back(&self, records: &[&TokenRecord]) {
        let deletes: Vec<_> = records
            .iter()
            .map(|r| self.store.withdraw_record(r))
            .collect();
        let results: Vec<_> = futures_util::stream::iter(deletes)
            .buffer_unordered(PARALLEL_ITEMS)
            .collect()
            .await;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            tracing::warn!(error = %e, records = records.len(), "records whose write failed may have landed, and could not be taken back");
        }
    }

    /// Deletes the records of `tokens`, just stored for a request that then
    /// failed (their audit events could not be written): a value the
    /// service keeps must have its event. Deletes run together, so they
    /// share the embedded store's group commits; every one is tried, and
    /// the first failure is returned.
    pub async fn withdraw(&self, tokens: &[String]) -> Result<(), VaultError> {
        // Collected first: a closure inside the stream trips the
        // compiler's `Send` inference for the spawned callers.
        let deletes: Vec<_> = tokens
            .iter()
            .map(|t| self.store.delete_token(t, self.slot_of(t)))
            .collect();
        let results: Vec<_> = futures_util::stream::iter(deletes)
            .buffer_unordered(PARALLEL_ITEMS)
            .collect()
            .await;
        results
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), |e| Err(e.into()))
    }

    /// Deletes a token's record and, with it, its fingerprint item;
    /// `NotFound` when absent.
    pub async fn delete(&self, token: &Token) -> Result<(), VaultError> {
        let slot = self.slot_of(token.as_str());
        if self.store.delete_token(token.as_str(), slot).await? {
            Ok(())
        } else {
            Err(VaultError::NotFound)
        }
    }
}
