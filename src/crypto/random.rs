//! CSPRNG output drawn in bulk for the records of one request.
//!
//! Each call into aws-lc's DRBG cost about 2,400 instructions whatever its
//! size (locking, fork and reseed checks, an RDRAND for added input). A
//! record took two (its token, its nonce), so a 1,000-card batch made
//! 2,000 calls; one draw for the batch costs about as much as one call plus
//! a little AES-CTR per byte. Bytes come straight from aws-lc's DRBG, are
//! used once and in order, and what is left is dropped with the source.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// What a record takes on average: a random token's 22 characters need a
/// little under 23 bytes (248 of 256 byte values are accepted), and its
/// nonce 12.
const BYTES_PER_RECORD: usize = 36;
/// The largest draw, so a source's buffer stays small; a larger batch
/// draws again at this size.
const MAX_DRAW: usize = 64 * 1024;
/// The smallest draw.
const MIN_DRAW: usize = 32;

/// A source of random bytes for the records of one request. aws-lc aborts
/// the process on a DRBG failure rather than report one; were one ever
/// reported, this panics (the request fails), as `Token::random` always
/// did.
pub struct Randomness {
    buf: Vec<u8>,
    pos: usize,
    /// How much the next draw takes.
    draw: usize,
}

impl Randomness {
    /// A source sized for `n` records; it draws again if they need more.
    pub fn for_records(n: usize) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            draw: n.saturating_mul(BYTES_PER_RECORD).clamp(MIN_DRAW, MAX_DRAW),
        }
    }

    /// The next random byte.
    pub fn byte(&mut self) -> u8 {
        if self.pos == self.buf.len() {
            self.refill();
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        b
    }

    /// Fills `out` with the next random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            if self.pos == self.buf.len() {
                self.refill();
            }
            let n = (out.len() - done).min(self.buf.len() - self.pos);
            out[done..done + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            done += n;
        }
    }

    fn refill(&mut self) {
        self.buf.resize(self.draw, 0);
        SystemRandom::new()
            .fill(&mut self.buf)
            .expect("OS random source");
        self.pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes handed out across draws are never handed out twice: 64 KiB
    /// of 16-byte blocks taken through both calls hold no repeat.
    #[test]
    fn no_bytes_are_handed_out_twice() {
        let mut rng = Randomness::for_records(1);
        let mut blocks = std::collections::HashSet::new();
        for i in 0..4096 {
            let mut b = [0u8; 16];
            if i % 2 == 0 {
                rng.fill(&mut b);
            } else {
                b.iter_mut().for_each(|x| *x = rng.byte());
            }
            assert!(blocks.insert(b), "a block repeated");
        }
    }
}
