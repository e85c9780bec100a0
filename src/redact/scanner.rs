//! One pass over the input for every enabled detector.
//!
//! The patterns of all enabled detectors (and a keep-pattern for vault
//! tokens) compile into one regex-automata multi-pattern regex; each match
//! names its pattern and goes to that detector's validator. Where a
//! validator rejects all or part of its match, only that span is searched
//! again, with the other detectors' own regexes, and only those whose
//! necessary bytes occur in it. Digit runs (cards, dashed SSNs, North
//! American phones) are found by a byte loop (`numeric`) beside the regex
//! pass; the two sets of findings are merged.

use std::ops::Range;

use regex_automata::meta::Regex;
use regex_automata::util::syntax;
use regex_automata::{Input, PatternID};

use super::detectors::{DETECTORS, Detector, Finding, Kind};
use super::numeric;

/// Vault tokens are never redacted: a match that is a real token (its
/// check characters agree, nothing glued to its left) is kept and nothing
/// inside it is reported; any other `tok_…` is scanned like other text.
const TOKEN_KEEP: &str = r"tok_[0-9A-Za-z]{16,}";

/// Whether a `tok_…` match is a vault token to keep.
fn is_vault_token(text: &[u8], r: &Range<usize>) -> bool {
    let glued =
        r.start > 0 && (text[r.start - 1].is_ascii_alphanumeric() || text[r.start - 1] == b'_');
    !glued
        && std::str::from_utf8(&text[r.clone()])
            .is_ok_and(|t| crate::vault::token::Token::parse(t).is_ok())
}

/// Lazy-DFA cache per search thread: enough that the combined automaton's
/// states are built once and reused, not rebuilt after a cache clear.
const CACHE_BYTES: usize = 16 << 20;

/// Cheap facts about a span, to skip detectors that cannot match in it.
#[derive(Clone, Copy)]
struct Features(u16);

const DIGIT: u16 = 1;
const UPPER: u16 = 2;
const LOWER: u16 = 4;
const AT: u16 = 8;
const PLUS: u16 = 16;
const DOT: u16 = 32;
const COLON: u16 = 64;
const DASH: u16 = 128;
const SEP: u16 = 256;

impl Features {
    fn of(s: &[u8]) -> Features {
        let mut f = 0;
        for &b in s {
            f |= match b {
                b'0'..=b'9' => DIGIT,
                b'A'..=b'Z' => UPPER,
                b'a'..=b'z' => LOWER,
                b'@' => AT,
                b'+' => PLUS,
                b'.' => DOT | SEP,
                b':' => COLON,
                b'-' => DASH | SEP,
                b' ' | b'(' | b')' => SEP,
                _ => 0,
            };
        }
        Features(f)
    }

    fn has(self, bits: u16) -> bool {
        self.0 & bits == bits
    }
}

/// What a detector needs in a span to have any chance of matching there.
fn needs(d: &Detector) -> u16 {
    use super::detectors::Kind::*;
    match d.kind {
        Ssn => DIGIT,
        // Cards are found by the digit-run scan, never by a regex.
        Pan => u16::MAX,
        Phone => DIGIT | SEP,
        Email => AT,
        Iban => UPPER | DIGIT,
        AwsKeyId => UPPER,
        AwsSecret | Jwt => UPPER | LOWER,
        PrivateKey => DASH | UPPER,
        Secret | Cvv => 0,
        Ip => DIGIT,
    }
}

/// The compiled scanner for one set of enabled detectors.
pub struct Scanner {
    all: Regex,
    /// Index into `DETECTORS` of each pattern after the keep-pattern.
    index: Vec<usize>,
    /// Each enabled detector alone, for rescanning rejected spans.
    each: Vec<(usize, Regex)>,
    /// Which digit-run detectors are on: cards, SSNs, phones.
    numeric: [bool; 3],
}

fn build(patterns: &[&str]) -> Regex {
    Regex::builder()
        .configure(Regex::config().hybrid_cache_capacity(CACHE_BYTES))
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .build_many(patterns)
        .expect("detector patterns compile")
}

