//! Card numbers, by the vault's own `Pan` rules.
//! Cards in text are found among digit runs (`numeric`) by the vault's
//! `cards_in_run`; this holds the JSON-number check, and the cards whose
//! gaps are percent-encoded spaces, which the digit runs cannot show.

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push};
use crate::vault::pan::{Pan, card_gap, cards_in_run};

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
    pattern: r"[0-9]+(?:(?:%20|[ +.\-\t]|\xC2\xA0){1,3}[0-9]+)*",
    validate: validate_encoded,
    // A match is its whole run, uncut, and every window of it is looked
    // at: the escapes inside it need no look of their own, so a line of
    // `1%20` is read once, not once per escape.
    anchor: Anchor::Infix(b"%", run_start, Some(0)),
};

/// Whether a percent escape (`%` and two hex digits) starts at `i`.
fn escape_at(text: &[u8], i: usize) -> bool {
    text.get(i) == Some(&b'%')
        && text.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
        && text.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
}

/// Where a run read at the escape at `at` starts: after the escape, or,
/// for a `%20` joining groups, at the first of the groups before it that
/// are joined by gaps a card may have (`4111 1111%201111…`,
/// `4111%20%201111…`): where the digit scan starts the same run, so the
/// two read it alike and find no cards overlapping each other's. Never
/// before `from`, the end of the last match (its run was read whole), so
/// no byte is walked back over twice. The span runs to the end of the
/// text: the regex stops where the run does, so a card is never cut off.
fn run_start(text: &[u8], at: usize, from: usize) -> Option<Range<usize>> {
    if !escape_at(text, at) || !text.get(at + 3).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let mut start = at + 3;
    if &text[at..at + 3] == b"%20" {
        // `gap`: where the gap before the next group read starts; `tokens`:
        // how many of its one to three parts are behind.
        let (mut gap, mut tokens) = (at, 1);
        loop {
            let d = group_before(text, gap);
            if d > 0 {
                let s = gap - d;
                if s < from {
                    break;
                }
                (start, gap, tokens) = (s, s, 0);
            }
            if tokens == 3 {
                break;
            }
            if gap >= 3 && &text[gap - 3..gap] == b"%20" {
                gap -= 3;
            } else if gap >= 1 && matches!(text[gap - 1], b' ' | b'+' | b'.' | b'-' | b'\t') {
                gap -= 1;
            } else if gap >= 2 && &text[gap - 2..gap] == b"\xc2\xa0" {
                gap -= 2;
            } else {
                break;
            }
            tokens += 1;
        }
    }
    Some(start..text.len())
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

/// The byte an escape at `i` stands for, or the byte at `i` when none
/// starts there: what a run's neighbour is read as.
fn decoded_at(text: &[u8], i: usize) -> u8 {
    if escape_at(text, i) {
        let hex = |b: u8| (b as char).to_digit(16).expect("a hex digit") as u8;
        hex(text[i + 1]) << 4 | hex(text[i + 2])
    } else {
        text[i]
    }
}

/// The cards in a run of digit groups joined by `%20`s (or the gaps any
/// card may have): the run is read with each `%20` as a space and the
/// escapes beside it decoded (`%41`, an `A`, glues as a letter would), cut
/// where a gap is none a card may have (`..`, ` -`), and each card found is
/// mapped back to its bytes.
fn validate_encoded(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let encoded_space = |i: usize| text.get(i..i + 3) == Some(b"%20");
    // Decoded bytes and, for each, where it starts in `text`.
    let mut decoded = Vec::with_capacity(m.len() + 2);
    let mut origin = Vec::with_capacity(m.len() + 3);
    if m.start > 0 {
        let escaped = m.start >= 3 && escape_at(text, m.start - 3);
        let at = if escaped { m.start - 3 } else { m.start - 1 };
        decoded.push(decoded_at(text, at));
        origin.push(at);
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
        decoded.push(decoded_at(text, m.end));
    }
    let mut cards = Vec::new();
    let mut piece = first;
    let mut i = first;
    while i < last {
        if decoded[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let gap = i;
        while !decoded[i].is_ascii_digit() {
            i += 1;
        }
        if !card_gap(&decoded[gap..i]) {
            cards_in_run(&decoded, piece..gap, &mut cards);
            piece = i;
        }
    }
    cards_in_run(&decoded, piece..last, &mut cards);
    for c in cards {
        push(out, Kind::Pan, origin[c.start]..origin[c.end]);
    }
}
