//! NDJSON lines walked over their raw bytes.
//!
//! A line that holds a finding need not be parsed into a `Value`, walked
//! and written out again: the scan of its block already says where the
//! findings are. For a line without escapes (its strings' bytes are their
//! text) the walker checks the JSON grammar first, then copies the line
//! through, replacing findings inside strings, cards held in numbers and
//! every scalar under a field that names sensitive data, and removing
//! dropped fields. What it does to a value is what the `Value` walker in
//! the parent module does; a line with a backslash still takes that path.

use super::{RedactError, Replacement, Session, push_key};
use crate::redact::action::Action;
use crate::redact::detectors::{Finding, Kind, pan::is_card_number};

/// `serde_json`'s nesting limit: it takes 127 arrays or objects one inside
/// another, not 128 (its depth counter starts at 128 and fails at 0). A
/// deeper line is not plain JSON here either.
const MAX_DEPTH: usize = 127;

/// One line being walked.
pub(super) struct Raw<'l> {
    line: &'l [u8],
    pos: usize,
    /// Findings of the block the line is in, sorted, and where the line
    /// starts in the block.
    found: &'l [Finding],
    base: usize,
    /// The first finding that may still touch what lies ahead.
    next: usize,
}

impl<'l> Raw<'l> {
    pub(super) fn new(line: &'l [u8], found: &'l [Finding], base: usize) -> Self {
        Raw {
            line,
            pos: 0,
            found,
            base,
            next: 0,
        }
    }

    fn peek(&self) -> u8 {
        self.line.get(self.pos).copied().unwrap_or(0)
    }

    fn skip_ws(&mut self) -> &'l [u8] {
        let start = self.pos;
        while matches!(self.peek(), b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
        &self.line[start..self.pos]
    }

    /// The content of the string at `pos` (no escapes: the caller checked),
    /// leaving `pos` after its closing quote.
    fn string(&mut self) -> std::ops::Range<usize> {
        let start = self.pos + 1;
        let end = start
            + memchr::memchr(b'"', &self.line[start..]).expect("a checked line closes its strings");
        self.pos = end + 1;
        start..end
    }

    /// The number or literal at `pos`, leaving `pos` after it.
    fn token(&mut self) -> &'l [u8] {
        let start = self.pos;
        while self.pos < self.line.len()
            && !matches!(
                self.line[self.pos],
                b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'
            )
        {
            self.pos += 1;
        }
        &self.line[start..self.pos]
    }

    /// The findings that overlap `r` (line offsets), clipped to it, in
    /// line offsets.
    fn findings_in(&mut self, r: std::ops::Range<usize>) -> Vec<(Kind, std::ops::Range<usize>)> {
        let (start, end) = (self.base + r.start, self.base + r.end);
        while self.next < self.found.len() && self.found[self.next].range.end <= start {
            self.next += 1;
        }
        self.found[self.next..]
            .iter()
            .take_while(|f| f.range.start < end)
            .filter(|f| f.range.end > start)
            .map(|f| {
                let s = f.range.start.max(start) - self.base;
                let e = f.range.end.min(end) - self.base;
                (f.kind, s..e)
            })
            .collect()
    }
}

/// Whether `line` (with or without its newline) is one JSON value, with
/// no backslash in it, within the nesting limit, in UTF-8.
pub(super) fn is_plain_json(line: &[u8]) -> bool {
    if memchr::memchr(b'\\', line).is_some()
        || (!line.is_ascii() && std::str::from_utf8(line).is_err())
    {
        return false;
    }
    // A control byte is never valid inside a string. Most lines hold none
    // (their newline aside), and then a string ends at its next quote:
    // strings are most of a line's bytes, and a byte loop over them was
    // the largest part of the check. The fold has no early exit, so it is
    // vectorized.
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let controls = body.iter().fold(false, |a, &b| a | (b < 0x20));
    Checker {
        s: line,
        i: 0,
        controls,
        escapes: false,
        ranged: true,
        too_deep: false,
    }
    .whole()
}

