//! Digit runs, classified without a regex.
//!
//! Cards, dashed SSNs and North American phone numbers are all runs of
//! digit groups joined by short separators. In a regex union their
//! counters multiply the automaton's states and logs are full of digits
//! (timestamps, ids, amounts), so one byte loop finds the runs instead and
//! hands the plausible ones to the same validators the detectors use.

mod blocks;

use super::detectors::{Finding, Kind, phone, ssn};
use crate::vault::pan::{CARD_GAP_MAX, card_gap, cards_in_run, may_start_a_card};

/// Fewest digits any numeric detector needs (an SSN has 9).
const MIN_DIGITS: usize = 9;

/// Most separator bytes between two groups of a run: a card's ` - `
/// (a phone's `) ` has two). `blocks::runs` joins as many.
const GAP_MAX: usize = CARD_GAP_MAX;

fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

/// A word with the high bit set in exactly the bytes of `w` that are ASCII
/// digits. `x = b ^ 0x30` is below 10 exactly for digits; adding 0x76 to
/// its low seven bits sets bit 7 when they reach 10, and no byte carries
/// into the next, so every byte is judged on its own.
fn digit_bytes(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let x = w ^ (0x30 * ONES);
    let t = (x & (0x7f * ONES)) + (0x76 * ONES);
    !(t | x) & (0x80 * ONES)
}

/// The end of the digits that start at `from`: eight bytes at a time, as
/// a branch per digit mispredicts at the end of every short run.
fn digits_end(text: &[u8], mut from: usize) -> usize {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while from + 8 <= text.len() {
        let w = u64::from_le_bytes(text[from..from + 8].try_into().expect("8 bytes"));
        let other = !digit_bytes(w) & HIGH;
        if other != 0 {
            return from + other.trailing_zeros() as usize / 8;
        }
        from += 8;
    }
    from + text[from..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count()
}

/// Whether two capital letters come right before `i` (an IBAN's country).
fn after_capitals(text: &[u8], i: usize) -> bool {
    i >= 2 && text[i - 1].is_ascii_uppercase() && text[i - 2].is_ascii_uppercase()
}

/// The run of digit groups joined by one to [`GAP_MAX`] separator bytes
/// that starts at the digit `i`: where it ends, and how many digits it
/// has.
fn run_at(text: &[u8], i: usize) -> (usize, usize) {
    let n = text.len();
    let mut j = i;
    let mut digits = 0;
    loop {
        let start = j;
        j = digits_end(text, j);
        digits += j - start;
        let mut k = j;
        while k < n && k - j < GAP_MAX && is_sep(text[k]) {
            k += 1;
        }
        if k == j || k >= n || !is_digit(text[k]) {
            return (j, digits);
        }
        j = k;
    }
}

/// The first digit at or after `from`: eight bytes at a time, as most
/// bytes of a log are not digits.
fn next_digit(text: &[u8], mut from: usize) -> Option<usize> {
    while from + 8 <= text.len() {
        let w = u64::from_le_bytes(text[from..from + 8].try_into().expect("8 bytes"));
        let d = digit_bytes(w);
        if d != 0 {
            return Some(from + d.trailing_zeros() as usize / 8);
        }
        from += 8;
    }
    text[from..]
        .iter()
        .position(u8::is_ascii_digit)
        .map(|p| from + p)
}

/// The bytes that may join digit groups into a run: those of
/// [`card_gap`] (a no-break space is two of them), and the parentheses of
/// a phone's area code.
fn is_sep(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'-' | b'.' | b'(' | b')' | b'\t' | b'+' | 0xc2 | 0xa0
    )
}

/// One maximal digit sequence inside a run.
#[derive(Clone, Copy, Debug)]
struct Group {
    start: usize,
    end: usize,
}

