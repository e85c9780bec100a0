//! Integration tests: the whole service over real TLS on 127.0.0.1:0, on
//! the embedded default (a real SQLite file, a local master key), or with
//! `TOKENVAULT_TEST_BACKEND=aws` on DynamoDB and KMS in a moto server: one
//! suite, two backends. `aws_backends` holds what only the AWS backends
//! have (KMS outages, rewrap, migrate, doctor); it always runs on moto.

mod audit_outage;
mod aws_backends;
mod bad_input;
mod binary;
mod contract;
mod deadlines;
mod detokenize;
mod emulator;
mod eval;
mod expiry;
mod helpers;
mod iam;
mod identity;
mod ops;
mod policy;
mod redact;
mod restart;
mod tokenize;