/// Whether `line` is one JSON value by the grammar alone, escapes
/// allowed, or JSON as far as [`MAX_DEPTH`] and nested deeper: what
/// serde_json takes but for a lone surrogate's escape (`"\ud800"`), a
/// number past an `f64`'s range (`1e400`) and nesting past its limit.
/// Such a line, refused by the parse, is JSON all the same: a text scan
/// would lose its field rules and misread a card written as a number
/// (`4111111111111111e0`), so it is masked whole instead. (Checking a
/// deeper line to its end would take a stack as deep as the line is long.)
pub(super) fn is_json(line: &[u8]) -> bool {
    let mut c = Checker {
        s: line,
        i: 0,
        controls: true,
        escapes: true,
        ranged: false,
        too_deep: false,
    };
    let json = c.whole() || c.too_deep;
    json && std::str::from_utf8(line).is_ok()
}

/// A JSON grammar check with no side effects, so that a line that turns
/// out not to be JSON has caused no action (a tokenization) before it is
/// scanned as text instead.
struct Checker<'a> {
    s: &'a [u8],
    i: usize,
    /// Whether the line holds a control byte (other than its final
    /// newline); without one, strings are checked by finding their end.
    controls: bool,
    /// Whether strings may hold escapes (else a backslash fails the line).
    escapes: bool,
    /// Whether a number must be within an `f64`'s range, as serde_json's
    /// parse needs it (else the grammar alone is checked).
    ranged: bool,
    /// The check stopped at an array or object nested past [`MAX_DEPTH`].
    too_deep: bool,
}

