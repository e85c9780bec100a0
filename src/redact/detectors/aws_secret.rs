//! AWS secret access keys: 40 base64 characters.
//!
//! Forty characters is also a git commit id or a SHA-1, which logs are full
//! of, and a counted 40-character class in the shared regex makes its
//! automaton blow up. So the shared pass looks only for the named form
//! (`aws_secret_access_key=…`, `"SecretAccessKey": "…"`); a bare secret is
//! found beside its access key id (see [`after_key_id`]), where secrets
//! travel.

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push, value_start_in};

/// The names the pattern reads: `aws_secret_access_key`, `SecretAccessKey`.
macro_rules! name {
    () => {
        r#"(?i)(?:aws_?secret_?(?:access_?)?key|secret_?access_?key)"#
    };
}

/// The key's base64 (its length is checked by [`validate`]).
macro_rules! value {
    () => {
        r#"[A-Za-z0-9/+]+=*"#
    };
}

const NAMES: &[&str] = &["awssecretkey", "awssecretaccesskey", "secretaccesskey"];

pub const DETECTOR: Detector = Detector {
    kind: Kind::AwsSecret,
    pattern: concat!(name!(), name_end!(), "[:=]", value_open!(), value!()),
    validate: validate::<false>,
    anchor: Anchor::Key(NAMES),
};

/// `<SecretAccessKey>…</SecretAccessKey>`: AWS's XML answers (STS
/// `AssumeRole`, IAM `CreateAccessKey`), as SDKs' debug logs print them.
pub const ELEMENT: Detector = Detector {
    kind: Kind::AwsSecret,
    pattern: concat!(name!(), element_open!(), cdata!(), value!()),
    validate: validate::<true>,
    anchor: Anchor::Element(NAMES),
};

/// How far after an access key id a bare secret is looked for.
const LOOKAHEAD: usize = 256;

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'/' || b == b'+'
}

fn validate<const ELEMENT: bool>(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    let Some(start) = value_start_in::<ELEMENT>(s) else {
        return;
    };
    if s.len() - start >= 16 {
        push(out, Kind::AwsSecret, m.start + start..m.end);
    }
}

/// A standalone run of exactly 40 base64 characters, with upper case,
/// lower case and digits, on the same line within 256 bytes after `from`.
pub fn after_key_id(text: &[u8], from: usize, out: &mut Vec<Finding>) {
    let end = (from + LOOKAHEAD).min(text.len());
    let window = &text[from..end];
    let window = &window[..window
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(window.len())];
    let mut i = 0;
    while i < window.len() {
        if !is_b64(window[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < window.len() && is_b64(window[i]) {
            i += 1;
        }
        let run = &window[start..i];
        let padded = window.get(i) == Some(&b'=');
        let mixed = run.iter().any(u8::is_ascii_uppercase)
            && run.iter().any(u8::is_ascii_lowercase)
            && run.iter().any(u8::is_ascii_digit);
        if run.len() == 40 && !padded && mixed {
            push(out, Kind::AwsSecret, from + start..from + i);
        }
    }
}
