//! What a finding becomes.

use aws_lc_rs::hmac;

use super::Kind;

/// A replacement rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Cards: `*` for every digit but the last four (separators kept);
    /// anything else: `*` for every character.
    Mask,
    /// `[REDACTED:<type>]`.
    Label,
    /// `[HASH:<type>:<key id>:<24 hex>]`: HMAC-SHA256 under a secret key,
    /// truncated to 96 bits, so the same value joins across logs.
    Hash,
    /// A card becomes a vault token (deterministic: one card, one token).
    Tokenize,
    /// Removed: the match from text, the whole field from JSON.
    Drop,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "mask" => Some(Action::Mask),
            "label" => Some(Action::Label),
            "hash" => Some(Action::Hash),
            "tokenize" => Some(Action::Tokenize),
            "drop" => Some(Action::Drop),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Mask => "mask",
            Action::Label => "label",
            Action::Hash => "hash",
            Action::Tokenize => "tokenize",
            Action::Drop => "drop",
        }
    }
}

/// The key of the `hash` action, with its id (shown in every hash so a
/// rotated key does not silently break joins).
pub struct HashKey {
    id: String,
    key: hmac::Key,
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashKey({})", self.id)
    }
}

impl HashKey {
    pub fn new(id: &str, secret: &[u8]) -> Self {
        Self {
            id: id.to_owned(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn hash(&self, kind: Kind, normalized: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(kind.as_str().as_bytes());
        ctx.update(&[0]);
        ctx.update(normalized);
        let tag = ctx.sign();
        format!(
            "[HASH:{}:{}:{}]",
            kind.as_str(),
            self.id,
            crate::crypto::to_hex(&tag.as_ref()[..12])
        )
    }
}

/// Turns a card into a vault token for the `tokenize` action. Called from
/// the redaction thread, never from an async worker.
pub trait Tokenizer: Send + Sync {
    /// The token of `digits` (a validated card), or an error that aborts
    /// the redaction (fail closed: nothing is passed through unredacted).
    fn tokenize_card(&self, digits: &str) -> Result<String, ActionError>;
}

/// An action that could not be carried out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ActionError {
    #[error("the hash action needs a hash key")]
    NoHashKey,
    #[error("the tokenize action is not available here")]
    NoTokenizer,
    #[error("tokenize failed: {0}")]
    Tokenize(String),
}

/// What actions may use.
#[derive(Default, Clone, Copy)]
pub struct Tools<'a> {
    pub hash_key: Option<&'a HashKey>,
    pub tokenizer: Option<&'a dyn Tokenizer>,
}

impl Action {
    /// Appends the replacement of `matched` (a finding of `kind`) to `out`.
    ///
    /// A finding can span lines (a PEM block): every action but `mask`
    /// (which keeps them itself) re-emits its line breaks, so the output
    /// keeps one line per input line.
    pub fn apply(
        self,
        kind: Kind,
        matched: &[u8],
        tools: Tools<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ActionError> {
        self.replace(kind, matched, tools, out)?;
        if self != Action::Mask {
            out.extend(matched.iter().filter(|&&b| b == b'\n'));
        }
        Ok(())
    }

    fn replace(
        self,
        kind: Kind,
        matched: &[u8],
        tools: Tools<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ActionError> {
        match self {
            Action::Label => {
                out.extend_from_slice(b"[REDACTED:");
                out.extend_from_slice(kind.as_str().as_bytes());
                out.push(b']');
            }
            Action::Mask if kind == Kind::Pan => {
                let digits = card_digits(matched).filter(|d| *d).count();
                let mut seen = 0;
                for (&b, digit) in matched.iter().zip(card_digits(matched)) {
                    if digit {
                        seen += 1;
                        out.push(if seen + 4 > digits { b } else { b'*' });
                    } else {
                        out.push(b);
                    }
                }
            }
            Action::Mask => {
                // One `*` per character, not per byte; line breaks kept so
                // a masked PEM block keeps its shape.
                let star = |b: &u8| if *b == b'\n' { b'\n' } else { b'*' };
                match std::str::from_utf8(matched) {
                    Ok(_) if matched.is_ascii() => out.extend(matched.iter().map(star)),
                    Ok(s) => out.extend(s.chars().map(|c| if c == '\n' { b'\n' } else { b'*' })),
                    Err(_) => out.extend(matched.iter().map(star)),
                }
            }
            Action::Hash => {
                let key = tools.hash_key.ok_or(ActionError::NoHashKey)?;
                let normalized: Vec<u8> = match kind {
                    Kind::Pan => matched
                        .iter()
                        .zip(card_digits(matched))
                        .filter_map(|(b, digit)| digit.then_some(*b))
                        .collect(),
                    Kind::Ssn | Kind::Phone => {
                        matched.iter().copied().filter(u8::is_ascii_digit).collect()
                    }
                    Kind::Email | Kind::Iban => matched
                        .iter()
                        .filter(|b| **b != b' ')
                        .map(u8::to_ascii_lowercase)
                        .collect(),
                    _ => matched.to_vec(),
                };
                out.extend_from_slice(key.hash(kind, &normalized).as_bytes());
            }
            Action::Tokenize => {
                let t = tools.tokenizer.ok_or(ActionError::NoTokenizer)?;
                let digits: String = matched
                    .iter()
                    .zip(card_digits(matched))
                    .filter_map(|(&b, digit)| digit.then_some(b as char))
                    .collect();
                out.extend_from_slice(t.tokenize_card(&digits)?.as_bytes());
            }
            Action::Drop => {}
        }
        Ok(())
    }
}

/// Whether each byte of a matched card is one of its digits: an encoded
/// space is a gap (`4111%201111…`, in a URL), its `2` and `0` not the
/// card's.
fn card_digits(matched: &[u8]) -> impl Iterator<Item = bool> + '_ {
    let mut escape = 0;
    matched.iter().enumerate().map(move |(i, &b)| {
        if escape > 0 {
            escape -= 1;
            false
        } else if matched[i..].starts_with(b"%20") {
            escape = 2;
            false
        } else {
            b.is_ascii_digit()
        }
    })
}
