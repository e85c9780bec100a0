//! What a finding becomes.

use super::Kind;

/// A replacement rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Cards: `*` for every digit but the last four (separators kept);
    /// anything else: `*` for every character.
    Mask,
    /// `[REDACTED:<type>]`.
    Label,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "mask" => Some(Action::Mask),
            "label" => Some(Action::Label),
            _ => None,
        }
    }

    /// Appends the replacement of `matched` (a finding of `kind`) to `out`.
    pub fn apply(self, kind: Kind, matched: &[u8], out: &mut Vec<u8>) {
        match self {
            Action::Label => {
                out.extend_from_slice(b"[REDACTED:");
                out.extend_from_slice(kind.as_str().as_bytes());
                out.push(b']');
            }
            Action::Mask if kind == Kind::Pan => {
                let digits = matched.iter().filter(|b| b.is_ascii_digit()).count();
                let mut seen = 0;
                for &b in matched {
                    if b.is_ascii_digit() {
                        seen += 1;
                        out.push(if seen > digits - 4 { b } else { b'*' });
                    } else {
                        out.push(b);
                    }
                }
            }
            Action::Mask => {
                // One `*` per character, not per byte.
                let chars =
                    std::str::from_utf8(matched).map_or(matched.len(), |s| s.chars().count());
                out.extend(std::iter::repeat_n(b'*', chars));
            }
        }
    }
}
