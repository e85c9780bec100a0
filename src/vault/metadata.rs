//! Caller metadata on a token: small, and never a place to smuggle card
//! data (PCI DSS 3.3 forbids storing sensitive authentication data).

use std::collections::BTreeMap;

use super::pan::{find_cards, is_card};

pub const MAX_KEYS: usize = 16;
pub const MAX_BYTES: usize = 256;

/// Key names that denote sensitive authentication data, compared after
/// lower-casing and dropping everything but letters and digits.
const FORBIDDEN: &[&str] = &[
    "cvv",
    "cvc",
    "cvv2",
    "cvc2",
    "cid",
    "csc",
    "pin",
    "pinblock",
    "track",
    "track1",
    "track2",
    "trackdata",
    "magstripe",
];

/// Why metadata was refused; names the key, never a value.
/// Keys are never repeated back: a key is caller text and can hold a card.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata holds at most 16 keys")]
    TooManyKeys,
    #[error("metadata keys and values hold 1 to 256 bytes")]
    Size,
    #[error(
        "a metadata key names sensitive authentication data (CVV, PIN, track data), which must never be stored"
    )]
    Forbidden,
    #[error("a metadata value holds a card number")]
    HoldsCard,
    #[error("a metadata key holds a card number or a long run of digits")]
    KeyHoldsCard,
}

/// Checks metadata and returns it as a JSON object string.
pub fn validate(m: &BTreeMap<String, String>) -> Result<String, MetadataError> {
    if m.len() > MAX_KEYS {
        return Err(MetadataError::TooManyKeys);
    }
    for (k, v) in m {
        // A key is stored in the clear: no card, and no digit run long
        // enough to be one glued to letters (`ref4111…`).
        if !find_cards(k).is_empty() || k.bytes().filter(u8::is_ascii_digit).count() >= 12 {
            return Err(MetadataError::KeyHoldsCard);
        }
        if k.is_empty() || k.len() > MAX_BYTES || v.len() > MAX_BYTES {
            return Err(MetadataError::Size);
        }
        if names_sensitive_data(k) {
            return Err(MetadataError::Forbidden);
        }
        if !find_cards(v).is_empty() || holds_card_digits(v) {
            return Err(MetadataError::HoldsCard);
        }
    }
    Ok(serde_json::to_string(m).expect("a map of strings serializes"))
}

/// Whether a key names sensitive authentication data: the whole key
/// (`Card_CVV2`), any word of it (`pin_code`, `cardPin`, `track_1`), or
/// `cvv`/`cvc` anywhere in it (`cardcvc`).
fn names_sensitive_data(k: &str) -> bool {
    let norm: String = k
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in k.chars() {
        let split = !c.is_ascii_alphanumeric() || (prev_lower && c.is_ascii_uppercase());
        if split && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        if c.is_ascii_alphanumeric() {
            word.push(c.to_ascii_lowercase());
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
    }
    words.push(word);
    FORBIDDEN.contains(&norm.as_str())
        || norm.starts_with("track")
        || norm.contains("cvv")
        || norm.contains("cvc")
        || words
            .iter()
            .any(|w| FORBIDDEN.contains(&w.as_str()) || w.starts_with("track"))
}

/// Whether a value holds a card's digits in a spelling the redactor's
/// rules let pass, since a stored value must be refused rather than
/// guessed at: digits glued to letters (`card4111…`) or joined by any one
/// punctuation byte (`4111/1111/1111/1111`). Letters end a run; a run of
/// 12 to 19 digits that is a card (brand and Luhn) is refused.
fn holds_card_digits(v: &str) -> bool {
    let b = v.as_bytes();
    let mut digits = Vec::with_capacity(19);
    let mut i = 0;
    while i <= b.len() {
        let c = b.get(i).copied();
        match c {
            Some(d) if d.is_ascii_digit() => digits.push(d),
            // One byte that is neither a letter nor a digit between two
            // digits joins them.
            Some(g)
                if !g.is_ascii_alphanumeric()
                    && !digits.is_empty()
                    && b.get(i + 1).is_some_and(u8::is_ascii_digit) => {}
            _ => {
                if is_card(&digits) {
                    return true;
                }
                digits.clear();
            }
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_never_repeat_a_key_and_digit_runs_are_refused() {
        for key in ["cvv4111111111111111", "ref4111111111111111", "Card_CVV2"] {
            let m = BTreeMap::from([(key.to_owned(), "x".to_owned())]);
            let e = validate(&m).unwrap_err().to_string();
            assert!(!e.contains("4111") && !e.contains(key), "{e}");
        }
        let ok = BTreeMap::from([("order".to_owned(), "A-1".to_owned())]);
        assert!(validate(&ok).is_ok());
    }

    #[test]
    fn sensitive_keys_and_cards_in_any_spelling_are_refused() {
        for key in [
            "pin_code", "cardPin", "card_cvc", "cvc_code", "Track_1", "PIN",
        ] {
            let m = BTreeMap::from([(key.to_owned(), "x".to_owned())]);
            assert_eq!(validate(&m), Err(MetadataError::Forbidden), "{key}");
        }
        for value in [
            "card4111111111111111",
            "ref4111111111111111x",
            "4111/1111/1111/1111",
            "4111_1111_1111_1111",
            "n:5555,5555,5555,4444",
        ] {
            let m = BTreeMap::from([("note".to_owned(), value.to_owned())]);
            assert_eq!(validate(&m), Err(MetadataError::HoldsCard), "{value}");
        }
        // Words that merely hold the letters, and numbers that are no card.
        for (key, value) in [
            ("shipping", "2026-11-28"),
            ("spinner", "order 1234567890123"),
            ("trace", "4111111111111112"),
            ("ids", "a1732875600123/b1732875600124"),
            ("ref", "12345678901234567890123"),
        ] {
            let m = BTreeMap::from([(key.to_owned(), value.to_owned())]);
            assert!(validate(&m).is_ok(), "{key}: {value}");
        }
    }
}
