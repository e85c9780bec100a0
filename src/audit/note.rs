//! Outbox notes: an event's fields as its chain line will hold them,
//! sealed so the audit writer copies from a store only what this service
//! made.
//!
//! A note is one JSON object on one line, then its tag. A group's note
//! (the items of a batch, which differ only in their token) is
//! `G` head `\n` tail `\n` token (`\n` token)*, then its tag: item `i`'s
//! note is head ‖ token `i` ‖ tail, so a batch of 1,000 cards is one row
//! and one seal, not a thousand.

use aws_lc_rs::cmac;

use super::{AuditEvent, AuditKey};
use crate::clock::{Clock, Fraction, Stamp, rfc3339};
use crate::vault::Notes;

/// Bytes of a note's tag (an AES block).
const NOTE_TAG: usize = 16;
/// The first byte of a group's note (a single note's is `{`).
const GROUP: u8 = b'G';

/// `s` as a JSON string, escaped exactly as `serde_json` escapes (a test
/// holds the two byte for byte): notes were `serde_json`'s before, and
/// its string escaping was 3,400 instructions a tokenization.
fn push_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let named: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0x0f)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(named);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A JSON string, or `null`.
fn push_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Makes the notes of one event with different tokens (the items of a
/// batch): stamped and serialized once, not per item.
pub struct NoteMaker<'k> {
    /// `{"time":…,"action":…,"token":`
    head: Vec<u8>,
    /// `,"classification":…}`
    tail: Vec<u8>,
    key: &'k AuditKey,
}

impl NoteMaker<'_> {
    pub(super) fn unsealed(&self, token: Option<&str>) -> Vec<u8> {
        let mut note = Vec::with_capacity(self.head.len() + self.tail.len() + 40);
        note.extend_from_slice(&self.head);
        push_opt(&mut note, token);
        note.extend_from_slice(&self.tail);
        note
    }

    /// The sealed note of the event with `token`, for a store's outbox.
    pub fn note(&self, token: Option<&str>) -> Vec<u8> {
        self.key.seal(self.unsealed(token))
    }
}

impl Notes for NoteMaker<'_> {
    fn one(&self, token: &str) -> Vec<u8> {
        self.note(Some(token))
    }

    fn group(&self, tokens: &[&str]) -> Vec<u8> {
        let mut g = Vec::with_capacity(self.head.len() + self.tail.len() + 2 + tokens.len() * 32);
        g.push(GROUP);
        g.extend_from_slice(&self.head);
        g.push(b'\n');
        g.extend_from_slice(&self.tail);
        for token in tokens {
            g.push(b'\n');
            // JSON escapes any newline.
            push_str(&mut g, token);
        }
        self.key.seal(g)
    }
}

/// An outbox row, opened: the notes it holds.
pub(super) enum Row<'a> {
    One(&'a [u8]),
    /// Item `i`'s note is `head` ‖ `tokens[i]` ‖ `tail`.
    Group {
        head: &'a [u8],
        tail: &'a [u8],
        tokens: Vec<&'a [u8]>,
    },
}

#[cfg(test)]
impl Row<'_> {
    /// How many notes (events) the row holds.
    pub fn len(&self) -> usize {
        match self {
            Row::One(_) => 1,
            Row::Group { tokens, .. } => tokens.len(),
        }
    }
}

