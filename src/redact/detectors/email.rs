//! Email addresses.

use std::ops::Range;

use super::{Detector, Kind};

/// Local part, `@`, dot-separated labels, a letters-only TLD.
pub const DETECTOR: Detector = Detector {
    kind: Kind::Email,
    pattern: r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}",
    validate,
};

/// RFC 5321 sizes: local part at most 64 bytes, the whole at most 254.
fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Range<usize>>) {
    let s = &text[m.clone()];
    let at = s.iter().position(|&b| b == b'@').unwrap_or(0);
    if at == 0 || at > 64 || s.len() > 254 {
        return;
    }
    out.push(m);
}
