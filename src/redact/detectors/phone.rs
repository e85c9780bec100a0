//! Phone numbers: international (`+` and a country code) and North
//! American (NANP) forms.

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, alnum, digits, number_stands_alone, push};

/// North American forms (`(916) 333-7189`, `685-821-8949`,
/// `415.555.0100`, `1-800-555-0100`) are found among digit runs
/// (`numeric`), which hand them to [`validate_nanp`]; bare ten-digit ids
/// are left alone.
///
/// `+44 20 8990 8286`, `+1-318-550-9128`, `+14155550100`, `+49 (0)30 1234567`.
pub const INTERNATIONAL: Detector = Detector {
    kind: Kind::Phone,
    pattern: r"\+[1-9][0-9]*(?:[ .\-]?\([0-9]+\)|[ .\-][0-9]+)*",
    validate: validate_international,
    anchor: Anchor::Plus,
};

fn balanced(s: &[u8]) -> bool {
    s.iter().filter(|&&b| b == b'(').count() == s.iter().filter(|&&b| b == b')').count()
}

/// E.164 allows at most 15 digits: trailing groups beyond that (a year, an
/// amount) are given back; fewer than 8 is no phone number.
fn validate_international(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let before = m.start.checked_sub(1).and_then(|i| text.get(i));
    if alnum(before) {
        return;
    }
    let mut end = m.end;
    loop {
        let r = m.start..end;
        let n = digits(text, &r).len();
        if n <= 15 {
            if n >= 8 && !alnum(text.get(end)) && balanced(&text[r.clone()]) {
                push(out, Kind::Phone, r);
            }
            return;
        }
        match text[m.start..end]
            .iter()
            .rposition(|&b| matches!(b, b' ' | b'.' | b'-' | b'('))
        {
            Some(i) if i > 1 => end = m.start + i,
            _ => return,
        }
    }
}

pub fn validate_nanp(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    if number_stands_alone(text, &m) && balanced(&text[m.clone()]) {
        push(out, Kind::Phone, m);
    }
}
