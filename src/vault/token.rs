//! Token formats and their syntax.
//!
//! Tokens are what callers keep instead of a card, so they must be cheap to
//! check before a round trip (`Token::parse` rejects a mistyped random token
//! by its check characters) and impossible to mistake for a card (preserving
//! tokens fail Luhn on purpose).

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

use super::pan::{Pan, luhn_valid};
use crate::crypto::Randomness;
use crate::crypto::slot::SlotKey;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const PREFIX: &str = "tok_";
/// 22 base62 characters: 130.9 bits from the CSPRNG for a plain random
/// token; for a slotted one, its slot and 64 random bits encrypted, and
/// three random bits above them.
const RANDOM_CHARS: usize = 22;
const CHECK_CHARS: usize = 2;

/// The token formats a caller may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenFormat {
    /// `tok_` + 22 random base62 characters + 2 check characters.
    #[default]
    Random,
    /// Digits, the card's length, the last four kept, failing Luhn.
    Preserving,
    /// As `Preserving`, also keeping the first six (the BIN).
    PreservingBin,
}

impl TokenFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenFormat::Random => "random",
            TokenFormat::Preserving => "preserving",
            TokenFormat::PreservingBin => "preserving_bin",
        }
    }
}

/// Why a string is not a token. Never carries the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a token is `tok_` and 24 letters or digits, or the digits of a preserving token")]
    Syntax,
    #[error("the token's check characters do not match: it was mistyped or altered")]
    Check,
    #[error("that is a card number, not a token")]
    IsCard,
}

/// Why a token of the asked format cannot be made for a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("preserving_bin needs at least six random digits: the card is too short")]
    TooShortForBin,
}

/// A syntactically valid token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Token(String);

