//! Envelope encryption: who wraps data keys, how records are sealed, and the
//! keyed fingerprint.
//!
//! - [`provider`]: the [`KeyProvider`] trait (KMS in production, a local
//!   master key for the embedded default).
//! - [`local`]: the master-key-file provider.
//! - [`kms`]: the AWS KMS provider (and ReEncrypt for rewrap).
//! - [`keyring`]: epoch data keys and service-held secrets, kept wrapped in
//!   the store and unwrapped into a bounded, expiring cache.
//! - [`envelope`]: per-record keys (HKDF) and AES-256-GCM sealing bound to
//!   the record by associated data.
//! - [`fingerprint`]: HMAC-SHA256 of a value under a secret key, for
//!   deterministic tokens.
//! - [`random`]: CSPRNG output drawn once for a request's records.
//! - [`slot`]: tokens that carry their record's row number, encrypted, so
//!   the embedded store keeps no index on tokens.

pub mod envelope;
pub mod fingerprint;
pub mod keyring;
pub mod kms;
pub mod local;
pub mod provider;
pub mod random;
pub mod slot;

pub use keyring::Keyring;
pub use provider::{DataKey, EncryptionContext, KeyError, KeyProvider, WrappedKey};
pub use random::Randomness;

/// `bytes` (a MAC or a digest) as lowercase hex. `hex::encode` goes
/// through a `char` iterator collected into a `String`: about 2,200
/// instructions for an audit line's 32-byte MAC, written for every event.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = vec![0u8; bytes.len() * 2];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
    // Hex digits are ASCII.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn to_hex_is_hex_encode() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(super::to_hex(&bytes), hex::encode(&bytes));
        assert_eq!(super::to_hex(&[]), "");
    }
}
