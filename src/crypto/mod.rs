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

pub mod envelope;
pub mod fingerprint;
pub mod keyring;
pub mod kms;
pub mod local;
pub mod provider;
pub mod random;

pub use keyring::Keyring;
pub use provider::{DataKey, EncryptionContext, KeyError, KeyProvider, WrappedKey};
pub use random::Randomness;