impl Token {
    /// Accepts a random token with a correct check, or a digit string of 12
    /// to 19 digits that fails Luhn (a preserving token).
    pub fn parse(s: &str) -> Result<Token, TokenError> {
        if let Some(rest) = s.strip_prefix(PREFIX) {
            if rest.len() != RANDOM_CHARS + CHECK_CHARS || !rest.bytes().all(is_base62) {
                return Err(TokenError::Syntax);
            }
            let (body, check) = rest.split_at(RANDOM_CHARS);
            if check_chars(body.as_bytes()) != check.as_bytes() {
                return Err(TokenError::Check);
            }
            return Ok(Token(s.to_owned()));
        }
        let b = s.as_bytes();
        if (12..=19).contains(&b.len()) && b.iter().all(u8::is_ascii_digit) {
            if luhn_valid(b) {
                return Err(TokenError::IsCard);
            }
            return Ok(Token(s.to_owned()));
        }
        Err(TokenError::Syntax)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// A new random token, never derived from the value.
    pub fn random() -> Token {
        Token::random_from(&mut Randomness::for_records(1))
    }

    /// As [`Token::random`], drawing from `rng` (one draw for a batch).
    pub fn random_from(rng: &mut Randomness) -> Token {
        let mut body = [0u8; RANDOM_CHARS];
        let mut filled = 0;
        while filled < RANDOM_CHARS {
            let b = rng.byte();
            // Rejection sampling: 248 = 4 * 62, so b % 62 is uniform.
            if b < 248 {
                body[filled] = BASE62[usize::from(b % 62)];
                filled += 1;
            }
        }
        Token::with_check(&body)
    }

    /// A random-format token naming `slot` under `key` (the embedded
    /// store's): its 22 characters spell, in base62, a number drawn
    /// uniformly below 62^22 whose low 128 bits are the key's block, so
    /// it looks like any other random token, one made before slots
    /// included.
    pub fn slotted(key: &SlotKey, slot: i64, rng: &mut Randomness) -> Token {
        loop {
            // Three random bits above the block; the draws at or past
            // 62^22 (about 0.5%: a top of 7 over a block past
            // 0xf520…) are drawn again, block and all.
            let top = rng.byte() & 7;
            if let Some(t) = Token::from_block(key.seal(slot, rng), top) {
                return t;
            }
        }
    }

    /// The random-format token spelling `top` * 2^128 + `block`, or none
    /// when that is 62^22 or more (it would need a 23rd character).
    pub fn from_block(block: [u8; 16], top: u8) -> Option<Token> {
        let n = u128::from_be_bytes(block);
        let mut limbs = [u64::from(top), (n >> 64) as u64, n as u64];
        let mut body = [b'0'; RANDOM_CHARS];
        // Ten digits at a time (62^10 < 2^64), low digits first.
        for chunk in body.rchunks_mut(DIGITS_PER_LIMB) {
            let mut rem = div_rem(&mut limbs, BASE62_POW10);
            for c in chunk.iter_mut().rev() {
                *c = BASE62[(rem % 62) as usize];
                rem /= 62;
            }
            // Left over past the first two characters: 62^22 or more.
            if rem != 0 {
                return None;
            }
        }
        (limbs == [0; 3]).then(|| Token::with_check(&body))
    }

    /// The block of a random-format token's number (its low 128 bits),
    /// whichever way it was made; none for a preserving token.
    pub fn block(&self) -> Option<[u8; 16]> {
        block_of(&self.0)
    }

    /// `tok_`, `body` and its check characters.
    fn with_check(body: &[u8; RANDOM_CHARS]) -> Token {
        let check = check_chars(body);
        let mut s = String::with_capacity(PREFIX.len() + RANDOM_CHARS + CHECK_CHARS);
        s.push_str(PREFIX);
        s.extend(body.iter().map(|&c| c as char));
        s.extend(check.iter().map(|&c| c as char));
        Token(s)
    }

    /// A format-preserving token for `pan`: same length, last four kept
    /// (and first six for `keep_bin`), random digits between, and a Luhn
    /// failure forced so the token can never pass for a card.
    pub fn preserving(pan: &Pan, keep_bin: bool) -> Result<Token, FormatError> {
        Token::preserving_from(pan, keep_bin, &mut Randomness::for_records(1))
    }

    /// As [`Token::preserving`], drawing from `rng`.
    pub fn preserving_from(
        pan: &Pan,
        keep_bin: bool,
        rng: &mut Randomness,
    ) -> Result<Token, FormatError> {
        let len = pan.len();
        let head = if keep_bin { 6 } else { 0 };
        let random = len - 4 - head;
        if keep_bin && random < 6 {
            return Err(FormatError::TooShortForBin);
        }
        let digits = pan.expose_digits();
        let mut out = vec![0u8; len];
        out[..head].copy_from_slice(&digits[..head]);
        out[len - 4..].copy_from_slice(&digits[len - 4..]);
        let mut i = head;
        while i < len - 4 {
            let b = rng.byte();
            // 250 = 25 * 10, so b % 10 is uniform.
            if b < 250 {
                out[i] = b'0' + b % 10;
                i += 1;
            }
        }
        if luhn_valid(&out) {
            // Changing any one digit changes the Luhn sum by a non-multiple of
            // 10, so bumping the first random digit always breaks the check.
            out[head] = b'0' + (out[head] - b'0' + 1) % 10;
        }
        debug_assert!(!luhn_valid(&out));
        Ok(Token(out.into_iter().map(|c| c as char).collect()))
    }
}

/// As [`Token::block`], for a string already known to be a token (one
/// read back from the store).
pub fn block_of(token: &str) -> Option<[u8; 16]> {
    let body = token.strip_prefix(PREFIX)?.get(..RANDOM_CHARS)?;
    // 22 base62 digits are under 62^22 < 2^131: three limbs hold them.
    let mut limbs = [0u64; 3];
    for b in body.bytes() {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'A'..=b'Z' => b - b'A' + 10,
            b'a'..=b'z' => b - b'a' + 36,
            _ => return None,
        };
        let mut carry = u128::from(digit);
        for l in limbs.iter_mut().rev() {
            let v = u128::from(*l) * 62 + carry;
            *l = v as u64;
            carry = v >> 64;
        }
    }
    let n = (u128::from(limbs[1]) << 64) | u128::from(limbs[2]);
    Some(n.to_be_bytes())
}

/// 62^10, the largest power of 62 in a u64.
const BASE62_POW10: u64 = 839_299_365_868_340_224;
const DIGITS_PER_LIMB: usize = 10;

/// Divides the number `limbs` spell (most significant first) by `d` in
/// place; the remainder.
fn div_rem(limbs: &mut [u64; 3], d: u64) -> u64 {
    let d = u128::from(d);
    let mut rem = 0u128;
    for l in limbs.iter_mut() {
        let cur = (rem << 64) | u128::from(*l);
        *l = (cur / d) as u64;
        rem = cur % d;
    }
    rem as u64
}

