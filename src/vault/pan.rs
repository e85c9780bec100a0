//! Primary account numbers, parsed once at the edge.
//!
//! A [`Pan`] can only be built by [`Pan::parse`], so any code holding one
//! knows it is 12 to 19 digits, passes Luhn and falls in a known issuer
//! range. The redactor uses the same rules through [`Pan::check_digits`].

use std::fmt;

use zeroize::Zeroizing;

/// Card brands we recognise by issuer identification number (IIN) range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Jcb,
    Diners,
    UnionPay,
    Maestro,
}

impl Brand {
    /// The lower-case name used in API answers and stored records.
    pub fn as_str(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::Discover => "discover",
            Brand::Jcb => "jcb",
            Brand::Diners => "diners",
            Brand::UnionPay => "unionpay",
            Brand::Maestro => "maestro",
        }
    }

    /// Identifies the brand of a digit string from its prefix and length.
    ///
    /// Order matters: Discover's co-branded 622126-622925 range sits inside
    /// UnionPay's 62, and Maestro's ranges overlap nothing else we accept.
    pub fn from_digits(d: &[u8]) -> Option<Brand> {
        let len = d.len();
        if !d.first().is_some_and(|&c| may_start_a_card(c)) {
            return None;
        }
        // The first six digits read once; a shorter prefix is cut from them
        // (a string shorter than six reads whole, as no card is).
        let n = len.min(6);
        let p6 = d[..n]
            .iter()
            .fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0'));
        let prefix = |k: usize| p6 / 10u32.pow((n - k.min(n)) as u32);
        let p1 = prefix(1);
        let p2 = prefix(2);
        let p3 = prefix(3);
        let p4 = prefix(4);
        let p6 = prefix(6);
        if p1 == 4 && matches!(len, 13 | 16 | 19) {
            return Some(Brand::Visa);
        }
        if ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16 {
            return Some(Brand::Mastercard);
        }
        if (p2 == 34 || p2 == 37) && len == 15 {
            return Some(Brand::Amex);
        }
        if (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622126..=622925).contains(&p6))
            && (16..=19).contains(&len)
        {
            return Some(Brand::Discover);
        }
        if (3528..=3589).contains(&p4) && (16..=19).contains(&len) {
            return Some(Brand::Jcb);
        }
        if ((300..=305).contains(&p3) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39)
            && (14..=19).contains(&len)
        {
            return Some(Brand::Diners);
        }
        if p2 == 62 && (16..=19).contains(&len) {
            return Some(Brand::UnionPay);
        }
        if (p2 == 50 || (56..=58).contains(&p2) || p2 == 63 || p2 == 67 || p2 == 69)
            && (12..=19).contains(&len)
        {
            return Some(Brand::Maestro);
        }
        None
    }
}

/// Whether a card can start with the digit `c`: no issuer's range starts
/// with 0, 1, 7, 8 or 9. Most long digit runs in logs (millisecond
/// timestamps, half of all order ids) stop here.
pub fn may_start_a_card(c: u8) -> bool {
    matches!(c, b'2'..=b'6')
}

/// Why a string is not a card number. Never carries the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PanError {
    #[error("the card number is empty")]
    Empty,
    #[error("a card number holds only digits, spaces and dashes")]
    NotDigits,
    #[error("a card number has 12 to 19 digits")]
    Length,
    #[error("the card number fails its check digit (Luhn)")]
    Luhn,
    #[error("the card number is in no known issuer range")]
    UnknownIssuer,
}

/// A validated card number. Zeroized on drop, no `Display`, and its `Debug`
/// shows only brand and last four, so it cannot leak through a log line.
pub struct Pan {
    digits: Zeroizing<Vec<u8>>,
    brand: Brand,
}

impl Pan {
    /// Strips spaces and dashes, then requires 12 to 19 digits, a valid Luhn
    /// check and a known issuer range.
    pub fn parse(input: &str) -> Result<Pan, PanError> {
        let mut digits = Zeroizing::new(Vec::with_capacity(19));
        for b in input.bytes() {
            match b {
                b'0'..=b'9' => {
                    if digits.len() == 19 {
                        return Err(PanError::Length);
                    }
                    digits.push(b)
                }
                b' ' | b'-' => {}
                _ => return Err(PanError::NotDigits),
            }
        }
        let brand = Self::check_digits(&digits)?;
        Ok(Pan { digits, brand })
    }

