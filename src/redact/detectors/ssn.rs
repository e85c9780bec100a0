//! US Social Security numbers.

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, context_before, digits, number_stands_alone, push};

/// Dashed `123-45-6789`, or spaced `123 45 6789` and bare `123456789`
/// right after a word that says what they are (`ssn: 123456789`).
pub const DETECTOR: Detector = Detector {
    kind: Kind::Ssn,
    pattern: r"[0-9]{3}-[0-9]{2}-[0-9]{4}|(?i:ssn|social security(?: number)?|ss#)[^0-9A-Za-z
]{1,4}[0-9]{3} ?[0-9]{2} ?[0-9]{4}",
    validate,
    anchor: Anchor::Digits(after_context),
};

/// The pattern's context words.
const CONTEXT: &[&[u8]] = &[
    b"social security number",
    b"social security",
    b"ssn",
    b"ss#",
];

/// The bytes a context word ends in, either case: the byte before a digit
/// run rarely is one, and then no word is compared.
const ENDS_A_WORD: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < CONTEXT.len() {
        let last = CONTEXT[i][CONTEXT[i].len() - 1];
        t[last.to_ascii_lowercase() as usize] = true;
        t[last.to_ascii_uppercase() as usize] = true;
        i += 1;
    }
    t
};

/// A spaced or unbroken SSN (nine digits or more in the run) after its
/// context word and one to four bytes that are neither letters, digits nor
/// line breaks: the match starts at the word. Each split of those bytes is
/// tried, as `ss#`'s `#` may be one of them.
fn after_context(text: &[u8], run: Range<usize>, digits: usize) -> Option<usize> {
    if digits < 9 {
        return None;
    }
    let mut q = run.start;
    while q > 1 && run.start - q < 4 && !text[q - 1].is_ascii_alphanumeric() && text[q - 1] != b'\n'
    {
        q -= 1;
        if ENDS_A_WORD[usize::from(text[q - 1])]
            && let Some(w) = CONTEXT
                .iter()
                .find(|w| q >= w.len() && text[q - w.len()..q].eq_ignore_ascii_case(w))
        {
            return Some(q - w.len());
        }
    }
    None
}

/// Also called by the digit-run scan with dashed candidates.
pub fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    // The keyword form (`ssn: 123456789`): the number is the match's tail.
    let m = if text[m.start].is_ascii_alphabetic() {
        let s = &text[m.clone()];
        let tail = s
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_digit() || **b == b' ')
            .count();
        let lead = s[s.len() - tail..]
            .iter()
            .take_while(|&&b| b == b' ')
            .count();
        m.end - tail + lead..m.end
    } else {
        m
    };
    if !number_stands_alone(text, &m) {
        return;
    }
    let d = digits(text, &m);
    if d.len() != 9 {
        return;
    }
    let dashed = text[m.clone()].contains(&b'-');
    if !dashed && !context_before(text, m.start, 32, &["ssn", "social", "ss#", "tin"]) {
        return;
    }
    let n = |r: Range<usize>| d[r].iter().fold(0u32, |a, c| a * 10 + u32::from(c - b'0'));
    let (area, group, serial) = (n(0..3), n(3..5), n(5..9));
    // SSA rules: no area 000, 666 or 900-999; no group 00; no serial 0000.
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
        return;
    }
    push(out, Kind::Ssn, m);
}
