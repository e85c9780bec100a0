//! SQL statements whose parameters are logged apart from them, as
//! PostgreSQL does: `execute <unnamed>: UPDATE users SET password = $1
//! WHERE id = $2`, then, on the next line (or later in the same CSV row),
//! `DETAIL:  parameters: $1 = 'hunter2', $2 = '42'`. The statement names
//! the secret and the list holds it, so neither alone is enough: the
//! placeholders of secrets' names are remembered until the next list
//! ([`super::Session`]'s `params`), and that list's values for them are
//! masked.
//!
//! A placeholder is named by a pair the scan found (`password = $1`, its
//! value the placeholder) or by an INSERT's column list (`INSERT INTO t
//! ("email", "password") VALUES ($1, $2)`; upper or lower case, on the
//! statement's line). Lines of text only, as YAML
//! blocks are: NDJSON's two walkers read strings apart, and must agree.

use std::ops::Range;
use std::sync::LazyLock;

use memchr::memmem::Finder;

/// Placeholders above this are not followed: three digits, so the state
/// a text carries to the next is bounded.
const MAX_PLACEHOLDER: u16 = 999;

/// A list's start, as PostgreSQL writes it (`DETAIL:  parameters: `, and
/// `CONTEXT:  unnamed portal with parameters: `).
static LIST: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"parameters: $"));

/// The keyword before an INSERT's rows, in the two cases statements write
/// it in (not `Values`). A search for each cost 290,000 fewer instructions
/// than a look at every `v` of an 8 MiB secret-free text.
static VALUES: LazyLock<[Finder<'static>; 2]> =
    LazyLock::new(|| [Finder::new(b"VALUES"), Finder::new(b"values")]);

/// The number of a placeholder `$N` that is the whole of `value`.
pub(super) fn placeholder(value: &[u8]) -> Option<u16> {
    let digits = value.strip_prefix(b"$")?;
    number(digits)
}

/// `digits` as a placeholder's number (1 to [`MAX_PLACEHOLDER`]).
fn number(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 3 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    (1..=MAX_PLACEHOLDER).contains(&n).then_some(n)
}

/// A parameters list: where it starts, and each of its entries' number
/// and value (inside its quotes).
pub(super) struct List {
    pub start: usize,
    pub entries: Vec<(u16, Range<usize>)>,
}

/// Each parameters list in `text` (a block of whole lines: nothing here
/// reads past a newline). A value whose closing quote is not on its line
/// (a line cut short) runs to the line's end.
pub(super) fn lists(text: &[u8]) -> Vec<List> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = LIST.find(&text[from..]) {
        let start = from + at;
        let mut i = start + b"parameters: ".len();
        let mut entries = Vec::new();
        while let Some((n, value, next)) = entry(text, i) {
            entries.push((n, value));
            i = next;
            match text[i..].strip_prefix(b", $") {
                Some(_) => i += 2,
                None => break,
            }
        }
        out.push(List { start, entries });
        from = i.max(start + 1);
    }
    out
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
            Some(end) => return Some((n, open..end, end)),
            None => return Some((n, open..text.len(), text.len())),
        }
    }
}

/// How far before a `VALUES` its column list may start, and how far a row
/// of placeholders may run: a statement's lists are short, and the bound
/// keeps a line of repeated keywords linear.
const REACH: usize = 1024;

/// The placeholders an INSERT's column list names after columns that
/// `secret` picks (`INSERT INTO t (a, "password") VALUES ($1, $2), ($3,
/// $4)` gives `$2` and `$4`), each with where its row ends and what
/// `secret` said of its column.
pub(super) fn inserted<K: Copy>(
    text: &[u8],
    secret: impl Fn(&[u8]) -> Option<K>,
) -> Vec<(usize, u16, K)> {
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
        let picked: Vec<(usize, K)> = columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| secret(c).map(|k| (i, k)))
            .collect();
        if picked.is_empty() {
            continue;
        }
        // Each row of the VALUES list, `(…)` after `(…), `.
        let mut i = from;
        loop {
            while text.get(i) == Some(&b' ') {
                i += 1;
            }
            if text.get(i) != Some(&b'(') {
                break;
            }
            // On the statement's line, within reach.
            let window = &text[i..text.len().min(i + REACH)];
            let Some(close) = memchr::memchr2(b')', b'\n', window)
                .filter(|&c| window[c] == b')')
                .map(|c| i + c)
            else {
                break;
            };
            let row: Vec<&[u8]> = text[i + 1..close].split(|&c| c == b',').map(trim).collect();
            for &(col, kind) in &picked {
                if let Some(n) = row.get(col).and_then(|v| placeholder(v)) {
                    out.push((close, n, kind));
                }
            }
            i = close + 1;
            if text.get(i) != Some(&b',') {
                break;
            }
            i += 1;
        }
        from = from.max(i);
    }
    out
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
            && matches!(text[v - 1], b' ' | b')')
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
                let c = trim(c);
                let c = c.rsplit(|&b| b == b'.').next().unwrap_or(c);
                c.strip_prefix(b"\"")
                    .and_then(|c| c.strip_suffix(b"\""))
                    .or_else(|| c.strip_prefix(b"`").and_then(|c| c.strip_suffix(b"`")))
                    .unwrap_or(c)
            })
            .collect(),
    )
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
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
        assert_eq!(placeholder(b"$999"), Some(999));
        for not in [&b"$0"[..], b"$1000", b"$", b"1", b"$1a", b"$-1", b" $1"] {
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
        // Cut short: the value runs to the text's end.
        let cut = b"parameters: $1 = 'a', $2 = 'hunter";
        assert_eq!(
            values(cut, &lists(cut)[0].entries),
            [(1, &b"a"[..]), (2, b"hunter")]
        );
        // Two lists in one CSV row; a malformed entry ends its list.
        let two = b"parameters: $1 = 'a' x,\"parameters: $3 = 'b', $4 = c\"";
        let got = lists(two);
        assert_eq!(values(two, &got[0].entries), [(1, &b"a"[..])]);
        assert_eq!(values(two, &got[1].entries), [(3, &b"b"[..])]);
        assert!(lists(b"parameters: none").is_empty());
        // Nothing is read past its line.
        let lines = b"parameters: $1 = 'cut\nnext 'quoted' line";
        assert_eq!(values(lines, &lists(lines)[0].entries), [(1, &b"cut"[..])]);
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
