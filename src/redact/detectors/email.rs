//! Email addresses.

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push};

/// Local part, `@`, dot-separated labels, a letters-only TLD.
pub const DETECTOR: Detector = Detector {
    kind: Kind::Email,
    pattern: r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
    validate,
    anchor: Anchor::At,
};

/// An address percent-encoded, as in a URL's query (`?to=ann%40x.io`):
/// access logs hold many. Found at each `%40`; masked whole, as an email.
pub const PERCENT_ENCODED: Detector = Detector {
    kind: Kind::Email,
    pattern: r"[A-Za-z0-9._%+\-]+%40[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
    validate: validate_encoded,
    anchor: Anchor::Infix(b"%40", local_part_start, None),
};

/// The span of an address whose `%40` is at `at`: from the start of the
/// run of local-part bytes before it, if there is one and a domain may
/// follow, to the longest an address can reach. The run stops after an
/// encoded byte no local part holds (`%3D` for `=`, `%2F` for `/`...): in
/// an encoded URL the address is only the end. A local part is at most
/// 64 characters, 192 bytes encoded: a longer run holds none.
fn local_part_start(text: &[u8], at: usize, _from: usize) -> Option<Range<usize>> {
    const LOCAL_MAX: usize = 64 * 3;
    const ADDRESS_MAX: usize = LOCAL_MAX + 3 + 254;
    let local = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-');
    let lo = at.saturating_sub(LOCAL_MAX + 1);
    let run = text[lo..at].iter().rev().take_while(|b| local(b)).count();
    let mut start = at - run;
    let mut i = start;
    while i < at {
        if text[i] == b'%' && i + 2 < at {
            let hex = std::str::from_utf8(&text[i + 1..i + 3]).ok();
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            if byte.is_some_and(|b| !local(&b) || b == b'%') {
                start = i + 3;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let domain = text.get(at + 3).is_some_and(u8::is_ascii_alphanumeric);
    let fits = at - start <= LOCAL_MAX;
    (start < at && domain && fits).then(|| start..text.len().min(start + ADDRESS_MAX))
}

fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    if let Some(at) = s.iter().position(|&b| b == b'@') {
        check(s, at, 1, m, out);
    }
}

fn validate_encoded(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    // The last `%40`: the local part may hold encoded bytes of its own.
    if let Some(at) = s.windows(3).rposition(|w| w == b"%40") {
        check(s, at, 3, m, out);
    }
}

/// RFC 5321 sizes: local part at most 64 bytes, the whole at most 254,
/// domain labels of 1 to 63 characters not starting or ending with `-`.
/// `s` is the match at `m`, its `@` (or `%40`, `sep` bytes long) at `at`.
fn check(s: &[u8], at: usize, sep: usize, m: Range<usize>, out: &mut Vec<Finding>) {
    let local = &s[..at];
    if local.is_empty() || local.len() > 64 || s.len() > 254 {
        return;
    }
    let labels_ok = s[at + sep..]
        .split(|&b| b == b'.')
        .all(|l| (1..=63).contains(&l.len()) && l[0] != b'-' && l[l.len() - 1] != b'-');
    if !labels_ok {
        return;
    }
    // `a..b@x.io` is still worth hiding; only trim a leading dot run that
    // belongs to the text before (`file...me@x.io`).
    let skip = local.iter().take_while(|&&b| b == b'.').count();
    if skip == local.len() {
        return;
    }
    push(out, Kind::Email, m.start + skip..m.end);
}
