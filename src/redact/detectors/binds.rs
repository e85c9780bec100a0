//! SQL bind lists as Rails' ActiveRecord logs them after a statement:
//! `UPDATE "users" SET "encrypted_password" = $1 …  [["encrypted_password",
//! "$2a$12$…"], ["updated_at", "2024-01-01"]]`. A name is no key there (no
//! `:` or `=`), so a secret's value stood in the clear; each bind whose
//! name ends in a secret's name has its value masked.

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push, secret};

/// The longest bind list read, past which its binds are not looked at: a
/// statement's binds, not a bulk insert's.
const LIST_MAX: usize = 4096;

/// The start of a list of binds (`[["name", `), which the validator reads
/// on by hand: a pattern to the list's end (its `]]`) read the rest of the
/// line from each `[[` in it, quadratic. Found on the pass of credentials
/// known by their own prefix, whose prefilter holds `[["`.
pub const DETECTOR: Detector = Detector {
    kind: Kind::Secret,
    pattern: r#"\[\["[A-Za-z0-9_.]+", "#,
    validate,
    anchor: Anchor::Own,
};

/// Each bind `["name", value]` in order, from the list's start at
/// `m.start`, within `LIST_MAX` bytes and its line: a value quoted (JSON's
/// escapes read) or bare up to its `]`; a secret's value is masked inside
/// its quotes, unless it stands in for one (`[FILTERED]`, `null`). Where
/// the list stops reading as binds, the binds read so far are still
/// masked.
fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let window = &text[m.start..text.len().min(m.start + LIST_MAX)];
    let s = &window[..memchr::memchr(b'\n', window).unwrap_or(window.len())];
    let mut at = 1;
    while let Some((name, value, next)) = bind(s, at) {
        if names_secret(name) && !value.is_empty() && !secret::stands_in(&s[value.clone()]) {
            push(
                out,
                Kind::Secret,
                m.start + value.start..m.start + value.end,
            );
        }
        match next {
            Some(n) => at = n,
            None => break,
        }
    }
}

/// The bind `["name", value]` at `at`: its name, its value's range (inside
/// its quotes), and where the next bind starts (None at the list's end).
fn bind(s: &[u8], at: usize) -> Option<(&[u8], Range<usize>, Option<usize>)> {
    let rest = s.get(at..)?.strip_prefix(b"[\"")?;
    let name = &rest[..memchr::memchr(b'"', rest)?];
    let from = at + 2 + name.len() + 1;
    let rest = s[from..].strip_prefix(b", ")?;
    let from = from + 2;
    let (value, close) = if rest.first() == Some(&b'"') {
        let end = from + 1 + closing_quote(&rest[1..])?;
        (from + 1..end, end + 1)
    } else {
        let end = from + memchr::memchr(b']', rest)?;
        (from..end, end)
    };
    if s.get(close) != Some(&b']') {
        return None;
    }
    let next = match s.get(close + 1..)? {
        [b']', ..] => None,
        [b',', b' ', ..] => Some(close + 3),
        _ => return None,
    };
    Some((name, value, next))
}

/// Where a JSON string's closing quote is, its escapes read.
fn closing_quote(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Whether a bind's name ends in a secret's name (letters and digits, in
/// lower case, as the keyed pass reads names).
fn names_secret(name: &[u8]) -> bool {
    let norm: Vec<u8> = name
        .iter()
        .filter(|b| b.is_ascii_alphanumeric())
        .map(u8::to_ascii_lowercase)
        .collect();
    secret::NAMES.iter().any(|n| norm.ends_with(n.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(line: &str) -> Vec<&str> {
        let mut out = Vec::new();
        validate(line.as_bytes(), 0..3, &mut out);
        out.iter().map(|f| &line[f.range.clone()]).collect()
    }

    #[test]
    fn the_values_of_secret_binds_are_found() {
        assert_eq!(
            masked(
                r#"[["encrypted_password", "$2a$12$K3\"a9"], ["updated_at", "2024-01-01"], ["api_key", sk1], ["id", 1]]"#
            ),
            [r#"$2a$12$K3\"a9"#, "sk1"]
        );
        assert_eq!(
            masked(r#"[["password", "[FILTERED]"], ["secret", nil]]"#),
            ["nil"]
        );
        // Cut short: what was read is still masked.
        assert_eq!(masked(r#"[["password", "x"], ["data", "[[1]"#), ["x"]);
        assert_eq!(masked("[[\"password\", \"x\"], [\"pwd\", \"y\n\"]]"), ["x"]);
        let long = format!(
            r#"[["password", "x"], ["a", "{}"], ["secret", "y"]]"#,
            "b".repeat(LIST_MAX)
        );
        assert_eq!(masked(&long), ["x"]);
        assert!(masked(r#"[["email", "a@b.c"], ["LIMIT", 1]]"#).is_empty());
        assert!(masked(r#"[["password" "x"]]"#).is_empty());
    }
}
