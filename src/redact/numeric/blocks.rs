//! Finding the digit runs worth a look, 64 bytes at a time.
//!
//! Logs are full of short digit runs (dates, times, hex ids) that no
//! numeric detector wants: a card, an SSN or a phone needs nine digits or
//! more, and an IBAN's check digits follow two capital letters. Walking such
//! runs one by one cost more than everything else in a scan. Here a block
//! of 64 bytes becomes three bit masks (digits, separators, capitals), the
//! runs (digit groups joined by one to three separators) become a fourth,
//! and only a run with enough digits, two capitals before it, or an end
//! at the block's edge is handed to the byte loop in the parent module.

/// A run needs this many digits to be worth a look without a capital
/// before it.
const ENOUGH: u32 = super::MIN_DIGITS as u32;

/// Bytes of left context a block keeps before the first run start it
/// answers for: a digit four bytes back can still join, across three
/// separators.
const CONTEXT: usize = 4;

/// Digit, separator and capital-letter masks of 64 bytes: bit `i` for
/// byte `i`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Masks {
    digit: u64,
    sep: u64,
    upper: u64,
}

/// The masks byte by byte: the definition, and the fallback off x86_64.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn masks_bytewise(b: &[u8; 64]) -> Masks {
    let mut m = Masks::default();
    for (i, &c) in b.iter().enumerate() {
        m.digit |= u64::from(c.is_ascii_digit()) << i;
        m.sep |= u64::from(super::is_sep(c)) << i;
        m.upper |= u64::from(c.is_ascii_uppercase()) << i;
    }
    m
}

/// The masks sixteen bytes at a time (LLVM does not vectorize the
/// bytewise loop).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn masks_sse2(b: &[u8; 64]) -> Masks {
    use std::arch::x86_64::*;
    let mut m = Masks::default();
    for k in 0..4 {
        let half =
            |o: usize| i64::from_le_bytes(b[16 * k + o..16 * k + o + 8].try_into().expect("8"));
        let v = _mm_set_epi64x(half(8), half(0));
        // `c + (0x80 - first)` as signed is below `-128 + len` exactly for
        // bytes in `first..first + len`.
        let in_range = |first: u8, len: u8| {
            let shifted = _mm_add_epi8(v, _mm_set1_epi8(0x80u8.wrapping_sub(first) as i8));
            _mm_cmplt_epi8(shifted, _mm_set1_epi8(0x80u8.wrapping_add(len) as i8))
        };
        let eq = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
        let sep = _mm_or_si128(
            _mm_or_si128(
                _mm_or_si128(eq(b' '), eq(b'-')),
                _mm_or_si128(eq(b'.'), _mm_or_si128(eq(b'('), eq(b')'))),
            ),
            _mm_or_si128(
                _mm_or_si128(eq(b'\t'), eq(b'+')),
                _mm_or_si128(eq(0xc2u8), eq(0xa0u8)),
            ),
        );
        let bits = |x: __m128i| u64::from(_mm_movemask_epi8(x) as u16) << (16 * k);
        m.digit |= bits(in_range(b'0', 10));
        m.sep |= bits(sep);
        m.upper |= bits(in_range(b'A', 26));
    }
    m
}

/// The masks thirty-two bytes at a time: half the instructions of the
/// SSE2 version (callgrind: the block scan was a sixth of a clean-text
/// scan). Macros, not closures, so every intrinsic is compiled with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn masks_avx2(b: &[u8; 64]) -> Masks {
    use std::arch::x86_64::*;
    let mut m = Masks::default();
    for k in 0..2 {
        let q = |o: usize| i64::from_le_bytes(b[32 * k + o..32 * k + o + 8].try_into().expect("8"));
        let v = _mm256_set_epi64x(q(24), q(16), q(8), q(0));
        // As in the SSE2 version, with `a < b` written `b > a`.
        macro_rules! in_range {
            ($first:expr, $len:expr) => {
                _mm256_cmpgt_epi8(
                    _mm256_set1_epi8(0x80u8.wrapping_add($len) as i8),
                    _mm256_add_epi8(v, _mm256_set1_epi8(0x80u8.wrapping_sub($first) as i8)),
                )
            };
        }
        macro_rules! eq {
            ($c:expr) => {
                _mm256_cmpeq_epi8(v, _mm256_set1_epi8($c as i8))
            };
        }
        macro_rules! bits {
            ($x:expr) => {
                u64::from(_mm256_movemask_epi8($x) as u32) << (32 * k)
            };
        }
        let sep = _mm256_or_si256(
            _mm256_or_si256(
                _mm256_or_si256(eq!(b' '), eq!(b'-')),
                _mm256_or_si256(eq!(b'.'), _mm256_or_si256(eq!(b'('), eq!(b')'))),
            ),
            _mm256_or_si256(
                _mm256_or_si256(eq!(b'\t'), eq!(b'+')),
                _mm256_or_si256(eq!(0xc2u8), eq!(0xa0u8)),
            ),
        );
        m.digit |= bits!(in_range!(b'0', 10));
        m.sep |= bits!(sep);
        m.upper |= bits!(in_range!(b'A', 26));
    }
    m
}

