//! International bank account numbers, by the ISO 13616 mod-97 check.

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, alnum, push};

/// Country code, two check digits, 11 to 30 more letters or digits, in
/// groups of four with optional spaces.
pub const DETECTOR: Detector = Detector {
    kind: Kind::Iban,
    pattern: r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?",
    validate,
    anchor: Anchor::Digits(at_run),
};

/// Takes the longest prefix (by whole groups) that passes mod 97, so a
/// following word in capitals is not swallowed.
/// An IBAN's check digits start a digit run right after two capitals
/// that start a word.
fn at_run(text: &[u8], run: Range<usize>, _digits: usize) -> Option<usize> {
    let s = run.start.checked_sub(2)?;
    let word_start = s == 0 || !text[s - 1].is_ascii_alphanumeric();
    (word_start && text[s].is_ascii_uppercase() && text[s + 1].is_ascii_uppercase()).then_some(s)
}

fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let before = m.start.checked_sub(1).and_then(|i| text.get(i));
    if alnum(before) {
        return;
    }
    let mut end = m.end;
    loop {
        let r = m.start..end;
        if !alnum(text.get(end)) && mod97_valid(&text[r.clone()]) {
            push(out, Kind::Iban, r);
            return;
        }
        // Drop the last group (and the space before it).
        match text[m.start..end].iter().rposition(|&b| b == b' ') {
            Some(i) if i > 4 => end = m.start + i,
            _ => return,
        }
    }
}

/// ISO 13616: move the first four characters to the end, letters to
/// numbers (A = 10), and the remainder mod 97 must be 1.
pub fn mod97_valid(s: &[u8]) -> bool {
    let chars: Vec<u8> = s.iter().copied().filter(|&b| b != b' ').collect();
    if !(15..=34).contains(&chars.len()) {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}
