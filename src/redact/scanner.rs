//! One scan of the input for every enabled detector.
//!
//! A regex over the union of all patterns has no literal prefix (an email
//! starts with any letter, an IBAN with any two capitals), so it runs its
//! automaton over every byte and was the largest cost of a scan. Instead
//! each detector names an [`Anchor`], the place its pattern can start, and
//! the scan finds anchors cheaply and runs patterns only there:
//!
//! - literal-prefixed patterns (JWT, AWS key ids, `bearer`) share one
//!   regex whose prefilter skips to their literals; vault tokens, which
//!   are kept, are found by `memmem` and read by hand;
//! - `@` and `+` are found by `memchr`; infixes (`://`, `%`, a PEM
//!   block's `-----BEGIN `) by `memmem`, each on a pass of its own;
//! - `name = value` pairs from each `:` or `=` whose name ends in a key
//!   name, checked backwards from the separator;
//! - XML elements (`<cvv>123</cvv>`) from each `<` whose element's name
//!   ends in a key name, read forwards;
//! - digit runs (cards, dashed SSNs, North American phones, and the IBAN
//!   and SSN-context anchors) by one byte loop (`numeric`).
//!
//! Each match goes to its detector's validator. The findings of all
//! anchors are merged: sorted, overlaps joined.

use std::ops::Range;

use regex_automata::meta::Regex;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, PatternID};

use super::detectors::{
    Anchor, DETECTORS, DigitTrigger, ESCAPES_MAX, Finding, InfixTrigger, Kind, backslashes_before,
};
use super::numeric;
use super::pairs::EndPairs;
use super::reach::Reach;

/// Vault tokens are never redacted: a match of `tok_[0-9A-Za-z]{16,}`
/// that is a real token (its check characters agree, nothing glued to its
/// left) is kept and nothing inside it is reported; any other `tok_…` is
/// scanned like other text.
const TOKEN_PREFIX: &[u8] = b"tok_";
/// Characters a token needs after its prefix.
const TOKEN_MIN_BODY: usize = 16;

