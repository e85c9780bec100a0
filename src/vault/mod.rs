//! The tokenization domain: parsed values, token formats, and the service
//! that ties keys and store together. Knows nothing of HTTP.
//!
//! - [`pan`]: `Pan::parse` and the card rules the redactor shares.
//! - [`token`]: token formats, `Token::parse`.
//! - [`value`]: classifications and the values they accept.
//! - [`metadata`]: caller metadata rules (PCI DSS 3.3).
//! - [`service`]: tokenize, detokenize, metadata, delete.

pub mod metadata;
pub mod pan;
pub mod service;
pub mod token;
pub mod value;

pub use service::{Audit, Herald, Notes, Vault, VaultError};

#[cfg(test)]
mod tests;
