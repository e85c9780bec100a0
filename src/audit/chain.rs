//! The chain's line format: how a line is made from an event's note and
//! the line before, how the end of a file is found again at start-up, and
//! how a whole chain is verified.
//!
//! A line is `{"seq":N,<the note's fields>,"prev":"<mac before>"
//! [,"outbox":"<epoch>:<seq>"],"mac":"<mac>"}`: `mac` is HMAC-SHA256 over
//! the line without its `mac` field. `outbox` (on every line once the
//! store's outbox is attached) says how far that outbox was copied when
//! the line was written, so a restart neither loses nor repeats a note.

use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;

use super::file::rotated_files;
use super::{AuditError, AuditKey};

pub(super) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const MAC_FIELD: &str = ",\"mac\":\"";
/// The tail we read at start-up to find the last line.
const TAIL_BYTES: u64 = 64 * 1024;

/// A line as read back. Strings may hold escapes (a caller's reason can
/// hold a quote), so they are `Cow`s, borrowed when they can be.
#[derive(Deserialize)]
#[allow(dead_code)] // the fields are parsed to check the line's shape
struct Line<'a> {
    seq: u64,
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow)]
    request_id: Cow<'a, str>,
    #[serde(borrow)]
    principal: Cow<'a, str>,
    #[serde(default, borrow)]
    session: Option<Cow<'a, str>>,
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
    #[serde(borrow)]
    classification: Option<Cow<'a, str>>,
    #[serde(borrow)]
    decision: Cow<'a, str>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(default, borrow)]
    outbox: Option<Cow<'a, str>>,
}

/// Where a chain stands after a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChainEnd {
    pub seq: u64,
    /// The MAC of the last line (the next line's `prev`).
    pub mac: String,
    /// The last line's `outbox` mark, if it had one.
    pub outbox: Option<String>,
}

impl ChainEnd {
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            mac: GENESIS.to_owned(),
            outbox: None,
        }
    }
}

/// Appends the line for `note` (a JSON object of the event's fields, as
/// [`super::AuditEvent`]'s notes are made) to `buf`, as line `seq` after
/// `prev`, with `outbox` as its mark; returns the line's MAC.
pub(super) fn push_line(
    buf: &mut Vec<u8>,
    key: &AuditKey,
    seq: u64,
    note: &[u8],
    prev: &str,
    outbox: Option<(&str, u64)>,
) -> String {
    let start = buf.len();
    let fields = &note[1..note.len() - 1];
    // Numbers through `itoa`, not `write!`: this runs for every event.
    let mut digits = itoa::Buffer::new();
    buf.extend_from_slice(b"{\"seq\":");
    buf.extend_from_slice(digits.format(seq).as_bytes());
    buf.push(b',');
    buf.extend_from_slice(fields);
    buf.extend_from_slice(b",\"prev\":\"");
    buf.extend_from_slice(prev.as_bytes());
    buf.push(b'"');
    if let Some((epoch, mark)) = outbox {
        buf.extend_from_slice(b",\"outbox\":\"");
        buf.extend_from_slice(epoch.as_bytes());
        buf.push(b':');
        buf.extend_from_slice(digits.format(mark).as_bytes());
        buf.push(b'"');
    }
    buf.push(b'}');
    let mac = key.mac(&buf[start..]);
    buf.pop();
    buf.extend_from_slice(MAC_FIELD.as_bytes());
    buf.extend_from_slice(mac.as_bytes());
    buf.extend_from_slice(b"\"}\n");
    mac
}

/// Finds the chain's end in `file`: drops an unterminated last line (a
/// write cut by a crash, never acknowledged), checks the last full line's
/// MAC, and returns where the chain stands and the file's length.
pub(super) fn resume(
    file: &mut File,
    path: &Path,
    key: &AuditKey,
) -> Result<(ChainEnd, u64), AuditError> {
    let io = |e: std::io::Error| AuditError::Unavailable(format!("{}: {e}", path.display()));
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok((ChainEnd::genesis(), 0));
    }
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).map_err(io)?;
    let mut end = len;
    if tail.last() != Some(&b'\n') {
        let Some(nl) = tail.iter().rposition(|&b| b == b'\n') else {
            if start > 0 {
                return Err(AuditError::Broken {
                    path: path.to_owned(),
                    line: 0,
                    why: format!("the last line is over {TAIL_BYTES} bytes: not an audit line"),
                });
            }
            // The whole file is one partial line: start a new chain.
            tracing::warn!(path = %path.display(), "audit log held only a partial line; removed it");
            file.set_len(0).map_err(io)?;
            return Ok((ChainEnd::genesis(), 0));
        };
        let keep = nl + 1;
        end = start + keep as u64;
        tracing::warn!(path = %path.display(), "audit log ended in a partial line (a crash mid-write); removed it");
        file.set_len(end).map_err(io)?;
        tail.truncate(keep);
        if end == 0 {
            return Ok((ChainEnd::genesis(), 0));
        }
    }
    let body = &tail[..tail.len() - 1];
    // The tail's whole lines (the first may be cut by the window's start).
    let whole = if start > 0 {
        body.iter()
            .position(|&b| b == b'\n')
            .map_or(&[][..], |i| &body[i + 1..])
    } else {
        body
    };
    let chain = check_tail(whole, key).map_err(|(from_end, why)| AuditError::Broken {
        path: path.to_owned(),
        line: 0,
        why: if from_end == 0 {
            format!("last line: {why}")
        } else {
            format!("line {from_end} before the last: {why}")
        },
    })?;
    Ok((chain, end))
}

