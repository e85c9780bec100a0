//! The last two bytes of a set of names, as a 64 K-bit set: one lookup
//! turns away most keys that end in a byte some name ends in but not in a
//! pair any does (`trace` against `…code`, `dur` against `…number`), before
//! anything is compared name by name.

/// Pairs of (second-to-last, last) bytes, lower case, that some name ends
/// in. A one-byte name pairs with every byte and with 0, which stands for
/// no byte before it.
#[derive(Debug, Clone)]
pub struct EndPairs(Box<[u64; 1024]>);

impl EndPairs {
    /// The pairs of `names` (lower case, not empty).
    pub fn new<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut bits = Box::new([0u64; 1024]);
        for b in names {
            let last = b[b.len() - 1];
            let seconds = match b.len() {
                1 => (0..=255).collect(),
                n => vec![b[n - 2]],
            };
            for second in seconds {
                let (w, bit) = pair_bit(second, last);
                bits[w] |= bit;
            }
        }
        Self(bits)
    }

    /// Whether some name ends in `second` then `last` (lower case; 0 for
    /// no byte before `last`).
    pub fn holds(&self, second: u8, last: u8) -> bool {
        let (w, bit) = pair_bit(second, last);
        self.0[w] & bit != 0
    }
}

fn pair_bit(second: u8, last: u8) -> (usize, u64) {
    let i = usize::from(second) << 8 | usize::from(last);
    (i / 64, 1 << (i % 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_pairs_names_end_in_and_no_others() {
        let p = EndPairs::new([&b"code"[..], b"x"]);
        assert!(p.holds(b'd', b'e'));
        assert!(!p.holds(b'c', b'e'));
        assert!(!p.holds(b'o', b'd'));
        // A one-byte name ends every pair, and a name of one byte.
        assert!(p.holds(b'a', b'x'));
        assert!(p.holds(0, b'x'));
        assert!(!p.holds(0, b'e'));
    }
}
