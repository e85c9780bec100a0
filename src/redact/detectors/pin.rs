//! Cardholder PINs and PIN blocks written as `pin=1234` or
//! `"card_pin": "0412"` in text (PCI DSS 3.3.3: never kept after
//! authorization). In parsed JSON the field-name rules catch them whatever
//! the value looks like ([`NAMES`] is theirs too).

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push, value_start_in};

/// Names of a PIN field, lower case, letters and digits only: a key ending
/// in one of them names one (`user_pin_number`). `pin` itself is a word's
/// end too often (`spin`, `hairpin`, `pincode`, a postal code in India):
/// in text it counts as its own word (`pin=`, `user_pin=`, `newPin:`,
/// `cardpin=`), and so `map_pin=1234` is masked as well, as a PIN leaked is
/// worse than a map pin masked; the field rules take it whole or in the
/// names of [`FIELD_NAMES`].
pub const NAMES: &[&str] = &["pin", "pinnumber", "pinblock"];

/// Names the field-name rules need beside [`NAMES`], as they take `pin`
/// only whole; the text pattern reads these itself from the `pin` anchor.
pub const FIELD_NAMES: &[&str] = &[
    "cardpin",
    "cardholderpin",
    "userpin",
    "customerpin",
    "atmpin",
    "debitpin",
    "newpin",
    "oldpin",
    "currentpin",
    "confirmpin",
];

/// The names of [`NAMES`] as the pattern reads them.
macro_rules! name {
    () => {
        concat!(
            r#"(?i)(?:(?:\b|[_-]|"#,
            name_open!(),
            r#"|card)pin|(?-i:[a-z0-9](?:Pin|PIN))|pin[ _-]?(?:number|block))"#,
        )
    };
}

/// A PIN is 4 to 12 digits (ISO 9564); a PIN block, 16 hex digits, also
/// in groups of four.
macro_rules! value {
    () => {
        r#"(?:[0-9a-f]{4}(?: ?[0-9a-f]{4}){3}|[0-9]{4,12})\b"#
    };
}

pub const DETECTOR: Detector = Detector {
    kind: Kind::Secret,
    pattern: concat!(
        name!(),
        "(?:[_-]?[12])?",
        name_end!(),
        r#"(?:=>|[:=])"#,
        value_open!(),
        value!()
    ),
    validate: validate::<false>,
    anchor: Anchor::Key(NAMES),
};

/// `<PIN>1234</PIN>`, `<ns:pinBlock>`: in XML gateway APIs and logged SOAP
/// bodies.
pub const ELEMENT: Detector = Detector {
    kind: Kind::Secret,
    pattern: concat!(name!(), element_open!(), cdata!(), value!()),
    validate: validate::<true>,
    anchor: Anchor::Element(NAMES),
};

fn validate<const ELEMENT: bool>(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    if let Some(start) = value_start_in::<ELEMENT>(s) {
        push(out, Kind::Secret, m.start + start..m.end);
    }
}
