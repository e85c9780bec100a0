//! Cardholder PINs and PIN blocks written as `pin=1234` or
//! `"card_pin": "0412"` in text (PCI DSS 3.3.3: never kept after
//! authorization). In parsed JSON the field-name rules catch them whatever
//! the value looks like ([`NAMES`] is theirs too).

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push, value_start};

/// Names of a PIN field, lower case, letters and digits only: a key ending
/// in one of them names one (`card_pin`, `user_pin_number`), but for
/// `pin`, which only whole or after `card` does: `spin`, `map_pin` and
/// `hairpin` are something else, as is `pincode` (a postal code in India).
pub const NAMES: &[&str] = &["pin", "pinnumber", "pinblock"];

/// Names the field-name rules need beside [`NAMES`], as they take `pin`
/// only whole; the text pattern reads these itself from the `pin` anchor.
pub const FIELD_NAMES: &[&str] = &["cardpin"];

/// A PIN is 4 to 12 digits (ISO 9564); a PIN block, 16 hex digits.
pub const DETECTOR: Detector = Detector {
    kind: Kind::Secret,
    pattern: r#"(?i)(?:(?:\b|card[_-]?)pin|pin[_-]?(?:number|block))["']?[ \t]{0,3}(?:=>|[:=])[ \t]{0,3}["']?(?:[0-9]{4,12}|[0-9a-f]{16})\b"#,
    validate,
    anchor: Anchor::Key(NAMES),
};

fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    if let Some(start) = value_start(s) {
        push(out, Kind::Secret, m.start + start..m.end);
    }
}
