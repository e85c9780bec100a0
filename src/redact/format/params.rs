//! SQL statements whose parameters are logged apart from them, as
//! PostgreSQL does: `execute <unnamed>: UPDATE users SET password = $1
//! WHERE id = $2`, then, on the next line (or later in the same CSV row),
//! `DETAIL:  parameters: $1 = 'hunter2', $2 = '42'`. The statement names
//! the secret and the list holds it, so neither alone is enough: the
//! placeholders of secrets' names are remembered until the next list
//! ([`super::Session`]'s `params`), and that list's values for them are
//! masked.
//!
//! A placeholder is named by a pair the scan found (`password: $1`), by
//! an SQL assignment or comparison read here (`"password" = $1`, csvlog's
//! `""password"" = $1::text`, `password = crypt($1, …)`), or by an
//! INSERT's column list (`INSERT INTO t ("email", "password") VALUES ($1,
//! $2)`; upper or lower case, on the statement's line). A list in an
//! error's context (`CONTEXT:  unnamed portal with parameters: …`) comes
//! before its statement, so all of its values are masked. Lines of text
//! only, as YAML blocks are: NDJSON's two walkers read strings apart, and
//! must agree. A value holding a newline ends its list's reading there.

use std::ops::Range;
use std::sync::LazyLock;

use memchr::memmem::Finder;

/// PostgreSQL's most parameters a statement may bind.
const MAX_PLACEHOLDER: u16 = u16::MAX;

/// A list's start, as PostgreSQL writes it (`DETAIL:  parameters: `,
/// `CONTEXT:  unnamed portal with parameters: `), and a bind error's one
/// parameter (`CONTEXT:  unnamed portal parameter $1 = '…'`, `portal
/// "P_1" parameter $1 = …`).
///
/// Two searches, each with its `$`: a byte few texts hold, which the
/// search's prefilter can look for rather than a word's common letters.
static LIST: LazyLock<[Finder<'static>; 2]> =
    LazyLock::new(|| [Finder::new(b"parameters: $"), Finder::new(b"parameter $")]);

/// How far before a bind error's `parameter $N` its `portal` may stand
/// (a named portal's quoted name between them).
const PORTAL_REACH: usize = 80;

/// The keyword before an INSERT's rows, in the two cases statements write
/// it in (not `Values`). A search for each cost 290,000 fewer instructions
/// than a look at every `v` of an 8 MiB secret-free text.
static VALUES: LazyLock<[Finder<'static>; 2]> =
    LazyLock::new(|| [Finder::new(b"VALUES"), Finder::new(b"values")]);

/// The number of a placeholder `$N` that is the whole of `value`.
pub(super) fn placeholder(value: &[u8]) -> Option<u16> {
    placeholder_at(value, 0)
        .filter(|&(_, end)| end == value.len())
        .map(|(n, _)| n)
}

/// `digits` as a placeholder's number (1 to [`MAX_PLACEHOLDER`]).
pub(super) fn number(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_PLACEHOLDER).contains(n))
}

/// The placeholder at `i` (`$N`, not followed by a name's byte): its
/// number and where it ends.
fn placeholder_at(text: &[u8], i: usize) -> Option<(u16, usize)> {
    let rest = text.get(i..)?.strip_prefix(b"$")?;
    let len = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let end = i + 1 + len;
    if text.get(end).is_some_and(|&c| is_ident(c)) {
        return None;
    }
    Some((number(&rest[..len])?, end))
}

/// A byte of an unquoted SQL name.
fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// How far back from a placeholder its name is read: past blanks, a
/// function's name and `(`, the `=`, and the name itself.
pub(super) const NAME_REACH: usize = 128;