/// The first match of `tok_[0-9A-Za-z]{16,}` starting at or after
/// `from`. Found by hand: as a member of the literal regex, each token
/// cost a search of its own with a reverse pass for its start, about 2,800
/// instructions, and tokens are common in clean logs (14% of a scan of the
/// corpus's clean lines).
fn next_token(
    text: &[u8],
    finder: &memchr::memmem::Finder<'static>,
    from: usize,
) -> Option<Range<usize>> {
    let mut at = from;
    while let Some(i) = finder.find(&text[at..]) {
        let start = at + i;
        let body = start + TOKEN_PREFIX.len();
        let n = text[body..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if n >= TOKEN_MIN_BODY {
            return Some(start..body + n);
        }
        at = body;
    }
    None
}

/// Whether a `tok_…` match is a vault token to keep.
fn is_vault_token(text: &[u8], r: &Range<usize>) -> bool {
    let glued =
        r.start > 0 && (text[r.start - 1].is_ascii_alphanumeric() || text[r.start - 1] == b'_');
    !glued
        && std::str::from_utf8(&text[r.clone()])
            .is_ok_and(|t| crate::vault::token::Token::parse(t).is_ok())
}

/// Lazy-DFA cache per search thread: enough that an automaton's states
/// are built once and reused, not rebuilt after a cache clear.
const CACHE_BYTES: usize = 4 << 20;

/// How far back from a `:` or `=` a key name is looked for. Longer names
/// are read from their last `KEY_SPAN` bytes.
const KEY_SPAN: usize = 64;
/// Spaces and tabs read between a name and its `:` or `=` (`Password
/// : …`, as aligned dumps pad names to one column).
const PAD: usize = 32;

/// The longest value a named pair's search reads past its separator, so
/// that a line of `value=` pairs costs linear time. A longer value is not
/// found by it; no secret is that long.
const NAMED_VALUE_MAX: usize = 1024;

/// The most spaces a key name's words are read across (`card verification
/// value`).
const NAME_SPACES: usize = 2;

/// Bytes of a key name: what the lazy prefix of a keyed pattern skips.
/// Spaces too: human-readable logs write `API Key: …`, `Security Code:`;
/// and a percent-encoded opening bracket (`card%5Bcvc`).
const KEY_NAME: &str = r"(?:[A-Za-z0-9_\- ]|%5[Bb])*?";

fn build(patterns: &[String]) -> Regex {
    Regex::builder()
        .configure(Regex::config().hybrid_cache_capacity(CACHE_BYTES))
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .build_many(patterns)
        .expect("detector patterns compile")
}

/// Patterns searched together, each mapped to its detector.
struct Group {
    re: Regex,
    /// Index into `DETECTORS` of each pattern.
    detector: Vec<usize>,
}

impl Group {
    fn new(members: Vec<(usize, String)>) -> Option<Group> {
        if members.is_empty() {
            return None;
        }
        let (detector, patterns): (Vec<_>, Vec<_>) = members.into_iter().unzip();
        Some(Group {
            re: build(&patterns),
            detector,
        })
    }

    /// Runs the validator of the pattern that matched; whether it found
    /// anything.
    fn validate(
        &self,
        text: &[u8],
        pattern: PatternID,
        r: Range<usize>,
        out: &mut Vec<Finding>,
    ) -> bool {
        let di = self.detector[pattern.as_usize()];
        let before = out.len();
        (DETECTORS[di].validate)(text, r, out);
        out.len() > before
    }

    /// One search from `at`, anchored there or not, within `text[..end]`.
    fn search(
        &self,
        text: &[u8],
        at: usize,
        end: usize,
        anchored: bool,
    ) -> Option<(PatternID, Range<usize>)> {
        let mode = if anchored {
            Anchored::Yes
        } else {
            Anchored::No
        };
        let input = Input::new(text).span(at..end).anchored(mode);
        self.re.search(&input).map(|m| (m.pattern(), m.range()))
    }
}

/// Key names of the keyed detectors, normalized (lower case, no `_` or
/// `-`), reversed for a suffix test read backwards from a separator, and
/// bucketed by their last byte (either case): most separators (`12:30`,
/// `status=`) are rejected by one lookup, the rest compared with a few
/// names.
struct Keys {
    by_last: Vec<Vec<Box<[u8]>>>,
    /// Per byte: whether a name may end in it (`KEY_END`), or a numbered
    /// name (`NUMBERED`: `1` and `2`): one lookup turns most separators
    /// away. Numbered by any digit, separators after a time's digits cost
    /// a clean log's scan 1.2% more.
    gate: [u8; 256],
    /// The byte pairs the names end in: most names that end in a key's
    /// last byte (`trace=`, `dur=`) do not end in its last two.
    pairs: EndPairs,
}

impl Keys {
    fn new(names: &[&str]) -> Keys {
        let mut by_last = vec![Vec::new(); 256];
        for n in names {
            assert!(n.len() >= 2, "key names have two bytes or more");
            let reversed: Box<[u8]> = n.bytes().rev().collect();
            let b = reversed[0];
            by_last[usize::from(b)].push(reversed.clone());
            if b.to_ascii_uppercase() != b {
                by_last[usize::from(b.to_ascii_uppercase())].push(reversed);
            }
        }
        // `ends_in_key` tracks a bucket's names in one 64-bit mask.
        assert!(
            by_last.iter().all(|b| b.len() <= 64),
            "at most 64 key names end in one byte"
        );
        let pairs = EndPairs::new(names.iter().map(|n| n.as_bytes()));
        let mut gate = [0u8; 256];
        for (b, g) in gate.iter_mut().enumerate() {
            if !by_last[b].is_empty() {
                *g |= KEY_END;
            }
            if matches!(b as u8, b'1' | b'2') {
                *g |= NUMBERED;
            }
        }
        Keys {
            by_last,
            gate,
            pairs,
        }
    }

    /// Whether a name ending at `end` ends in a key name, or numbers one
    /// (`new_password1`, `pin_2`: a `1` or `2` after a letter, a `_` or
    /// `-` between; as `fields::numbered` reads a field's name).
    fn names_key(&self, text: &[u8], end: usize) -> bool {
        let g = self.gate[usize::from(text[end - 1])];
        if g == 0 {
            return false;
        }
        if g & KEY_END != 0 && self.ends_in_key(text, end) {
            return true;
        }
        g & NUMBERED != 0
            && numbered_name_end(text, end)
                .is_some_and(|e| self.ends_with_byte(text[e - 1]) && self.ends_in_key(text, e))
    }

    /// Whether a name can end with this byte.
    fn ends_with_byte(&self, b: u8) -> bool {
        !self.by_last[usize::from(b)].is_empty()
    }

    /// Whether the name that ends at `end` (its last `KEY_SPAN` name bytes,
    /// without `_` and `-`, in lower case) ends in a key name. Read
    /// backwards only while some key still agrees: most names that end in
    /// a key's last byte (`request_id`, `duration`) part from every key
    /// within two or three bytes, where normalizing the whole name first
    /// cost about a tenth of a scan of clean logs.
    fn ends_in_key(&self, text: &[u8], end: usize) -> bool {
        // The name's byte before its last, read as the walk below reads.
        let mut i = end - 1;
        let second = loop {
            if i == 0 || end - i >= KEY_SPAN || !is_name_byte(text[i - 1]) {
                break 0;
            }
            i -= 1;
            if !is_joiner(text[i]) {
                break text[i].to_ascii_lowercase();
            }
        };
        if !self.pairs.holds(second, text[end - 1].to_ascii_lowercase()) {
            return false;
        }
        let keys = &self.by_last[usize::from(text[end - 1])];
        let mut alive: u64 = match keys.len() {
            64 => u64::MAX,
            n => (1 << n) - 1,
        };
        // Every name of the bucket ends in the name's last byte, and has
        // another before it.
        let (mut i, mut n) = (end - 1, 1);
        while alive != 0 && i > 0 && end - i < KEY_SPAN && is_name_byte(text[i - 1]) {
            i -= 1;
            let b = text[i];
            if is_joiner(b) {
                continue;
            }
            let b = b.to_ascii_lowercase();
            let mut left = alive;
            while left != 0 {
                let k = left.trailing_zeros() as usize;
                left &= left - 1;
                if keys[k][n] != b {
                    alive &= !(1 << k);
                } else if keys[k].len() == n + 1 {
                    return true;
                }
            }
            n += 1;
        }
        false
    }
}

/// A byte of a key name: a letter, a digit or a joiner.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || is_joiner(b)
}

