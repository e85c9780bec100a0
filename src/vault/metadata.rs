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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata holds at most 16 keys")]
    TooManyKeys,
    #[error("metadata key {0:?}: keys and values hold 1 to 256 bytes")]
    Size(String),
    #[error(
        "metadata key {0:?} names sensitive authentication data (CVV, PIN, track data), which must never be stored"
    )]
    Forbidden(String),
    #[error("metadata key {0:?}: its value holds a card number")]
    HoldsCard(String),
    #[error("a metadata key holds a card number")]
    KeyHoldsCard,
}

/// Checks metadata and returns it as a JSON object string.
pub fn validate(m: &BTreeMap<String, String>) -> Result<String, MetadataError> {
    if m.len() > MAX_KEYS {
        return Err(MetadataError::TooManyKeys);
    }
    for (k, v) in m {
        // Keys are echoed in errors, so first make sure a key holds no card.
        if !find_cards(k).is_empty() {
            return Err(MetadataError::KeyHoldsCard);
        }
        let shown: String = k.chars().take(32).collect();
        if k.is_empty() || k.len() > MAX_BYTES || v.len() > MAX_BYTES {
            return Err(MetadataError::Size(shown));
        }
        let norm: String = k
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if FORBIDDEN.contains(&norm.as_str()) || norm.starts_with("track") || norm.contains("cvv") {
            return Err(MetadataError::Forbidden(shown));
        }
        if !find_cards(v).is_empty() {
            return Err(MetadataError::HoldsCard(shown));
        }
    }
    Ok(serde_json::to_string(m).expect("a map of strings serializes"))
}