/// The placeholders that SQL assignments and comparisons in `text` put
/// under a name that `kind` picks (`password = $1`, `"password"=$1::text`,
/// csvlog's `""password"" = $1`, `password = crypt($1, …)`), each with
/// where it ends and what `kind` said of its name.
pub(super) fn assigned<K: Copy>(
    text: &[u8],
    kind: impl Fn(&[u8]) -> Option<K>,
) -> Vec<(usize, u16, K)> {
    let mut out = Vec::new();
    for at in memchr::memchr_iter(b'$', text) {
        let Some((n, end)) = placeholder_at(text, at) else {
            continue;
        };
        // On the placeholder's line: a line read alone must agree.
        let back = &text[at.saturating_sub(NAME_REACH)..at];
        let back = &back[memchr::memrchr(b'\n', back).map_or(0, |nl| nl + 1)..];
        if let Some(k) = name_before(back).and_then(&kind) {
            out.push((end, n, k));
        }
    }
    out
}

/// The name assigned or compared to what follows `back`: `name = `, or
/// `name = fn(`; unquoted, or quoted once or twice, without a table's
/// prefix.
pub(super) fn name_before(back: &[u8]) -> Option<&[u8]> {
    let blanks = |s: &[u8]| s.trim_ascii_end().len();
    let mut i = blanks(back);
    // A function's first argument: `crypt($1`.
    if i > 0 && back[i - 1] == b'(' {
        i = blanks(&back[..i - 1]);
        let name = back[..i].iter().rev().take_while(|&&c| is_ident(c)).count();
        if name == 0 {
            return None;
        }
        i = blanks(&back[..i - name]);
    }
    if i == 0
        || back[i - 1] != b'='
        || (i >= 2 && matches!(back[i - 2], b'!' | b'<' | b'>' | b':' | b'='))
    {
        return None;
    }
    i = blanks(&back[..i - 1]);
    let mut quotes = 0;
    while quotes < 2 && i > 0 && matches!(back[i - 1], b'"' | b'`') {
        i -= 1;
        quotes += 1;
    }
    let len = back[..i].iter().rev().take_while(|&&c| is_ident(c)).count();
    (len > 0).then(|| &back[i - len..i])
}

/// A parameters list: where it starts, each of its entries' number and
/// value (inside its quotes), and whether it is an error's context, which
/// PostgreSQL writes before the statement it binds.
pub(super) struct List {
    pub start: usize,
    pub entries: Vec<(u16, Range<usize>)>,
    pub context: bool,
}

/// Each parameters list in `text` (a block of whole lines: nothing here
/// reads past a newline). A value whose closing quote is not on its line
/// (a line cut short) runs to the line's end.
pub(super) fn lists(text: &[u8]) -> Vec<List> {
    let [lists, binds] = &*LIST;
    let mut lists = lists.find_iter(text).map(|s| (s, false)).peekable();
    let mut binds = binds
        .find_iter(text)
        .filter(|&s| bind_error(text, s))
        .map(|s| (s, true))
        .peekable();
    let starts = std::iter::from_fn(|| match (lists.peek(), binds.peek()) {
        (Some(l), Some(b)) if l.0 < b.0 => lists.next(),
        (Some(_), None) => lists.next(),
        _ => binds.next(),
    });
    let mut out = Vec::new();
    let mut from = 0;
    for (start, one) in starts {
        if start < from {
            continue;
        }
        let (mut i, context) = if one {
            (start + b"parameter ".len(), true)
        } else {
            (
                start + b"parameters: ".len(),
                text[..start].ends_with(b"with "),
            )
        };
        let mut entries = Vec::new();
        while let Some((n, value, next)) = entry(text, i) {
            entries.push((n, value));
            i = next;
            match text[i..].strip_prefix(b", $") {
                Some(_) if !one => i += 2,
                _ => break,
            }
        }
        out.push(List {
            start,
            entries,
            context,
        });
        from = i.max(start + 1);
    }
    out
}

/// Whether the `parameter` at `start` is a bind error's: `portal` before
/// it on its line, within [`PORTAL_REACH`].
fn bind_error(text: &[u8], start: usize) -> bool {
    let before = &text[start.saturating_sub(PORTAL_REACH)..start];
    let before = &before[memchr::memrchr(b'\n', before).map_or(0, |nl| nl + 1)..];
    memchr::memmem::find(before, b"portal ").is_some()
}

