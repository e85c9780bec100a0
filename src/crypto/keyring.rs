//! Epoch data keys and service-held secrets.
//!
//! A data key per classification per epoch (default a day) is made once by
//! whichever replica first needs it and kept wrapped in the store, so every
//! replica shares it and the number of keys grows with days, not requests.
//! Unwrapped keys sit in a bounded cache with a TTL; when the provider is
//! down, work on cached keys goes on until they expire, then 503.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::clock::Clock;
use crate::store::{KeyItem, StoreError, TokenStore};
use crate::telemetry::{Metrics, ResultLabels};

use super::provider::{DataKey, EncryptionContext, KeyError, KeyProvider, WrappedKey};

/// How many unwrapped data keys we hold at most (a year of daily keys for a
/// couple of classifications); when full, the entry loaded longest ago is
/// evicted first.
const CACHE_CAPACITY: usize = 1024;

/// Service-held secrets are wrapped under this classification's key (or
/// the provider's `system` key).
const SECRET_CLASSIFICATION: &str = "pan";

/// Keyring failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unknown data key id")]
    UnknownKey,
}

impl KeyringError {
    /// Whether a retry may succeed (answer 503, not 500).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            KeyringError::Key(KeyError::Unavailable(_))
                | KeyringError::Store(StoreError::Unavailable(_))
        )
    }
}

struct Cached {
    key: Arc<DataKey>,
    expires_at: i64,
}

/// Settings the keyring needs.
#[derive(Debug, Clone)]
pub struct KeyringSettings {
    pub environment: String,
    pub epoch_seconds: i64,
    pub cache_seconds: i64,
}

/// Finds, makes and caches data keys.
pub struct Keyring {
    provider: Arc<dyn KeyProvider>,
    store: Arc<dyn TokenStore>,
    settings: KeyringSettings,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    cache: Mutex<HashMap<String, Cached>>,
    /// One lock per key being loaded, so a burst of requests for a cold key
    /// makes one provider call, not one each, and a slow unwrap of an old
    /// epoch's key does not hold up loading the current one. It holds the
    /// load's failure, when it failed for a passing reason: those who
    /// waited on it share it rather than each calling a provider in
    /// trouble again.
    loads: Mutex<HashMap<String, Load>>,
}

/// A load in flight, and how it failed (see [`Keyring::loads`]).
type Load = Arc<tokio::sync::Mutex<Option<String>>>;

