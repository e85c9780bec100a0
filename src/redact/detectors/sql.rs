//! Passwords in SQL statements, as databases log them (PostgreSQL's
//! `log_statement`, pgaudit, MySQL's general log, ORMs' debug output):
//! `ALTER ROLE app WITH PASSWORD '…'`, `CREATE USER … IDENTIFIED BY '…'`,
//! `SET PASSWORD … = PASSWORD('…')`. `PASSWORD = '…'` (SQL Server,
//! Snowflake) is a pair and read as one ([`super::secret::DETECTOR`]).

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push};

/// The keyword, then a string literal (`''` is a quote inside one), or
/// one not closed, to a `"` or the line's end (the statement cut at a
/// JSON string's end: a `Value` walk reads that string alone, a raw walk
/// of the line sees its closing `"`; both mask the same). It had run to
/// the text's end only, which a raw walk never reached.
pub const DETECTOR: Detector = Detector {
    kind: Kind::Secret,
    pattern: r#"(?i:password[ \t]*\(?|identified[ \t]+(?:with[ \t]+[a-z0-9_]+[ \t]+)?by[ \t]+)'(?:(?:[^'\n]|'')*'|[^'"\n]+)"#,
    validate,
    anchor: Anchor::Quote(literal_start),
};

/// The longest match searched for, so that a line of quotes costs linear
/// time. A literal running past it is not masked by this detector; no
/// password is that long.
const SQL_MAX: usize = 1024;

/// How far before `BY` its `IDENTIFIED` is looked for (`IDENTIFIED WITH
/// caching_sha2_password BY`).
const IDENTIFIED_REACH: usize = 64;

/// The span of a match at the quote at `at`, if a keyword opens its
/// literal: `PASSWORD` (a whole word) before it, after spaces or an
/// opening parenthesis, or `BY` after spaces with `IDENTIFIED` shortly
/// before.
fn literal_start(text: &[u8], at: usize, _from: usize) -> Option<Range<usize>> {
    let mut i = at;
    if i > 0 && text[i - 1] == b'(' {
        i -= 1;
    }
    let gap = i;
    while i > 0 && matches!(text[i - 1], b' ' | b'\t') {
        i -= 1;
    }
    if i == at {
        return None;
    }
    let end = i;
    while i > 0 && end - i <= 10 && text[i - 1].is_ascii_alphabetic() {
        i -= 1;
    }
    let word = &text[i..end];
    let whole = i == 0 || !(text[i - 1].is_ascii_alphanumeric() || text[i - 1] == b'_');
    let start = if word.eq_ignore_ascii_case(b"password") && whole {
        i
    } else if word.eq_ignore_ascii_case(b"by") && whole && gap > end {
        let from = i.saturating_sub(IDENTIFIED_REACH);
        let before: Vec<u8> = text[from..i].iter().map(u8::to_ascii_lowercase).collect();
        from + memchr::memmem::rfind(&before, b"identified")?
    } else {
        return None;
    };
    Some(start..text.len().min(at + SQL_MAX))
}

/// The literal's text, inside its quotes.
fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    let Some(open) = s.iter().position(|&b| b == b'\'') else {
        return;
    };
    let end = s.len() - usize::from(s.len() > open + 1 && s.ends_with(b"'"));
    let start = open + 1;
    if start < end && !s[start..end].starts_with(b"***") {
        push(out, Kind::Secret, m.start + start..m.start + end);
    }
}
