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

/// RFC 5321 sizes: local part at most 64 bytes, the whole at most 254,
/// domain labels of 1 to 63 characters not starting or ending with `-`.
fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    let Some(at) = s.iter().position(|&b| b == b'@') else {
        return;
    };
    let local = &s[..at];
    if local.is_empty() || local.len() > 64 || s.len() > 254 {
        return;
    }
    let labels_ok = s[at + 1..]
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
