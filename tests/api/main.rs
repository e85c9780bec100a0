//! Integration tests: the whole service over real TLS on 127.0.0.1:0, on
//! the embedded default (a real SQLite file, a local master key).

mod bad_input;
mod binary;
mod contract;
mod detokenize;
mod eval;
mod helpers;
mod ops;
mod policy;
mod redact;
mod restart;
mod tokenize;
