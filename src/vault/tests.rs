//! The vault against a real SQLite store whose first noted insert collides,
//! so the retry paths are checked for what an auditor relies on: every
//! stored token has exactly one note, and a token that lost its place has
//! none.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::VaultError;
use super::service::{TokenizeOptions, Tokenized, Vault};
use super::value::Classification;
use crate::clock::SystemClock;
use crate::config::TokenSettings;
use crate::crypto::fingerprint::FingerprintKey;
use crate::crypto::keyring::{Keyring, KeyringSettings};
use crate::crypto::local::LocalKeyProvider;
use crate::crypto::provider::{DataKey, EncryptionContext, KeyError, KeyProvider, WrappedKey};
use crate::crypto::slot::SlotKey;
use crate::store::sqlite::SqliteStore;
use crate::store::{
    IdempotencyClaim, InsertOutcome, KeyItem, Noted, Nudge, Outbox, StoreError, TokenRecord,
    TokenStore,
};
use crate::telemetry::Metrics;
use crate::vault::token::{Token, TokenFormat};
use crate::vault::{Audit, Herald, Notes};

/// SQLite, except that before its first noted insert another record takes
/// the first record's token: the insert then meets a real `TokenTaken`.
/// For the herald's tests, it can pretend to keep no notes (an outbox past
/// its bound), make its next plain insert collide, and lists the tokens
/// its plain inserts stored.
struct Colliding {
    inner: SqliteStore,
    collided: AtomicBool,
    keeps_no_notes: AtomicBool,
    collide_plain: AtomicBool,
    /// Before the next plain insert, another record takes its fingerprint
    /// (a request for the same card that got there first).
    preempt_plain: AtomicBool,
    /// The next noted insert is refused as if the outbox had just gone
    /// past its bound, which it then stays.
    refuse_noted: AtomicBool,
    stored_plain: Mutex<Vec<String>>,
    /// Plain inserts land, then answer an error, as a write past
    /// DynamoDB's operation timeout can.
    land_then_fail: AtomicBool,
    /// The error `land_then_fail` answers is a throttling one.
    throttled: AtomicBool,
}

impl Colliding {
    /// The token of the last record a plain insert stored.
    fn last_landed(&self) -> Token {
        let last = self.stored_plain.lock().unwrap().last().cloned();
        Token::parse(&last.expect("a record landed")).unwrap()
    }

    /// What a landed write answers: DynamoDB's timeout, or (with
    /// `throttled`) a throttling error, which can never have landed.
    fn landed_error(&self) -> String {
        if self.throttled.load(Ordering::SeqCst) {
            "TransactWriteItems: ThrottlingException".into()
        } else {
            format!(
                "TransactWriteItems: {}",
                crate::aws::OUTCOME_UNKNOWN_TIMEOUT
            )
        }
    }

    /// Another record takes `r`'s token (and its fingerprint).
    async fn squat(&self, r: &TokenRecord) {
        let squatter = TokenRecord {
            metadata: r#"{"squatter":"yes"}"#.into(),
            ..r.clone()
        };
        assert_eq!(
            self.inner.insert_token(&squatter).await.unwrap(),
            InsertOutcome::Inserted
        );
    }
}

