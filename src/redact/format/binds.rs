//! JDBC binds logged apart from their statement, as Hibernate's TRACE
//! logging writes them: the statement with `?` for each value
//! (`org.hibernate.SQL`: `insert into users (email, password) values (?,
//! ?)`, on one line or, with `format_sql`, spread over indented lines
//! after its first), then a line per value (`binding parameter [2] as
//! [VARCHAR] - [hunter2]`; Hibernate 6.2 on, `binding parameter
//! (2:VARCHAR) <- [hunter2]`).
//!
//! A bind is numbered, not named, so a value is kept only where the
//! statement before it shows what it is: a `?` assigned or compared to a
//! column (`password=?`) or in an INSERT's row under its column list.
//! Where the field rules know that column's name (a secret's, a security
//! code's, an SSN's), the value is masked; where no column can be told (a
//! statement not seen, too long, or not read; a row whose count does not
//! match its columns), it is masked as a secret: fail closed. Threads
//! interleave their lines, so [`RECENT`] statements must agree.
//! Statements are read on lines of text only, as PostgreSQL's lists
//! ([`super::params`]) are; in JSON strings every bind is masked
//! ([`unread`]).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use super::params;

/// The most bytes of a statement kept to read its placeholders' columns:
/// past it, every value bound is masked.
const MAX_STATEMENT: usize = 16 * 1024;

/// A bind's line, as Hibernate 5 and 6 write it.
static BINDING: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"binding parameter "));

/// Where a statement starts, beside a line holding a placeholder and an
/// SQL verb: Hibernate's own `show_sql` prefix and its SQL logger's
/// name, whole or as Spring Boot (`o.h.SQL`) and Quarkus (`org.hib.SQL`)
/// shorten it, after which a formatted statement's lines follow.
static STARTS: LazyLock<[Finder<'static>; 4]> = LazyLock::new(|| {
    [
        Finder::new(b"Hibernate:"),
        Finder::new(b"hibernate.SQL"),
        Finder::new(b"hib.SQL"),
        Finder::new(b"o.h.SQL"),
    ]
});

/// The most lines after a bind's line that its value, holding a newline,
/// is masked over, looking for its closing `]`.
const SPILL: u8 = 64;

/// How many statements before a bind it may belong to. Threads' lines
/// interleave (`update … password=?` and `select … where note=?` both
/// logged before either's binds), so a bind is kept only where every
/// recent statement that could have it names a column that keeps it.
const RECENT: usize = 8;

/// What a session knows of the statements whose binds may come next.
#[derive(Default)]
pub(super) struct Binds {
    /// The statement read so far (its lines joined by spaces), while it
    /// may go on: a formatted statement's lines are indented.
    statement: Vec<u8>,
    /// The statement ran past [`MAX_STATEMENT`].
    too_long: bool,
    /// Whether the line before was the statement's, so that an indented
    /// line goes on with it.
    open: bool,
    /// The last [`RECENT`] statements with placeholders, newest last.
    recent: VecDeque<Columns>,
    /// A bind's value went on past its line: how many more lines may hold
    /// it, and the type they are masked as.
    spill: (u8, Option<K>),
}

/// A statement's placeholders: how many, and by number the type its
/// column's name gives (`None`: a value kept; a number missing: a column
/// not told).
struct Columns {
    count: u16,
    named: BTreeMap<u16, Option<K>>,
}

impl Columns {
    /// A statement not read: every number it might hold is unknown.
    fn unknown() -> Self {
        Columns {
            count: u16::MAX,
            named: BTreeMap::new(),
        }
    }
}

/// Whether a line starts a statement by a name that Hibernate logs it
/// under ([`STARTS`]).
fn starts(line: &[u8]) -> bool {
    STARTS.iter().any(|s| s.find(line).is_some())
}

/// A type a column's name gives its values.
type K = super::Kind;

impl Binds {
    /// Forgets what came before (a line too long to read may have been a
    /// statement): the next binds are masked, until [`RECENT`] statements
    /// have been seen.
    pub fn lose(&mut self) {
        self.statement.clear();
        self.too_long = false;
        self.open = false;
        self.spill = (0, None);
        self.remember(Columns::unknown());
    }