/// What joins the words of a key name and is dropped when it is compared
/// (`api_key`, `api-key`, `API Key`).
fn is_joiner(b: u8) -> bool {
    matches!(b, b'_' | b'-' | b' ')
}

/// The compiled scanner for one set of enabled detectors.
pub struct Scanner {
    /// Literal-prefixed patterns.
    literal: Option<Group>,
    /// Finds `tok_`, where a vault token to keep may start.
    tokens: memchr::memmem::Finder<'static>,
    /// `name = value` patterns, each behind a lazy key-name prefix,
    /// searched anchored at the start of the name before a separator.
    keyed: Option<(Group, Keys)>,
    /// Pairs named by the pair before them, found on the keyed pass at
    /// each separator whose name ends in `value` (one of its keys then).
    /// Both are secrets' detectors: one is on when the other is.
    named: Option<Group>,
    /// The keyed patterns' XML twins, the same way at the start of an
    /// element's name.
    elements: Option<(Group, Keys)>,
    plus: Option<Group>,
    /// Quote-anchored detectors with their trigger, found on the `+` pass.
    quote: Vec<(Group, InfixTrigger)>,
    /// Infix-anchored detectors: each its pattern, its trigger and the
    /// finder of its literal.
    infix: Vec<(
        Group,
        InfixTrigger,
        Option<usize>,
        memchr::memmem::Finder<'static>,
    )>,
    at: Option<Group>,
    /// Digit-anchored detectors with their trigger.
    digits: Vec<(Group, DigitTrigger)>,
    own: Option<Group>,
    /// Which digit-run detectors are on: cards, SSNs, phones.
    numeric: [bool; 3],
}

impl Scanner {
    /// A scanner for the detectors whose bit is set in `enabled`.
    pub fn new(enabled: u32) -> Self {
        let mut literal = Vec::new();
        let mut keyed = Vec::new();
        let mut key_names = Vec::new();
        let (mut elements, mut element_names) = (Vec::new(), Vec::new());
        let (mut plus, mut at, mut own) = (Vec::new(), Vec::new(), Vec::new());
        let (mut named, mut quote) = (Vec::new(), Vec::new());
        let mut infix = Vec::new();
        let mut digits = Vec::new();
        for (i, d) in DETECTORS.iter().enumerate() {
            if enabled & d.kind.bit() == 0 {
                continue;
            }
            let member = (i, d.pattern.to_owned());
            match d.anchor {
                Anchor::Literal => literal.push(member),
                Anchor::Key(names) => {
                    keyed.push((i, format!("{KEY_NAME}(?:{})", d.pattern)));
                    key_names.extend_from_slice(names);
                }
                Anchor::Element(names) => {
                    elements.push((i, format!("{KEY_NAME}(?:{})", d.pattern)));
                    element_names.extend_from_slice(names);
                }
                Anchor::Named => named.push(member),
                Anchor::Plus => plus.push(member),
                Anchor::Quote(trigger) => {
                    quote.push((Group::new(vec![member]).expect("one pattern"), trigger))
                }
                Anchor::Infix(literal, trigger, reach) => infix.push((
                    Group::new(vec![member]).expect("one pattern"),
                    trigger,
                    reach,
                    memchr::memmem::Finder::new(literal),
                )),
                Anchor::At => at.push(member),
                Anchor::Digits(trigger) => {
                    digits.push((Group::new(vec![member]).expect("one pattern"), trigger))
                }
                Anchor::Own => own.push(member),
            }
        }
        if !named.is_empty() {
            assert!(!keyed.is_empty(), "named pairs are found on the keyed pass");
            key_names.push("value");
        }
        let on = |k: Kind| enabled & k.bit() != 0;
        Self {
            literal: Group::new(literal),
            tokens: memchr::memmem::Finder::new(TOKEN_PREFIX).into_owned(),
            keyed: Group::new(keyed).map(|g| (g, Keys::new(&key_names))),
            named: Group::new(named),
            elements: Group::new(elements).map(|g| (g, Keys::new(&element_names))),
            plus: Group::new(plus),
            quote,
            infix,
            at: Group::new(at),
            digits,
            own: Group::new(own),
            numeric: [on(Kind::Pan), on(Kind::Ssn), on(Kind::Phone)],
        }
    }