#[async_trait]
impl TokenStore for Colliding {
    async fn insert_token(&self, r: &TokenRecord) -> Result<InsertOutcome, StoreError> {
        if self.collide_plain.swap(false, Ordering::SeqCst) {
            self.squat(&TokenRecord {
                fingerprint: None,
                ..r.clone()
            })
            .await;
        }
        if self.preempt_plain.swap(false, Ordering::SeqCst) {
            let slot = self.inner.reserve_slot().unwrap();
            let mut rng = crate::crypto::Randomness::for_records(1);
            let token = Token::slotted(&slot_key(), slot, &mut rng).into_string();
            self.squat(&TokenRecord {
                token,
                slot: Some(slot),
                ..r.clone()
            })
            .await;
        }
        let out = self.inner.insert_token(r).await;
        if matches!(out, Ok(InsertOutcome::Inserted)) {
            self.stored_plain.lock().unwrap().push(r.token.clone());
        }
        if self.land_then_fail.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(self.landed_error()));
        }
        out
    }
    async fn insert_tokens(&self, r: &[TokenRecord]) -> Vec<Result<InsertOutcome, StoreError>> {
        let out = self.inner.insert_tokens(r).await;
        for (r, o) in r.iter().zip(&out) {
            if matches!(o, Ok(InsertOutcome::Inserted)) {
                self.stored_plain.lock().unwrap().push(r.token.clone());
            }
        }
        if self.land_then_fail.load(Ordering::SeqCst) {
            return vec![Err(StoreError::Unavailable(self.landed_error())); r.len()];
        }
        out
    }
    fn open_outbox(&self, nudge: Nudge) -> Result<Option<Box<dyn Outbox>>, StoreError> {
        self.inner.open_outbox(nudge)
    }
    fn outbox_backlog(&self) -> Option<u64> {
        self.inner.outbox_backlog()
    }
    async fn insert_tokens_noted(
        &self,
        records: &[TokenRecord],
        notes: Noted,
    ) -> (Vec<Result<InsertOutcome, StoreError>>, bool) {
        if !self.collided.swap(true, Ordering::SeqCst) {
            self.squat(&records[0]).await;
        }
        if self.refuse_noted.swap(false, Ordering::SeqCst) {
            self.keeps_no_notes.store(true, Ordering::SeqCst);
            let e = StoreError::Unavailable("the audit outbox is backlogged".into());
            return (vec![Err(e); records.len()], false);
        }
        self.inner.insert_tokens_noted(records, notes).await
    }
    fn keeps_notes(&self) -> bool {
        !self.keeps_no_notes.load(Ordering::SeqCst) && self.inner.keeps_notes()
    }
    fn has_slots(&self) -> bool {
        self.inner.has_slots()
    }
    fn reserve_slot(&self) -> Option<i64> {
        self.inner.reserve_slot()
    }
    async fn holds_slotted_tokens(&self) -> Result<bool, StoreError> {
        self.inner.holds_slotted_tokens().await
    }
    async fn get_token(
        &self,
        t: &str,
        slot: Option<i64>,
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.get_token(t, slot).await
    }
    async fn token_for_fingerprint(&self, fp: &str) -> Result<Option<String>, StoreError> {
        self.inner.token_for_fingerprint(fp).await
    }
    async fn delete_token(&self, t: &str, slot: Option<i64>) -> Result<bool, StoreError> {
        self.inner.delete_token(t, slot).await
    }
    async fn withdraw_record(&self, r: &TokenRecord) -> Result<bool, StoreError> {
        self.inner.withdraw_record(r).await
    }
    async fn release_fingerprint(&self, fp: &str, t: &str) -> Result<(), StoreError> {
        self.inner.release_fingerprint(fp, t).await
    }
    async fn put_key_item(&self, i: &KeyItem) -> Result<Option<KeyItem>, StoreError> {
        self.inner.put_key_item(i).await
    }
    async fn get_key_item(&self, id: &str) -> Result<Option<KeyItem>, StoreError> {
        self.inner.get_key_item(id).await
    }
    async fn key_items_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyItem>, StoreError> {
        self.inner.key_items_after(after, limit).await
    }
    async fn rewrap_key_item(
        &self,
        id: &str,
        old: &[u8],
        new_key_id: &str,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        self.inner.rewrap_key_item(id, old, new_key_id, new).await
    }
    async fn claim_idempotency(
        &self,
        key: &str,
        request_hash: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<IdempotencyClaim, StoreError> {
        self.inner
            .claim_idempotency(key, request_hash, owner, now, lease_until)
            .await
    }
    async fn complete_idempotency(
        &self,
        key: &str,
        owner: &str,
        status: u16,
        response: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.inner
            .complete_idempotency(key, owner, status, response, expires_at)
            .await
    }
    async fn release_idempotency(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release_idempotency(key, owner).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

struct Fixture {
    vault: Vault,
    store: Arc<Colliding>,
    outbox: Box<dyn Outbox>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    fixture_with(|local| Arc::new(local))
}

/// The fixture on the key provider `wrap` makes of the local one.
fn fixture_with(wrap: impl FnOnce(LocalKeyProvider) -> Arc<dyn KeyProvider>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Colliding {
        inner: SqliteStore::open(&dir.path().join("vault.db")).unwrap(),
        collided: AtomicBool::new(false),
        keeps_no_notes: AtomicBool::new(false),
        collide_plain: AtomicBool::new(false),
        preempt_plain: AtomicBool::new(false),
        refuse_noted: AtomicBool::new(false),
        stored_plain: Mutex::new(Vec::new()),
        land_then_fail: AtomicBool::new(false),
        throttled: AtomicBool::new(false),
    });
    let outbox = store.open_outbox(Box::new(|| {})).unwrap().unwrap();
    let (provider, _) = LocalKeyProvider::open_or_create(&dir.path().join("master.key")).unwrap();
    let clock = Arc::new(SystemClock);
    let keyring = Keyring::new(
        wrap(provider),
        store.clone(),
        KeyringSettings {
            environment: "test".into(),
            epoch_seconds: 86_400,
            cache_seconds: 300,
        },
        clock.clone(),
        Arc::new(Metrics::new()),
    );
    let vault = Vault::new(
        store.clone(),
        Arc::new(keyring),
        FingerprintKey::new("fp/test", &DataKey::from_bytes([7; 32])),
        Some(slot_key()),
        clock,
        TokenSettings::default(),
    );
    Fixture {
        vault,
        store,
        outbox,
        _dir: dir,
    }
}

/// The fixture vault's slot key.
fn slot_key() -> SlotKey {
    SlotKey::new(&DataKey::from_bytes([9; 32]))
}

fn options() -> TokenizeOptions {
    TokenizeOptions {
        classification: Classification::Pan,
        format: TokenFormat::Random,
        deterministic: false,
        ttl_seconds: None,
        metadata: Default::default(),
    }
}

/// Notes that name the tokens they were made for, so the outbox shows
/// which tokens were noted: `{"token":"…"}`, a group's `G` and its tokens
/// one a line.
struct Named;

impl Notes for Named {
    fn one(&self, token: &str) -> Vec<u8> {
        note(token)
    }
    fn group(&self, tokens: &[&str]) -> Vec<u8> {
        format!("G\n{}", tokens.join("\n")).into_bytes()
    }
}

fn notes(n: &dyn Notes) -> Audit<'_> {
    Audit {
        notes: Some(n),
        herald: None,
    }
}

