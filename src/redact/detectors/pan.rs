//! Card numbers, by the vault's own `Pan` rules.

use std::ops::Range;

use crate::vault::pan::{Pan, cards_in_run};

use super::{Detector, Finding, Kind, push};

/// Any run of at least 12 digits with single spaces or dashes between; the
/// validator finds the cards inside it, with digit boundaries, so a
/// card-shaped window of a longer number is left alone.
pub const DETECTOR: Detector = Detector {
    kind: Kind::Pan,
    pattern: r"[0-9](?:[ \-]?[0-9]){11,}",
    validate,
};

fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let mut cards = Vec::new();
    cards_in_run(text, m, &mut cards);
    for r in cards {
        push(out, Kind::Pan, r);
    }
}

/// Whether a JSON number's digits are a card.
pub fn is_card_number(digits: &str) -> bool {
    digits.bytes().all(|b| b.is_ascii_digit()) && Pan::check_digits(digits.as_bytes()).is_ok()
}