    /// Appends the findings of `text` to `out`, in order, not overlapping.
    /// `text` may hold many lines: no pattern matches across a newline.
    pub fn scan(&self, text: &[u8], out: &mut Vec<Finding>) {
        let first = out.len();
        let mut keep: Vec<Range<usize>> = Vec::new();
        self.literals(text, &mut keep, out);
        if let Some((g, keys)) = &self.keyed {
            keyed(g, keys, self.named.as_ref(), text, out);
        }
        if let Some((g, keys)) = &self.elements {
            elements(g, keys, text, out);
        }
        self.plus_and_quotes(text, out);
        for (g, trigger, reach, finder) in &self.infix {
            // Past what an accepted match was found to hold, the
            // occurrences are done; not past the whole match, whose end
            // may hold more (a card cut off by its span's bound). One
            // that only starts inside it is not: a key's begin marker may
            // share its dashes with the end marker before it.
            let mut done = 0;
            let len = finder.needle().len();
            for p in finder.find_iter(text) {
                if p + len <= done {
                    continue;
                }
                if let Some(span) = trigger(text, p, done)
                    && let Some((id, r)) = g.search(text, span.start, span.end, true)
                {
                    let (before, end) = (out.len(), r.end);
                    if g.validate(text, id, r, out) {
                        done = out[before..].iter().map(|f| f.range.end).max().unwrap_or(0);
                    }
                    if let Some(reach) = reach {
                        done = done.max(end.saturating_sub(*reach));
                    }
                }
            }
        }
        if let Some(g) = &self.at {
            emails(g, text, out);
        }
        if let Some(g) = &self.own {
            let mut from = 0;
            while let Some((id, r)) = g.search(text, from, text.len(), false) {
                from = if g.validate(text, id, r.clone(), out) {
                    r.end
                } else {
                    r.start + 1
                };
            }
        }
        let [pan, ssn, phone] = self.numeric;
        if pan || ssn || phone || !self.digits.is_empty() {
            numeric::scan(text, pan, ssn, phone, out, |run, n, out| {
                for (g, trigger) in &self.digits {
                    if let Some(at) = trigger(text, run.clone(), n)
                        && let Some((id, r)) = g.search(text, at, text.len(), true)
                    {
                        g.validate(text, id, r, out);
                    }
                }
            });
        }
        // Nothing inside a vault token is redacted. The kept spans come in
        // order and do not overlap: the one that could hold a finding is
        // the last to start at or before it.
        if !keep.is_empty() {
            for f in &mut out[first..] {
                let i = keep.partition_point(|k| k.start <= f.range.start);
                if i > 0 && f.range.end <= keep[i - 1].end {
                    f.range = usize::MAX..usize::MAX;
                }
            }
        }
        normalize(&mut out[first..]);
        let mut kept = first;
        for i in first..out.len() {
            if out[i].range.start != usize::MAX {
                out.swap(kept, i);
                kept += 1;
            }
        }
        out.truncate(kept);
    }

    /// Patterns that start at a `+` and quote-anchored ones, on one pass
    /// (`memchr2`, or `memchr` when only one kind is on). A quote inside
    /// what an accepted quoted match holds is not looked at again.
    fn plus_and_quotes(&self, text: &[u8], out: &mut Vec<Finding>) {
        let (a, b) = match (&self.plus, self.quote.is_empty()) {
            (Some(_), false) => (b'+', b'\''),
            (Some(_), true) => (b'+', b'+'),
            (None, false) => (b'\'', b'\''),
            (None, true) => return,
        };
        let mut done = 0;
        for p in memchr::memchr2_iter(a, b, text) {
            if text[p] == b'+' {
                if let Some(g) = &self.plus
                    && let Some((id, r)) = g.search(text, p, text.len(), true)
                {
                    g.validate(text, id, r, out);
                }
                continue;
            }
            if p < done {
                continue;
            }
            for (g, trigger) in &self.quote {
                if let Some(span) = trigger(text, p, done)
                    && let Some((id, r)) = g.search(text, span.start, span.end, true)
                {
                    let before = out.len();
                    if g.validate(text, id, r.clone(), out) {
                        done = r
                            .end
                            .max(out[before..].iter().map(|f| f.range.end).max().unwrap_or(0));
                    }
                }
            }
        }
    }

    /// The literal-prefixed patterns and vault tokens, in order of where
    /// they start, as if one regex held both (a token first on a tie). A
    /// match its validator rejects (or a `tok_…` that is no vault token) is
    /// searched again from its second byte, so it cannot hide a match that
    /// starts inside it; an accepted one is skipped whole. The next match
    /// of each kind is kept while it still starts at or after where the
    /// scan is: a search from further on would find the same one.
    fn literals(&self, text: &[u8], keep: &mut Vec<Range<usize>>, out: &mut Vec<Finding>) {
        let mut from = 0;
        let mut literal: Option<Option<(PatternID, Range<usize>)>> = None;
        let mut token: Option<Option<Range<usize>>> = None;
        while from < text.len() {
            if literal
                .as_ref()
                .is_none_or(|l| l.as_ref().is_some_and(|(_, r)| r.start < from))
            {
                literal = Some(
                    self.literal
                        .as_ref()
                        .and_then(|g| g.search(text, from, text.len(), false)),
                );
            }
            if token
                .as_ref()
                .is_none_or(|t| t.as_ref().is_some_and(|r| r.start < from))
            {
                token = Some(next_token(text, &self.tokens, from));
            }
            let l = literal.clone().flatten();
            let t = token.clone().flatten();
            let (r, accepted) = match (l, t, &self.literal) {
                (Some((id, r)), t, Some(g)) if t.as_ref().is_none_or(|t| r.start < t.start) => {
                    let accepted = g.validate(text, id, r.clone(), out);
                    (r, accepted)
                }
                (_, Some(r), _) => {
                    let token = is_vault_token(text, &r);
                    if token {
                        keep.push(r.clone());
                    }
                    (r, token)
                }
                _ => break,
            };
            from = if accepted { r.end } else { r.start + 1 };
        }
    }
}

/// `name = value` pairs: at each `:` or `=`, the name before it (after
/// up to three spaces or tabs and a quote, double or single) is read
/// backwards; where it ends in a key name, the keyed patterns run anchored
/// at its start; where it ends in `value`, the named pattern runs anchored
/// at the pair before it ([`naming_pair_start`]).
fn keyed(g: &Group, keys: &Keys, named: Option<&Group>, text: &[u8], out: &mut Vec<Finding>) {
    keyed_within(g, keys, named, text, &mut Reach::new(text), out);
}

