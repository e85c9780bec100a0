//! One pass over the input for every detector.
//!
//! All detector patterns (and a keep-pattern for vault tokens) compile into
//! one regex-automata multi-pattern regex; each match names its pattern and
//! goes to that detector's validator. The cost of a pass does not grow with
//! one replace pass per detector.

use std::ops::Range;

use regex_automata::meta::Regex;

use super::detectors::{DETECTORS, Kind};

/// Vault tokens are never redacted: matching them first consumes them, so
/// no other detector sees their characters.
const TOKEN_KEEP: &str = r"tok_[0-9A-Za-z]{16,}";

/// A confirmed finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub range: Range<usize>,
}

/// The compiled multi-pattern scanner.
pub struct Scanner {
    re: Regex,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    pub fn new() -> Self {
        let mut patterns: Vec<&str> = vec![TOKEN_KEEP];
        patterns.extend(DETECTORS.iter().map(|d| d.pattern));
        let re = Regex::builder()
            .syntax(
                regex_automata::util::syntax::Config::new()
                    .unicode(false)
                    .utf8(false),
            )
            .build_many(&patterns)
            .expect("detector patterns compile");
        Self { re }
    }

    /// Appends the findings of `text`, in order and not overlapping.
    pub fn scan(&self, text: &[u8], out: &mut Vec<Finding>) {
        let mut ranges = Vec::new();
        for m in self.re.find_iter(text) {
            let pid = m.pattern().as_usize();
            if pid == 0 {
                continue;
            }
            let d = &DETECTORS[pid - 1];
            ranges.clear();
            (d.validate)(text, m.range(), &mut ranges);
            out.extend(ranges.drain(..).map(|range| Finding {
                kind: d.kind,
                range,
            }));
        }
    }
}
