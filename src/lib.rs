//! tokenvault: a payment-data vault and PII redaction service.
//!
//! Checkout backends send card numbers to `/tokenize` and keep only tokens;
//! support tools call `/detokenize` and see a card (or its last four) only
//! when their role allows it, with every attempt audited; log shippers send
//! their logs through `/redact`.
//!
//! # Layout
//!
//! Data flows one way: [`http`] → [`auth`] → [`vault`] / [`redact`] →
//! [`crypto`] + [`store`].
//!
//! - [`cli`]: the command line (`serve`, `redact`, `migrate`, `rewrap`,
//!   `doctor`, `audit verify`).
//! - [`client`]: the command-line client (API key or IAM login).
//! - [`loadgen`]: `tokenvault bench`, the load tool.
//! - [`rewrap`]: moving stored keys to another KMS key with ReEncrypt.
//! - [`doctor`]: pass/fail checks of KMS keys, the table and the certificate.
//! - [`config`]: [`config::Settings`], read once from TOML and
//!   `TOKENVAULT_*` and validated.
//! - [`app`]: builds the service from settings and serves it on a bound
//!   listener until a shutdown future resolves.
//! - [`aws`]: AWS clients from the standard chain, bounded in time, and
//!   the reduction of SDK errors to what callers act on.
//! - [`tls`]: rustls server configuration and the generated dev certificate.
//! - [`http`]: one module per endpoint; `http::error` renders RFC 9457
//!   problems.
//! - [`auth`]: principals, API keys, the role policy, dev credentials.
//! - [`vault`]: `Pan`, tokens, the tokenization service.
//! - [`redact`]: the scanner, detectors, and text/JSON/NDJSON walkers.
//! - [`crypto`]: key providers, the data-key keyring, envelope sealing,
//!   fingerprints, a request's randomness.
//! - [`store`]: the `TokenStore` trait, SQLite and DynamoDB, and `migrate`.
//! - [`audit`]: the HMAC-chained audit log, and the copier of the
//!   embedded store's audit outbox.
//! - [`expiry`]: the sweeper that deletes expired records (audited) and
//!   idempotency entries from the embedded store.
//! - [`telemetry`]: JSON logs and Prometheus metrics.
//! - [`clock`]: injectable time.
//! - [`memory`]: giving memory back to the system when the server goes
//!   quiet.
//! - `freed` (unit tests only): an allocator that finds secrets left in
//!   freed memory.

pub mod app;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod doctor;
pub mod expiry;
pub mod http;
pub mod loadgen;
pub mod memory;
pub mod redact;
pub mod rewrap;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod vault;

#[cfg(test)]
mod freed;
