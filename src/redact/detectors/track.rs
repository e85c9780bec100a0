//! Magnetic-stripe track data (ISO/IEC 7813) and EMV's track 2
//! equivalent, which a card reader's or terminal's debug log can hold
//! whole. PCI DSS 3.3.1 forbids keeping any track after authorization.
//!
//! The digit scan alone saw too little: in track 1 (`%B4111…^DOE/J^2512…?`)
//! the card is glued to the format code `B` and was left whole, and in
//! track 2 (`;4111…=2512101…?`) only the card was masked, its expiry,
//! service code and discretionary data (which carries the PIN
//! verification value and the stripe's own security code) kept. Now the
//! card is a `pan` finding and the rest of the track a `secret` one.

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push};
use crate::vault::pan::Pan;

/// Track 1: start sentinel, format code `B`, the card, `^`, the name (26
/// bytes by the standard, up to 64 taken), `^`, then expiry, service code
/// and discretionary data up to the end sentinel (a track holds at most 79
/// characters), or up to whitespace or a quote where a log cut the
/// sentinel off. A track cut short after its card's `^`, or written
/// without its format code, still has its card found. Track 2: start
/// sentinel, the card, the separator (`=` on the stripe, `D` in EMV's
/// track 2 equivalent, tag 57), at least expiry and service code,
/// discretionary data, EMV's `F` pad, the end sentinel. One pattern and
/// one trigger for both: each digit run costs one look, not two.
pub const DETECTOR: Detector = Detector {
    kind: Kind::Pan,
    pattern: r#"(?i)(?:%?B)?[0-9]{12,19}\^(?:[^\^\n]{0,64}\^[^?\s"']{0,79}\??)?|;?[0-9]{12,19}[=D][0-9]{7,}F?\??"#,
    validate,
    anchor: Anchor::Digits(track_start),
};

/// Where a track's card would start: the run's last unbroken digits, 12
/// to 19 of them (a run can begin with other numbers, `tag57 4111…`).
fn card_start(text: &[u8], run: &Range<usize>) -> Option<usize> {
    let digits = text[run.clone()]
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    (12..=19).contains(&digits).then(|| run.end - digits)
}

/// Where a track starts, if the run ends in its card: track 1's before
/// `^`, after `B` (and `%`) or at a word's start; track 2's before `=` or
/// `D`, after `;` or at a word's start.
fn track_start(text: &[u8], run: Range<usize>, _digits: usize) -> Option<usize> {
    let one = match text.get(run.end)? {
        b'^' => true,
        b'=' | b'D' | b'd' => false,
        _ => return None,
    };
    let card = card_start(text, &run)?;
    let before = |i: usize| i.checked_sub(1).map(|i| text[i]);
    let start = if one {
        match before(card) {
            Some(b'B' | b'b') if before(card - 1) == Some(b'%') => return Some(card - 2),
            Some(b'B' | b'b') => card - 1,
            _ => card,
        }
    } else {
        match before(card) {
            Some(b';') => return Some(card - 1),
            _ => card,
        }
    };
    (!before(start).is_some_and(|b| b.is_ascii_alphanumeric())).then_some(start)
}

/// The card (a `pan` finding, when it passes the vault's card rules) and
/// everything after it (a `secret` one); the sentinel and format code
/// before the card say nothing and are kept.
fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    let Some(from) = s.iter().position(u8::is_ascii_digit) else {
        return;
    };
    let len = s[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    if Pan::check_digits(&s[from..from + len]).is_err() {
        return;
    }
    let card_end = m.start + from + len;
    push(out, Kind::Pan, m.start + from..card_end);
    push(out, Kind::Secret, card_end..m.end);
}
