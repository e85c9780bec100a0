//! Command-line flags whose next word is a secret (`docker login
//! --password …`, `vault login --token …`, `--db-password '…'`), as CI
//! jobs and process listings print commands. `--password=…` is a pair
//! and read as one ([`super::secret::DETECTOR`]).

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push};

/// A flag whose name ends in a secret's name, then spaces and its value:
/// quoted, or a bare word that does not start with `-` (the next flag:
/// `--password --verbose` holds none).
pub const DETECTOR: Detector = Detector {
    kind: Kind::Secret,
    pattern: r#"--(?i:(?:[a-z0-9]+[-_])*(?:password|passwd|passphrase|secret|api[-_]?key|secret[-_]?key|token))[ \t]+(?:"[^"\n]+"|'[^'\n]+'|[^\s"'\-][^\s"']*)"#,
    validate,
    anchor: Anchor::Infix(b"--", flag_start, None),
};

/// The longest match searched for, so that a line of flags costs linear
/// time. A value running past it is masked up to it; no secret is that
/// long.
const FLAG_MAX: usize = 1024;

/// The span of a match at the `--` at `at`, if it starts a flag: at the
/// start of the text or after a space, a tab or a quote, with a letter
/// after it (`git log -- path`, `----` and `a--b` are no flags).
fn flag_start(text: &[u8], at: usize, _from: usize) -> Option<Range<usize>> {
    let starts = at == 0 || matches!(text[at - 1], b' ' | b'\t' | b'"' | b'\'');
    (starts && text.get(at + 2).is_some_and(u8::is_ascii_alphabetic))
        .then(|| at..text.len().min(at + FLAG_MAX))
}

/// The value: after the name's spaces, inside its quotes.
fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    let Some(gap) = s.iter().position(|&b| b == b' ' || b == b'\t') else {
        return;
    };
    let mut start = gap;
    while matches!(s.get(start), Some(b' ' | b'\t')) {
        start += 1;
    }
    let mut end = s.len();
    if matches!(s.get(start), Some(b'"' | b'\'')) && end > start + 1 {
        start += 1;
        end -= 1;
    }
    let value = &s[start..end];
    if start < end && !value.starts_with(b"***") && !value.starts_with(b"[REDACTED") {
        push(out, Kind::Secret, m.start + start..m.start + end);
    }
}