/// Proof that this CPU has AVX2: only [`Avx2::detect`] makes one, so
/// [`masks`] can trust it without its callers' word.
#[derive(Clone, Copy)]
struct Avx2(());

impl Avx2 {
    /// Asked once per text, not per block.
    fn detect() -> Option<Avx2> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Some(Avx2(()));
        }
        None
    }
}

fn masks(b: &[u8; 64], avx2: Option<Avx2>) -> Masks {
    #[cfg(target_arch = "x86_64")]
    {
        if avx2.is_some() {
            // SAFETY: an `Avx2` exists only where detection found AVX2.
            return unsafe { masks_avx2(b) };
        }
        // SAFETY: SSE2 is part of the x86_64 baseline; every x86_64 CPU
        // has it, so the target feature the function asks for is there.
        unsafe { masks_sse2(b) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = avx2;
        masks_bytewise(b)
    }
}

/// The bytes of the runs: digits, and separators that join digits (one
/// to three in a row between two digits, as `run_at` joins them).
fn runs(m: &Masks) -> u64 {
    const _: () = assert!(super::GAP_MAX == 3, "runs joins gaps of up to three");
    let (d, s) = (m.digit, m.sep);
    let one = s & (d << 1) & (d >> 1);
    let first_of_two = s & (d << 1) & (s >> 1) & (d >> 2);
    let second_of_two = s & (s << 1) & (d << 2) & (d >> 1);
    let first_of_three = s & (d << 1) & (s >> 1) & (s >> 2) & (d >> 3);
    let second_of_three = s & (s << 1) & (d << 2) & (s >> 1) & (d >> 2);
    let third_of_three = s & (s << 1) & (s << 2) & (d << 3) & (d >> 1);
    d | one | first_of_two | second_of_two | first_of_three | second_of_three | third_of_three
}

/// The run starts worth a look in a text, found block by block; the
/// masks of the last block are kept, as most candidates are followed by
/// another in the same block.
pub(super) struct Candidates<'t> {
    text: &'t [u8],
    /// Where the block whose masks are held starts.
    block: Option<usize>,
    digit: u64,
    run: u64,
    /// Run starts sure to be worth a look (after two capitals, or maybe
    /// going on past the block), and those of runs long enough to hold
    /// nine digits (their digits still to count).
    sure: u64,
    long: u64,
    avx2: Option<Avx2>,
}

impl<'t> Candidates<'t> {
    pub(super) fn new(text: &'t [u8]) -> Self {
        Candidates {
            text,
            block: None,
            digit: 0,
            run: 0,
            sure: 0,
            long: 0,
            avx2: Avx2::detect(),
        }
    }