    /// The values bound in `text` (whole lines of text) that are to be
    /// masked, each with its type: where a recent statement's column
    /// names a type `kind` gives, or where none can be told (`unknown`).
    pub fn values(
        &mut self,
        text: &[u8],
        kind: impl Fn(&[u8]) -> Option<K>,
        unknown: Option<K>,
    ) -> Vec<(K, Range<usize>)> {
        let mut out = Vec::new();
        if !self.open
            && self.spill.0 == 0
            && memchr::memchr(b'?', text).is_none()
            && BINDING.find(text).is_none()
        {
            // A formatted statement's first line, last in its text (a
            // stream's cut, a budget's single lines): the rest comes next.
            let body = text.strip_suffix(b"\n").unwrap_or(text);
            let last = &body[memchr::memrchr(b'\n', body).map_or(0, |nl| nl + 1)..];
            if starts(last) {
                self.open = true;
                self.push(last);
            }
            return out;
        }
        let mut from = 0;
        while from < text.len() {
            let end = memchr::memchr(b'\n', &text[from..]).map_or(text.len(), |n| from + n);
            let line = from..end;
            from = end + 1;
            let l = &text[line.clone()];
            let body = l.strip_suffix(b"\r").unwrap_or(l);
            if self.spill.0 > 0 && (BINDING.find(l).is_some() || starts(l)) {
                // A bind or a statement ends a value that ran on: it is
                // read as itself.
                self.spill.0 = 0;
            }
            if self.spill.0 > 0 {
                // A value holding a newline: masked to a line's closing
                // `]`.
                self.spill.0 -= 1;
                let mut end = body.len();
                if body.ends_with(b"]") {
                    self.spill.0 = 0;
                    end -= 1;
                }
                if let Some(k) = self.spill.1 {
                    out.push((k, line.start..line.start + end));
                }
                continue;
            }
            let bind = (BINDING.find_iter(body))
                .find_map(|at| bound(body, at + b"binding parameter ".len()));
            if let Some((n, value, closed)) = bind {
                self.close(&kind);
                let k = self.kind_of(n, unknown);
                if !closed {
                    self.spill = (SPILL, k);
                }
                if let Some(k) = k {
                    out.push((k, line.start + value.start..line.start + value.end));
                }
            } else if self.open && matches!(l.first(), Some(b' ' | b'\t')) {
                self.push(l);
            } else {
                self.close(&kind);
                if starts(l) || holds_statement(l) {
                    self.open = true;
                    self.push(l);
                } else if placed(l) {
                    // Placeholders in a statement whose start was not
                    // seen or read (a logger's name shortened past
                    // knowing, colors around its verb): its binds are
                    // told by none.
                    self.remember(Columns::unknown());
                }
            }
        }
        out
    }

    /// The type a bind numbered `n` is masked as, if any: `unknown` where
    /// no recent statement holds `n` or one of them does not tell its
    /// column; else the first type a column gives.
    fn kind_of(&self, n: u16, unknown: Option<K>) -> Option<K> {
        let mut holders = self.recent.iter().filter(|c| c.count >= n).peekable();
        if holders.peek().is_none() {
            return unknown;
        }
        let mut kind = None;
        for c in holders {
            match c.named.get(&n) {
                Some(k) => kind = kind.or(*k),
                None => return unknown,
            }
        }
        kind
    }

    /// Ends the statement being read, if any, and remembers its columns.
    fn close(&mut self, kind: &impl Fn(&[u8]) -> Option<K>) {
        self.open = false;
        if self.statement.is_empty() {
            return;
        }
        let columns = self.read(kind);
        if columns.count > 0 {
            self.remember(columns);
        }
    }

