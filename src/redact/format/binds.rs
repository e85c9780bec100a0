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
//! Where that column names a secret (or another type the field rules
//! know), the value is masked as one; where no column can be told (a
//! statement not seen, too long, or a row whose count does not match its
//! columns), it is masked as a secret: fail closed. Lines of text only, as
//! PostgreSQL's lists ([`super::params`]) are.

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
/// name, whole or as Spring Boot shortens it, after which a formatted
/// statement's lines follow.
static STARTS: LazyLock<[Finder<'static>; 3]> = LazyLock::new(|| {
    [
        Finder::new(b"Hibernate: "),
        Finder::new(b"org.hibernate.SQL"),
        Finder::new(b"o.h.SQL"),
    ]
});

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
}

/// A statement's placeholders: how many, and by number the type its
/// column's name gives (`None`: a value kept; a number missing: a column
/// not told).
struct Columns {
    count: u16,
    named: BTreeMap<u16, Option<K>>,
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
        self.remember(Columns {
            count: u16::MAX,
            named: BTreeMap::new(),
        });
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
        if !self.open && memchr::memchr(b'?', text).is_none() && BINDING.find(text).is_none() {
            return out;
        }
        let mut from = 0;
        while from < text.len() {
            let end = memchr::memchr(b'\n', &text[from..]).map_or(text.len(), |n| from + n);
            let line = from..end;
            from = end + 1;
            let l = &text[line.clone()];
            if self.open && matches!(l.first(), Some(b' ' | b'\t')) {
                self.push(l);
                continue;
            }
            self.close(&kind);
            if let Some(at) = BINDING.find(l) {
                let Some((n, value)) = bound(l, at + b"binding parameter ".len()) else {
                    continue;
                };
                if let Some(k) = self.kind_of(n, unknown) {
                    out.push((k, line.start + value.start..line.start + value.end));
                }
            } else if STARTS.iter().any(|s| s.find(l).is_some()) || holds_statement(l) {
                self.open = true;
                self.push(l);
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
        if std::mem::take(&mut self.too_long) {
            return Columns {
                count: u16::MAX,
                named: BTreeMap::new(),
            };
        }
        let marks = placeholders(&statement);
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

/// Whether a line holds a statement with placeholders: an SQL verb as a
/// word, and a `?` placeholder.
fn holds_statement(line: &[u8]) -> bool {
    if memchr::memchr(b'?', line).is_none() || placeholders(line).is_empty() {
        return false;
    }
    line.split(|c| !c.is_ascii_alphabetic()).any(|w| {
        ["select", "insert", "update", "delete", "merge", "call"]
            .iter()
            .any(|v| w.eq_ignore_ascii_case(v.as_bytes()))
    })
}

/// Where each `?` placeholder of a statement stands, in order: a `?` that
/// no name's byte or other `?` touches, outside quotes (PostgreSQL's JSON
/// operators `?|` and `?&` are none). At most `u16::MAX`.
fn placeholders(statement: &[u8]) -> Vec<usize> {
    let touches =
        |c: Option<&u8>| c.is_some_and(|&c| c.is_ascii_alphanumeric() || b"_?|&".contains(&c));
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

/// A bind's number and its value's range in `line`, from `at` just past
/// `binding parameter `: `[N] as [TYPE] - [value]` or `(N:TYPE) <-
/// [value]`, the value inside the line's last `]` (to the line's end when
/// it has none past the value's `[`).
fn bound(line: &[u8], at: usize) -> Option<(u16, Range<usize>)> {
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
    let after = at + 1 + digits;
    let arrow = [&b" - ["[..], b" <- ["]
        .iter()
        .filter_map(|a| memchr::memmem::find(&line[after..], a).map(|p| after + p + a.len()))
        .min()?;
    let line_end = line.len() - usize::from(line.ends_with(b"\r"));
    let end = memchr::memrchr(b']', &line[arrow..line_end]).map_or(line_end, |e| arrow + e);
    Some((n, arrow..end))
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
        let line = b"x binding parameter [12] as [VARCHAR] - [a ] b]\r";
        assert_eq!(bound(line, 20), Some((12, 41..46)));
        let line = b"binding parameter (3:VARCHAR) <- [p]";
        assert_eq!(bound(line, 18), Some((3, 34..35)));
        assert_eq!(bound(b"binding parameter [0] as [X] - [p]", 18), None);
        assert_eq!(bound(b"binding parameter [1] as [X]", 18), None);
    }

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        let s = b"a=? and b in (?,?) and c='?' and d ?| e and f?";
        assert_eq!(placeholders(s), [2, 14, 16]);
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
