//! Card security codes written as `cvv=123` or `"cvc": "0123"` in text. In
//! parsed JSON the field-name rules catch them whatever the value looks like.

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push};

pub const DETECTOR: Detector = Detector {
    kind: Kind::Cvv,
    pattern: r#"(?i)\b(?:cvv2?|cvc2?|cid|csc|card_?code|security_?code)"?[ \t]{0,3}[:=][ \t]{0,3}"?[0-9]{3,4}\b"#,
    validate,
    anchor: Anchor::Key(&[
        "cvv",
        "cvv2",
        "cvc",
        "cvc2",
        "cid",
        "csc",
        "cardcode",
        "securitycode",
    ]),
};

fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    let digits = s.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    push(out, Kind::Cvv, m.end - digits..m.end);
}