fn is_base62(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// A public checksum over the random part: it catches typos, it protects
/// nothing (anyone can compute it).
fn check_chars(body: &[u8]) -> [u8; CHECK_CHARS] {
    let d = digest::digest(&digest::SHA256, body);
    let n = u16::from_be_bytes([d.as_ref()[0], d.as_ref()[1]]) as usize % (62 * 62);
    [BASE62[n / 62], BASE62[n % 62]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_round_trip_and_catch_typos() {
        let t = Token::random();
        assert_eq!(t.as_str().len(), 28);
        assert_eq!(Token::parse(t.as_str()), Ok(t.clone()));
        let mut s = t.as_str().to_owned().into_bytes();
        s[10] = if s[10] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(s).unwrap();
        assert_eq!(Token::parse(&typo), Err(TokenError::Check));
    }

    /// Every block, under each top, spells a valid token that spells the
    /// block back; numbers past 62^22 spell none; every random token, of
    /// any making, has a block.
    #[test]
    fn blocks_round_trip_through_tokens() {
        let mut rng = Randomness::for_records(64);
        let mut blocks = vec![[0u8; 16], [0xff; 16], 1u128.to_be_bytes()];
        for _ in 0..200 {
            let mut b = [0u8; 16];
            rng.fill(&mut b);
            blocks.push(b);
        }
        for b in blocks {
            for top in 0..7 {
                let t = Token::from_block(b, top).unwrap();
                assert_eq!(Token::parse(t.as_str()), Ok(t.clone()));
                assert_eq!(t.block(), Some(b));
            }
        }
        assert_eq!(
            Token::from_block([0u8; 16], 0).unwrap().as_str()[..26],
            *"tok_0000000000000000000000"
        );
        // 62^22 - 1 is "zzz…z": 7 * 2^128 + 0xf520…3fffff.
        let last = 0xf520034c430770c424528c6650400000u128 - 1;
        let zs = Token::from_block(last.to_be_bytes(), 7).unwrap();
        assert_eq!(zs.as_str()[4..26], *"z".repeat(22));
        assert_eq!(Token::from_block((last + 1).to_be_bytes(), 7), None);
        assert_eq!(Token::from_block([0u8; 16], 8), None);
        assert!(Token::random().block().is_some());
        let pan = Pan::parse("4111111111111111").unwrap();
        assert_eq!(Token::preserving(&pan, false).unwrap().block(), None);
    }

    /// Slotted tokens start with every character a random one can: a
    /// token does not show whether it names a slot.
    #[test]
    fn slotted_tokens_look_like_random_ones() {
        let key = SlotKey::new(&crate::crypto::DataKey::from_bytes([3; 32]));
        let mut rng = Randomness::for_records(4000);
        let mut first = std::collections::HashSet::new();
        for slot in 1..4000 {
            let t = Token::slotted(&key, slot, &mut rng);
            assert_eq!(Token::parse(t.as_str()), Ok(t.clone()));
            assert_eq!(key.open(t.block().unwrap()), Some(slot));
            first.insert(t.as_str().as_bytes()[4]);
        }
        assert_eq!(first.len(), 62);
    }

    /// One draw serves many tokens, and a source that runs short draws
    /// again mid-token: every token is valid and new, and no byte is used
    /// twice (repeats would show as equal tokens or missing characters).
    #[test]
    fn tokens_from_one_draw_are_valid_distinct_and_use_every_character() {
        let mut seen = std::collections::HashSet::new();
        let mut chars = std::collections::HashSet::new();
        for mut rng in [Randomness::for_records(1000), Randomness::for_records(1)] {
            for _ in 0..1500 {
                let t = Token::random_from(&mut rng);
                assert_eq!(Token::parse(t.as_str()), Ok(t.clone()));
                chars.extend(t.as_str()[4..26].bytes());
                assert!(seen.insert(t), "a token repeated");
            }
        }
        assert_eq!(chars.len(), 62);
        let pan = Pan::parse("4111111111111111").unwrap();
        let mut rng = Randomness::for_records(1);
        let digits: std::collections::HashSet<_> = (0..100)
            .map(|_| Token::preserving_from(&pan, false, &mut rng).unwrap())
            .collect();
        assert_eq!(digits.len(), 100);
    }

    #[test]
    fn preserving_tokens_keep_shape_and_fail_luhn() {
        let pan = Pan::parse("4111111111111111").unwrap();
        for _ in 0..200 {
            let t = Token::preserving(&pan, false).unwrap();
            assert_eq!(t.as_str().len(), 16);
            assert!(t.as_str().ends_with("1111"));
            assert!(!luhn_valid(t.as_str().as_bytes()));
            assert!(Token::parse(t.as_str()).is_ok());
            let b = Token::preserving(&pan, true).unwrap();
            assert!(b.as_str().starts_with("411111"));
            assert!(!luhn_valid(b.as_str().as_bytes()));
        }
        let amex = Pan::parse("378282246310005").unwrap();
        assert_eq!(
            Token::preserving(&amex, true),
            Err(FormatError::TooShortForBin)
        );
    }

    #[test]
    fn a_card_is_not_a_token() {
        assert_eq!(Token::parse("4111111111111111"), Err(TokenError::IsCard));
        assert_eq!(Token::parse("tok_short"), Err(TokenError::Syntax));
        assert_eq!(Token::parse(""), Err(TokenError::Syntax));
    }
}
