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

/// Cards in percent-encoded text: groups joined by an encoded space, as a
/// browser's `encodeURIComponent` writes a card typed with spaces into a
/// URL's query (`?card=4111%201111%201111%201111`), and cards right after
/// an escape (`?q=card%3D4111111111111111`, `%22card%22%3A%224111…`): to
/// the digit scan these are runs like `201111`, `224111…`, or digits glued
/// to the escape's hex letter, and no card. Found at each escape with a
/// digit after it; the match is read with its `%20`s as spaces and the
/// escapes around it as gaps, by the same rules as any run.
pub const PERCENT_ENCODED: Detector = Detector {
    kind: Kind::Pan,
    pattern: r"[0-9]+(?:(?:%20|[ +.\-]){1,2}[0-9]+)*",
    validate: validate_encoded,
    // Every window of a run was looked at by the match that held it, but
    // a card cut off at the match's end: a run of `1%20` costs a look
    // per card's length, not per escape.
    anchor: Anchor::Infix(b"%", run_start, Some(CARD_MAX)),
};

/// The longest card the pattern can match: 19 digits, each a group of its
/// own, behind gaps of two encoded spaces.
const CARD_MAX: usize = 19 + 18 * 6;

/// Whether a percent escape (`%` and two hex digits) starts at `i`.
fn escape_at(text: &[u8], i: usize) -> bool {
    text.get(i) == Some(&b'%')
        && text.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
        && text.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
}

/// The span of a run after the escape at `at`: from after the escape, or,
/// for a `%20` joining groups, from the start of the group before it and
/// the gap's other half, if any (`4111%20%201111`, `4111 %201111`),
/// bounded by the longest run worth reading (a card ending a run as long
/// as one more).
fn run_start(text: &[u8], at: usize) -> Option<Range<usize>> {
    if !escape_at(text, at) || !text.get(at + 3).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let mut start = at + 3;
    if &text[at..at + 3] == b"%20" {
        let mut gap = at;
        for half in 0..2 {
            let digits = group_before(text, gap);
            if digits > 0 {
                start = gap - digits;
                break;
            }
            if half == 1 {
                break;
            }
            if gap >= 3 && &text[gap - 3..gap] == b"%20" {
                gap -= 3;
            } else if gap >= 1 && matches!(text[gap - 1], b' ' | b'+' | b'.' | b'-') {
                gap -= 1;
            } else {
                break;
            }
        }
    }
    Some(start..text.len().min(start + 2 * CARD_MAX))
}

/// How many digits of a group end at `end` (at most a card's): not an
/// escape's own hex digits (`%224111`: `4111`; `%A41`: `1`).
fn group_before(text: &[u8], end: usize) -> usize {
    let n = text[end.saturating_sub(19)..end]
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let s = end - n;
    let escaped = if s >= 1 && escape_at(text, s - 1) {
        2
    } else if s >= 2 && escape_at(text, s - 2) {
        1
    } else {
        0
    };
    n.saturating_sub(escaped)
}

/// The cards in a run of digit groups joined by `%20`s (or the gaps any
/// card may have): the run is read with each `%20` as a space, an escape
/// right before or after it as a gap too, and each card found is mapped
/// back to its bytes.
fn validate_encoded(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let encoded_space = |i: usize| text.get(i..i + 3) == Some(b"%20");
    // Decoded bytes and, for each, where it starts in `text`.
    let mut decoded = Vec::with_capacity(m.len() + 2);
    let mut origin = Vec::with_capacity(m.len() + 3);
    if m.start > 0 {
        let escaped = m.start >= 3 && escape_at(text, m.start - 3);
        decoded.push(if escaped { b' ' } else { text[m.start - 1] });
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
        decoded.push(if escape_at(text, m.end) {
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