/// The entry at `i` (`$N = 'value'` or `$N = NULL`): its number, its
/// value's range, and where it ends.
fn entry(text: &[u8], i: usize) -> Option<(u16, Range<usize>, usize)> {
    let rest = text.get(i..)?.strip_prefix(b"$")?;
    let len = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let n = number(&rest[..len])?;
    let at = i + 1 + len;
    let rest = text[at..].strip_prefix(b" = ")?;
    let at = at + 3;
    if rest.starts_with(b"NULL") {
        return Some((n, at..at, at + 4));
    }
    rest.strip_prefix(b"'")?;
    let open = at + 1;
    let mut j = open;
    loop {
        match memchr::memchr2(b'\'', b'\n', &text[j..]).map(|q| j + q) {
            // A doubled quote is one inside the value.
            Some(q) if text[q] == b'\'' && text.get(q + 1) == Some(&b'\'') => j = q + 2,
            Some(q) if text[q] == b'\'' => return Some((n, open..q, q + 1)),
            // Cut short: to the line's end, without a CRLF's CR.
            Some(end) => return Some((n, open..crlf(text, open, end), end)),
            None => return Some((n, open..crlf(text, open, text.len()), text.len())),
        }
    }
}

/// After an error, PostgreSQL writes the statement once more after its
/// context list, whose values were all masked: on its own `STATEMENT:`
/// line, or later in the same csvlog row. Its placeholders (`named`, in
/// order of where they end) are not remembered, or the next list, another
/// statement's, would lose its values. Linear: each line is looked at
/// once.
pub(super) fn drop_errors_statements<K>(
    text: &[u8],
    lists: &[List],
    named: &mut Vec<(usize, u16, K)>,
) {
    let contexts: Vec<usize> = lists
        .iter()
        .filter(|l| l.context)
        .map(|l| l.start)
        .collect();
    let (mut cursor, mut line, mut statement, mut before) = (0, 0, None, 0);
    named.retain(|&(at, ..)| {
        if let Some(nl) = memchr::memrchr(b'\n', &text[cursor..at]) {
            line = cursor + nl + 1;
            statement = None;
        }
        cursor = at;
        // The contexts before `at`; the last of them on its line?
        while contexts.get(before).is_some_and(|&c| c < at) {
            before += 1;
        }
        let after_context = before > 0 && contexts[before - 1] >= line;
        let statement = *statement.get_or_insert_with(|| STATEMENT.find(&text[line..at]).is_some());
        !after_context && !statement
    });
}

/// An error's statement line, as PostgreSQL's stderr log writes it.
static STATEMENT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"STATEMENT:  "));

/// `end`, or before the CR that ends a CRLF line there.
fn crlf(text: &[u8], open: usize, end: usize) -> usize {
    if end > open && text[end - 1] == b'\r' {
        end - 1
    } else {
        end
    }
}

/// How far before a `VALUES` its column list may start, and how far a row
/// of placeholders may run: a statement's lists are short, and the bound
/// keeps a line of repeated keywords linear.
const REACH: usize = 1024;

/// The placeholders an INSERT's column list names after columns that
/// `secret` picks (`INSERT INTO t (a, "password") VALUES ($1, $2), ($3,
/// $4)` gives `$2` and `$4`; `crypt($2, …)` in the column's place gives
/// `$2`), each with where its row ends and what `secret` said of its
/// column. A row whose values do not count as many as the columns gives
/// every placeholder in it, as the first picked column's: which is which
/// cannot be told.
pub(super) fn inserted<K: Copy>(
    text: &[u8],
    secret: impl Fn(&[u8]) -> Option<K>,
) -> Vec<(usize, u16, K)> {
    let mut out = Vec::new();
    for insert in inserts(text, |columns| columns.iter().any(|c| secret(c).is_some())) {
        let picked: Vec<(usize, K)> = (insert.columns.iter().enumerate())
            .filter_map(|(i, c)| secret(c).map(|k| (i, k)))
            .collect();
        let inside = |v: Range<usize>| {
            memchr::memchr_iter(b'$', &text[v.clone()])
                .filter_map(move |d| placeholder_at(&text[..v.end], v.start + d))
                .map(|(n, _)| n)
        };
        for (close, row) in insert.rows {
            if row.len() == insert.columns.len() {
                for &(col, kind) in &picked {
                    out.extend(inside(row[col].clone()).map(|n| (close, n, kind)));
                }
            } else {
                let kind = picked[0].1;
                out.extend(inside(row[0].start..close).map(|n| (close, n, kind)));
            }
        }
    }
    out
}

