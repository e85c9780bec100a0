//! The vault against a real SQLite store whose first noted insert collides,
//! so the retry paths are checked for what an auditor relies on: every
//! stored token has exactly one note, and a token that lost its place has
//! none.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use super::VaultError;
use super::service::{TokenizeOptions, Tokenized, Vault};
use super::value::Classification;
use crate::clock::SystemClock;
use crate::config::TokenSettings;
use crate::crypto::fingerprint::FingerprintKey;
use crate::crypto::keyring::{Keyring, KeyringSettings};
use crate::crypto::local::LocalKeyProvider;
use crate::crypto::provider::DataKey;
use crate::crypto::slot::SlotKey;
use crate::store::sqlite::SqliteStore;
use crate::store::{
    IdempotencyClaim, InsertOutcome, KeyItem, Noted, Nudge, Outbox, StoreError, TokenRecord,
    TokenStore,
};
use crate::telemetry::Metrics;
use crate::vault::Notes;
use crate::vault::token::{Token, TokenFormat};

/// SQLite, except that before its first noted insert another record takes
/// the first record's token: the insert then meets a real `TokenTaken`.
struct Colliding {
    inner: SqliteStore,
    collided: AtomicBool,
}

#[async_trait]
impl TokenStore for Colliding {
    async fn insert_token(&self, r: &TokenRecord) -> Result<InsertOutcome, StoreError> {
        self.inner.insert_token(r).await
    }
    async fn insert_tokens(&self, r: &[TokenRecord]) -> Vec<Result<InsertOutcome, StoreError>> {
        self.inner.insert_tokens(r).await
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
            let squatter = TokenRecord {
                metadata: r#"{"squatter":"yes"}"#.into(),
                ..records[0].clone()
            };
            assert_eq!(
                self.inner.insert_token(&squatter).await.unwrap(),
                InsertOutcome::Inserted
            );
        }
        self.inner.insert_tokens_noted(records, notes).await
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
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Colliding {
        inner: SqliteStore::open(&dir.path().join("vault.db")).unwrap(),
        collided: AtomicBool::new(false),
    });
    let outbox = store.open_outbox(Box::new(|| {})).unwrap().unwrap();
    let (provider, _) = LocalKeyProvider::open_or_create(&dir.path().join("master.key")).unwrap();
    let clock = Arc::new(SystemClock);
    let keyring = Keyring::new(
        Arc::new(provider),
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
        Some(SlotKey::new(&DataKey::from_bytes([9; 32]))),
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
        .tokenize_noted("4111111111111111", &options(), Some(&Named))
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
        .tokenize_many(&cards, &options(), Some(&Named))
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
        .tokenize_many(&cards, &opts, Some(&Named))
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
    let key = SlotKey::new(&DataKey::from_bytes([9; 32]));
    let mut rng = crate::crypto::Randomness::for_records(1);
    let forged = Token::slotted(&key, slots[0], &mut rng);
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
