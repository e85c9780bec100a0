//! YAML name/value pairs written on two lines, as Kubernetes manifests
//! list a container's environment (`kubectl get pod -o yaml`, `helm
//! install --debug`): `- name: DB_PASSWORD`, then `  value: …`. The scan
//! matches within a line; the session pairs the lines
//! ([`super::Session`]), the same whether they come in one block, in two
//! blocks or one at a time.
//!
//! And block scalars under a secret's name (`password: |`, `api_key: >-`
//! in a Secret's `stringData` or a chart's values): the scan finds the
//! header (`|`) as the pair's value; the lines indented under its key are
//! the secret, masked here, on into the next text when the block runs to
//! the end of this one.

use std::ops::Range;

/// The most bytes of indentation (and a list's `- `) read before a key.
const INDENT_MAX: usize = 64;

/// Each `name:` key that starts its line in `text` (after indentation and
/// a list's `- `): the range of the name it holds, and where the line
/// after it starts, if `text` holds a newline after it.
pub(super) fn names(text: &[u8]) -> impl Iterator<Item = (Range<usize>, Option<usize>)> + '_ {
    memchr::memmem::find_iter(text, b"name:").filter_map(|p| {
        let indent = text[p.saturating_sub(INDENT_MAX + 1)..p]
            .iter()
            .rev()
            .take_while(|&&b| matches!(b, b' ' | b'\t' | b'-'))
            .count();
        let line = p - indent;
        if indent > INDENT_MAX || line > 0 && text[line - 1] != b'\n' {
            return None;
        }
        let eol = memchr::memchr(b'\n', &text[p..]).map_or(text.len(), |i| p + i);
        let name = scalar(text, p + 5, eol)?;
        Some((name, (eol < text.len()).then_some(eol + 1)))
    })
}

/// The value of the line that starts at `start`, if it is a `value:` key
/// (after indentation).
pub(super) fn value_at(text: &[u8], start: usize) -> Option<Range<usize>> {
    let indent = text[start..]
        .iter()
        .take(INDENT_MAX + 1)
        .take_while(|&&b| matches!(b, b' ' | b'\t'))
        .count();
    let key = start + indent;
    if indent > INDENT_MAX || !text[key..].starts_with(b"value:") {
        return None;
    }
    let eol = memchr::memchr(b'\n', &text[key..]).map_or(text.len(), |i| key + i);
    scalar(text, key + 6, eol)
}

/// A scalar after a key's `:`, to the line's end at `eol`: after at least
/// one space or tab, inside its quotes if quoted (to the line's last), or plain, less a
/// comment (` # …`) and trailing spaces. None when there is none, or for
/// a block scalar's `|` or `>` (its text is on the lines after).
fn scalar(text: &[u8], from: usize, eol: usize) -> Option<Range<usize>> {
    let s = &text[from..eol];
    let s = s.strip_suffix(b"\r").unwrap_or(s);
    let lead = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    if lead == 0 {
        return None;
    }
    let v = &s[lead..];
    let (start, len) = match v.first()? {
        b'|' | b'>' => return None,
        // To the line's last such quote: one escaped inside (`\"`, `''`)
        // is not the close.
        &q @ (b'"' | b'\'') => (1, memchr::memrchr(q, &v[1..]).unwrap_or(v.len() - 1)),
        _ => {
            let plain = v
                .windows(2)
                .position(|w| matches!(w[0], b' ' | b'\t') && w[1] == b'#')
                .map_or(v, |c| &v[..c]);
            (0, plain.trim_ascii_end().len())
        }
    };
    let start = from + lead + start;
    (len > 0).then(|| start..start + len)
}

/// How far before a block scalar's header its line may start.
const HEADER_LINE_MAX: usize = 256;

