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
    "cvn",
    "cvn2",
    "cvd",
    "cvd2",
    "cav2",
    "cid",
    "csc",
    "csc2",
    "cardcode",
    "cvnumber",
    "cv2",
    "ccv",
    "cvvno",
    "cardsecval",
    "cardvalidationnum",
    "verificationvalue",
    "securitycode",
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
    #[error("metadata keys hold 1 to 256 bytes, and values at most 256")]
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

/// Words of a key that name sensitive authentication data
/// (`pin_code`, `cardPin`, `card_cvc`); a key whose letters and digits are
/// one of [`FORBIDDEN`] is refused whole. `cid`, `csc` and `track` name
/// it only beside a word of [`CARD_WORDS`] (`amex_cid`, `card_csc`,
/// `card_track`, `track_2`): `customer_cid`, `csc_agent` and
/// `shipment_track` are something else.
const FORBIDDEN_WORDS: &[&str] = &[
    "cvv",
    "cvc",
    "cvv2",
    "cvc2",
    "cvn",
    "cvn2",
    "cvd",
    "cvd2",
    "cav2",
    "pin",
    "pinblock",
    "pinnumber",
    "track1",
    "track2",
    "trackdata",
    "magstripe",
];

/// What names sensitive authentication data wherever it stands in a key's
/// letters and digits.
const ANYWHERE: &[&str] = &[
    "cvv",
    "cvc",
    "cvn2",
    "cav2",
    "securitycode",
    "cardverificationvalue",
    "cardverificationcode",
    "cardverificationnumber",
    "cardcvn",
    "cardcvd",
    "cardcid",
    "amexcid",
    "cardcsc",
    "cardpin",
    "pinblock",
    "track1",
    "track2",
    "trackdata",
    "magstripe",
];

/// Card security codes' short names, which a word of [`CODE_SUFFIXES`]
/// after them makes the code's field (`csc_value`, `cvncode`).
const CODES: &[&str] = &[
    "cvv", "cvv2", "cvc", "cvc2", "cvn", "cvn2", "cvd", "cvd2", "cav2", "csc", "csc2", "cid",
];

/// Words that name a field's content after a code's name.
const CODE_SUFFIXES: &[&str] = &["code", "number", "value"];

/// Words that make `cid`, `csc` or `track` a card's, written next to it
/// (`amex_cid`, `card_track`, `track_data`, `csc_code`).
const CARD_WORDS: &[&str] = &["card", "amex", "cc", "credit", "debit", "data", "code"];

