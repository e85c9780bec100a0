//! Card numbers, by the vault's own `Pan` rules.
//! Cards in text are found among digit runs (`numeric`) by the vault's
//! `cards_in_run`; this holds the JSON-number check, and the cards whose
//! gaps are percent-encoded spaces, which the digit runs cannot show.

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push};
use crate::vault::pan::{Pan, cards_in_run};

/// Whether a JSON number's digits are a card.
pub fn is_card_number(digits: &str) -> bool {
    digits.bytes().all(|b| b.is_ascii_digit()) && Pan::check_digits(digits.as_bytes()).is_ok()
}

/// Cards whose groups are joined by an encoded space, as a browser's
/// `encodeURIComponent` writes a card typed with spaces into a URL's query
/// (`?card=4111%201111%201111%201111`), or that follow one
/// (`?card=%204111111111111111`): to the digit scan these are runs like
/// `201111` and `204111111111111111`, no card. Found at each `%20` with a
/// digit after it; the match is read with its `%20`s as spaces, by the
/// same rules as any run.
pub const PERCENT_ENCODED: Detector = Detector {
    kind: Kind::Pan,
    pattern: r"[0-9]+(?:%20[0-9]+)*",
    validate: validate_encoded,
    anchor: Anchor::Infix(b"%20", run_start),
};

/// The longest card: 19 digits, each a group of its own behind a `%20`.
const CARD_MAX: usize = 19 + 18 * 3;

/// The span of a run whose `%20` is at `at`: from the digits right before
/// it (at most a card's), or from after it when none are, bounded by the
/// longest run worth reading (a card ending a run as long as one more).
fn run_start(text: &[u8], at: usize) -> Option<Range<usize>> {
    if !text.get(at + 3).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let before = text[at.saturating_sub(19)..at]
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let start = if before == 0 { at + 3 } else { at - before };
    Some(start..text.len().min(start + 2 * CARD_MAX))
}

/// The cards in a run of digit groups joined by `%20`: the run is read with
/// each `%20` as a space, its neighbours included (a `%20` before or after
/// it as a space too), and each card found is mapped back to its bytes.
fn validate_encoded(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let encoded_space = |i: usize| text.get(i..i + 3) == Some(b"%20");
    // Decoded bytes and, for each, where it starts in `text`.
    let mut decoded = Vec::with_capacity(m.len() + 2);
    let mut origin = Vec::with_capacity(m.len() + 3);
    if m.start > 0 {
        let before = m.start >= 3 && encoded_space(m.start - 3);
        decoded.push(if before { b' ' } else { text[m.start - 1] });
        origin.push(m.start - 1);
    }
    let first = decoded.len();
    let mut i = m.start;
    while i < m.end {
        origin.push(i);
        if encoded_space(i) {
            decoded.push(b' ');
            i += 3;
        } else {
            decoded.push(text[i]);
            i += 1;
        }
    }
    let last = decoded.len();
    origin.push(m.end);
    if m.end < text.len() {
        decoded.push(if encoded_space(m.end) {
            b' '
        } else {
            text[m.end]
        });
    }
    let mut cards = Vec::new();
    cards_in_run(&decoded, first..last, &mut cards);
    for c in cards {
        push(out, Kind::Pan, origin[c.start]..origin[c.end]);
    }
}