/// An INSERT's column list and its rows: each row's `)` and its values'
/// ranges in the text.
pub(super) struct Insert<'a> {
    pub columns: Vec<&'a [u8]>,
    pub rows: Vec<(usize, Vec<Range<usize>>)>,
}

/// Each INSERT in `text` whose column list `wanted` takes, with its rows
/// (`VALUES (…), (…)`), on the statement's line and within [`REACH`].
pub(super) fn inserts<'a>(
    text: &'a [u8],
    mut wanted: impl FnMut(&[&[u8]]) -> bool,
) -> Vec<Insert<'a>> {
    let mut out = Vec::new();
    let mut from = 0;
    for values in keywords(text) {
        if values < from {
            continue;
        }
        from = values + b"values".len();
        let Some(columns) = column_list(text, values) else {
            continue;
        };
        if !wanted(&columns) {
            continue;
        }
        let mut rows = Vec::new();
        // Each row of the VALUES list, `(…)` after `(…), `.
        let mut i = from;
        let blanks = |mut i: usize| {
            while matches!(text.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
            i
        };
        loop {
            i = blanks(i);
            if text.get(i) != Some(&b'(') {
                break;
            }
            // On the statement's line, within reach.
            let window = &text[i..text.len().min(i + REACH)];
            let Some((close, row)) = row(window) else {
                break;
            };
            let close = i + close;
            rows.push((
                close,
                row.into_iter().map(|v| i + v.start..i + v.end).collect(),
            ));
            i = blanks(close + 1);
            if text.get(i) != Some(&b',') {
                break;
            }
            i += 1;
        }
        from = from.max(i);
        out.push(Insert { columns, rows });
    }
    out
}

/// The row that opens `window` (`(…)`): where its `)` is, and each of its
/// values' range, read past quotes (`'a,b'`) and parentheses (`now()`);
/// none if it does not close on its line within the window.
fn row(window: &[u8]) -> Option<(usize, Vec<Range<usize>>)> {
    let mut values = Vec::new();
    let (mut depth, mut quoted, mut from) = (0usize, false, 1);
    for (i, &c) in window.iter().enumerate().skip(1) {
        match c {
            b'\n' => return None,
            b'\'' => quoted = !quoted,
            _ if quoted => {}
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b')' => {
                values.push(from..i);
                return Some((i, values));
            }
            b',' if depth == 0 => {
                values.push(from..i);
                from = i + 1;
            }
            _ => {}
        }
    }
    None
}

/// Where each ` VALUES` or `)VALUES` (or in lower case) starts its
/// keyword in `text`, in order.
fn keywords(text: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let [upper, lower] = &*VALUES;
    let mut upper = upper.find_iter(text).peekable();
    let mut lower = lower.find_iter(text).peekable();
    std::iter::from_fn(move || match (upper.peek(), lower.peek()) {
        (Some(u), Some(l)) if u < l => upper.next(),
        (Some(_), None) => upper.next(),
        _ => lower.next(),
    })
    .filter(|&v| {
        v > 0
            && matches!(text[v - 1], b' ' | b'\t' | b')')
            && text
                .get(v + 6)
                .is_none_or(|c| !c.is_ascii_alphanumeric() && *c != b'_')
    })
}