    fn load(&mut self, block: usize) {
        let text = self.text;
        let bytes: &[u8; 64] = text[block..block + 64].try_into().expect("64 bytes");
        let m = masks(bytes, self.avx2);
        let run = runs(&m);
        let starts = run & !(run << 1);
        // Two capitals right before: bits 0 and 1 look before the block.
        let upper_at = |back: usize| block >= back && text[block - back].is_ascii_uppercase();
        let mut capitals = (m.upper << 1) & (m.upper << 2);
        capitals |= u64::from(upper_at(1) && upper_at(2));
        capitals |= u64::from(m.upper & 1 == 1 && upper_at(1)) << 1;
        // A run whose last digit is within three bytes of the block's end
        // may go on in the next block. The start of the run holding byte
        // 60 is the last start below 61 (no run crosses a block's
        // `first`, so it is one the caller can be given).
        let mut edge = starts & (0b111 << 61);
        let below = starts & ((1u64 << 61) - 1);
        if run & (1 << 60) != 0 && below != 0 {
            edge |= 1u64 << (63 - below.leading_zeros());
        }
        // Nine run bytes in a row from a start: a run long enough to hold
        // nine digits.
        let pairs = run & (run >> 1);
        let fours = pairs & (pairs >> 2);
        let nines = fours & (fours >> 4) & (run >> 8);
        self.block = Some(block);
        self.digit = m.digit;
        self.run = run;
        self.sure = starts & (capitals | edge);
        self.long = starts & nines & !self.sure;
    }

    /// The first run start at or after `from` that may be worth a look:
    /// with nine digits or more, right after two capitals, or reaching the
    /// end of its block (its length unknown). `from` must not be inside a
    /// run (0, or where the last run ended), so no run joins across it.
    /// Every run start the byte loop would act on is found; some it would
    /// skip may be found too.
    pub(super) fn next(&mut self, from: usize) -> Option<usize> {
        let mut first = from;
        let mut block = match self.block {
            Some(b) if b <= from && from < b + 64 => b,
            _ => from,
        };
        while block + 64 <= self.text.len() {
            if self.block != Some(block) {
                self.load(block);
            }
            let from_here = !0u64 << (first - block);
            let sure = self.sure & from_here;
            let mut long = self.long & from_here;
            // A long run with enough digits, if before any sure start.
            while long != 0 && long.trailing_zeros() < sure.trailing_zeros() {
                let s = long.trailing_zeros();
                long &= long - 1;
                let len = (!(self.run >> s)).trailing_zeros();
                let own = ((1u64 << len) - 1) << s;
                if (self.digit & own).count_ones() >= ENOUGH {
                    return Some(block + s as usize);
                }
            }
            if sure != 0 {
                return Some(block + sure.trailing_zeros() as usize);
            }
            // The next block overlaps this one, so that the run starts it
            // answers for have their left context in it.
            first = block + 64;
            block = first - CONTEXT;
        }
        super::next_digit(self.text, first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator: no test dependency for it.
    fn bytes(seed: u64, len: usize, alphabet: &[u8]) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % alphabet.len() as u64) as usize]
            })
            .collect()
    }

    #[test]
    fn the_fast_masks_are_the_bytewise_ones() {
        let all: Vec<u8> = (0..=255).collect();
        for seed in 0..2000 {
            let b: [u8; 64] = bytes(seed, 64, &all).try_into().unwrap();
            assert_eq!(masks(&b, None), masks_bytewise(&b), "seed {seed}");
            assert_eq!(masks(&b, Avx2::detect()), masks_bytewise(&b), "seed {seed}");
        }
    }

    /// Every run start the byte loop would act on (enough digits, or two
    /// capitals before it) is a candidate, wherever the blocks fall.
    #[test]
    fn no_run_worth_a_look_is_skipped() {
        let alphabet = b"0123456789  --.()xAZ:";
        for seed in 0..400 {
            let text = bytes(seed, 300, alphabet);
            let mut wanted = Vec::new();
            let mut i = 0;
            while let Some(at) = super::super::next_digit(&text, i) {
                let (end, digits) = super::super::run_at(&text, at);
                if digits >= super::super::MIN_DIGITS || super::super::after_capitals(&text, at) {
                    wanted.push(at);
                }
                i = end;
            }
            for &w in &wanted {
                // From the end of the run before it, or from any earlier
                // run end, the search stops at this start or before it.
                let mut i = 0;
                let mut candidates = Candidates::new(&text);
                loop {
                    let c = candidates.next(i).expect("a candidate");
                    assert!(c <= w, "seed {seed}: skipped {w}, went to {c}");
                    if c == w {
                        break;
                    }
                    i = super::super::run_at(&text, c).0;
                }
            }
        }
    }
}