impl Scanner {
    /// A scanner for the detectors whose bit is set in `enabled`.
    pub fn new(enabled: u32) -> Self {
        let index: Vec<usize> = (0..DETECTORS.len())
            .filter(|&i| enabled & DETECTORS[i].kind.bit() != 0)
            .collect();
        let mut patterns = vec![TOKEN_KEEP];
        patterns.extend(index.iter().map(|&i| DETECTORS[i].pattern));
        let each = index
            .iter()
            .map(|&i| (i, build(&[DETECTORS[i].pattern])))
            .collect();
        let on = |k: Kind| enabled & k.bit() != 0;
        Self {
            all: build(&patterns),
            index,
            each,
            numeric: [on(Kind::Pan), on(Kind::Ssn), on(Kind::Phone)],
        }
    }

    /// Appends the findings of `text` to `out`, in order, not overlapping.
    pub fn scan(&self, text: &[u8], out: &mut Vec<Finding>) {
        let first = out.len();
        let mut found = Vec::new();
        let mut keep: Vec<Range<usize>> = Vec::new();
        for m in self.all.find_iter(text) {
            if m.pattern() == PatternID::ZERO {
                if is_vault_token(text, &m.range()) {
                    keep.push(m.range());
                } else {
                    self.rescan(text, m.range(), usize::MAX, out);
                }
                continue;
            }
            let di = self.index[m.pattern().as_usize() - 1];
            found.clear();
            (DETECTORS[di].validate)(text, m.range(), &mut found);
            // Rescan what the validator did not claim: all of a rejected
            // match, or the trimmed tail of one that may split (a value
            // after its key name is never rescanned: the rest is the name).
            if found.is_empty() {
                self.rescan(text, m.range(), di, out);
            } else if DETECTORS[di].splits {
                let end = found.iter().map(|f| f.range.end).max().unwrap_or(m.end());
                if end < m.end() {
                    self.rescan(text, end..m.end(), di, out);
                }
            }
            out.append(&mut found);
        }
        let [pan, ssn, phone] = self.numeric;
        if pan || ssn || phone {
            let from = out.len();
            numeric::scan(text, pan, ssn, phone, out);
            // Nothing inside a vault token is redacted.
            if !keep.is_empty() {
                for f in &mut out[from..] {
                    if keep
                        .iter()
                        .any(|k| k.start < f.range.end && f.range.start < k.end)
                    {
                        f.range = usize::MAX..usize::MAX;
                    }
                }
            }
        }
        normalize(&mut out[first..]);
        let mut keep = first;
        for i in first..out.len() {
            if out[i].range.start != usize::MAX {
                out.swap(keep, i);
                keep += 1;
            }
        }
        out.truncate(keep);
    }

    /// Searches `span` (widened by one byte to the left, for a `+` or `(`
    /// that starts a phone number) with every enabled detector but `skip`.
    fn rescan(&self, text: &[u8], span: Range<usize>, skip: usize, out: &mut Vec<Finding>) {
        let span = span.start.saturating_sub(1)..span.end;
        let features = Features::of(&text[span.clone()]);
        for (di, re) in &self.each {
            if *di == skip || !features.has(needs(&DETECTORS[*di])) {
                continue;
            }
            for m in re.find_iter(Input::new(text).range(span.clone())) {
                (DETECTORS[*di].validate)(text, m.range(), out);
            }
        }
    }
}

/// Sorts findings by start and merges overlapping ones into the earlier
/// (which keeps its type), so no part of either is left in the clear; the
/// absorbed ones are marked (start = MAX) for removal.
fn normalize(f: &mut [Finding]) {
    f.sort_by(|a, b| {
        a.range
            .start
            .cmp(&b.range.start)
            .then(b.range.end.cmp(&a.range.end))
    });
    let mut last: Option<usize> = None;
    for i in 0..f.len() {
        if f[i].range.start == usize::MAX {
            continue;
        }
        match last {
            Some(l) if f[i].range.start < f[l].range.end => {
                f[l].range.end = f[l].range.end.max(f[i].range.end);
                f[i].range = usize::MAX..usize::MAX;
            }
            _ => last = Some(i),
        }
    }
}