impl Checker<'_> {
    /// One value and nothing else but blanks.
    fn whole(&mut self) -> bool {
        self.ws();
        if !self.value(0) {
            return false;
        }
        self.ws();
        self.i == self.s.len()
    }

    fn peek(&self) -> u8 {
        self.s.get(self.i).copied().unwrap_or(0)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        let ok = self.peek() == b;
        self.i += usize::from(ok);
        ok
    }

    /// A value inside `depth` arrays and objects.
    fn value(&mut self, depth: usize) -> bool {
        if matches!(self.peek(), b'{' | b'[') && depth >= MAX_DEPTH {
            self.too_deep = true;
            return false;
        }
        match self.peek() {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    fn object(&mut self, depth: usize) -> bool {
        self.i += 1;
        self.ws();
        if self.eat(b'}') {
            return true;
        }
        loop {
            self.ws();
            if !(self.string() && {
                self.ws();
                self.eat(b':')
            }) {
                return false;
            }
            self.ws();
            if !self.value(depth + 1) {
                return false;
            }
            self.ws();
            if self.eat(b'}') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.i += 1;
        self.ws();
        if self.eat(b']') {
            return true;
        }
        loop {
            self.ws();
            if !self.value(depth + 1) {
                return false;
            }
            self.ws();
            if self.eat(b']') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn string(&mut self) -> bool {
        if !self.eat(b'"') {
            return false;
        }
        if !self.controls {
            // No backslash in the line and no control byte.
            return match memchr::memchr(b'"', &self.s[self.i..]) {
                Some(n) => {
                    self.i += n + 1;
                    true
                }
                None => false,
            };
        }
        while let Some(&b) = self.s.get(self.i) {
            self.i += 1;
            match b {
                b'"' => return true,
                b'\\' if self.escapes => {
                    let hex = |h: &[u8]| h.iter().all(u8::is_ascii_hexdigit);
                    match self.peek() {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' if self.s.get(self.i + 1..self.i + 5).is_some_and(hex) => self.i += 5,
                        _ => return false,
                    }
                }
                b'\\' | 0..=0x1f => return false,
                _ => {}
            }
        }
        false
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let ok = self.s[self.i..].starts_with(word);
        self.i += if ok { word.len() } else { 0 };
        ok
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_ascii_digit() {
            self.i += 1;
        }
        self.i - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, and when
    /// [`Checker::ranged`] within an `f64`'s range: serde_json refuses
    /// `1e400`, so the raw walker must not take a line holding it.
    fn number(&mut self) -> bool {
        let start = self.i;
        self.eat(b'-');
        let whole = if self.eat(b'0') {
            if self.peek().is_ascii_digit() {
                return false;
            }
            1
        } else {
            self.digits()
        };
        if whole == 0 {
            return false;
        }
        if self.eat(b'.') && self.digits() == 0 {
            return false;
        }
        let mut exponent = false;
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return false;
            }
            exponent = true;
        }
        // Only an exponent or over 300 digits can pass `f64::MAX`; then
        // serde_json's own parse says (its arithmetic overflows a little
        // below where a correctly rounded parse does).
        !self.ranged
            || (!exponent && whole <= 300)
            || serde_json::from_slice::<serde_json::Number>(&self.s[start..self.i]).is_ok()
    }
}

/// Writes `s` as the content of a JSON string. Bytewise, copying the runs
/// between the bytes that need escaping: in UTF-8 those (`"`, `\`, the
/// controls) are single bytes, and every byte of a longer character is
/// over 0x7f, so this is the same as escaping character by character,
/// which cost 5.8% of an NDJSON scan.
fn escape_into(s: &str, out: &mut Vec<u8>) {
    let b = s.as_bytes();
    let mut at = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            c if c < 0x20 => {
                out.extend_from_slice(&b[at..i]);
                out.extend_from_slice(format!("\\u{:04x}", c).as_bytes());
                at = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&b[at..i]);
        out.extend_from_slice(esc);
        at = i + 1;
    }
    out.extend_from_slice(&b[at..]);
}

/// The digits a number token is checked by as a card, when it could be
/// one: as the `Value` walker checks a `serde_json::Number`.
fn card_digits(tok: &[u8]) -> Option<String> {
    let float = tok.iter().any(|b| matches!(b, b'.' | b'e' | b'E'));
    if !float {
        let digits = tok.strip_prefix(b"-").unwrap_or(tok);
        return (12..=19)
            .contains(&digits.len())
            .then(|| String::from_utf8_lossy(digits).into_owned());
    }
    let n: serde_json::Number = serde_json::from_slice(tok).ok()?;
    Some(super::number_digits(&n))
}

impl Session<'_> {
    /// Walks a checked line ([`is_plain_json`]) and writes it redacted.
    pub(super) fn raw_line(
        &mut self,
        r: &mut Raw<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), RedactError> {
        let mark = out.len();
        out.extend_from_slice(r.skip_ws());
        let mut path = String::from("$");
        let value_mark = out.len();
        if self.raw_value(r, &mut path, out)? {
            out.truncate(value_mark);
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(&r.line[r.pos..]);
        if self.opts.report {
            out.truncate(mark);
        }
        Ok(())
    }

    /// One value at `pos`; true when it is to be dropped.
    fn raw_value(
        &mut self,
        r: &mut Raw<'_>,
        path: &mut String,
        out: &mut Vec<u8>,
    ) -> Result<bool, RedactError> {
        match r.peek() {
            b'{' => {
                self.raw_object(r, path, out, None)?;
                Ok(false)
            }
            b'[' => {
                self.raw_array(r, path, out, None)?;
                Ok(false)
            }
            b'"' => {
                let content = r.string();
                let before = self.findings.total();
                let drop = self.raw_string(r, content, out)?;
                if self.findings.total() > before {
                    self.note_path(path, self.last_kind);
                }
                Ok(drop)
            }
            _ => {
                let tok = r.token();
                if self.opts.enabled(Kind::Pan)
                    && let Some(digits) = card_digits(tok)
                    && is_card_number(&digits)
                {
                    self.findings.add(Kind::Pan);
                    self.note_path(path, Kind::Pan);
                    return self.raw_scalar(Kind::Pan, &digits, tok, out, true);
                }
                out.extend_from_slice(tok);
                Ok(false)
            }
        }
    }

    /// An object; `sensitive` is the type of a field rule it lies under
    /// (every scalar in it is then replaced, names scanned as elsewhere).
    fn raw_object(
        &mut self,
        r: &mut Raw<'_>,
        path: &mut String,
        out: &mut Vec<u8>,
        sensitive: Option<Kind>,
    ) -> Result<(), RedactError> {
        r.pos += 1;
        out.push(b'{');
        let mut kept = 0;
        loop {
            let ws = r.skip_ws();
            if r.peek() == b'}' {
                out.extend_from_slice(ws);
                break;
            }
            let member = out.len();
            if kept > 0 {
                out.push(b',');
            }
            out.extend_from_slice(ws);
            let key = r.string();
            let name = &r.line[key.clone()];
            let len = path.len();
            if sensitive.is_none() && self.opts.report {
                push_key(path, &String::from_utf8_lossy(name));
            }
            out.push(b'"');
            // A name is scanned like any string, under a field rule too
            // (`{"password": {"4111…": 1}}`); `drop` in a name does not
            // remove its field.
            self.raw_string_content(r, key.clone(), out)?;
            out.push(b'"');
            out.extend_from_slice(r.skip_ws());
            r.pos += 1; // the `:`
            out.push(b':');
            out.extend_from_slice(r.skip_ws());
            let rule = match sensitive {
                Some(k) => Some(k),
                None => self
                    .fields
                    .kind_of_bytes(name)
                    .filter(|k| self.opts.enabled(*k)),
            };
            let drop = match rule {
                Some(kind) => self.raw_sensitive(r, kind, path, out)?,
                None => self.raw_value(r, path, out)?,
            };
            path.truncate(len);
            out.extend_from_slice(r.skip_ws());
            if drop {
                out.truncate(member);
            } else {
                kept += 1;
            }
            if r.peek() == b'}' {
                break;
            }
            r.pos += 1; // the `,`
        }
        r.pos += 1;
        out.push(b'}');
        Ok(())
    }

    /// An array; a dropped element becomes `null`.
    fn raw_array(
        &mut self,
        r: &mut Raw<'_>,
        path: &mut String,
        out: &mut Vec<u8>,
        sensitive: Option<Kind>,
    ) -> Result<(), RedactError> {
        r.pos += 1;
        out.push(b'[');
        let mut i = 0;
        loop {
            out.extend_from_slice(r.skip_ws());
            if r.peek() == b']' {
                break;
            }
            let len = path.len();
            if sensitive.is_none() && self.opts.report {
                path.push_str(&format!("[{i}]"));
            }
            let mark = out.len();
            let drop = match sensitive {
                Some(kind) => self.raw_sensitive(r, kind, path, out)?,
                None => self.raw_value(r, path, out)?,
            };
            if drop {
                out.truncate(mark);
                out.extend_from_slice(b"null");
            }
            path.truncate(len);
            out.extend_from_slice(r.skip_ws());
            i += 1;
            if r.peek() == b']' {
                break;
            }
            r.pos += 1;
            out.push(b',');
        }
        r.pos += 1;
        out.push(b']');
        Ok(())
    }

    /// A value under a field rule: every scalar replaced whole (a vault
    /// token in a card field kept), `null` kept; true for drop.
    fn raw_sensitive(
        &mut self,
        r: &mut Raw<'_>,
        kind: Kind,
        path: &mut String,
        out: &mut Vec<u8>,
    ) -> Result<bool, RedactError> {
        match r.peek() {
            b'{' => {
                self.raw_object(r, path, out, Some(kind))?;
                Ok(false)
            }
            b'[' => {
                self.raw_array(r, path, out, Some(kind))?;
                Ok(false)
            }
            b'"' => {
                let start = r.pos;
                let content = r.string();
                let text = std::str::from_utf8(&r.line[content]).expect("a checked line is UTF-8");
                if kind == Kind::Pan && crate::vault::token::Token::parse(text).is_ok() {
                    out.extend_from_slice(&r.line[start..r.pos]);
                    return Ok(false);
                }
                self.findings.add(kind);
                self.note_path(path, kind);
                let whole = &r.line[start..r.pos];
                let card = kind == Kind::Pan && super::whole_card(text);
                self.raw_scalar(kind, text, whole, out, card)
            }
            _ => {
                let tok = r.token();
                if tok == b"null" {
                    out.extend_from_slice(tok);
                    return Ok(false);
                }
                self.findings.add(kind);
                self.note_path(path, kind);
                // A number in a card field is a card by its digits, as
                // the Value walker reads it (`card_number_digits`).
                let card = (kind == Kind::Pan)
                    .then(|| card_digits(tok))
                    .flatten()
                    .filter(|d| is_card_number(d));
                match card {
                    Some(digits) => self.raw_scalar(kind, &digits, tok, out, true),
                    None => {
                        // As printed back (`1.50` is `1.5`), as the Value
                        // walker has it: the masks are as long.
                        let text = serde_json::from_slice::<serde_json::Value>(tok).map_or_else(
                            |_| String::from_utf8_lossy(tok).into_owned(),
                            |v| v.to_string(),
                        );
                        self.raw_scalar(kind, &text, tok, out, false)
                    }
                }
            }
        }
    }

    /// Writes a whole scalar's replacement (or, in report mode, the
    /// scalar as it was); `card`: `text` is one card. True for drop.
    fn raw_scalar(
        &mut self,
        kind: Kind,
        text: &str,
        original: &[u8],
        out: &mut Vec<u8>,
        card: bool,
    ) -> Result<bool, RedactError> {
        match self.scalar_replacement(kind, text, card)? {
            Replacement::Keep => out.extend_from_slice(original),
            Replacement::Drop => return Ok(true),
            Replacement::With(s) => {
                out.push(b'"');
                escape_into(&s, out);
                out.push(b'"');
            }
        }
        Ok(false)
    }

    /// A string value: quoted, its findings replaced; true when one of
    /// them has the `drop` action.
    fn raw_string(
        &mut self,
        r: &mut Raw<'_>,
        content: std::ops::Range<usize>,
        out: &mut Vec<u8>,
    ) -> Result<bool, RedactError> {
        self.dropped = false;
        out.push(b'"');
        self.raw_string_content(r, content, out)?;
        out.push(b'"');
        Ok(self.dropped)
    }

    /// A string's content with its findings replaced, as
    /// [`Session::replace`] does for text.
    fn raw_string_content(
        &mut self,
        r: &mut Raw<'_>,
        content: std::ops::Range<usize>,
        out: &mut Vec<u8>,
    ) -> Result<(), RedactError> {
        let mut at = content.start;
        for (kind, range) in r.findings_in(content.clone()) {
            self.findings.add(kind);
            self.last_kind = kind;
            let action = self.opts.action(kind);
            self.dropped |= action == Action::Drop;
            if self.opts.report {
                continue;
            }
            out.extend_from_slice(&r.line[at..range.start]);
            let mut replaced = Vec::new();
            action.apply(kind, &r.line[range.clone()], self.tools, &mut replaced)?;
            escape_into(&String::from_utf8_lossy(&replaced), out);
            at = range.end;
        }
        out.extend_from_slice(&r.line[at..content.end]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_plain_json;

    /// The quick string check (no control byte in the line) and the byte
    /// loop (some control byte) agree with serde_json on every line.
    #[test]
    fn the_grammar_check_agrees_with_serde_json() {
        let lines: &[&[u8]] = &[
            b"{\"a\": \"x\", \"b\": [1, 2.5e3, true, null]}\n",
            b"{\"a\": \"x\"}",
            b"\t{\"a\":\t\"x\"}\r\n",
            b"{\"a\": \"x\ty\"}\n",
            b"{\"a\": \"x\ry\"}",
            b"{\"a\": \"x\x01y\"}\n",
            b"{\"a\": \"x\"} \x01\n",
            b"{\"a\": \"x}\n",
            b"{\"a\": \"x\\\"y\"}\n",
            b"{\"a\": \"caf\xc3\xa9\"}\n",
            b"{\"a\": \"caf\xc3\"}\n",
            b"{\"a\": 1}\xff\n",
            b"{\"a\": 1, \xc3: 2}",
            b"[\"a\" \"b\"]",
            b"{\"a\" 1}",
            b"\"a\"\n",
            b"01",
            b"",
            // Numbers at the edge of an f64, where serde_json's arithmetic
            // overflows before a correctly rounded parse would.
            b"[1.7976931348623157e308, -1.7976931348623157e308]",
            b"[1.7976931348623158e308]",
            b"[17976931348623158e292]",
            b"[1e400, 0e99999999999, 1e-400]",
            b"[-0, 0.0e0, 1E+5]",
        ];
        let mut lines: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
        lines.push(format!("[{:.0}]", f64::MAX).into_bytes());
        lines.push(format!("[{:.0}0]", f64::MAX).into_bytes());
        // Nesting at serde_json's limit and one past it, around a scalar
        // and around nothing.
        for n in [126, 127, 128, 129] {
            lines.push(format!("{}1{}", "[".repeat(n), "]".repeat(n)).into_bytes());
            lines.push(format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes());
        }
        for line in &lines {
            let line = &line[..];
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            let serde =
                serde_json::from_slice::<serde_json::Value>(body).is_ok() && !line.contains(&b'\\');
            assert_eq!(
                is_plain_json(line),
                serde,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