/// Whether a key names sensitive authentication data: the whole key
/// (`Card_CVV2`, `track_1`), a word of it ([`FORBIDDEN_WORDS`]), or one
/// of [`ANYWHERE`] anywhere in it (`cardcvc`, `cardPINblock`,
/// `track2data`). Words are split at punctuation, at a lower-case letter
/// or digit before a capital (`cardPin`), and at the last capital of a
/// run before a lower-case letter (`PINCode`). `order_tracking`,
/// `tracking_number`, `pincode` (a postal code) and `customer_cid` pass.
fn names_sensitive_data(k: &str) -> bool {
    let norm: String = k
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if FORBIDDEN.contains(&norm.as_str()) || ANYWHERE.iter().any(|w| norm.contains(w)) {
        return true;
    }
    let b = k.as_bytes();
    let mut words = Vec::new();
    let mut start = 0;
    for i in 0..=b.len() {
        let split = match (i.checked_sub(1).map(|p| b[p]), b.get(i), b.get(i + 1)) {
            (_, None, _) => true,
            (_, Some(c), _) if !c.is_ascii_alphanumeric() => true,
            (Some(p), Some(c), _)
                if (p.is_ascii_lowercase() || p.is_ascii_digit()) && c.is_ascii_uppercase() =>
            {
                true
            }
            (Some(p), Some(c), Some(n)) => {
                p.is_ascii_uppercase() && c.is_ascii_uppercase() && n.is_ascii_lowercase()
            }
            _ => false,
        };
        if split {
            // Bytes, not `&str`: a split falls inside a multi-byte
            // character (every byte of one is a split).
            let word: String = b[start..i]
                .iter()
                .filter(|c| c.is_ascii_alphanumeric())
                .map(|c| char::from(c.to_ascii_lowercase()))
                .collect();
            if !word.is_empty() {
                words.push(word);
            }
            start = i;
        }
    }
    let card_word = |i: Option<usize>| {
        i.and_then(|i| words.get(i))
            .is_some_and(|w: &String| CARD_WORDS.contains(&w.as_str()))
    };
    // `pin1`, `pin2`: a numbered PIN is still a PIN.
    let numbered_pin = |w: &str| {
        w.strip_prefix("pin")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    // A code's name with a word after it, in one word (`cvncode`,
    // `cscvalue`) or two (`csc_value`, `cvd_number`).
    let code = |w: Option<&String>| w.is_some_and(|w| CODES.contains(&w.as_str()));
    let code_with_suffix = |i: usize| {
        let w = &words[i];
        CODE_SUFFIXES.iter().any(|s| {
            w.strip_suffix(s).is_some_and(|base| CODES.contains(&base))
                || (w == s && code(i.checked_sub(1).and_then(|p| words.get(p))))
        })
    };
    words.iter().enumerate().any(|(i, w)| {
        FORBIDDEN_WORDS.contains(&w.as_str())
            || numbered_pin(w)
            || code_with_suffix(i)
            || (["cid", "csc", "track"].contains(&w.as_str())
                && (card_word(i.checked_sub(1)) || card_word(Some(i + 1))))
    })
}

/// Whether a value holds a card's digits in a spelling the redactor's
/// rules let pass, since a stored value must be refused rather than
/// guessed at: digits glued to letters (`card4111…`) or joined by a gap of
/// one to five bytes with no letter or digit (`4111/1111/1111/1111`,
/// `4111, 1111, 1111, 1111`, `"4111","1111",…`, an en dash). Letters end
/// a run. A run is refused when one of its pieces is a card, when
/// consecutive pieces grouped as cards are written (4-4-4-4 with a tail
/// of 1 to 3, 4-6-5, 4-6-4) are, or when it is a card whole and all its
/// gaps are the same: a card with more digits joined to it
/// (`4111/1111/1111/1111 12/28`) is refused, where lists of times, dates,
/// coordinates or amounts, read every way, would be refused far too often.
fn holds_card_digits(v: &str) -> bool {
    /// The longest gap that joins: `", "`, `" – "` (an en dash is three
    /// bytes), `"\", \""` (as `json.dumps` writes a list).
    const MAX_GAP: usize = 5;
    let b = v.as_bytes();
    let mut digits = Vec::with_capacity(32);
    // Where each piece of the run starts, in `digits`.
    let mut joins = vec![0];
    // The run's first gap, and whether every gap since is the same.
    let mut first_gap: Option<&[u8]> = None;
    let mut uniform = true;
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            digits.push(b[i]);
            i += 1;
            continue;
        }
        let gap = (!digits.is_empty())
            .then(|| {
                (1..=MAX_GAP).find(|&n| {
                    b.get(i + n).is_some_and(u8::is_ascii_digit)
                        && b[i..i + n].iter().all(|g| !g.is_ascii_alphanumeric())
                })
            })
            .flatten();
        match gap {
            Some(n) => {
                let g = &b[i..i + n];
                uniform &= first_gap.is_none_or(|f| f == g);
                first_gap.get_or_insert(g);
                joins.push(digits.len());
                i += n;
            }
            None => {
                if !digits.is_empty() && run_holds_a_card(&digits, &joins, uniform) {
                    return true;
                }
                digits.clear();
                joins.truncate(1);
                first_gap = None;
                uniform = true;
                i += 1;
            }
        }
    }
    run_holds_a_card(&digits, &joins, uniform)
}

