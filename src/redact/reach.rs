//! How far an anchored search for a value may read.
//!
//! A value's pattern runs to the value's end, and a bare or unclosed value
//! ends with its line. Searched once from each separator, a line of
//! `password=(password=(…` had every search read the rest of the line:
//! quadratic, 13 s for a 256 KiB line and minutes for a 1 MiB body, on a
//! blocking thread that runs to its end whatever the request's deadline.
//! Read `VALUE_REACH` bytes past its anchor, each search is bounded, but
//! a longer value (a token of a few KiB) would be cut.
//!
//! So a search runs to its line's end when its anchor is past every match
//! so far and the bytes such searches may read stay within a budget of a
//! few times the text; otherwise it stops `VALUE_REACH` bytes past its
//! anchor, and a bare value cut there is masked to the line's end. A
//! separator inside an earlier match is the usual capped one
//! (`secret=abc:password="two words"`, the second value after the first's
//! end). A quoted value (or a CDATA section) that a capped search did not
//! find closed is searched again to its line's end, which reads to its
//! closing quote; such searches start past the last one's end, so they
//! too read each byte once. One that may not is masked from its quote to
//! the line's end.

use std::ops::Range;

use super::detectors::Finding;

/// How far past its anchor a capped search reads.
pub const VALUE_REACH: usize = 1024;

/// What searches to the line's end may read in all, besides a multiple
/// of the text's length: a short text is never capped.
const BUDGET_FLOOR: usize = 64 << 10;

/// Searches to the line's end may read this many times the text.
const BUDGET_TIMES: usize = 8;

/// The bounds of one text's anchored value searches, in anchor order.
pub struct Reach {
    /// The furthest end of a match so far.
    searched: usize,
    /// What searches to a line's end may still read.
    budget: usize,
    /// The end (its `\n`, or the text's end) of the line of the last
    /// anchor: anchors come in order, so it is found once a line.
    line_end: usize,
    /// Where the last search of a quoted value again to its line's end
    /// ended.
    retried: usize,
    /// The bytes the windows given out span, for the tests' bound.
    #[cfg(test)]
    pub read: usize,
}

/// The span one search may read.
pub struct Window {
    /// Where the search stops.
    pub end: usize,
    /// Where a finding that reaches `end` is extended to, when `end` cut
    /// the line short.
    line_end: usize,
}

impl Reach {
    pub fn new(text: &[u8]) -> Reach {
        Reach {
            searched: 0,
            budget: BUDGET_FLOOR.saturating_add(text.len().saturating_mul(BUDGET_TIMES)),
            line_end: 0,
            retried: 0,
            #[cfg(test)]
            read: 0,
        }
    }

    /// The window of a search whose pattern starts at `start`, for the
    /// value after `anchor` (a separator, or an element's name).
    pub fn window(&mut self, text: &[u8], start: usize, anchor: usize) -> Window {
        if anchor >= self.line_end {
            self.line_end =
                memchr::memchr(b'\n', &text[anchor..]).map_or(text.len(), |i| anchor + i);
        }
        let line_end = self.line_end;
        let capped = anchor + 1 + VALUE_REACH;
        let end = if line_end <= capped {
            line_end
        } else if anchor >= self.searched && line_end - start <= self.budget {
            self.budget -= line_end - start;
            line_end
        } else {
            capped
        };
        #[cfg(test)]
        {
            self.read += end - start;
        }
        Window { end, line_end }
    }

    /// A search's match ended at `end`.
    pub fn matched(&mut self, end: usize) {
        self.searched = self.searched.max(end);
    }

    /// The window of a second search of a quoted value opening at `quote`
    /// that `window`'s capped search did not find closed: to the line's
    /// end, if no such search has read past `quote` yet.
    pub fn again(&mut self, window: &Window, quote: usize) -> Option<Window> {
        if quote < self.retried {
            return None;
        }
        self.retried = window.line_end;
        #[cfg(test)]
        {
            self.read += window.line_end - quote;
        }
        Some(Window {
            end: window.line_end,
            line_end: window.line_end,
        })
    }

    /// A second search ([`Reach::again`]) matched to `end`: the next may
    /// start from there.
    pub fn again_matched(&mut self, end: usize) {
        self.retried = end;
        self.matched(end);
    }
}

impl Window {
    /// Whether the window stops before its line's end.
    pub fn capped(&self) -> bool {
        self.end < self.line_end
    }

    /// The end of the window's line.
    pub fn line_end(&self) -> usize {
        self.line_end
    }

    /// Extends the findings of a match that the window cut to its line's
    /// end: the value went on past the window.
    pub fn extend_cut(&self, matched: &Range<usize>, found: &mut [Finding]) {
        if matched.end < self.end || self.end == self.line_end {
            return;
        }
        for f in found {
            if f.range.end == self.end {
                f.range.end = self.line_end;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_line_is_read_to_its_end_whatever_the_budget() {
        let text = b"password=a b\nnext";
        let mut reach = Reach::new(text);
        reach.budget = 0;
        reach.matched(text.len());
        assert_eq!(reach.window(text, 0, 8).end, 12);
        assert_eq!(reach.window(text, 13, 14).end, text.len());
    }

    #[test]
    fn a_long_line_is_read_to_its_end_once_past_every_match_within_budget() {
        let mut text = b"password=".to_vec();
        text.extend(std::iter::repeat_n(b'x', 4 * VALUE_REACH));
        let mut reach = Reach::new(&text);
        let w = reach.window(&text, 0, 8);
        assert_eq!(w.end, text.len());
        reach.matched(20);
        // Inside the match: capped.
        assert_eq!(reach.window(&text, 10, 15).end, 15 + 1 + VALUE_REACH);
        // Past it: to the end again, until the budget is spent.
        assert_eq!(reach.window(&text, 20, 25).end, text.len());
        reach.budget = text.len() - 31;
        assert_eq!(reach.window(&text, 30, 35).end, 35 + 1 + VALUE_REACH);
    }

    #[test]
    fn only_a_finding_the_window_cut_reaches_the_line_end() {
        let w = Window {
            end: 100,
            line_end: 500,
        };
        let kind = crate::redact::Kind::Secret;
        let mut found = [
            Finding {
                kind,
                range: 10..100,
            },
            Finding {
                kind,
                range: 10..50,
            },
        ];
        w.extend_cut(&(0..50), &mut found);
        assert_eq!(found[0].range, 10..100, "a match that ended early");
        w.extend_cut(&(0..100), &mut found);
        assert_eq!(found[0].range, 10..500);
        assert_eq!(found[1].range, 10..50);
    }
}
