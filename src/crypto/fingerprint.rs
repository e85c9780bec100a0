//! Keyed fingerprints of values.
//!
//! Deterministic tokens need "have we seen this card?" without storing the
//! card. A bare hash of a card is brute-forced in minutes (the space is ~10^9
//! per BIN), so PCI DSS 4.0 req. 3.5.1.1 wants a keyed hash: HMAC-SHA256
//! under a service-held secret, versioned so the key can be rotated.

use aws_lc_rs::hmac;

use super::provider::DataKey;

/// An HMAC key with its version id.
pub struct FingerprintKey {
    id: String,
    key: hmac::Key,
}

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FingerprintKey({})", self.id)
    }
}

impl FingerprintKey {
    pub fn new(id: &str, secret: &DataKey) -> Self {
        Self {
            id: id.to_owned(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.expose()),
        }
    }

    /// `<key id>:<hex HMAC>` of the normalized value in its classification.
    pub fn fingerprint(&self, classification: &str, normalized: &[u8]) -> String {
        format!(
            "{}:{}",
            self.id,
            super::to_hex(&self.mac(&[b"fp", classification.as_bytes(), normalized]))
        )
    }

    /// HMAC over length-prefixed parts; for other keyed digests of secret
    /// input (idempotency request hashes).
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        for p in parts {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}
