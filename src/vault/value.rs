//! Classifications and the values they accept.

use zeroize::Zeroizing;

use super::pan::{Pan, PanError};

/// Largest `pii` value in bytes.
pub const PII_MAX_BYTES: usize = 1024;

/// What kind of value a token stands for; picks its data key and KMS key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    Pan,
    Pii,
}

impl Classification {
    /// Every classification, for checks that each has a key.
    pub const ALL: [Classification; 2] = [Self::Pan, Self::Pii];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pan" => Some(Self::Pan),
            "pii" => Some(Self::Pii),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pan => "pan",
            Self::Pii => "pii",
        }
    }
}

/// Why a value was refused; never carries it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error(transparent)]
    Pan(#[from] PanError),
    #[error("a pii value holds 1 to 1024 bytes of UTF-8")]
    PiiLength,
}

/// A value parsed for its classification.
pub enum Value {
    Pan(Pan),
    Pii(Zeroizing<String>),
}

impl Value {
    pub fn parse(c: Classification, input: &str) -> Result<Value, ValueError> {
        match c {
            Classification::Pan => Ok(Value::Pan(Pan::parse(input)?)),
            Classification::Pii => {
                if input.is_empty() || input.len() > PII_MAX_BYTES {
                    return Err(ValueError::PiiLength);
                }
                Ok(Value::Pii(Zeroizing::new(input.to_owned())))
            }
        }
    }

    /// The normalized bytes that are sealed and fingerprinted.
    pub fn normalized(&self) -> &[u8] {
        match self {
            Value::Pan(p) => p.expose_digits(),
            Value::Pii(s) => s.as_bytes(),
        }
    }

    /// The length a mask shows: digits of a card, characters otherwise.
    pub fn display_len(&self) -> usize {
        match self {
            Value::Pan(p) => p.len(),
            Value::Pii(s) => s.chars().count(),
        }
    }
}