/// Whether a run of `digits`, in pieces starting at `joins`, holds a card
/// (see [`holds_card_digits`]); `uniform`: all its gaps are the same.
fn run_holds_a_card(digits: &[u8], joins: &[usize], uniform: bool) -> bool {
    const SHAPES: &[&[usize]] = &[
        &[4, 4, 4, 4, 1],
        &[4, 4, 4, 4, 2],
        &[4, 4, 4, 4, 3],
        &[4, 4, 4, 4],
        &[4, 6, 5],
        &[4, 6, 4],
    ];
    if uniform && is_card(digits) {
        return true;
    }
    let ends: Vec<usize> = joins[1..].iter().copied().chain([digits.len()]).collect();
    let lens: Vec<usize> = joins.iter().zip(&ends).map(|(s, e)| e - s).collect();
    (0..lens.len()).any(|i| {
        is_card(&digits[joins[i]..ends[i]])
            || SHAPES.iter().any(|shape| {
                lens[i..].starts_with(shape)
                    && is_card(&digits[joins[i]..ends[i + shape.len() - 1]])
            })
    })
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
            "pin_code",
            "cardPin",
            "card_cvc",
            "cvc_code",
            "Track_1",
            "PIN",
            "PINCode",
            "card-track2",
            "card_csc",
            "amex_cid",
            "card_track_data",
            "cardPINblock",
            "cardpin",
            "track2data",
            "track1data",
            "track2equiv",
            "security_code",
            "securityCode",
            "cardCode",
            "cvn2",
            "CVD",
            "card_cav2",
            "cardcid",
            "amexcid",
            "pin1",
            "card_pin2",
            "cvv_number",
            "card_verification_value",
            "cardcvn",
            "CARDCVD",
            "cvdvalue",
            "cvncode",
            "cvnnumber",
            "csc_value",
            "csc_number",
            "csc2",
            "cid_number",
            "cvNumber",
            "cv_number",
            "CV2",
            "CardSecVal",
            "cardValidationNum",
            "verification_value",
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
            "4111/1111/1111/1111 12/28",
            "card4111111111111111 2028",
            "4111/1111/1111/1111/12/28",
            "exp 12/28/4111-1111-1111-1111",
            "4111 1111/1111/1111",
            "4111\n1111\n1111\n1111",
            "x4111 1111 1111 1111",
            "3782 822463/10005",
            "4111, 1111, 1111, 1111",
            "[4111, 1111, 1111, 1111]",
            "\"4111\",\"1111\",\"1111\",\"1111\"",
            "4111\r\n1111\r\n1111\r\n1111",
            "4111 / 1111 / 1111 / 1111",
            "4111\u{2013}1111\u{2013}1111\u{2013}1111",
            "[\"4111\", \"1111\", \"1111\", \"1111\"]",
            "4111 \u{2014} 1111 \u{2014} 1111 \u{2014} 1111",
            "4111\r\n\r\n1111\r\n\r\n1111\r\n\r\n1111",
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
            ("order_tracking", "T-1"),
            ("shipmentTrackingId", "x"),
            ("customer_cid", "c-9"),
            ("pinned", "yes"),
            ("items", "3 of 12, 2026-11-28T07:00:00Z"),
            ("café_é", "naïve ✓"),
            ("tracking_number", "1Z999AA10123456784"),
            ("delivery_pincode", "560001"),
            ("gift_card_code", "GC-1"),
            ("card_verification_status", "passed"),
            ("cardVerificationMethod", "3ds"),
            ("bytes_rcvd", "10"),
            ("pinned1", "yes"),
            ("customer_cid", "c-9"),
            ("times", "02:57:50,12:01:22,03:06:01"),
            ("dates", "2021-07-27,2022-07-24,2020-06-04"),
            ("ips", "0.37.43.119,193.191.36.194,104.156.83.83"),
            ("phones", "587-427-5675,519-329-5468"),
            ("shift", "23/11/2024 23:36-11:30"),
            ("shipment_track", "x"),
            ("audio_track", "x"),
            ("csc_agent", "x"),
            ("customer_cid_1", "x"),
            ("cid_for_card", "x"),
            ("track_name_2", "x"),
        ] {
            let m = BTreeMap::from([(key.to_owned(), value.to_owned())]);
            assert!(validate(&m).is_ok(), "{key}: {value}");
        }
    }
}
