//! JSON Web Tokens: three base64url segments, the first two JSON objects
//! (so they start `eyJ`), the signature possibly empty (`alg: none`).

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push};

pub const DETECTOR: Detector = Detector {
    kind: Kind::Jwt,
    pattern: r"eyJ[A-Za-z0-9_\-]{2,}\.eyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*",
    validate,
    anchor: Anchor::Literal,
};

fn b64url(b: Option<&u8>) -> bool {
    b.is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let before = m.start.checked_sub(1).and_then(|i| text.get(i));
    if !b64url(before) {
        push(out, Kind::Jwt, m);
    }
}
