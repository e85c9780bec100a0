//! Card security codes written as `cvv=123` or `"cvc": "0123"` in text. In
//! parsed JSON the field-name rules catch them whatever the value looks like
//! ([`NAMES`] is theirs too).
//!
//! The schemes and gateways name the code differently (Visa CVV2,
//! Mastercard CVC2, Amex CID, UnionPay CVN2, JCB CAV2, Interac CVD, PayPal
//! `security_code`, Authorize.Net `cardCode`), and callers add words
//! (`card_cvv`, `cvv_code`, `cvvNumber`): PCI DSS 3.3.2 forbids keeping any
//! of them after authorization, logs included.

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, push};

/// Names of a card security code field, lower case, letters and digits
/// only: a key ending in one of them names one (`card_cvv`), but for
/// `cid` and `cvd`, which only whole or after a card word do (`amex_cid`;
/// `acid`, `customer_cid` and `bytes_rcvd` are something else). The short
/// names also with a word after them (`cvv_code`, `cvc2Number`,
/// `csc_value`); `cvv_result` and `cvvMatch` (a gateway's check result, a
/// letter) are not codes. `cvNumber` is CyberSource's, `CV2` Opayo's
/// (whole or after `card`, like `cvd`), `verification_value` ActiveMerchant's,
/// `cardValidationNum` Vantiv's, `CardSecVal` Chase Orbital's.
pub const NAMES: &[&str] = &[
    "cvv",
    "cvv2",
    "cvc",
    "cvc2",
    "cvn",
    "cvn2",
    "cvd",
    "cvd2",
    "cav2",
    "csc",
    "cvvcode",
    "cvv2code",
    "cvccode",
    "cvc2code",
    "cvncode",
    "cvn2code",
    "cvdcode",
    "cvd2code",
    "cav2code",
    "csccode",
    "cvvnumber",
    "cvv2number",
    "cvcnumber",
    "cvc2number",
    "cvnnumber",
    "cvn2number",
    "cvdnumber",
    "cvd2number",
    "cav2number",
    "cscnumber",
    "cvvvalue",
    "cvv2value",
    "cvcvalue",
    "cvc2value",
    "cvnvalue",
    "cvn2value",
    "cvdvalue",
    "cvd2value",
    "cav2value",
    "cscvalue",
    "cid",
    "cardcode",
    "securitycode",
    "cardverificationvalue",
    "cardverificationcode",
    "cvnumber",
    "cv2",
    "ccv",
    "cvvno",
    "cvvnum",
    "cvcno",
    "cvcnum",
    "verificationvalue",
    "cardvalidationnum",
    "cardvalidationnumber",
    "cardsecval",
    "cardsecvalue",
];

/// Names the field-name rules need beside [`NAMES`], as they take `cid`
/// only whole; the text pattern reads these itself from the `cid` anchor.
pub const FIELD_NAMES: &[&str] = &["cardcid", "amexcid", "cardcvd", "cardcv2"];

/// The names of [`NAMES`] as the pattern reads them.
macro_rules! name {
    () => {
        concat!(
            r#"(?i)(?:(?:(?:cvv|cvc|cvn|ccv|(?:\b|"#,
            name_open!(),
            r#"|card[ _-]?)(?:cvd|cv2))(?:[ _-]?2)?|cav2|csc)(?:[ _-]?(?:code|number|value|no|num))?|(?:\b|"#,
            name_open!(),
            r#"|card[ _-]?|amex[ _-]?)cid|card[ _-]?code|security[ _-]?code|(?:card[ _-]?)?verification[ _-]?value|card[ _-]?verification[ _-]?code|card[ _-]?validation[ _-]?num(?:ber)?|card[ _-]?sec[ _-]?val(?:ue)?|cv[ _-]?number)"#,
        )
    };
}

/// The code's digits.
macro_rules! value {
    () => {
        r#"[0-9]{3,4}\b"#
    };
}

pub const DETECTOR: Detector = Detector {
    kind: Kind::Cvv,
    pattern: concat!(
        name!(),
        name_end!(),
        r#"(?:=>|[:=])"#,
        value_open!(),
        value!()
    ),
    validate,
    anchor: Anchor::Key(NAMES),
};

/// `<cvv>123</cvv>`, `<cardCode>`, `<ns1:cvNumber>`: XML gateway APIs
/// (Authorize.Net, CyberSource, Worldpay) and the SOAP bodies their
/// clients log.
pub const ELEMENT: Detector = Detector {
    kind: Kind::Cvv,
    pattern: concat!(name!(), element_open!(), cdata!(), value!()),
    validate,
    anchor: Anchor::Element(NAMES),
};

fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let s = &text[m.clone()];
    let digits = s.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    push(out, Kind::Cvv, m.end - digits..m.end);
}