    /// The card rules on a bare digit string, without copying it; shared
    /// with the redactor so both agree on what a card is.
    pub fn check_digits(digits: &[u8]) -> Result<Brand, PanError> {
        if digits.is_empty() {
            return Err(PanError::Empty);
        }
        if !(12..=19).contains(&digits.len()) {
            return Err(PanError::Length);
        }
        if !luhn_valid(digits) {
            return Err(PanError::Luhn);
        }
        Brand::from_digits(digits).ok_or(PanError::UnknownIssuer)
    }

    pub fn brand(&self) -> Brand {
        self.brand
    }

    /// The last four digits, which PCI DSS allows to be shown.
    pub fn last4(&self) -> String {
        ascii(&self.digits[self.digits.len() - 4..])
    }

    /// The first six digits (the BIN), kept only for `preserving_bin` tokens.
    pub fn first6(&self) -> String {
        ascii(&self.digits[..6])
    }

    pub fn len(&self) -> usize {
        self.digits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digits.is_empty()
    }

    /// The bare digits, for sealing and fingerprinting only.
    pub fn expose_digits(&self) -> &[u8] {
        &self.digits
    }

    /// `*` for every digit but the last four, the same length as the card.
    pub fn masked(&self) -> String {
        mask_with_last4(self.digits.len(), &self.last4())
    }
}

/// The mask of a card with `len` digits whose last four are `last4`.
pub fn mask_with_last4(len: usize, last4: &str) -> String {
    let mut s = "*".repeat(len.saturating_sub(4));
    s.push_str(last4);
    s
}

fn ascii(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pan")
            .field("brand", &self.brand)
            .field("last4", &self.last4())
            .finish()
    }
}

/// The Luhn (mod 10) check over ASCII digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    luhn_sum(digits).is_multiple_of(10)
}

