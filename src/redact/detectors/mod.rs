//! Detectors: each a pattern for the shared scan and a validator that
//! confirms (or splits) its candidates.

pub mod email;
pub mod pan;

use std::ops::Range;

/// The detector types; the discriminant indexes per-type tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Pan = 0,
    Email = 1,
}

impl Kind {
    pub const COUNT: usize = 2;
    pub const ALL: [Kind; Kind::COUNT] = [Kind::Pan, Kind::Email];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pan => "pan",
            Kind::Email => "email",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn names() -> String {
        Kind::ALL.map(Kind::as_str).join(", ")
    }

    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }

    pub fn on_by_default(self) -> bool {
        true
    }
}

/// A detector's validator: given the haystack and a pattern match, push
/// the confirmed finding ranges (none, the match, or parts of it).
pub type Validator = fn(&[u8], Range<usize>, &mut Vec<Range<usize>>);

/// One detector.
pub struct Detector {
    pub kind: Kind,
    pub pattern: &'static str,
    pub validate: Validator,
}

/// Every detector, in scan order.
pub const DETECTORS: &[Detector] = &[pan::DETECTOR, email::DETECTOR];