    fn remember(&mut self, columns: Columns) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(columns);
    }

    /// Adds a line to the statement, up to [`MAX_STATEMENT`].
    fn push(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.statement.len() + line.len() + 1 > MAX_STATEMENT {
            self.too_long = true;
            return;
        }
        self.statement.push(b' ');
        self.statement.extend_from_slice(line);
    }

    /// The columns of the statement read, which it gives up; every number
    /// unknown when it ran too long.
    fn read(&mut self, kind: &impl Fn(&[u8]) -> Option<K>) -> Columns {
        let statement = std::mem::take(&mut self.statement);
        // Too long, or a quote left open (a line's prefix may hold one,
        // `[user o'brien]`): which `?`s are quoted cannot be told.
        if std::mem::take(&mut self.too_long)
            || memchr::memchr_iter(b'\'', &statement).count() % 2 == 1
        {
            return Columns::unknown();
        }
        let Some(from) = verb(&statement) else {
            return Columns::unknown();
        };
        let marks: Vec<usize> = placeholders(&statement[from..])
            .into_iter()
            .map(|m| from + m)
            .collect();
        let mut columns = BTreeMap::new();
        for (i, &at) in marks.iter().enumerate() {
            let back = &statement[at.saturating_sub(params::NAME_REACH)..at];
            if let Some(name) = params::name_before(back) {
                columns.insert(i as u16 + 1, kind(name));
            }
        }
        for insert in params::inserts(&statement, |_| true) {
            for (_, row) in insert.rows {
                // A row whose values do not count as many as the columns:
                // which is which cannot be told, so its binds stay
                // unknown (or as an assignment told them).
                if row.len() != insert.columns.len() {
                    continue;
                }
                for (value, column) in row.iter().zip(&insert.columns) {
                    let inside = marks.partition_point(|&m| m < value.start)
                        ..marks.partition_point(|&m| m < value.end);
                    for i in inside {
                        columns.insert(i as u16 + 1, kind(column));
                    }
                }
            }
        }
        Columns {
            count: marks.len() as u16,
            named: columns,
        }
    }
}

/// The values of the binds in `text` read without their statement, as in
/// JSON strings (NDJSON's two walkers read a line whole or each string
/// alone, and must agree, so nothing carries from one string to the
/// next): all of them. A value ends at the last `]` before the string's
/// close: the text's end for a `string`, else its quote or the line's
/// end.
///
/// Each bind comes with where its words start, a value or not: a line of
/// NDJSON that is no JSON is read as text, where a value cut short at a
/// quote here runs on.
pub(super) fn unread(text: &[u8], string: bool) -> Vec<(usize, Option<Range<usize>>)> {
    let mut out = Vec::new();
    let (mut from, mut stop) = (0, 0);
    for at in BINDING.find_iter(text) {
        if at < from {
            continue;
        }
        // A string (decoded) ends with the text; in a line of JSON, a
        // string without escapes ends at its quote (one with escapes is
        // walked decoded, so a bind found there is enough). The close
        // found for an earlier bind is this one's too while it lies
        // ahead: a string of repeated words is read once.
        if string || at >= stop {
            stop = match string {
                true => text.len(),
                false => memchr::memchr2(b'"', b'\n', &text[at..]).map_or(text.len(), |s| at + s),
            };
        }
        let value = bound(&text[..stop], at + b"binding parameter ".len());
        if value.is_some() {
            from = stop;
        }
        out.push((at, value.map(|(_, v, _)| v)));
    }
    out
}

/// Whether a line holds a statement with placeholders: an SQL verb as a
/// word, and a `?` placeholder.
fn holds_statement(line: &[u8]) -> bool {
    memchr::memchr(b'?', line).is_some()
        && verb(line).is_some_and(|v| !placeholders(&line[v..]).is_empty())
}

/// Where a statement's first SQL verb starts, as a word: its `?`s are
/// counted from there, past a log line's prefix (Logback prints `?` for a
/// caller it was not given: `org.hibernate.SQL:? - update …`).
fn verb(text: &[u8]) -> Option<usize> {
    let mut at = 0;
    for word in text.split(|c| !c.is_ascii_alphabetic()) {
        if [
            "select", "insert", "update", "delete", "merge", "call", "with",
        ]
        .iter()
        .any(|v| word.eq_ignore_ascii_case(v.as_bytes()))
        {
            return Some(at);
        }
        at += word.len() + 1;
    }
    None
}

/// Whether a line holds a `?` where SQL puts a placeholder (after `=`,
/// `(`, `,`, `<` or `>`, blanks between): a statement's line whose start
/// was not read.
fn placed(line: &[u8]) -> bool {
    memchr::memchr(b'?', line).is_some()
        && placeholders(line).into_iter().any(|at| {
            let before = line[..at].trim_ascii_end();
            matches!(before.last(), Some(b'=' | b'(' | b',' | b'<' | b'>'))
        })
}