/// The column names of the `(…)` that ends just before the `VALUES` at
/// `values`, on its line and within [`REACH`], unquoted and without a
/// table's prefix.
fn column_list(text: &[u8], values: usize) -> Option<Vec<&[u8]>> {
    // Blanks back to the last hit at most: linear over a line of them.
    let mut end = values;
    while end > 0 && matches!(text[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    if end == 0 || text[end - 1] != b')' {
        return None;
    }
    let inner = &text[end.saturating_sub(REACH)..end - 1];
    let open = memchr::memrchr2(b'(', b'\n', inner).filter(|&o| inner[o] == b'(')?;
    Some(
        inner[open + 1..]
            .split(|&c| c == b',')
            .map(|c| {
                let c = c.trim_ascii();
                let c = c.rsplit(|&b| b == b'.').next().unwrap_or(c);
                c.strip_prefix(b"\"")
                    .and_then(|c| c.strip_suffix(b"\""))
                    .or_else(|| c.strip_prefix(b"`").and_then(|c| c.strip_suffix(b"`")))
                    .unwrap_or(c)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(text: &'a [u8], list: &[(u16, Range<usize>)]) -> Vec<(u16, &'a [u8])> {
        list.iter().map(|(n, r)| (*n, &text[r.clone()])).collect()
    }

    #[test]
    fn placeholders_are_whole_and_bounded() {
        assert_eq!(placeholder(b"$1"), Some(1));
        assert_eq!(placeholder(b"$65535"), Some(65535));
        for not in [
            &b"$0"[..],
            b"$65536",
            b"$123456",
            b"$",
            b"1",
            b"$1a",
            b"$-1",
            b" $1",
        ] {
            assert_eq!(placeholder(not), None, "{}", String::from_utf8_lossy(not));
        }
    }

    #[test]
    fn lists_give_each_value_inside_its_quotes() {
        let text = b"DETAIL:  parameters: $1 = 'it''s, $2 = x', $2 = NULL, $10 = '42'";
        let got = lists(text);
        assert_eq!(got.len(), 1);
        assert_eq!(
            values(text, &got[0].entries),
            [(1, &b"it''s, $2 = x"[..]), (2, b""), (10, b"42")]
        );
        // Cut short: the value runs to the text's end, or its line's,
        // without a CRLF's CR.
        let cut = b"parameters: $1 = 'a', $2 = 'hunter";
        assert_eq!(
            values(cut, &lists(cut)[0].entries),
            [(1, &b"a"[..]), (2, b"hunter")]
        );
        let crlf = b"parameters: $1 = 'a', $2 = 'hunter\r\nnext";
        assert_eq!(
            values(crlf, &lists(crlf)[0].entries),
            [(1, &b"a"[..]), (2, b"hunter")]
        );
        // Two lists in one CSV row; a malformed entry ends its list.
        let two = b"parameters: $1 = 'a' x,\"parameters: $3 = 'b', $4 = c\"";
        let got = lists(two);
        assert_eq!(values(two, &got[0].entries), [(1, &b"a"[..])]);
        assert_eq!(values(two, &got[1].entries), [(3, &b"b"[..])]);
        assert!(lists(b"parameters: none").is_empty());
        // A bind error's one parameter: a context, with a portal before.
        for bind in [
            &b"CONTEXT:  unnamed portal parameter $2 = 'x', $3 = 'y'"[..],
            b"portal \"P_1\" parameter $2 = 'x'",
        ] {
            let got = lists(bind);
            assert_eq!(got.len(), 1);
            assert!(got[0].context);
            assert_eq!(values(bind, &got[0].entries), [(2, &b"x"[..])]);
        }
        assert!(lists(b"the parameter $1 = 'a'").is_empty());
        assert!(lists(b"portal\nparameter $1 = 'a'").is_empty());
        // Nothing is read past its line.
        let lines = b"parameters: $1 = 'cut\nnext 'quoted' line";
        assert_eq!(values(lines, &lists(lines)[0].entries), [(1, &b"cut"[..])]);
    }

    #[test]
    fn assignments_name_their_placeholders() {
        let secret = |c: &[u8]| (c == b"password" || c == b"pwd").then_some(c.len());
        let text = br#"SET "password" = $1::text, ""pwd""=$2, x = $3, password = crypt( $4 , s), pwd != $5, pwd<=$6, pwd = $7a, password = f(g($8)"#;
        let got: Vec<(u16, usize)> = assigned(text, secret)
            .into_iter()
            .map(|(_, n, k)| (n, k))
            .collect();
        assert_eq!(got, [(1, 8), (2, 3), (4, 8)]);
        // Where each ends: after its digits.
        assert_eq!(assigned(b"pwd = $12 ", secret), [(9, 12, 3)]);
        // Not from the line before, which a line read alone cannot see.
        assert!(assigned(b"pwd =\n  $1", secret).is_empty());
    }

    #[test]
    fn rows_are_read_past_quotes_and_calls() {
        let text = b"('a,''b', now(), crypt($2, 'x)'), $3) tail";
        let (close, values) = row(text).unwrap();
        assert_eq!(close, text.len() - 6);
        let values: Vec<&[u8]> = values.into_iter().map(|r| &text[r]).collect();
        assert_eq!(
            values,
            [&b"'a,''b'"[..], b" now()", b" crypt($2, 'x)')", b" $3"]
        );
        assert!(row(b"($1, $2").is_none());
        assert!(row(b"($1,\n$2)").is_none());
    }

    #[test]
    fn errors_statements_are_not_remembered() {
        let text = b"CONTEXT:  unnamed portal with parameters: $1 = 'x'\n\
                     STATEMENT:  UPDATE u SET password = $1\n\
                     x,\"unnamed portal with parameters: $1 = 'y'\",\"UPDATE u SET password = $1\"\n\
                     LOG:  execute: UPDATE u SET password = $1 -- STATEMENT:  in a comment\n";
        let lists = lists(text);
        assert_eq!(
            lists.iter().map(|l| l.context).collect::<Vec<_>>(),
            [true, true]
        );
        let mut named: Vec<(usize, u16, ())> = memchr::memmem::find_iter(text, b"= $1")
            .map(|at| (at + 4, 1, ()))
            .collect();
        assert_eq!(named.len(), 3);
        let last = named[2].0;
        drop_errors_statements(text, &lists, &mut named);
        assert_eq!(named, [(last, 1, ())]);
    }

    #[test]
    fn inserts_name_their_placeholders_by_column() {
        let secret = |c: &[u8]| (c == b"password" || c == b"api_key").then_some(c.len());
        let text = br#"INSERT INTO "public"."User" ("email", "User"."password", api_key) VALUES ($1, $2, $3), ($4,$5 ,$6) RETURNING "id""#;
        let got: Vec<(u16, usize)> = inserted(text, secret)
            .into_iter()
            .map(|(_, n, k)| (n, k))
            .collect();
        assert_eq!(got, [(2, 8), (3, 7), (5, 8), (6, 7)]);
        // Lower case, `)values`, and each row's end is where it is known.
        let text = b"insert into t (a,password)values($1,$2)";
        assert_eq!(inserted(text, secret), [(text.len() - 1, 2, 8)]);
        // Values read past calls and quotes; a call in the column's place.
        let text =
            b"INSERT INTO t (note, created, password) VALUES ('a,b', now(), crypt($1, 'bf'))";
        assert_eq!(inserted(text, secret), [(text.len() - 1, 1, 8)]);
        // Tabs before a row and spaces before its comma.
        let text = b"INSERT INTO t (a, password) VALUES\t($1, $2) , ($3, $4)";
        let got: Vec<u16> = inserted(text, secret)
            .into_iter()
            .map(|(_, n, _)| n)
            .collect();
        assert_eq!(got, [2, 4]);
        // A row that does not count as many values as columns: all of its
        // placeholders.
        let text = b"INSERT INTO t (a, password)\tVALUES ($1, $2, $3)";
        let got: Vec<u16> = inserted(text, secret)
            .into_iter()
            .map(|(_, n, _)| n)
            .collect();
        assert_eq!(got, [1, 2, 3]);
        // No column list, a literal in the column's place, no secret; and
        // nothing is read past its line (a column list on the line
        // before, a row on the line after).
        for none in [
            &b"(password)\nINSERT INTO t VALUES ($1)"[..],
            b"INSERT INTO t (password) VALUES\n($1)",
            b"INSERT INTO t (password) VALUES (\n$1)",
            b"INSERT INTO t VALUES ($1, $2)",
            b"INSERT INTO t (password) VALUES ('x')",
            b"INSERT INTO t (a, b) VALUES ($1, $2)",
            b"SELECT values FROM t WHERE password = $1",
        ] {
            assert!(
                inserted(none, secret).is_empty(),
                "{}",
                String::from_utf8_lossy(none)
            );
        }
    }
}
