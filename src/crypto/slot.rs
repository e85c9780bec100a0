//! Tokens that say where their record is, to no one but the vault.
//!
//! A token drawn at random lands on a random leaf of an index on tokens,
//! so on the embedded store each tokenization wrote about one 4 KiB index
//! page to the WAL, and the checkpointer wrote it again: at 1,000-card
//! batches that page was nearly all the writer's work. A token made by
//! this key instead carries its record's slot (its row number, handed out
//! in order), so records are appended and found by row number, and no
//! index on tokens is kept at all.
//!
//! The 128-bit block is AES-256 (one block, a permutation) of the slot and
//! 64 random bits, and `Token::slotted` spells it as a number drawn
//! uniformly among all 22-character tokens. Without the key a token is
//! indistinguishable from random, from one made before slots included: it
//! says nothing of when its record was made or how many there are, and
//! guessing one is at most a 2^-128 chance per record. With the key (it
//! lives wrapped in the store, as the fingerprint key does) the random
//! half still has to be guessed, at most 2^-64 per record: the store only
//! answers a token equal to the one it holds in that slot.

use aws_lc_rs::cipher::{
    AES_256, DecryptingKey, DecryptionContext, EncryptingKey, UnboundCipherKey,
};

use super::Randomness;
use super::provider::DataKey;

/// The AES key of slotted tokens. It must never change: a token made
/// under one key finds nothing under another.
pub struct SlotKey {
    encrypt: EncryptingKey,
    decrypt: DecryptingKey,
}

impl std::fmt::Debug for SlotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlotKey")
    }
}

impl SlotKey {
    pub fn new(secret: &DataKey) -> Self {
        // A 32-byte key is what AES-256 takes: neither call can fail.
        let key = || UnboundCipherKey::new(&AES_256, secret.expose()).expect("a 32-byte key");
        Self {
            encrypt: EncryptingKey::ecb(key()).expect("AES-256 has ECB"),
            decrypt: DecryptingKey::ecb(key()).expect("AES-256 has ECB"),
        }
    }

    /// The block of a new token for `slot`.
    pub fn seal(&self, slot: i64, rng: &mut Randomness) -> [u8; 16] {
        let mut block = [0u8; 16];
        block[..8].copy_from_slice(&slot.to_be_bytes());
        rng.fill(&mut block[8..]);
        // One whole block in ECB mode has nothing that can fail.
        self.encrypt
            .encrypt(&mut block)
            .expect("one AES block encrypts");
        block
    }

    /// The slot a token's block names, if it names one. Any block opens
    /// to some number: the store still checks the token it holds there.
    pub fn open(&self, block: [u8; 16]) -> Option<i64> {
        let mut block = block;
        let plain = self
            .decrypt
            .decrypt(&mut block, DecryptionContext::None)
            .ok()?;
        let slot = i64::from_be_bytes(plain[..8].try_into().ok()?);
        (slot > 0).then_some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SlotKey {
        SlotKey::new(&DataKey::from_bytes([byte; 32]))
    }

    #[test]
    fn a_sealed_slot_opens_to_itself_and_hides_it() {
        let k = key(7);
        let mut rng = Randomness::for_records(4);
        for slot in [1, 2, 1_000_000, i64::MAX] {
            let block = k.seal(slot, &mut rng);
            assert_eq!(k.open(block), Some(slot));
            assert_ne!(&block[..8], &slot.to_be_bytes(), "the slot shows");
        }
        // The same slot twice: different random halves, different blocks.
        assert_ne!(k.seal(5, &mut rng), k.seal(5, &mut rng));
        // Another key reads another number (or none) from the same block.
        assert_ne!(key(8).open(k.seal(9, &mut rng)), Some(9));
    }

    #[test]
    fn blocks_that_name_no_slot_open_to_none() {
        let k = key(7);
        // Encrypt a block whose slot is 0 and one whose slot is negative.
        for slot in [0i64, -1] {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&slot.to_be_bytes());
            k.encrypt.encrypt(&mut b).unwrap();
            assert_eq!(k.open(b), None);
        }
    }
}