impl Keyring {
    pub fn new(
        provider: Arc<dyn KeyProvider>,
        store: Arc<dyn TokenStore>,
        settings: KeyringSettings,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            provider,
            store,
            settings,
            clock,
            metrics,
            cache: Mutex::new(HashMap::new()),
            loads: Mutex::new(HashMap::new()),
        }
    }

    pub fn provider(&self) -> &Arc<dyn KeyProvider> {
        &self.provider
    }

    /// The id of a classification's data key for the epoch holding `unix`.
    pub fn data_key_id(&self, classification: &str, unix: i64) -> String {
        let epoch = unix.div_euclid(self.settings.epoch_seconds.max(1));
        format!("dk/{classification}/{epoch}")
    }

    /// The current epoch's data key of a classification, made if needed.
    pub async fn current(
        &self,
        classification: &str,
    ) -> Result<(String, Arc<DataKey>), KeyringError> {
        let id = self.data_key_id(classification, self.clock.unix());
        let key = self.get(&id, classification, true).await?;
        Ok((id, key))
    }

    /// The data key with `id` (from a record), for opening.
    pub async fn by_id(&self, id: &str) -> Result<Arc<DataKey>, KeyringError> {
        let classification = parse_classification(id).ok_or(KeyringError::UnknownKey)?;
        self.get(id, classification, false).await
    }

    /// A service-held secret (fingerprint, audit, session-signing key):
    /// made once, wrapped under the `pan` classification's key with its
    /// purpose in the context, kept in the store; not cached here (callers
    /// hold it for their lifetime).
    pub async fn service_secret(&self, name: &str, version: u32) -> Result<DataKey, KeyringError> {
        self.secret(name, version, true).await
    }

    /// A service-held secret that must already exist (for tools that read a
    /// vault and must never add to it).
    pub async fn existing_service_secret(
        &self,
        name: &str,
        version: u32,
    ) -> Result<DataKey, KeyringError> {
        self.secret(name, version, false).await
    }

    async fn secret(
        &self,
        name: &str,
        version: u32,
        create: bool,
    ) -> Result<DataKey, KeyringError> {
        let id = format!("secret/{name}/v{version}");
        let ctx = self.context_for(&id).ok_or(KeyringError::UnknownKey)?;
        self.load_or_create(&id, SECRET_CLASSIFICATION, &ctx, create)
            .await
    }

    pub fn context_for(&self, id: &str) -> Option<EncryptionContext> {
        context_for(&self.settings.environment, id)
    }

    /// Whether the current `pan` data key is at hand (cached, or loadable
    /// from the store and the provider): what `/readyz` reports, without a
    /// provider call per probe while the key is cached.
    pub async fn ready(&self) -> Result<(), KeyringError> {
        self.current(SECRET_CLASSIFICATION).await.map(|_| ())
    }

    async fn get(
        &self,
        id: &str,
        classification: &str,
        create: bool,
    ) -> Result<Arc<DataKey>, KeyringError> {
        if let Some(k) = self.cached(id) {
            self.count_cache("hit");
            return Ok(k);
        }
        self.count_cache("miss");
        // Boxed: the load's future (the key provider's and the store's
        // calls) is kilobytes, and inline it would make every caller's
        // future as large, copied whole on each move even on a hit.
        Box::pin(self.load(id, classification, create)).await
    }

    /// [`Keyring::get`] on a miss: one load per key at a time.
    async fn load(
        &self,
        id: &str,
        classification: &str,
        create: bool,
    ) -> Result<Arc<DataKey>, KeyringError> {
        let lock = self
            .loads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone();
        let mut failed = lock.lock().await;
        if let Some(k) = self.cached(id) {
            return Ok(k);
        }
        if let Some(why) = failed.as_ref() {
            return Err(KeyringError::Key(KeyError::Unavailable(why.clone())));
        }
        let ctx = EncryptionContext::new(&self.settings.environment, classification);
        let loaded = self
            .load_or_create(id, classification, &ctx, create)
            .await
            .map(Arc::new);
        match &loaded {
            Ok(key) => self.insert(id, key.clone()),
            // Kept as the provider's own words, so a waiter's error reads
            // as the loader's did.
            Err(KeyringError::Key(KeyError::Unavailable(m))) => *failed = Some(m.clone()),
            Err(e) if e.is_unavailable() => *failed = Some(e.to_string()),
            Err(_) => {}
        }
        // Cached first, then unlocked: waiters hold the lock's Arc, and new
        // arrivals find the key in the cache (or, after a failure, make a
        // lock and a call of their own). Only this load's entry goes: one a
        // later arrival made after it is another load's.
        let mut loads = self.loads.lock().unwrap_or_else(|p| p.into_inner());
        if loads.get(id).is_some_and(|l| Arc::ptr_eq(l, &lock)) {
            loads.remove(id);
        }
        drop(loads);
        drop(failed);
        loaded
    }

    fn cached(&self, id: &str) -> Option<Arc<DataKey>> {
        let now = self.clock.unix();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(id) {
            Some(c) if c.expires_at > now => Some(c.key.clone()),
            Some(_) => {
                cache.remove(id);
                None
            }
            None => None,
        }
    }

    fn insert(&self, id: &str, key: Arc<DataKey>) {
        let now = self.clock.unix();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, c| c.expires_at > now);
        if cache.len() >= CACHE_CAPACITY
            && let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, c)| c.expires_at)
                .map(|(k, _)| k.clone())
        {
            cache.remove(&oldest);
        }
        cache.insert(
            id.to_owned(),
            Cached {
                key,
                expires_at: now + self.settings.cache_seconds,
            },
        );
    }

    fn count_cache(&self, result: &'static str) {
        self.metrics
            .datakey_cache
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Reads the wrapped key item and unwraps it; when absent (and
    /// `create`), generates one and puts it conditionally, and if another
    /// replica won the race, unwraps the winner's instead.
    async fn load_or_create(
        &self,
        id: &str,
        classification: &str,
        ctx: &EncryptionContext,
        create: bool,
    ) -> Result<DataKey, KeyringError> {
        if let Some(item) = self.store.get_key_item(id).await? {
            return self.unwrap_item(&item, ctx).await;
        }
        if !create {
            return Err(KeyringError::UnknownKey);
        }
        let started = std::time::Instant::now();
        let generated = self.provider.generate_data_key(ctx).await;
        self.metrics.kms(
            self.provider.kind(),
            "GenerateDataKey",
            generated.is_ok(),
            started.elapsed(),
        );
        let (key, wrapped) = generated?;
        let item = KeyItem {
            id: id.to_owned(),
            classification: classification.to_owned(),
            wrapping_key_id: wrapped.key_id,
            wrapped: wrapped.blob,
            created_at: self.clock.unix(),
        };
        match self.store.put_key_item(&item).await? {
            None => Ok(key),
            Some(winner) => self.unwrap_item(&winner, ctx).await,
        }
    }

    async fn unwrap_item(
        &self,
        item: &KeyItem,
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KeyringError> {
        let wrapped = WrappedKey {
            key_id: item.wrapping_key_id.clone(),
            blob: item.wrapped.clone(),
        };
        let started = std::time::Instant::now();
        let r = self.provider.decrypt_data_key(&wrapped, ctx).await;
        self.metrics.kms(
            self.provider.kind(),
            "Decrypt",
            r.is_ok(),
            started.elapsed(),
        );
        Ok(r?)
    }
}

/// The encryption context a key item with `id` is wrapped under, so
/// `rewrap` can re-wrap it with the same one: a data key's names its
/// classification; a secret's is the `pan` context plus its purpose.
pub fn context_for(environment: &str, id: &str) -> Option<EncryptionContext> {
    if let Some(class) = parse_classification(id) {
        return Some(EncryptionContext::new(environment, class));
    }
    let mut parts = id.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("secret"), Some(name), Some(v), None)
            if !name.is_empty()
                && v.strip_prefix('v')
                    .is_some_and(|n| n.parse::<u32>().is_ok()) =>
        {
            Some(EncryptionContext::new(environment, SECRET_CLASSIFICATION).with("purpose", name))
        }
        _ => None,
    }
}

/// `dk/<classification>/<epoch>` → classification.
fn parse_classification(id: &str) -> Option<&str> {
    let mut parts = id.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("dk"), Some(c), Some(e), None) if !c.is_empty() && e.parse::<i64>().is_ok() => {
            Some(c)
        }
        _ => None,
    }
}