/// Checks each of `lines` (whole lines, newline-separated, at least one):
/// its MAC, and that it follows the one before (its `prev`, the next
/// sequence number). Appending after a removed, inserted or altered line
/// would chain new events onto a broken log, so the service refuses to
/// start on one instead; `audit verify` checks the whole file. Returns
/// where the chain stands, or the failing line counted back from the
/// last (0) and why.
fn check_tail(lines: &[u8], key: &AuditKey) -> Result<ChainEnd, (usize, String)> {
    let all: Vec<&[u8]> = lines.split(|&b| b == b'\n').collect();
    let mut before: Option<ChainEnd> = None;
    for (i, line) in all.iter().enumerate() {
        let from_end = all.len() - 1 - i;
        let line = std::str::from_utf8(line).map_err(|_| (from_end, "not UTF-8".to_owned()))?;
        let (end, prev) = check_line(line, key).map_err(|why| (from_end, why))?;
        if let Some(b) = &before
            && (prev != b.mac || end.seq != b.seq + 1)
        {
            return Err((
                from_end,
                "does not follow the line before it (a line was removed, inserted or moved)".into(),
            ));
        }
        before = Some(end);
    }
    before.ok_or((0, "no whole line".into()))
}

/// Checks one line's own MAC; returns where the chain stands after it and
/// the line's `prev`.
fn check_line(line: &str, key: &AuditKey) -> Result<(ChainEnd, String), String> {
    let at = line.rfind(MAC_FIELD).ok_or("no mac field")?;
    let mac = line[at + MAC_FIELD.len()..]
        .strip_suffix("\"}")
        .ok_or("malformed mac field")?;
    let mut body = line.as_bytes()[..at].to_vec();
    body.push(b'}');
    if key.mac(&body) != mac {
        return Err("MAC does not match: the line was altered or the key differs".into());
    }
    let parsed: Line<'_> =
        serde_json::from_slice(&body).map_err(|e| format!("not an audit line: {e}"))?;
    Ok((
        ChainEnd {
            seq: parsed.seq,
            mac: mac.to_owned(),
            outbox: parsed.outbox.map(Cow::into_owned),
        },
        parsed.prev.into_owned(),
    ))
}

/// What a verification found.
#[derive(Debug)]
pub struct VerifyReport {
    pub lines: u64,
    /// Files checked (rotated ones first, then the live one).
    pub files: usize,
}

/// Verifies the whole chain of a log: the files rotated out of `path`
/// (oldest first) and `path` itself, each continuing the one before. The
/// error names the file and the first broken line (1-based). A last line
/// without its newline is a write in progress (the service runs beside us)
/// and is not judged.
pub fn verify(path: &Path, key: &AuditKey) -> Result<VerifyReport, AuditError> {
    let mut files = rotated_files(path);
    files.push(path.to_owned());
    let mut prev = GENESIS.to_owned();
    let mut expect_seq = Some(1);
    let mut n = 0u64;
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| AuditError::Unavailable(format!("{}: {e}", file.display())))?;
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        for (i, line) in complete.lines().enumerate() {
            let lineno = i as u64 + 1;
            let broken = |why: String| AuditError::Broken {
                path: file.to_owned(),
                line: lineno,
                why,
            };
            let (end, line_prev) = check_line(line, key).map_err(broken)?;
            if line_prev != prev {
                return Err(broken(if i == 0 && n > 0 {
                    "does not follow the end of the file before it (a file or lines were removed)"
                        .into()
                } else {
                    "does not follow the line before it (a line was removed, inserted or moved)"
                        .into()
                }));
            }
            if let Some(want) = expect_seq
                && end.seq != want
            {
                return Err(broken(format!(
                    "sequence {} where {want} was expected",
                    end.seq
                )));
            }
            expect_seq = Some(end.seq + 1);
            prev = end.mac;
            n += 1;
        }
    }
    Ok(VerifyReport {
        lines: n,
        files: files.len(),
    })
}