/// The Luhn sum, exposed so token generation can deliberately miss it.
pub fn luhn_sum(digits: &[u8]) -> u32 {
    digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &c)| {
            let d = u32::from(c - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum()
}

/// Whether `gap`, the bytes between two digit groups, may join them into
/// one card as people and programs write cards: a space or two, a tab, a
/// no-break space, a `+` (a space in a form-encoded query), a dash, a dot,
/// or a dash between spaces (`4111 - 1111 - …`, as people type a card
/// into a note). Three bytes at most: the digit scans join no longer gap.
pub fn card_gap(gap: &[u8]) -> bool {
    matches!(
        gap,
        b" " | b"  " | b"\t" | b"\xc2\xa0" | b"+" | b"-" | b"." | b" - "
    )
}

/// The most bytes a gap [`card_gap`] allows may have.
pub const CARD_GAP_MAX: usize = 3;

/// Bytes of the space-like gap at `i` (see [`card_gap`]), or 0: such gaps
/// split a run into pieces a card may start or end at.
fn spacer(text: &[u8], i: usize) -> usize {
    match text[i] {
        b' ' if text.get(i + 1..i + 3) == Some(b"- ") => 3,
        b' ' | b'\t' | b'+' => 1,
        0xc2 if text.get(i + 1) == Some(&0xa0) => 2,
        _ => 0,
    }
}

/// Finds the cards inside one run of digit groups joined by gaps
/// [`card_gap`] allows (`run` starts and ends on a digit), appending
/// their byte ranges to `out`.
///
/// A card must stand alone: its first digit may not follow a letter or
/// digit, nor its last precede one, so a card-shaped run inside a longer
/// number or an identifier is left alone. Dashes and dots bind (a dashed
/// group is taken whole, which keeps UUID-like ids intact); space-like
/// gaps split, so a card followed by a year or preceded by an amount is
/// still found. From each start, the longest valid card wins.
pub fn cards_in_run(
    text: &[u8],
    run: std::ops::Range<usize>,
    out: &mut Vec<std::ops::Range<usize>>,
) {
    let glued = |b: Option<&u8>| b.is_some_and(|c| c.is_ascii_alphanumeric());
    let left_dirty = run.start > 0 && glued(text.get(run.start - 1));
    let right_dirty = glued(text.get(run.end));
    let mut digits = [0u8; 19];
    // Most runs hold no space (ids, timestamps, dashed cards): one piece,
    // a card whole or nothing, and no list of pieces to allocate.
    if !run.clone().any(|i| spacer(text, i) > 0) {
        if left_dirty || right_dirty {
            return;
        }
        let mut k = 0;
        for &c in text[run.clone()].iter().filter(|c| c.is_ascii_digit()) {
            if k == digits.len() {
                k = 0;
                break;
            }
            digits[k] = c;
            k += 1;
        }
        if is_card(&digits[..k]) {
            out.push(run);
        } else if (k == 0 || k >= 14) && run.len() > k {
            // Over 19 digits (`k` was reset) or 14 to 19, with a
            // separator: room for a card and another group.
            lone_groups(text, run, out);
        }
        digits.iter_mut().for_each(|d| *d = 0);
        return;
    }
    // Chunks: the pieces of the run between space-like gaps, as (start,
    // end, digits). No cap: a card spans at most 19 chunks, so the search
    // below stays linear however long the run is.
    let mut chunks: Vec<(usize, usize, usize)> = Vec::new();
    let before = out.len();
    let mut i = run.start;
    while i < run.end {
        let start = i;
        let mut digits = 0;
        while i < run.end && spacer(text, i) == 0 {
            if text[i].is_ascii_digit() {
                digits += 1;
            }
            i += 1;
        }
        chunks.push((start, i, digits));
        if i == run.end {
            break;
        }
        i += spacer(text, i);
    }
    let n = chunks.len();
    let mut a = if left_dirty { 1 } else { 0 };
    let last_clean = if right_dirty { n.saturating_sub(1) } else { n };
    while a < last_clean {
        // A card starts and ends on a digit: not on the empty piece
        // between two spaces.
        if chunks[a].2 == 0 {
            a += 1;
            continue;
        }
        let mut total = 0;
        let mut best = None;
        for (b, chunk) in chunks.iter().enumerate().take(last_clean).skip(a) {
            total += chunk.2;
            if total > 19 {
                break;
            }
            if total >= 12 && chunk.2 > 0 {
                let mut k = 0;
                for &c in &text[chunks[a].0..chunk.1] {
                    if c.is_ascii_digit() {
                        digits[k] = c;
                        k += 1;
                    }
                }
                // Later ends are longer, so the last valid one is the longest.
                if is_card(&digits[..k]) {
                    best = Some(b);
                }
            }
        }
        match best {
            Some(b) => {
                out.push(chunks[a].0..chunks[b].1);
                a = b + 1;
            }
            None => a += 1,
        }
    }
    // A piece no card took may hold one dashed to a date or an expiry
    // (14 digits at least: 13 and another group's).
    for &(start, end, digits) in &chunks {
        if digits >= 14
            && !out[before..]
                .iter()
                .any(|r| r.start <= start && end <= r.end)
        {
            lone_groups(text, start..end, out);
        }
    }
    digits.iter_mut().for_each(|d| *d = 0);
}

/// A card bound by a dash or dot to a group that is not part of it, which
/// leaves the run as a whole no card: an expiry after it
/// (`4111…1111-1225`, `…-12-25`), a date or a reference before it
/// (`20241203-4111…`). A group of 13 to 19 digits between the run's
/// separators is a card on its own when it is one; shorter groups are
/// not tried alone, so dashed ids (UUIDs' groups have at most 12) stay
/// whole.
fn lone_groups(text: &[u8], run: std::ops::Range<usize>, out: &mut Vec<std::ops::Range<usize>>) {
    let mut i = run.start;
    while i < run.end {
        let start = i;
        while i < run.end && text[i].is_ascii_digit() {
            i += 1;
        }
        // Not glued to a letter or digit (where the run itself is).
        let glued = (start > 0 && text[start - 1].is_ascii_alphanumeric())
            || text.get(i).is_some_and(u8::is_ascii_alphanumeric);
        if (13..=19).contains(&(i - start))
            && i - start < run.len()
            && !glued
            && is_card(&text[start..i])
        {
            out.push(start..i);
        }
        while i < run.end && !text[i].is_ascii_digit() {
            i += 1;
        }
    }
}

/// [`Pan::check_digits`] as a yes or no, the issuer checked before the
/// Luhn sum: most long digit runs in logs (millisecond timestamps, order
/// ids) have no issuer's prefix, and its check reads six digits where the
/// sum reads them all.
pub(crate) fn is_card(digits: &[u8]) -> bool {
    (12..=19).contains(&digits.len()) && Brand::from_digits(digits).is_some() && luhn_valid(digits)
}

/// Every card in free text, by the same rules as the redactor.
pub fn find_cards(text: &str) -> Vec<std::ops::Range<usize>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i + 1;
        let mut j = i + 1;
        while j < b.len() {
            if b[j].is_ascii_digit() {
                j += 1;
                end = j;
            } else if let Some(gap) = (1..=CARD_GAP_MAX)
                .find(|&n| b.get(j + n).is_some_and(u8::is_ascii_digit) && card_gap(&b[j..j + n]))
            {
                j += gap;
            } else {
                break;
            }
        }
        cards_in_run(b, start..end, &mut out);
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules as first written, each prefix read on its own: the
    /// brand check reads six digits once and must answer as these do.
    fn brand_as_written(d: &[u8]) -> Option<Brand> {
        let len = d.len();
        let prefix = |n: usize| -> u32 {
            d.iter()
                .take(n)
                .fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0'))
        };
        let (p1, p2, p3, p4, p6) = (prefix(1), prefix(2), prefix(3), prefix(4), prefix(6));
        let (visa, mc) = (
            p1 == 4,
            (51..=55).contains(&p2) || (2221..=2720).contains(&p4),
        );
        let discover =
            p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622126..=622925).contains(&p6);
        let diners = (300..=305).contains(&p3) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39;
        let maestro = p2 == 50 || (56..=58).contains(&p2) || p2 == 63 || p2 == 67 || p2 == 69;
        match () {
            () if visa && matches!(len, 13 | 16 | 19) => Some(Brand::Visa),
            () if mc && len == 16 => Some(Brand::Mastercard),
            () if (p2 == 34 || p2 == 37) && len == 15 => Some(Brand::Amex),
            () if discover && (16..=19).contains(&len) => Some(Brand::Discover),
            () if (3528..=3589).contains(&p4) && (16..=19).contains(&len) => Some(Brand::Jcb),
            () if diners && (14..=19).contains(&len) => Some(Brand::Diners),
            () if p2 == 62 && (16..=19).contains(&len) => Some(Brand::UnionPay),
            () if maestro && (12..=19).contains(&len) => Some(Brand::Maestro),
            () => None,
        }
    }

    #[test]
    fn the_brand_check_answers_as_the_rules_were_written() {
        let mut checked = 0;
        let mut check = |d: &[u8]| {
            assert_eq!(
                Brand::from_digits(d),
                brand_as_written(d),
                "{}",
                String::from_utf8_lossy(d)
            );
            checked += 1;
        };
        // Every prefix of up to four digits, whole and as the start of a
        // card of every length; six-digit prefixes sampled, and every one
        // around Discover's co-branded range.
        for p in 0..10_000u32 {
            let digits = format!("{p:04}");
            for cut in 1..=4 {
                check(&digits.as_bytes()[..cut]);
            }
        }
        let sixes = (0..1_000_000u32).step_by(97).chain(621_900..623_100);
        for p in sixes {
            let six = format!("{p:06}");
            for len in 6..=20 {
                let d = format!("{six}{}", "7".repeat(len - 6));
                check(d.as_bytes());
            }
        }
        for p in 0..10_000u32 {
            for len in [12, 13, 14, 15, 16, 17, 18, 19] {
                let d = format!("{p:04}{}", "0".repeat(len - 4));
                check(d.as_bytes());
            }
        }
        assert!(checked > 200_000, "{checked}");
    }

    /// The redactor's quick check answers as the parser's rules do: every
    /// length, prefixes of every brand and of none, Luhn-valid or not.
    #[test]
    fn the_quick_card_check_agrees_with_the_rules() {
        let prefixes = [
            "", "1", "4", "51", "55", "56", "2220", "2221", "2720", "2721", "34", "37", "6011",
            "644", "649", "65", "622125", "622126", "622925", "3527", "3528", "3589", "300", "305",
            "306", "3095", "36", "38", "39", "62", "50", "58", "63", "67", "69", "7",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut cards = 0;
        for len in 0..=21usize {
            for prefix in prefixes {
                for _ in 0..200 {
                    let mut d: Vec<u8> = prefix.bytes().take(len).collect();
                    while d.len() < len {
                        d.push(b'0' + (next() % 10) as u8);
                    }
                    // Half the strings get the check digit that makes the
                    // sum whole.
                    if len > 0 && next() % 2 == 0 {
                        let last = d.len() - 1;
                        d[last] = b'0';
                        let fix = (10 - luhn_sum(&d) % 10) % 10;
                        d[last] = b'0' + fix as u8;
                    }
                    let want = Pan::check_digits(&d).is_ok();
                    cards += usize::from(want);
                    assert_eq!(is_card(&d), want, "{}", String::from_utf8_lossy(&d));
                }
            }
        }
        assert!(cards > 10_000, "the strings include many cards: {cards}");
    }

    #[test]
    fn parses_every_brand() {
        let cases = [
            ("4111 1111 1111 1111", Brand::Visa),
            ("5555-5555-5555-4444", Brand::Mastercard),
            ("2223003122003222", Brand::Mastercard),
            ("378282246310005", Brand::Amex),
            ("6011111111111117", Brand::Discover),
            ("3530111333300000", Brand::Jcb),
            ("36227206271667", Brand::Diners),
            ("6200000000000005", Brand::UnionPay),
            ("6759649826438453", Brand::Maestro),
        ];
        for (s, brand) in cases {
            assert_eq!(Pan::parse(s).map(|p| p.brand()), Ok(brand), "{brand:?}");
        }
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(Pan::parse("").unwrap_err(), PanError::Empty);
        assert_eq!(Pan::parse("4111x111").unwrap_err(), PanError::NotDigits);
        assert_eq!(Pan::parse("41111111111").unwrap_err(), PanError::Length);
        assert_eq!(
            Pan::parse("41111111111111111111").unwrap_err(),
            PanError::Length
        );
        assert_eq!(Pan::parse("4111111111111112").unwrap_err(), PanError::Luhn);
        assert_eq!(
            Pan::parse("1234567812345670").unwrap_err(),
            PanError::UnknownIssuer
        );
    }

    #[test]
    fn debug_hides_the_number() {
        let p = Pan::parse("4111111111111111").unwrap();
        let s = format!("{p:?}");
        assert!(!s.contains("411111"), "{s}");
        assert!(s.contains("1111") && s.contains("Visa"));
        assert_eq!(p.masked(), "************1111");
    }

    #[test]
    fn finds_cards_by_boundaries_and_separators() {
        let found = |t: &str| -> Vec<String> {
            find_cards(t).into_iter().map(|r| t[r].to_owned()).collect()
        };
        assert_eq!(
            found("card 4111 1111 1111 1111 2026 ok"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(found("x=4111-1111-1111-1111."), ["4111-1111-1111-1111"]);
        assert_eq!(
            found("a 4111.1111.1111.1111 b 5105\u{a0}1051\u{a0}0510\u{a0}5100\t2026"),
            ["4111.1111.1111.1111", "5105\u{a0}1051\u{a0}0510\u{a0}5100"]
        );
        assert_eq!(found("id 94111111111111111123"), Vec::<String>::new());
        assert_eq!(found("sku A4111111111111111"), Vec::<String>::new());
        assert_eq!(
            found("ts=1701541583094 amex 378282246310005"),
            ["378282246310005"]
        );
        assert_eq!(
            found("41111111-1111-1111-1111-111111111111"),
            Vec::<String>::new()
        );
        // A dash between spaces joins; a card ends on its last digit, not
        // on the gap after it.
        assert_eq!(
            found("note: 4111 - 1111 - 1111 - 1111 - 2026"),
            ["4111 - 1111 - 1111 - 1111"]
        );
        assert_eq!(
            found("4111 1111 1111 1111  2026 and 2026  4111 1111 1111 1111"),
            ["4111 1111 1111 1111", "4111 1111 1111 1111"]
        );
        // Not a gap of a card: a dash with one space, or two dashes.
        assert_eq!(found("4111 -1111 -1111 -1111"), Vec::<String>::new());
        assert_eq!(found("4111 -- 1111 -- 1111 -- 1111"), Vec::<String>::new());
    }
}
