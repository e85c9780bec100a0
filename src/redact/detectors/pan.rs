//! Card numbers, by the vault's own `Pan` rules.
//! Cards in text are found among digit runs (`numeric`) by the vault's
//! `cards_in_run`; this holds the JSON-number check.

use crate::vault::pan::Pan;

/// Whether a JSON number's digits are a card.
pub fn is_card_number(digits: &str) -> bool {
    digits.bytes().all(|b| b.is_ascii_digit()) && Pan::check_digits(digits.as_bytes()).is_ok()
}
