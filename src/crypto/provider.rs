//! The seam between the vault and whoever holds the root keys.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use async_trait::async_trait;
use aws_lc_rs::hmac;
use zeroize::Zeroizing;

/// Key-value pairs bound to every wrapped key: `{service, environment,
/// classification}`. With KMS this is the EncryptionContext and shows in
/// CloudTrail, so nothing derived from a value may ever go in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    /// The context of a classification's data keys.
    pub fn new(environment: &str, classification: &str) -> Self {
        let mut m = BTreeMap::new();
        m.insert("service".to_owned(), "tokenvault".to_owned());
        m.insert("environment".to_owned(), environment.to_owned());
        m.insert("classification".to_owned(), classification.to_owned());
        Self(m)
    }

    /// Adds a pair (the purpose of a service-held secret, say).
    pub fn with(mut self, k: &str, v: &str) -> Self {
        self.0.insert(k.to_owned(), v.to_owned());
        self
    }

    /// The value of `k`, if set.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// The pairs as the AWS SDK takes them.
    pub fn to_map(&self) -> std::collections::HashMap<String, String> {
        self.0.clone().into_iter().collect()
    }

    /// A canonical byte encoding (sorted, length-prefixed), used as
    /// associated data by the local provider.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.0 {
            for part in [k, v] {
                out.extend_from_slice(&(part.len() as u32).to_be_bytes());
                out.extend_from_slice(part.as_bytes());
            }
        }
        out
    }
}

/// A 256-bit plaintext key, zeroized on drop and never printed.
pub struct DataKey {
    key: Zeroizing<[u8; 32]>,
    /// HKDF-Extract of the key as an HMAC key, made on first use: every
    /// record key under this data key expands from it. Extracting again for
    /// each record was half the cost of sealing one, and `hkdf::Prk`
    /// hashed its key's pads again at every expand (another 4,900
    /// instructions); `hmac::Key` keeps them hashed, in an `HMAC_CTX` that
    /// aws-lc cleanses on drop.
    prk: OnceLock<hmac::Key>,
}

impl DataKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self {
            key: Zeroizing::new(b),
            prk: OnceLock::new(),
        }
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.key
    }

    /// A 32-byte HKDF-SHA256 output (RFC 5869) of the key for `info`, with
    /// an empty salt (a salt of zeros). For one hash-length block, Expand
    /// is a single HMAC under the PRK: T(1) = HMAC(PRK, info || 0x01). The
    /// tags are plain arrays that live on the stack until overwritten.
    pub fn hkdf32(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        let prk = self.prk.get_or_init(|| {
            let salt = hmac::Key::new(hmac::HMAC_SHA256, &[]);
            let prk = hmac::sign(&salt, self.key.as_ref());
            hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref())
        });
        let mut ctx = hmac::Context::with_key(prk);
        ctx.update(info);
        ctx.update(&[1]);
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A data key as the provider wrapped it, safe to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// Which root key wrapped it (a KMS key ARN, or `local:<id>`), so a
    /// rewrap can find every item still under an old key.
    pub key_id: String,
    pub blob: Vec<u8>,
}

/// Key provider failures. None carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The provider cannot be reached or refused for a passing reason:
    /// callers answer 503 and retry.
    #[error("key provider unavailable: {0}")]
    Unavailable(String),
    /// A wrapped key did not open: wrong context, wrong root key or tampering.
    #[error("a wrapped key did not open under its context")]
    Unwrap,
    /// Misconfiguration or a broken key file: an operator must act.
    #[error("key provider misconfigured: {0}")]
    Config(String),
}

/// Whoever holds the root keys: KMS in production, a local master key file
/// on the embedded default. Implementations count nothing themselves: the
/// keyring counts calls under the AWS operation names.
#[async_trait]
pub trait KeyProvider: Send + Sync + 'static {
    /// `local` or `kms`, for logs and `doctor`.
    fn kind(&self) -> &'static str;

    /// A fresh 256-bit key and the same key wrapped under the root key for
    /// `ctx` (KMS GenerateDataKey).
    async fn generate_data_key(
        &self,
        ctx: &EncryptionContext,
    ) -> Result<(DataKey, WrappedKey), KeyError>;

    /// Unwraps a key produced by `generate_data_key` with the same context
    /// (KMS Decrypt).
    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KeyError>;

    /// Whether the provider answers; for `/readyz`.
    async fn check(&self) -> Result<(), KeyError>;
}
