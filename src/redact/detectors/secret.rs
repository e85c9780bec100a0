//! `password=`-style secrets and opaque bearer tokens: the key name is the
//! evidence, the value is what gets replaced.

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push, value_start};

/// `password=…`, `DB_PASSWORD=…`, `"api_key": "…"`, `client_secret: "two
/// words"`: the name may follow a word boundary or an underscore; a quoted
/// value runs to its closing quote.
pub const DETECTOR: Detector = Detector {
    kind: Kind::Secret,
    pattern: r#"(?i)(?:\b|_)(?:password|passwd|pwd|passphrase|secret|client_secret|api_key|apikey|api-key|access_token|refresh_token|auth_token|private_key|secret_key)"?[ \t]{0,3}[:=][ \t]{0,3}(?:"[^"\n]+"|[^\s"',;&}\]]+)"#,
    validate: validate_pair,
    anchor: Anchor::Key(&[
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "clientsecret",
        "apikey",
        "accesstoken",
        "refreshtoken",
        "authtoken",
        "privatekey",
        "secretkey",
    ]),
};

/// `Bearer <opaque token>` (a JWT after `Bearer` is reported as a JWT).
pub const BEARER: Detector = Detector {
    kind: Kind::Secret,
    pattern: r"(?i)\bbearer[ \t]+[A-Za-z0-9._~+/\-]+=*",
    validate: validate_bearer,
    anchor: Anchor::Literal,
};

fn validate_pair(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    let Some(start) = value_start(s) else {
        return;
    };
    let end = if s.ends_with(b"\"") && s[start - 1] == b'"' {
        s.len() - 1
    } else {
        s.len()
    };
    if start >= end {
        return;
    }
    let value = &s[start..end];
    let lower: Vec<u8> = value.iter().map(u8::to_ascii_lowercase).collect();
    let skip = is_token(value)
        || value.starts_with(b"***")
        || value.starts_with(b"[REDACTED")
        || matches!(
            &lower[..],
            b"null" | b"true" | b"false" | b"none" | b"redacted"
        );
    if !skip {
        push(out, Kind::Secret, m.start + start..m.start + end);
    }
}

fn validate_bearer(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    let start = 6 + s[6..]
        .iter()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    let value = &s[start..];
    if value.len() < 16 || is_token(value) {
        return;
    }
    let kind = if value.starts_with(b"eyJ") {
        Kind::Jwt
    } else {
        Kind::Secret
    };
    push(out, kind, m.start + start..m.end);
}

/// A vault token as a value is not a secret (it is what replaced one).
fn is_token(v: &[u8]) -> bool {
    std::str::from_utf8(v).is_ok_and(|t| crate::vault::token::Token::parse(t).is_ok())
}
