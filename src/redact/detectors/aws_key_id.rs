//! AWS access key ids (`AKIA…` long-term, `ASIA…` temporary, and the other
//! unique-id prefixes).

use std::ops::Range;

use super::{Anchor, Detector, Finding, Kind, alnum, push};

pub const DETECTOR: Detector = Detector {
    kind: Kind::AwsKeyId,
    pattern: r"(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z2-7]{16}",
    validate,
    anchor: Anchor::Literal,
};

fn validate(text: &[u8], m: Range<usize>, out: &mut Vec<Finding>) {
    let before = m.start.checked_sub(1).and_then(|i| text.get(i));
    if !alnum(before) && !alnum(text.get(m.end)) {
        let end = m.end;
        push(out, Kind::AwsKeyId, m);
        super::aws_secret::after_key_id(text, end, out);
    }
}