/// The [`NoteMaker`] of `e`, stamped now.
pub(super) fn note_maker<'k>(
    clock: &dyn Clock,
    key: &'k AuditKey,
    e: &AuditEvent,
) -> NoteMaker<'k> {
    let time = rfc3339(clock.now(), Fraction::Trimmed);
    // An event's fields before its token, as they appear in its line, in
    // order; a note is head ‖ token ‖ tail, and the token is all that
    // varies between the items of a batch.
    let mut head = Vec::with_capacity(160);
    head.extend_from_slice(b"{\"time\":");
    push_str(&mut head, time.as_ref().map_or("unknown", Stamp::as_str));
    head.extend_from_slice(b",\"request_id\":");
    push_str(&mut head, &e.request_id);
    head.extend_from_slice(b",\"principal\":");
    push_str(&mut head, &e.principal);
    if let Some(session) = &e.session {
        head.extend_from_slice(b",\"session\":");
        push_str(&mut head, session);
    }
    head.extend_from_slice(b",\"role\":");
    push_opt(&mut head, e.role.as_deref());
    head.extend_from_slice(b",\"action\":");
    push_str(&mut head, e.action);
    head.extend_from_slice(b",\"token\":");
    let mut tail = Vec::with_capacity(80);
    tail.extend_from_slice(b",\"classification\":");
    push_opt(&mut tail, e.classification.as_deref());
    tail.extend_from_slice(b",\"decision\":");
    push_str(&mut tail, e.decision);
    tail.extend_from_slice(b",\"reason\":");
    push_opt(&mut tail, e.reason.as_deref());
    tail.push(b'}');
    NoteMaker { head, tail, key }
}

/// An event's note, unsealed: what [`super::AuditLog::record`] sends the writer.
pub(super) fn make_note(clock: &dyn Clock, key: &AuditKey, e: &AuditEvent) -> Vec<u8> {
    note_maker(clock, key, e).unsealed(e.token.as_deref())
}

impl AuditKey {
    /// `note` with its tag appended, for a store's outbox.
    pub(super) fn seal(&self, mut note: Vec<u8>) -> Vec<u8> {
        let mut tag = [0u8; NOTE_TAG];
        // Fails only on a short buffer, which this is not; were it to fail,
        // the zero tag would fail its check and be reported, never trusted.
        let _ = cmac::sign_to_buffer(&self.notes, &note, &mut tag);
        note.extend_from_slice(&tag);
        note
    }

    /// The note of a sealed outbox entry, if its tag is ours (checked in
    /// constant time) and it has a note's shape: one JSON object on one
    /// line, as [`make_note`] writes them.
    #[cfg(test)]
    pub(super) fn open<'a>(&self, sealed: &'a [u8]) -> Option<&'a [u8]> {
        match self.open_row(sealed)? {
            Row::One(note) => Some(note),
            Row::Group { .. } => None,
        }
    }

    /// The notes of a sealed outbox row, one or a group's, if its tag is
    /// ours (checked in constant time) and it has the shape
    /// [`NoteMaker`] gives: every note one JSON object on one line.
    pub(super) fn open_row<'a>(&self, sealed: &'a [u8]) -> Option<Row<'a>> {
        let at = sealed.len().checked_sub(NOTE_TAG)?;
        let (body, tag) = sealed.split_at(at);
        cmac::verify(&self.notes, body, tag).ok()?;
        let object = |b: &[u8]| b.first() == Some(&b'{') && b.last() == Some(&b'}');
        match body.split_first()? {
            (&GROUP, rest) => {
                let mut parts = rest.split(|&b| b == b'\n');
                let head = parts.next()?;
                let tail = parts.next()?;
                let tokens: Vec<&[u8]> = parts.collect();
                let shaped = head.first() == Some(&b'{')
                    && tail.last() == Some(&b'}')
                    && !tokens.is_empty()
                    && tokens.iter().all(|t| !t.is_empty());
                shaped.then_some(Row::Group { head, tail, tokens })
            }
            _ => (body.len() >= 2 && object(body) && !body.contains(&b'\n'))
                .then_some(Row::One(body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every ASCII character, alone and between others, and some text
    /// beyond ASCII: the same bytes as `serde_json`'s.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = (0u8..0x80).map(|b| char::from(b).to_string()).collect();
        cases.extend((0u8..0x80).map(|b| format!("ab{}cd", char::from(b))));
        cases.extend(
            [
                "",
                "plain",
                "é \u{2028} 💳",
                "a\"b\\c\nd\u{7f}e\u{1}",
                "\u{1f}\u{0}",
            ]
            .map(String::from),
        );
        for s in cases {
            let mut ours = Vec::new();
            push_str(&mut ours, &s);
            assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
        let mut null = Vec::new();
        push_opt(&mut null, None);
        assert_eq!(null, b"null");
    }
}
