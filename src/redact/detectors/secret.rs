//! `password=`-style secrets and opaque bearer tokens: the key name is the
//! evidence, the value is what gets replaced.

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push, value_start};

/// `password=…`, `DB_PASSWORD=…`, `"api_key": "…"`, `client_secret: "two
/// words"`, `accessToken=…`, `{'pwd': '…'}`, `"password" => "…"`: any name
/// that ends in a key name, its words joined by `_`, `-` or nothing, as
/// the anchor reads names; a quoted value runs to its closing quote.
pub const DETECTOR: Detector = Detector {
    kind: Kind::Secret,
    pattern: r#"(?i)(?:password|passwd|pwd|passphrase|secret|client[_-]?secret|api[_-]?key|access[_-]?token|refresh[_-]?token|auth[_-]?token|private[_-]?key|secret[_-]?key)["']?[ \t]{0,3}(?:=>|[:=])[ \t]{0,3}(?:"[^"\n]+"|'[^'\n]+'|[^\s"',;&}\]]+)"#,
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
    let quoted = |q: u8| s.ends_with(&[q]) && s[start - 1] == q;
    let end = if quoted(b'"') || quoted(b'\'') {
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