/// [`keyed`], its searches bounded by `reach`.
fn keyed_within(
    g: &Group,
    keys: &Keys,
    named: Option<&Group>,
    text: &[u8],
    reach: &mut Reach,
    out: &mut Vec<Finding>,
) {
    // Every separator is tried, those inside an earlier value too: in
    // `secret=abc:password="two words"` the first value ends at the quote,
    // and the second pair must still be found.
    for p in memchr::memchr2_iter(b':', b'=', text) {
        let mut end = p;
        while end > 0 && p - end < PAD && matches!(text[end - 1], b' ' | b'\t') {
            end -= 1;
        }
        // A closing quote, also escaped, or bracket, the bracket also
        // percent-encoded (`detectors::name_end`).
        if end > 0 {
            match text[end - 1] {
                b'"' | b'\'' if end >= 2 && text[end - 2] == b'\\' => {
                    end -= 1 + backslashes_before(text, end - 1)
                }
                b'"' | b'\'' | b']' => end -= 1,
                b'D' | b'd' if end >= 3 && text[end - 3] == b'%' && text[end - 2] == b'5' => {
                    end -= 3
                }
                _ => {}
            }
        }
        if end == 0 || !keys.names_key(text, end) {
            continue;
        }
        // `value` is one of the keys when named pairs are looked for.
        if let Some(named) = named
            && end >= 5
            && text[end - 5..end].eq_ignore_ascii_case(b"value")
            && let Some(start) = naming_pair_start(
                text,
                end - 5,
                matches!(text.get(end), Some(b'"' | b'\'' | b'\\')),
            )
            && let Some((id, r)) =
                named.search(text, start, text.len().min(p + 1 + NAMED_VALUE_MAX), true)
        {
            named.validate(text, id, r, out);
        }
        // The name's start: at most three words back (`card verification
        // value`), so a keyed search does not walk a sentence.
        let (mut start, mut spaces) = (end, 0);
        while start > 0 && end - start < KEY_SPAN && is_name_byte(text[start - 1]) {
            if text[start - 1] == b' ' {
                if spaces == NAME_SPACES {
                    break;
                }
                spaces += 1;
            }
            start -= 1;
        }
        // A percent-encoded opening bracket where the walk stopped
        // (`card%5Bcvd`): a whole-word name may start after it
        // (`detectors::name_open`).
        if start > 0
            && text[start - 1] == b'%'
            && text
                .get(start..start + 2)
                .is_some_and(|b| b.eq_ignore_ascii_case(b"5b"))
        {
            start -= 1;
        }
        search_value(g, reach, text, start, p, pair_quote, out);
    }
}