/// Where each `?` placeholder of a statement stands, in order: a `?` that
/// no name's byte or other `?` touches, outside quotes (`(log||?)` holds
/// one: through JDBC, an operator `?` is written `??`). At most
/// `u16::MAX`.
fn placeholders(statement: &[u8]) -> Vec<usize> {
    let touches =
        |c: Option<&u8>| c.is_some_and(|&c| c.is_ascii_alphanumeric() || b"_?".contains(&c));
    let mut out = Vec::new();
    let mut quoted = false;
    for (i, &c) in statement.iter().enumerate() {
        match c {
            b'\'' => quoted = !quoted,
            b'?' if !quoted
                && !touches(i.checked_sub(1).and_then(|p| statement.get(p)))
                && !touches(statement.get(i + 1)) =>
            {
                if out.len() == usize::from(u16::MAX) {
                    break;
                }
                out.push(i);
            }
            _ => {}
        }
    }
    out
}

/// A bind's number, its value's range in `line` (a line without its
/// CR, or a JSON string, or the part of a line up to a string's close),
/// and whether the value closed on it. From `at`, just past `binding
/// parameter `: `[N] as [TYPE] - [value]` or `(N:TYPE) <- [value]`, the
/// value inside the last `]` (to the end when none follows its `[`);
/// Hibernate 4's `[N] as [TYPE] - value`, to the end; any other layout
/// after a number, all of the rest.
fn bound(line: &[u8], at: usize) -> Option<(u16, Range<usize>, bool)> {
    let rest = &line[at..];
    let close = match rest.first()? {
        b'[' => b']',
        b'(' => b':',
        _ => return None,
    };
    let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
    if rest.get(1 + digits) != Some(&close) {
        return None;
    }
    let n = params::number(&rest[1..1 + digits])?;
    let after = at + 2 + digits;
    let find =
        |arrow: &[u8]| memchr::memmem::find(&line[after..], arrow).map(|p| after + p + arrow.len());
    let Some(open) = [&b" - ["[..], b" <- ["].into_iter().filter_map(find).min() else {
        let from = find(b" - ").unwrap_or(after);
        return Some((n, from..line.len(), true));
    };
    Some(match memchr::memrchr(b']', &line[open..]) {
        Some(e) => (n, open..open + e, true),
        None => (n, open..line.len(), false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &[u8]) -> Option<K> {
        match name {
            b"password" | b"pwd" => Some(K::Secret),
            b"email" => Some(K::Email),
            _ => None,
        }
    }

    fn masked(lines: &str) -> Vec<(K, String)> {
        let mut b = Binds::default();
        let text = lines.as_bytes();
        b.values(text, kind, Some(K::Secret))
            .into_iter()
            .map(|(k, r)| (k, String::from_utf8_lossy(&text[r]).into_owned()))
            .collect()
    }

    #[test]
    fn binds_are_read_in_both_spellings() {
        let line = b"x binding parameter [12] as [VARCHAR] - [a ] b]";
        assert_eq!(bound(line, 20), Some((12, 41..46, true)));
        let line = b"binding parameter (3:VARCHAR) <- [p]";
        assert_eq!(bound(line, 18), Some((3, 34..35, true)));
        let line = b"binding parameter (3:VARCHAR) <- [p";
        assert_eq!(bound(line, 18), Some((3, 34..35, false)));
        // Hibernate 4's bare value, and a layout not known.
        let line = b"binding parameter [2] as [VARCHAR] - hunter2";
        assert_eq!(bound(line, 18), Some((2, 37..44, true)));
        assert_eq!(
            bound(b"binding parameter [1] is p", 18),
            Some((1, 21..26, true))
        );
        assert_eq!(bound(b"binding parameter [0] as [X] - [p]", 18), None);
        assert_eq!(bound(b"binding parameter of x", 18), None);
    }

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        let s = b"a=? and b in (?,?) and c='?' and d ?? e and f? and (g||?)";
        assert_eq!(placeholders(s), [2, 14, 16, 55]);
    }

    #[test]
    fn a_statement_names_its_binds() {
        let got = masked(
            "Hibernate: update users set email=?, password=? where id=?\n\
             binding parameter [1] as [VARCHAR] - [a@b.io]\n\
             binding parameter [2] as [VARCHAR] - [hunter2]\n\
             binding parameter [3] as [BIGINT] - [7]\n\
             binding parameter [4] as [BIGINT] - [8]\n",
        );
        assert_eq!(
            got,
            [
                (K::Email, "a@b.io".into()),
                (K::Secret, "hunter2".into()),
                (K::Secret, "8".into())
            ]
        );
    }
}
