//! IP addresses (off by default), confirmed by the standard library's
//! parsers.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, alnum, push};

pub const V4: Detector = Detector {
    kind: Kind::Ip,
    pattern: r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}",
    validate: validate_v4,
    anchor: Anchor::Own,
};

pub const V6: Detector = Detector {
    kind: Kind::Ip,
    pattern: r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]{1,40}",
    validate: validate_v6,
    anchor: Anchor::Own,
};

fn dotted(b: Option<&u8>) -> bool {
    alnum(b) || b == Some(&b'.')
}

fn validate_v4(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let before = m.start.checked_sub(1).and_then(|i| text.get(i));
    let ok = std::str::from_utf8(&text[m.clone()])
        .ok()
        .and_then(|s| s.parse::<Ipv4Addr>().ok())
        .is_some();
    if ok && !dotted(before) && !dotted(text.get(m.end)) {
        push(out, Kind::Ip, m);
    }
}

fn validate_v6(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let before = m.start.checked_sub(1).and_then(|i| text.get(i));
    let ok = std::str::from_utf8(&text[m.clone()])
        .ok()
        .and_then(|s| s.parse::<Ipv6Addr>().ok())
        .is_some();
    if ok && !alnum(before) && !alnum(text.get(m.end)) && before != Some(&b':') {
        push(out, Kind::Ip, m);
    }
}