/// Where the quoted value after the separator at `at` opens, if it is
/// quoted: past a `=>`'s `>`, blanks and escaping backslashes.
fn pair_quote(text: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    if text.get(i) == Some(&b'>') {
        i += 1;
    }
    while matches!(text.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    let from = i;
    while text.get(i) == Some(&b'\\') && i - from < ESCAPES_MAX {
        i += 1;
    }
    matches!(text.get(i), Some(b'"' | b'\'')).then_some(from)
}

/// Whether the quoted value (or CDATA section) opening at `open` closes
/// before `end`: if so, a search within `end` read it whole.
fn closes_before(text: &[u8], open: usize, end: usize) -> bool {
    if text[open..].starts_with(b"<![CDATA[") {
        return memchr::memmem::find(&text[open..end], b"]]>").is_some();
    }
    let quote = open + text[open..].iter().take_while(|&&b| b == b'\\').count();
    quote < end && memchr::memchr(text[quote], &text[quote + 1..end]).is_some()
}

/// Where the CDATA section after the element's name ending at `at` opens,
/// if its text is one: past the tag's attributes and `>`, and blanks.
fn element_cdata(text: &[u8], at: usize) -> Option<usize> {
    let line = &text[at..text.len().min(at + KEY_SPAN * 16)];
    let mut i = at + memchr::memchr(b'>', line)? + 1;
    while matches!(text.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    text[i..].starts_with(b"<![CDATA[").then_some(i)
}

/// The anchored search of a value whose pattern starts at `start`, its
/// value after `anchor`, within what `reach` allows; its match validated.
/// A value that `quoted` says opens with a quote (at the offset it gives)
/// and does not close within a capped window is searched again to its
/// line's end, or masked to it ([`Reach::again`]).
fn search_value(
    g: &Group,
    reach: &mut Reach,
    text: &[u8],
    start: usize,
    anchor: usize,
    quoted: fn(&[u8], usize) -> Option<usize>,
    out: &mut Vec<Finding>,
) {
    let mut window = reach.window(text, start, anchor);
    let mut found = g.search(text, start, window.end, true);
    // A quote past the window (blanks before it filled the window) is
    // not closed within it either.
    if window.capped()
        && let Some(quote) = quoted(text, anchor)
        && (quote >= window.end || !closes_before(text, quote, window.end))
    {
        match reach.again(&window, quote) {
            Some(whole) => {
                window = whole;
                found = g.search(text, start, window.end, true);
                if let Some((_, r)) = &found {
                    reach.again_matched(r.end);
                }
            }
            None => {
                // Fail closed: the value may run past the window.
                out.push(Finding {
                    kind: Kind::Secret,
                    range: quote..window.line_end(),
                });
                return;
            }
        }
    }
    if let Some((id, r)) = found {
        reach.matched(r.end);
        let before = out.len();
        g.validate(text, id, r.clone(), out);
        window.extend_cut(&r, &mut out[before..]);
    }
}

/// [`Keys::gate`]'s flags.
const KEY_END: u8 = 1;
const NUMBERED: u8 = 2;

/// Where the name a name ending at `end` in a digit numbers ends, if it is
/// numbered: one digit after a letter, a `_` or `-` between.
fn numbered_name_end(text: &[u8], end: usize) -> Option<usize> {
    let digit = end - 1;
    if digit == 0 {
        return None;
    }
    let letter = if matches!(text[digit - 1], b'_' | b'-') {
        digit - 1
    } else {
        digit
    };
    (letter > 0 && text[letter - 1].is_ascii_alphabetic()).then_some(letter)
}

/// Where the pair before the `value` at `at` starts (the name holding it
/// may start earlier: `ParameterValue`; `quoted` when a quote closes it):
/// read backwards from that name,
/// over its quote, a `,` or `;` between spaces, the naming pair's value
/// (quoted, to its opening quote, at most `KEY_SPAN` bytes back; or bare),
/// its separator and its name. The named pattern checks the whole shape
/// forwards; this only finds where to try it, once a pair, so a line of
/// pairs costs linear time.
fn naming_pair_start(text: &[u8], at: usize, quoted: bool) -> Option<usize> {
    let name_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = at;
    while i > 0 && at - i < KEY_SPAN && name_byte(text[i - 1]) {
        i -= 1;
    }
    // The quote stepped over, if any.
    let skip_quote = |i: &mut usize| {
        let q = i.checked_sub(1).map(|j| text[j]);
        if matches!(q, Some(b'"' | b'\'')) {
            *i -= 1 + backslashes_before(text, *i - 1);
            return q;
        }
        None
    };
    let skip_blanks = |i: &mut usize| {
        while *i > 0 && matches!(text[*i - 1], b' ' | b'\t') {
            *i -= 1;
        }
    };
    skip_quote(&mut i);
    skip_blanks(&mut i);
    if i > 0 && matches!(text[i - 1], b',' | b';') {
        i -= 1;
        skip_blanks(&mut i);
    }
    // The naming pair's value.
    let q = *text.get(i.checked_sub(1)?)?;
    if matches!(q, b'"' | b'\'') {
        let from = i.saturating_sub(KEY_SPAN + 1);
        i = from + memchr::memrchr(q, &text[from..i - 1])?;
        i -= backslashes_before(text, i);
    } else {
        let value_byte = |b: u8| name_byte(b) || matches!(b, b'.' | b'/' | b'-');
        let end = i;
        while i > 0 && end - i < KEY_SPAN && value_byte(text[i - 1]) {
            i -= 1;
        }
    }
    skip_blanks(&mut i);
    if !matches!(text.get(i.checked_sub(1)?), Some(b':' | b'=')) {
        return None;
    }
    i -= 1;
    skip_blanks(&mut i);
    let quote = skip_quote(&mut i);
    let end = i;
    while i > 0 && end - i < KEY_SPAN && name_byte(text[i - 1]) {
        i -= 1;
    }
    // The name whole: a quoted one inside its quotes (a JSON key is the
    // field rule's pair name exactly, or no pair: `")name":` is none, as
    // the rule reads it); a bare one after a space or a bracket, or where
    // a string's text starts, as each walker of an NDJSON line sees it.
    let before = i.checked_sub(1).map(|j| text[j]);
    // And the value's name `quoted` (closed by a quote) when the naming
    // one is, and not when it is not: `{"Name":"DB_PASSWORD","Value=x":1}`
    // has its `value` inside another key.
    let whole = match quote {
        Some(q) => before == Some(q) && quoted,
        None => {
            !quoted
                && matches!(
                    before,
                    None | Some(b' ' | b'\t' | b'{' | b'[' | b'(' | b',' | b';' | b'"' | b'\'')
                )
        }
    };
    (i < end && whole).then_some(i)
}

/// XML elements (`<cvv>123</cvv>`, `<wsse:Password Type="…">…`): at each
/// `<` that opens one, its name is read forwards; where its local name
/// (after a namespace prefix) ends in a key name, the element patterns run
/// anchored at that name's start. A closing tag, a comment or a name
/// longer than `KEY_SPAN` is passed over at its first bytes, and so is a
/// `<` glued to a word: a type's parameters (`Option<Secret> loaded`,
/// `Vec<ApiKey>`), not a tag.
fn elements(g: &Group, keys: &Keys, text: &[u8], out: &mut Vec<Finding>) {
    let mut reach = Reach::new(text);
    for p in memchr::memchr_iter(b'<', text) {
        if p > 0 && (text[p - 1].is_ascii_alphanumeric() || text[p - 1] == b'_') {
            continue;
        }
        let (mut start, mut end) = (p + 1, p + 1);
        while end < text.len()
            && end - p <= KEY_SPAN
            && (text[end].is_ascii_alphanumeric() || matches!(text[end], b'_' | b'-' | b'.' | b':'))
        {
            if text[end] == b':' {
                start = end + 1;
            }
            end += 1;
        }
        if start == end
            || !matches!(text.get(end), Some(b'>' | b' ' | b'\t' | b'\r'))
            || !keys.ends_with_byte(text[end - 1])
            || !keys.ends_in_key(text, end)
        {
            continue;
        }
        search_value(g, &mut reach, text, start, end, element_cdata, out);
    }
}

/// Email: each `@`, the match starting where the local-part bytes before
/// it start.
fn emails(g: &Group, text: &[u8], out: &mut Vec<Finding>) {
    let local = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-');
    let mut done = 0;
    for p in memchr::memchr_iter(b'@', text) {
        if p < done {
            continue;
        }
        let mut start = p;
        while start > done && local(text[start - 1]) {
            start -= 1;
        }
        if start == p {
            continue;
        }
        if let Some((id, r)) = g.search(text, start, text.len(), true) {
            let end = r.end;
            if g.validate(text, id, r, out) {
                done = end;
            }
        }
    }
}

/// Sorts findings by start and merges overlapping ones into the earlier,
/// so no part of either is left in the clear; the absorbed ones are marked
/// (start = MAX) for removal. The merged finding keeps the earlier's type,
/// unless that is a card overlapping something else: a card's mask keeps
/// its last four digits and its separators, which would show the other
/// finding's part (`4111 1111 1111 1111@x.io`).
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
                if f[l].kind == Kind::Pan {
                    f[l].kind = f[i].kind;
                }
                f[i].range = usize::MAX..usize::MAX;
            }
            _ => last = Some(i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `literals` did when the keep pattern was one more member of
    /// the literal regex: the reference the hand-found tokens must match.
    fn literals_by_one_regex(text: &[u8]) -> (Vec<Range<usize>>, Vec<Finding>) {
        let mut patterns = vec![r"tok_[0-9A-Za-z]{16,}".to_owned()];
        let mut detector = vec![usize::MAX];
        for (i, d) in DETECTORS.iter().enumerate() {
            if matches!(d.anchor, Anchor::Literal) {
                patterns.push(d.pattern.to_owned());
                detector.push(i);
            }
        }
        let g = Group {
            re: build(&patterns),
            detector,
        };
        let (mut keep, mut out) = (Vec::new(), Vec::new());
        let mut from = 0;
        while from < text.len() {
            let Some((id, r)) = g.search(text, from, text.len(), false) else {
                break;
            };
            let accepted = if id == PatternID::ZERO {
                let token = is_vault_token(text, &r);
                if token {
                    keep.push(r.clone());
                }
                token
            } else {
                g.validate(text, id, r.clone(), &mut out)
            };
            from = if accepted { r.end } else { r.start + 1 };
        }
        (keep, out)
    }

    /// The key-name test as first written: the whole name normalized,
    /// then compared.
    fn ends_name_whole(keys: &Keys, text: &[u8], end: usize) -> bool {
        let mut start = end;
        while start > 0 && end - start < KEY_SPAN && is_name_byte(text[start - 1]) {
            start -= 1;
        }
        let norm: Vec<u8> = text[start..end]
            .iter()
            .rev()
            .filter(|&&b| !is_joiner(b))
            .map(u8::to_ascii_lowercase)
            .collect();
        start < end
            && keys.by_last[usize::from(text[end - 1])]
                .iter()
                .any(|k| norm.starts_with(k))
    }

    /// A line of separators whose values all run to its end (bare, or
    /// unclosed quotes): what the keyed searches may read stays linear in
    /// the line, and the whole line is still masked.
    #[test]
    fn a_line_of_separators_is_searched_in_linear_reads() {
        let scanner = Scanner::new(u32::MAX);
        let (g, keys) = scanner.keyed.as_ref().expect("keyed detectors");
        for unit in ["password=(", "password='", "secret: \\\"", "api_key=\"x "] {
            let text = unit.repeat(2_000).into_bytes();
            let mut reach = Reach::new(&text);
            let mut out = Vec::new();
            keyed_within(g, keys, scanner.named.as_ref(), &text, &mut reach, &mut out);
            assert!(
                reach.read <= 200 * text.len(),
                "{unit:?}: {} bytes read for {}",
                reach.read,
                text.len()
            );
            normalize(&mut out);
            let masked: usize = out
                .iter()
                .filter(|f| f.range.start != usize::MAX)
                .map(|f| f.range.len())
                .sum();
            assert!(masked > text.len() * 3 / 4, "{unit:?}: {masked} masked");
        }
    }

    /// A value longer than the capped reach, found by a search to the
    /// line's end, ends where it ends; once such searches are spent, a
    /// value the cap cut is masked to the line's end.
    #[test]
    fn a_long_value_is_masked_whole_either_way() {
        let scanner = Scanner::new(u32::MAX);
        let (g, keys) = scanner.keyed.as_ref().expect("keyed detectors");
        let value = "A1b2".repeat(700);
        let text = format!("x apikey={value}&page=2").into_bytes();
        let run = |reach: &mut Reach| {
            let mut out = Vec::new();
            keyed_within(g, keys, scanner.named.as_ref(), &text, reach, &mut out);
            normalize(&mut out);
            out.retain(|f| f.range.start != usize::MAX);
            out.iter().map(|f| f.range.clone()).collect::<Vec<_>>()
        };
        let start = 9;
        assert_eq!(
            run(&mut Reach::new(&text)),
            vec![start..start + value.len()]
        );
        let mut spent = Reach::new(&text);
        spent.matched(text.len());
        assert_eq!(run(&mut spent), vec![start..text.len()]);
    }

    /// A quoted value longer than the capped reach, its search capped
    /// (inside an earlier match, or past the budget), is searched again to
    /// its close and masked whole; one that may not be is masked to the
    /// line's end.
    #[test]
    fn a_quoted_value_past_the_cap_is_masked_whole() {
        let scanner = Scanner::new(u32::MAX);
        let (g, keys) = scanner.keyed.as_ref().expect("keyed detectors");
        let long = "A1b2 ".repeat(300);
        let masked = |text: &str, spent: bool| {
            let text = text.as_bytes();
            let mut reach = Reach::new(text);
            if spent {
                reach.matched(text.len());
            }
            let mut out = Vec::new();
            keyed_within(g, keys, scanner.named.as_ref(), text, &mut reach, &mut out);
            normalize(&mut out);
            out.iter()
                .filter(|f| f.range.start != usize::MAX)
                .map(|f| String::from_utf8_lossy(&text[f.range.clone()]).into_owned())
                .collect::<Vec<_>>()
        };
        let inside = format!("secret=abc:password=\"{long}\" next=1");
        assert_eq!(
            masked(&inside, false),
            ["abc:password=".to_owned(), long.clone()]
        );
        let spent = format!("x api_key=\"{long}\" next=1");
        assert_eq!(masked(&spent, true), std::slice::from_ref(&long));
        let escaped = format!("x \\\"api_key\\\":\\\"{long}\\\" y");
        assert_eq!(masked(&escaped, true), std::slice::from_ref(&long));
        // Blanks fill the capped window before the quote.
        let blanks = format!("secret=abc:password={}\"two words\"", " ".repeat(1100));
        assert_eq!(masked(&blanks, false), ["abc:password=", "two words"]);
        // The first search again found no close: the second may not read
        // the line again, and its value is masked to the line's end.
        let unclosed = format!("x password=\"a {long} api_key='{long}' end");
        let tail = format!("'{long}' end");
        assert_eq!(masked(&unclosed, true), [tail]);
    }

    /// Names built from key names, near misses, separators, case changes
    /// and runs long enough to cross `KEY_SPAN`, each tested both ways.
    #[test]
    fn the_key_test_read_backwards_agrees_with_the_whole_name() {
        let names = [
            "password",
            "passwd",
            "pwd",
            "secret",
            "clientsecret",
            "apikey",
            "accesstoken",
            "privatekey",
            "secretkey",
            "awssecretaccesskey",
            "cvv",
            "cvv2",
            "cid",
            "cardcode",
        ];
        let keys = Keys::new(&names);
        let pieces = [
            "pass",
            "word",
            "wd",
            "_",
            "-",
            "API",
            "Key",
            "k",
            "ey",
            "secret",
            "SECRET",
            "id",
            "request",
            "c",
            "v",
            "2",
            "card",
            "code",
            "access",
            "token",
            "x",
            " ",
            "aws",
            "duration",
            "=",
            "0123456789abcdef0123456789abcdef",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut matched = 0;
        for _ in 0..20_000 {
            let mut text = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for _ in 0..1 + seed % 9 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.extend_from_slice(pieces[(seed % pieces.len() as u64) as usize].as_bytes());
            }
            for end in 1..=text.len() {
                if !keys.ends_with_byte(text[end - 1]) {
                    continue;
                }
                let want = ends_name_whole(&keys, &text, end);
                matched += usize::from(want);
                assert_eq!(
                    keys.ends_in_key(&text, end),
                    want,
                    "{:?} at {end}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
        assert!(matched > 1000, "names that end in a key: {matched}");
    }

    /// Texts of token-like, literal-like and filler pieces glued in random
    /// orders: tokens real and not, too short, glued to words, inside
    /// and around JWTs, key ids and bearer values.
    #[test]
    fn hand_found_tokens_agree_with_the_one_regex() {
        let real: Vec<String> = (0..4)
            .map(|_| crate::vault::token::Token::random().into_string())
            .collect();
        let pieces: Vec<String> = vec![
            real[0].clone(),
            real[1].clone(),
            format!("x{}", real[2]),
            format!("_{}", real[3]),
            "tok_".into(),
            "tok_abc".into(),
            "tok_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            "tok_tok_".into(),
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig".into(),
            "eyJ".into(),
            ".".into(),
            "AKIAIOSFODNN7EXAMPLE".into(),
            "AKIA".into(),
            "Bearer ".into(),
            "bearer abc.def~ghi==".into(),
            "-----BEGIN RSA PRIVATE KEY-----".into(),
            " ".into(),
            "\n".into(),
            "_".into(),
            "a".into(),
            "Z9".into(),
        ];
        let scanner = Scanner::new(u32::MAX);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3000 {
            let mut text = Vec::new();
            for _ in 0..(seed % 12) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.extend_from_slice(pieces[(seed % pieces.len() as u64) as usize].as_bytes());
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let (mut keep, mut out) = (Vec::new(), Vec::new());
            scanner.literals(&text, &mut keep, &mut out);
            let (want_keep, want_out) = literals_by_one_regex(&text);
            let shown = String::from_utf8_lossy(&text);
            assert_eq!(keep, want_keep, "{shown}");
            let ranges = |f: &[Finding]| {
                f.iter()
                    .map(|f| (f.kind, f.range.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(ranges(&out), ranges(&want_out), "{shown}");
        }
    }
}