impl Group {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// Appends the numeric findings of `text` for the enabled kinds, and
/// calls `on_run` for the detectors anchored on digits with every digit
/// run (its range and digit count) that could end one (nine digits or
/// more: an SSN) or start one (right after two capitals: an IBAN's check
/// digits). Most runs are neither, and a call per run was a tenth of a
/// scan.
pub fn scan(
    text: &[u8],
    pan: bool,
    ssn: bool,
    phone: bool,
    out: &mut Vec<Finding>,
    mut on_run: impl FnMut(std::ops::Range<usize>, usize, &mut Vec<Finding>),
) {
    // Reused across runs; no cap, so a card after many groups is found.
    let mut groups: Vec<Group> = Vec::new();
    let mut i = 0;
    let mut candidates = blocks::Candidates::new(text);
    while let Some(at) = candidates.next(i) {
        i = at;
        let (j, digits) = run_at(text, i);
        if digits >= MIN_DIGITS {
            groups.clear();
            let mut g = i;
            while g < j {
                let start = g;
                while g < j && is_digit(text[g]) {
                    g += 1;
                }
                groups.push(Group { start, end: g });
                while g < j && !is_digit(text[g]) {
                    g += 1;
                }
            }
            classify(text, &groups, pan, ssn, phone, out);
        }
        if digits >= MIN_DIGITS || after_capitals(text, i) {
            on_run(i..j, digits, out);
        }
        i = j;
    }
}

fn classify(
    text: &[u8],
    groups: &[Group],
    pan: bool,
    ssn: bool,
    phone: bool,
    out: &mut Vec<Finding>,
) {
    if pan {
        cards(text, groups, out);
    }
    for w in 0..groups.len() {
        if ssn && w + 3 <= groups.len() {
            let [a, b, c] = [groups[w], groups[w + 1], groups[w + 2]];
            if (a.len(), b.len(), c.len()) == (3, 2, 4)
                && &text[a.end..b.start] == b"-"
                && &text[b.end..c.start] == b"-"
            {
                ssn::validate(text, a.start..c.end, out);
            }
        }
        if phone {
            nanp(text, groups, w, out);
        }
    }
}

/// Cards: the stretches of the run whose groups are joined by gaps a
/// card may be written with, given to the vault's own card finder.
fn cards(text: &[u8], groups: &[Group], out: &mut Vec<Finding>) {
    let mut from = 0;
    for k in 0..groups.len() {
        let joined = k + 1 < groups.len() && card_gap(&text[groups[k].end..groups[k + 1].start]);
        if !joined {
            let seg = groups[from].start..groups[k].end;
            let digits: usize = groups[from..=k].iter().map(Group::len).sum();
            // Without a space-like gap the stretch is one piece, taken
            // whole: over 19 digits (a ledger number, a long id) it holds
            // no card.
            let spaced = groups[from..k]
                .iter()
                .any(|g| !matches!(text[g.end], b'-' | b'.'));
            // A stretch in one piece is a card whole or not at all, so its
            // first digit alone can rule it out; but for a group long
            // enough to be a card alone, dashed to a date or an expiry
            // (`cards_in_run`'s lone groups).
            let lone = k > from
                && groups[from..=k]
                    .iter()
                    .any(|g| (13..=19).contains(&g.len()));
            let whole = digits <= 19 && may_start_a_card(text[seg.start]);
            if digits >= 12 && (spaced || lone || whole) {
                let mut found = Vec::new();
                cards_in_run(text, seg, &mut found);
                out.extend(found.into_iter().map(|range| Finding {
                    kind: Kind::Pan,
                    range,
                }));
            }
            from = k + 1;
        }
    }
}

/// `[1 ]area exchange line` starting at group `w`: area in parentheses or
/// not, area and exchange from 2-9, a single separator before the line.
fn nanp(text: &[u8], groups: &[Group], w: usize, out: &mut Vec<Finding>) {
    let mut a = w;
    let mut start = groups[w].start;
    if groups[w].len() == 1 && text[groups[w].start] == b'1' {
        let sep = &text[groups[w].end..groups.get(w + 1).map_or(groups[w].end, |g| g.start)];
        if !matches!(sep, b" " | b"-" | b"." | b" (") {
            return;
        }
        a = w + 1;
    }
    if a + 3 > groups.len() {
        return;
    }
    let (area, exch, line) = (groups[a], groups[a + 1], groups[a + 2]);
    let lead = |g: Group| (b'2'..=b'9').contains(&text[g.start]);
    if (area.len(), exch.len(), line.len()) != (3, 3, 4) || !lead(area) || !lead(exch) {
        return;
    }
    let mid = &text[area.end..exch.start];
    let last = &text[exch.end..line.start];
    let paren = area.start > 0 && text[area.start - 1] == b'(';
    let mid_ok = if paren {
        matches!(mid, b")" | b") " | b")-")
    } else {
        matches!(mid, b" " | b"-" | b".")
    };
    if !mid_ok || !matches!(last, b" " | b"-" | b".") {
        return;
    }
    if a == w && paren {
        start = area.start - 1;
    }
    phone::validate_nanp(text, start..line.end, out);
}

/// The ranges a scan of `text` finds, for tests.
#[cfg(test)]
fn found(text: &str) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    scan(text.as_bytes(), true, true, true, &mut out, |_, _, _| {});
    out.into_iter()
        .map(|f: Finding| (f.kind, text[f.range].to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_classified() {
        assert_eq!(
            found("c 4111 1111 1111 1111 2026"),
            [(Kind::Pan, "4111 1111 1111 1111".into())]
        );
        assert_eq!(found("s 078-05-1120."), [(Kind::Ssn, "078-05-1120".into())]);
        assert_eq!(
            found("t (212) 555-0199,"),
            [(Kind::Phone, "(212) 555-0199".into())]
        );
        assert_eq!(
            found("t 1-800-555-0199"),
            [(Kind::Phone, "1-800-555-0199".into())]
        );
        assert_eq!(
            found("t 212.555.0199"),
            [(Kind::Phone, "212.555.0199".into())]
        );
        assert!(found("ts=1701541583094 id 4155550100 d 2026-11-28 v1.2.3").is_empty());
        // Unspaced stretches are judged by their first digit first: both
        // ends of the range of digits a card starts with.
        assert_eq!(
            found("id=2221000000000009;"),
            [(Kind::Pan, "2221000000000009".into())]
        );
        assert_eq!(
            found("d 6011-1111-1111-1117."),
            [(Kind::Pan, "6011-1111-1111-1117".into())]
        );
        assert!(found("o 7011-1111-1111-1117;").is_empty());
        assert_eq!(
            found("note 4111 - 1111 - 1111 - 1111 - 2026"),
            [(Kind::Pan, "4111 - 1111 - 1111 - 1111".into())]
        );
        assert!(found("4111 -- 1111 -- 1111 -- 1111").is_empty());
        let long = format!("{} 4111 1111 1111 1111", "7 ".repeat(40).trim_end());
        assert_eq!(found(&long), [(Kind::Pan, "4111 1111 1111 1111".into())]);
    }

    #[test]
    fn digit_bytes_is_exact_per_byte() {
        // Every byte value, beside every other, in every position.
        for b in 0..=255u8 {
            for other in [0u8, b'0', b'9', b'/', b':', 0x80, 0xb0, 0xff] {
                for pos in 0..8 {
                    let mut w = [other; 8];
                    w[pos] = b;
                    let want = w
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.is_ascii_digit())
                        .fold(0u64, |m, (i, _)| m | 0x80 << (8 * i));
                    assert_eq!(digit_bytes(u64::from_le_bytes(w)), want, "{b} at {pos}");
                }
            }
        }
        assert_eq!(next_digit(b"abcdefghijk7", 0), Some(11));
        assert_eq!(next_digit(b"abcdefgh", 0), None);
        assert_eq!(next_digit(b"a1", 1), Some(1));
        assert_eq!(digits_end(b"123456789012x", 0), 12);
        assert_eq!(digits_end(b"12345678", 0), 8);
        assert_eq!(digits_end(b"1a", 0), 1);
    }

    #[test]
    fn ranges_do_not_leak_outside_the_text() {
        assert!(found("9").is_empty());
        assert!(found("123456789012").is_empty());
    }
}