fn note(token: &str) -> Vec<u8> {
    format!(r#"{{"token":"{token}"}}"#).into_bytes()
}

/// The outbox's rows, and the note of each token they stand for.
fn noted(outbox: &mut Box<dyn Outbox>) -> (usize, Vec<String>) {
    let rows = outbox.pending(0, 100).unwrap();
    let notes = rows
        .iter()
        .flat_map(|(_, n)| {
            let n = String::from_utf8(n.clone()).unwrap();
            match n.strip_prefix("G\n") {
                Some(tokens) => tokens
                    .lines()
                    .map(|t| String::from_utf8(note(t)).unwrap())
                    .collect(),
                None => vec![n],
            }
        })
        .collect();
    (rows.len(), notes)
}

fn noted_tokens(outbox: &mut Box<dyn Outbox>) -> Vec<String> {
    noted(outbox).1
}

#[tokio::test]
async fn a_collided_token_is_retried_and_only_the_stored_one_is_noted() {
    let mut f = fixture();
    let got = f
        .vault
        .tokenize_noted("4111111111111111", &options(), notes(&Named))
        .await
        .unwrap();
    assert!(got.audited);
    assert!(f.store.collided.load(Ordering::SeqCst));
    assert_eq!(
        noted_tokens(&mut f.outbox),
        [note(&got.token)].map(|n| String::from_utf8(n).unwrap())
    );
    let stored = f
        .vault
        .record(&Token::parse(&got.token).unwrap())
        .await
        .unwrap();
    assert_eq!(
        stored.metadata, "{}",
        "the answer is the retried record, not the squatter's"
    );
    assert_eq!(f.store.outbox_backlog(), Some(1));
}

/// Three cards tokenized as one batch, with notes; each answered and
/// audited.
async fn tokenize_three(f: &Fixture) -> ([String; 3], Vec<Tokenized>) {
    let cards = ["4111111111111111", "5500005555555559", "4012888888881881"].map(String::from);
    let got: Vec<_> = f
        .vault
        .tokenize_many(&cards, &options(), notes(&Named))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(got.iter().all(|t| t.audited));
    (cards, got)
}

#[tokio::test]
async fn a_collision_inside_a_batch_is_retried_with_one_note_per_stored_token() {
    let mut f = fixture();
    let (cards, got) = tokenize_three(&f).await;
    let mut want: Vec<String> = got
        .iter()
        .map(|t| String::from_utf8(note(&t.token)).unwrap())
        .collect();
    let mut noted = noted_tokens(&mut f.outbox);
    want.sort();
    noted.sort();
    assert_eq!(
        noted, want,
        "one note for each answered token, none for the squatted one"
    );
    for (card, t) in cards.iter().zip(&got) {
        let stored = f
            .vault
            .record(&Token::parse(&t.token).unwrap())
            .await
            .unwrap();
        assert_eq!(stored.metadata, "{}");
        assert_eq!(*f.vault.reveal(&stored).await.unwrap(), **card);
    }
}

/// Without a collision a batch's notes are one row, standing for every
/// card stored.
#[tokio::test]
async fn a_batch_is_noted_in_one_row() {
    let mut f = fixture();
    f.store.collided.store(true, Ordering::SeqCst);
    let (_, got) = tokenize_three(&f).await;
    let want: Vec<String> = got
        .iter()
        .map(|t| String::from_utf8(note(&t.token)).unwrap())
        .collect();
    assert_eq!(noted(&mut f.outbox), (1, want));
    assert_eq!(f.store.outbox_backlog(), Some(3));
}

/// Preserving tokens can collide, and one collision would withdraw a
/// whole group: their batches keep a note a card.
#[tokio::test]
async fn a_preserving_batch_is_noted_card_by_card() {
    let mut f = fixture();
    f.store.collided.store(true, Ordering::SeqCst);
    let cards = ["4111111111111111", "5500005555555559"].map(String::from);
    let opts = TokenizeOptions {
        format: TokenFormat::Preserving,
        ..options()
    };
    let got: Vec<_> = f
        .vault
        .tokenize_many(&cards, &opts, notes(&Named))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let want: Vec<String> = got
        .iter()
        .map(|t| String::from_utf8(note(&t.token)).unwrap())
        .collect();
    assert_eq!(noted(&mut f.outbox), (2, want));
}

/// On SQLite a random token names its record's slot, so the record is
/// read, and deleted, by slot; a preserving token names none and is
/// found by name. A token naming a record's slot under the vault's own
/// key, but with another random half, finds nothing.
#[tokio::test]
async fn random_tokens_name_their_slots_and_preserving_ones_their_names() {
    let f = fixture();
    f.store.collided.store(true, Ordering::SeqCst);
    let card = "4111111111111111";
    let mut seen = Vec::new();
    for format in [
        TokenFormat::Random,
        TokenFormat::Preserving,
        TokenFormat::Random,
    ] {
        let opts = TokenizeOptions {
            format,
            ..options()
        };
        let got = f.vault.tokenize(card, &opts).await.unwrap();
        let token = Token::parse(&got.token).unwrap();
        let stored = f.vault.record(&token).await.unwrap();
        assert_eq!(*f.vault.reveal(&stored).await.unwrap(), *card);
        assert_eq!(stored.slot_in_token, format == TokenFormat::Random);
        seen.push((token, stored.slot.unwrap()));
    }
    let slots: Vec<i64> = seen.iter().map(|(_, s)| *s).collect();
    assert!(slots.windows(2).all(|w| w[0] < w[1]), "{slots:?}");
    let mut rng = crate::crypto::Randomness::for_records(1);
    let forged = Token::slotted(&slot_key(), slots[0], &mut rng);
    assert_ne!(forged, seen[0].0);
    assert!(matches!(
        f.vault.record(&forged).await,
        Err(VaultError::NotFound)
    ));
    assert!(matches!(
        f.vault.delete(&forged).await,
        Err(VaultError::NotFound)
    ));
    for (token, _) in &seen {
        f.vault.delete(token).await.unwrap();
        assert!(matches!(
            f.vault.record(token).await,
            Err(VaultError::NotFound)
        ));
    }
}

/// A herald that lists what it announced (and whether the store held the
/// token then) and retracted, or fails every announcement.
struct Listing<'a> {
    store: &'a Colliding,
    fail: bool,
    announced: Mutex<Vec<(String, bool)>>,
    retracted: Mutex<Vec<(String, &'static str)>>,
}

impl<'a> Listing<'a> {
    fn new(store: &'a Colliding, fail: bool) -> Self {
        Self {
            store,
            fail,
            announced: Mutex::new(Vec::new()),
            retracted: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl Herald for Listing<'_> {
    async fn announce(&self, token: &str) -> Result<(), VaultError> {
        if self.fail {
            return Err(VaultError::Unavailable("audit log unavailable".into()));
        }
        let held = self
            .store
            .stored_plain
            .lock()
            .unwrap()
            .iter()
            .any(|t| t == token);
        self.announced
            .lock()
            .unwrap()
            .push((token.to_owned(), held));
        Ok(())
    }
    async fn retract(&self, token: &str, why: &'static str) {
        self.retracted.lock().unwrap().push((token.to_owned(), why));
    }
}

fn deterministic() -> TokenizeOptions {
    TokenizeOptions {
        deterministic: true,
        ..options()
    }
}

/// Tokenizes [`CARD`] deterministically, with notes and `h`.
async fn heralded(f: &Fixture, h: &Listing<'_>) -> Result<Tokenized, VaultError> {
    let audit = Audit {
        notes: Some(&Named),
        herald: Some(h),
    };
    f.vault.tokenize_noted(CARD, &deterministic(), audit).await
}

const CARD: &str = "4111111111111111";

/// Where the store keeps no note (DynamoDB, or an outbox past its bound),
/// a deterministic record is stored only after its event: were the event
/// written after and to fail, the record would be taken back while a
/// request for the same card may hold its token already.
#[tokio::test]
async fn a_deterministic_record_the_store_does_not_note_is_stored_after_its_event() {
    let mut f = fixture();
    f.store.collided.store(true, Ordering::SeqCst);
    f.store.keeps_no_notes.store(true, Ordering::SeqCst);
    let down = Listing::new(&f.store, true);
    let e = heralded(&f, &down).await.unwrap_err();
    assert!(matches!(e, VaultError::Unavailable(_)), "{e:?}");
    assert!(
        f.store.stored_plain.lock().unwrap().is_empty(),
        "no record without its event"
    );
    let fp = f.vault.fingerprints().fingerprint("pan", CARD.as_bytes());
    assert_eq!(f.store.token_for_fingerprint(&fp).await.unwrap(), None);

    let up = Listing::new(&f.store, false);
    let got = heralded(&f, &up).await.unwrap();
    assert!(got.created && got.audited, "{got:?}");
    assert_eq!(
        *up.announced.lock().unwrap(),
        [(got.token.clone(), false)],
        "announced before it was stored"
    );
    assert_eq!(
        *f.store.stored_plain.lock().unwrap(),
        std::slice::from_ref(&got.token)
    );
    assert!(noted_tokens(&mut f.outbox).is_empty(), "no note as well");

    // The card's token exists: nothing is stored or announced, and the
    // event is the caller's.
    let again = heralded(&f, &up).await.unwrap();
    assert_eq!(again.token, got.token);
    assert!(!again.created && !again.audited);
    assert_eq!(up.announced.lock().unwrap().len(), 1);
    assert!(up.retracted.lock().unwrap().is_empty());
}

/// A token taken between its announcement and its insert is retracted,
/// and the record stored under a fresh one, announced in turn.
#[tokio::test]
async fn an_announced_token_that_was_taken_is_retracted() {
    let f = fixture();
    f.store.collided.store(true, Ordering::SeqCst);
    f.store.keeps_no_notes.store(true, Ordering::SeqCst);
    f.store.collide_plain.store(true, Ordering::SeqCst);
    let h = Listing::new(&f.store, false);
    let got = heralded(&f, &h).await.unwrap();
    let announced = h.announced.lock().unwrap().clone();
    assert_eq!(announced.len(), 2, "{announced:?}");
    assert_eq!(announced[1], (got.token.clone(), false));
    assert_eq!(
        *h.retracted.lock().unwrap(),
        [(announced[0].0.clone(), "not stored: the token was taken")]
    );
}

/// Where the store keeps notes, a deterministic record's event is its
/// note, committed with it: nothing is announced.
#[tokio::test]
async fn a_noted_deterministic_record_is_not_announced() {
    let mut f = fixture();
    f.store.collided.store(true, Ordering::SeqCst);
    let h = Listing::new(&f.store, false);
    let got = heralded(&f, &h).await.unwrap();
    assert!(got.created && got.audited);
    assert!(h.announced.lock().unwrap().is_empty());
    assert_eq!(
        noted_tokens(&mut f.outbox),
        [String::from_utf8(note(&got.token)).unwrap()]
    );
}

/// A request for the same card that stored it between the announcement
/// and the insert: the announced token is retracted, and the answer is
/// the other request's token, whose event is the caller's.
#[tokio::test]
async fn an_announced_token_whose_card_was_stored_first_is_retracted() {
    let f = fixture();
    f.store.collided.store(true, Ordering::SeqCst);
    f.store.keeps_no_notes.store(true, Ordering::SeqCst);
    f.store.preempt_plain.store(true, Ordering::SeqCst);
    let h = Listing::new(&f.store, false);
    let got = heralded(&f, &h).await.unwrap();
    assert!(!got.created && !got.audited, "{got:?}");
    let announced = h.announced.lock().unwrap().clone();
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert_ne!(announced[0].0, got.token);
    assert_eq!(
        *h.retracted.lock().unwrap(),
        [(
            announced[0].0.clone(),
            "not stored: the value has a token already"
        )]
    );
    let stored = f
        .vault
        .record(&Token::parse(&got.token).unwrap())
        .await
        .unwrap();
    assert_eq!(stored.metadata, r#"{"squatter":"yes"}"#);
}

/// An outbox that goes past its bound between the check and the insert
/// refuses the deterministic record; it is stored again, its event first.
#[tokio::test]
async fn a_deterministic_record_refused_by_a_full_outbox_is_stored_after_its_event() {
    let mut f = fixture();
    f.store.collided.store(true, Ordering::SeqCst);
    f.store.refuse_noted.store(true, Ordering::SeqCst);
    let h = Listing::new(&f.store, false);
    let got = heralded(&f, &h).await.unwrap();
    assert!(got.created && got.audited, "{got:?}");
    assert_eq!(*h.announced.lock().unwrap(), [(got.token.clone(), false)]);
    assert!(noted_tokens(&mut f.outbox).is_empty());
}

/// A key provider in trouble: each call waits a little, is counted, and
/// fails.
#[derive(Default)]
struct Failing {
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl KeyProvider for Failing {
    fn kind(&self) -> &'static str {
        "failing"
    }
    async fn generate_data_key(
        &self,
        _: &EncryptionContext,
    ) -> Result<(DataKey, WrappedKey), KeyError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        Err(KeyError::Unavailable("throttled".into()))
    }
    async fn decrypt_data_key(
        &self,
        _: &WrappedKey,
        _: &EncryptionContext,
    ) -> Result<DataKey, KeyError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(KeyError::Unavailable("throttled".into()))
    }
    async fn check(&self) -> Result<(), KeyError> {
        Err(KeyError::Unavailable("throttled".into()))
    }
}

/// A provider in trouble is not asked once per value, nor once per
/// request that waited on a load in flight: ten batches of twenty cards
/// at once make one call, and every value is answered unavailable (an
/// invalid one, invalid).
#[tokio::test]
async fn a_failing_key_provider_is_called_once_for_a_burst_of_batches() {
    let failing = Arc::new(Failing::default());
    let f = fixture_with({
        let failing = failing.clone();
        move |_| failing
    });
    let mut cards = vec!["4111111111111111".to_owned(); 19];
    cards.push("4111111111111112".to_owned());
    let opts = options();
    let answers = futures_util::future::join_all(
        (0..10).map(|_| f.vault.tokenize_many(&cards, &opts, notes(&Named))),
    )
    .await;
    assert_eq!(failing.calls.load(Ordering::SeqCst), 1);
    for answer in answers {
        for (i, a) in answer.into_iter().enumerate() {
            match (i, a) {
                (19, Err(VaultError::InvalidValue(_))) => {}
                (_, Err(VaultError::Unavailable(m))) => assert!(m.contains("throttled"), "{m}"),
                (_, other) => panic!("{i}: {:?}", other.map(|t| t.token)),
            }
        }
    }
}

/// A record without a fingerprint whose write answered a timeout yet
/// landed is taken back, alone and in a batch, random or preserving:
/// nobody holds its token, and nothing audits it. Only that very record
/// goes, and a write that cannot have landed takes nothing back.
/// (Without notes, as on DynamoDB.)
#[tokio::test]
async fn a_random_record_whose_write_failed_but_landed_is_taken_back() {
    let f = fixture();
    f.store.land_then_fail.store(true, Ordering::SeqCst);
    let one = f
        .vault
        .tokenize_noted("4111111111111111", &options(), Audit::default())
        .await;
    assert!(matches!(one, Err(VaultError::Unavailable(_))));
    let cards = ["5500005555555559", "4012888888881881"].map(String::from);
    let many = f
        .vault
        .tokenize_many(&cards, &options(), Audit::default())
        .await;
    assert!(
        many.iter()
            .all(|r| matches!(r, Err(VaultError::Unavailable(_))))
    );
    let landed = f.store.stored_plain.lock().unwrap().clone();
    assert_eq!(landed.len(), 3);
    for t in landed {
        let r = f.vault.record(&Token::parse(&t).unwrap()).await;
        assert!(matches!(r, Err(VaultError::NotFound)), "{t} is taken back");
    }
    // A preserving one too; but a record of the same token that is not
    // ours (another customer's, which a preserving token's failed write
    // may have met) stays: only this very record goes.
    let preserving = TokenizeOptions {
        format: TokenFormat::Preserving,
        ..options()
    };
    let one = f
        .vault
        .tokenize_noted("4111111111111111", &preserving, Audit::default())
        .await;
    assert!(matches!(one, Err(VaultError::Unavailable(_))));
    let token = f.store.last_landed();
    assert!(matches!(
        f.vault.record(&token).await,
        Err(VaultError::NotFound)
    ));
    let theirs = TokenRecord {
        token: "4111119999991112".into(),
        nonce: vec![7; 12],
        slot: f.store.inner.reserve_slot(),
        ..Default::default()
    };
    f.store.inner.insert_token(&theirs).await.unwrap();
    let ours = TokenRecord {
        nonce: vec![8; 12],
        ..theirs.clone()
    };
    assert!(!f.store.withdraw_record(&ours).await.unwrap(), "not ours");
    assert!(f.store.withdraw_record(&theirs).await.unwrap());
    // A throttled write never landed: nothing is taken back (here, where
    // the double landed it anyway, the record stays).
    f.store.throttled.store(true, Ordering::SeqCst);
    let one = f
        .vault
        .tokenize_noted("4111111111111111", &options(), Audit::default())
        .await;
    assert!(matches!(one, Err(VaultError::Unavailable(_))));
    let token = f.store.last_landed();
    assert!(f.vault.record(&token).await.is_ok());
}
