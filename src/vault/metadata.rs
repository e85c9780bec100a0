//! Caller metadata on a token: small, and never a place to smuggle card
//! data (PCI DSS 3.3 forbids storing sensitive authentication data).

use std::collections::BTreeMap;

use super::pan::find_cards;

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
        let norm: String = k
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if FORBIDDEN.contains(&norm.as_str()) || norm.starts_with("track") || norm.contains("cvv") {
            return Err(MetadataError::Forbidden);
        }
        if !find_cards(v).is_empty() {
            return Err(MetadataError::HoldsCard);
        }
    }
    Ok(serde_json::to_string(m).expect("a map of strings serializes"))
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
}