/// If the value found at `r` is a block scalar's header (`|` or `>`, with
/// its chomping and indentation indicators: `|-`, `>+`, `|2`) after a
/// YAML `:`, last on its line but for a comment: the indentation of its
/// key's line (a list's `- ` counted as indentation), which the block's
/// lines exceed. A line whose start is more than `HEADER_LINE_MAX` bytes
/// back is taken as not indented (fail closed: every indented line after
/// it is the block's). Each look is bounded: a line of headers costs
/// linear time.
pub(super) fn block_header(text: &[u8], r: &Range<usize>) -> Option<usize> {
    let (&first, rest) = text[r.clone()].split_first()?;
    if !matches!(first, b'|' | b'>')
        || rest.len() > 2
        || !rest.iter().all(|b| matches!(b, b'-' | b'+' | b'1'..=b'9'))
    {
        return None;
    }
    let blank = |b: &&u8| matches!(b, b' ' | b'\t');
    let after = text[r.end..].iter().find(|b| !blank(b) && **b != b'\r');
    if !matches!(after, None | Some(b'\n' | b'#')) {
        return None;
    }
    let key_end = r.start - text[..r.start].iter().rev().take_while(blank).count();
    if key_end == 0 || text[key_end - 1] != b':' {
        return None;
    }
    let from = r.start.saturating_sub(HEADER_LINE_MAX);
    let line = match memchr::memrchr(b'\n', &text[from..r.start]) {
        Some(i) => from + i + 1,
        None if from == 0 => 0,
        None => return Some(0),
    };
    Some(
        text[line..r.start]
            .iter()
            .take_while(|&&b| matches!(b, b' ' | b'\t' | b'-'))
            .count(),
    )
}

/// The text of a block scalar's lines from `from` (a line's start) on:
/// each line indented deeper than `indent`, after its indentation and
/// less a `\r`; blank lines belong to it. Returns where the block ends,
/// or None when it runs to the end of `text` (and may go on in the next).
pub(super) fn block_lines(
    text: &[u8],
    from: usize,
    indent: usize,
    out: &mut Vec<Range<usize>>,
) -> Option<usize> {
    let mut at = from;
    while at < text.len() {
        let eol = memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |i| at + i);
        let line = &text[at..eol];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let lead = line
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        if lead < line.len() {
            if lead <= indent {
                return Some(at);
            }
            out.push(at + lead..at + line.len());
        }
        at = eol + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_scalars_are_read_by_their_header_and_indentation() {
        let text = b"  - password: |- # pw\n      one two\n\n      three\r\n  next: 1\n";
        let at = |s: &[u8]| {
            let i = text.windows(s.len()).position(|w| w == s).unwrap();
            i..i + s.len()
        };
        assert_eq!(block_header(text, &at(b"|-")), Some(4));
        let mut lines = Vec::new();
        let end = block_lines(text, at(b"      one").start, 4, &mut lines);
        assert_eq!(end, Some(at(b"  next").start));
        let lines: Vec<&[u8]> = lines.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(lines, [&b"one two"[..], b"three"]);
        // Open at the text's end: it may go on in the next text.
        let mut lines = Vec::new();
        assert_eq!(block_lines(b"   a\n   b", 0, 2, &mut lines), None);
        assert_eq!(lines, [3..4, 8..9]);
        for (text, value) in [
            (&b"password: | x\n"[..], &b"|"[..]),
            (b"password: |x\n", b"|x"),
            (b"password: |-+-\n", b"|-+-"),
            (b"password: a|\n", b"a|"),
            (b"password=|\n", b"|"),
            (b"{\"password\"=> >\n", b">"),
        ] {
            assert_eq!(block_header(text, &at_in(text, value)), None);
        }
        assert_eq!(block_header(b"a: >2\n", &(3..5)), Some(0));
        // Its line's start too far back: not indented.
        let far = [&b"  "[..], &[b'x'; 300], b" password: |\n"].concat();
        assert_eq!(block_header(&far, &(far.len() - 2..far.len() - 1)), Some(0));
    }

    fn at_in(text: &[u8], s: &[u8]) -> Range<usize> {
        let i = text.windows(s.len()).position(|w| w == s).unwrap();
        i..i + s.len()
    }

    #[test]
    fn names_and_values_are_read_where_they_start_a_line() {
        let text = b"spec:\n  - name: DB_PASSWORD # db\n    value: \"two words\"\n  x name: NOT\n- name:\n";
        let found: Vec<_> = names(text)
            .map(|(r, next)| (&text[r], next.map(|n| value_at(text, n).map(|v| &text[v]))))
            .collect();
        assert_eq!(
            found,
            [(&b"DB_PASSWORD"[..], Some(Some(&b"two words"[..])))]
        );
        assert_eq!(value_at(b"value: a b # c\n", 0), Some(7..10));
        for none in [&b"value: |\n"[..], b"value:\n", b"values: x", b"value:x"] {
            assert_eq!(
                value_at(none, 0),
                None,
                "{:?}",
                String::from_utf8_lossy(none)
            );
        }
        // A name on the text's last line: the value is in the next text.
        assert_eq!(names(b"- name: API_KEY\n").next(), Some((8..15, Some(16))));
    }
}
