//! `password=`-style secrets and opaque bearer tokens: the key name is the
//! evidence, the value is what gets replaced.

use std::ops::Range;

use super::{Detector, Finding, Kind, push};

/// `password=…`, `"api_key": "…"`, `client_secret: …`.
pub const DETECTOR: Detector = Detector {
    kind: Kind::Secret,
    pattern: r#"(?i)\b(?:password|passwd|pwd|passphrase|secret|client_secret|api_key|apikey|api-key|access_token|refresh_token|auth_token|private_key|secret_key)"?\s{0,3}[:=]\s{0,3}"?[^\s"',;&}\]]+"#,
    validate: validate_pair,
    splits: false,
};

/// `Bearer <opaque token>` (a JWT after `Bearer` is reported as a JWT).
pub const BEARER: Detector = Detector {
    kind: Kind::Secret,
    pattern: r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]+=*",
    validate: validate_bearer,
    splits: false,
};

fn validate_pair(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    let Some(sep) = s.iter().position(|&b| b == b'=' || b == b':') else {
        return;
    };
    let mut start = sep + 1;
    while start < s.len() && matches!(s[start], b' ' | b'\t' | b'"') {
        start += 1;
    }
    let value = &s[start..];
    let lower: Vec<u8> = value.iter().map(u8::to_ascii_lowercase).collect();
    let skip = value.is_empty()
        || value.starts_with(b"tok_")
        || value.starts_with(b"***")
        || value.starts_with(b"[REDACTED")
        || matches!(
            &lower[..],
            b"null" | b"true" | b"false" | b"none" | b"redacted"
        );
    if !skip {
        push(out, Kind::Secret, m.start + start..m.end);
    }
}

fn validate_bearer(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    let start = 6 + s[6..]
        .iter()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    let value = &s[start..];
    if value.len() < 16 || value.starts_with(b"tok_") {
        return;
    }
    let kind = if value.starts_with(b"eyJ") {
        Kind::Jwt
    } else {
        Kind::Secret
    };
    push(out, kind, m.start + start..m.end);
}
