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
use serde::Serialize;

use super::{AuditEvent, AuditKey};
use crate::clock::{Clock, Fraction, Stamp, rfc3339};
use crate::vault::Notes;

/// Bytes of a note's tag (an AES block).
const NOTE_TAG: usize = 16;
/// The first byte of a group's note (a single note's is `{`).
const GROUP: u8 = b'G';

/// An event's fields before its token, as they appear in its line, in
/// order. A note is `{` head `,"token":` token `,` tail `}`; the token is
/// all that varies between the items of a batch.
#[derive(Serialize)]
struct Head<'a> {
    time: &'a str,
    request_id: &'a str,
    principal: &'a str,
    role: Option<&'a str>,
    action: &'a str,
}

/// An event's fields after its token.
#[derive(Serialize)]
struct Tail<'a> {
    classification: Option<&'a str>,
    decision: &'a str,
    reason: Option<&'a str>,
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
        // A string or null: serializing cannot fail.
        let _ = serde_json::to_writer(&mut note, &token);
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
            // A string: serializing cannot fail. JSON escapes any newline.
            let _ = serde_json::to_writer(&mut g, token);
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
    let head = Head {
        time: time.as_ref().map_or("unknown", Stamp::as_str),
        request_id: &e.request_id,
        principal: &e.principal,
        role: e.role.as_deref(),
        action: e.action,
    };
    let tail = Tail {
        classification: e.classification.as_deref(),
        decision: e.decision,
        reason: e.reason.as_deref(),
    };
    // Strings and options only: serializing cannot fail.
    let mut head = serde_json::to_vec(&head).unwrap_or_default();
    head.pop();
    head.extend_from_slice(b",\"token\":");
    let mut tail = serde_json::to_vec(&tail).unwrap_or_default();
    if let Some(first) = tail.first_mut() {
        *first = b',';
    }
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
