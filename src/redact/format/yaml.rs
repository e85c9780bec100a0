//! YAML name/value pairs written on two lines, as Kubernetes manifests
//! list a container's environment (`kubectl get pod -o yaml`, `helm
//! install --debug`): `- name: DB_PASSWORD`, then `  value: …`. The scan
//! matches within a line; the session pairs the lines
//! ([`super::Session`]), the same whether they come in one block, in two
//! blocks or one at a time.

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

#[cfg(test)]
mod tests {
    use super::*;

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
