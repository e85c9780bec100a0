//! PEM and OpenPGP private keys. The finding runs from `-----BEGIN …
//! PRIVATE KEY-----` to its end marker, or, when the end is not in this
//! input, to the end of the input: fail closed. Line-by-line formats
//! carry the open block over to the next lines (see `format`).

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push};

/// PEM's `… PRIVATE KEY-----` and OpenPGP's armoured `… PRIVATE KEY
/// BLOCK-----`.
pub const DETECTOR: Detector = Detector {
    kind: Kind::PrivateKey,
    pattern: r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----",
    validate,
    anchor: Anchor::Literal,
};

/// What an end marker ends in, after `-----END `.
const END_TAILS: [&[u8]; 2] = [b"PRIVATE KEY-----", b"PRIVATE KEY BLOCK-----"];

fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let end = find_end(&text[m.end..]).map_or(text.len(), |e| m.end + e);
    push(out, Kind::PrivateKey, m.start..end);
}

/// The offset just past the first `-----END … PRIVATE KEY-----` in `s`.
pub fn find_end(s: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].windows(9).position(|w| w == b"-----END ") {
        let start = from + i + 9;
        // The whole end marker is on one line: a block of lines must not
        // end a key's masking at a marker split across two.
        let line_end = memchr::memchr(b'\n', &s[start..]).map_or(s.len(), |n| start + n);
        let limit = (start + 60).min(line_end);
        for tail in END_TAILS {
            if let Some(j) = s[start..limit].windows(tail.len()).position(|w| w == tail) {
                return Some(start + j + tail.len());
            }
        }
        from = start;
    }
    None
}
