//! Hash-chained audit events.
//!
//! Every tokenize, detokenize (allowed or denied), delete and auth failure
//! is one JSON line. Each line carries `prev`, the MAC of the line before,
//! and `mac`, HMAC-SHA256 under the service-held audit key over the line's
//! bytes without `mac`; an edit, a deletion or a reordering breaks the chain
//! and someone who can write the file but lacks the key cannot mend it.
//!
//! Lines are written by one thread that takes every event waiting, writes
//! them, and fsyncs once (group commit), then wakes the requests: no answer
//! leaves before its events are on disk.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::crypto::DataKey;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const MAC_FIELD: &str = ",\"mac\":\"";
/// The tail we read at start-up to find the last line.
const TAIL_BYTES: u64 = 64 * 1024;

/// One audited decision. Never holds a value: a token, a classification
/// and who asked, nothing more.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent {
    pub request_id: String,
    pub principal: String,
    pub role: Option<String>,
    pub action: &'static str,
    pub token: Option<String>,
    pub classification: Option<String>,
    /// `allow`, `deny` or `error`.
    pub decision: &'static str,
    /// Why it was denied, or the caller's stated reason (already redacted).
    pub reason: Option<String>,
}

/// The serialized form; field order is the MAC'd byte order.
#[derive(Serialize, Deserialize)]
struct Line<'a> {
    seq: u64,
    time: String,
    request_id: &'a str,
    principal: &'a str,
    role: Option<&'a str>,
    action: &'a str,
    token: Option<&'a str>,
    classification: Option<&'a str>,
    decision: &'a str,
    reason: Option<&'a str>,
    prev: &'a str,
}

/// Audit failures.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    #[error("audit log {path}: line {line}: {why}")]
    Broken {
        path: PathBuf,
        line: u64,
        why: String,
    },
}

/// The MAC key of the chain.
#[derive(Clone)]
pub struct AuditKey(hmac::Key);

impl AuditKey {
    pub fn new(secret: &DataKey) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret.expose()))
    }

    fn mac(&self, body: &[u8]) -> String {
        hex::encode(hmac::sign(&self.0, body).as_ref())
    }
}

struct Job {
    events: Vec<AuditEvent>,
    done: oneshot::Sender<Result<(), AuditError>>,
}

/// The handle requests use; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
}

struct Writer {
    file: File,
    path: PathBuf,
    key: AuditKey,
    clock: Arc<dyn Clock>,
    seq: u64,
    prev: String,
    len: u64,
}

impl AuditLog {
    /// Opens (or creates, 0600) the log at `path`, continues the chain found
    /// at its end, and starts the writer thread.
    pub fn open(path: &Path, key: AuditKey, clock: Arc<dyn Clock>) -> Result<AuditLog, AuditError> {
        let unavailable =
            |e: std::io::Error| AuditError::Unavailable(format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(unavailable)?;
        let (seq, prev, len) = resume(&mut file, path, &key)?;
        let mut w = Writer {
            file,
            path: path.to_owned(),
            key,
            clock,
            seq,
            prev,
            len,
        };
        let (tx, mut rx) = mpsc::channel::<Job>(4096);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut jobs = vec![first];
                    while let Ok(j) = rx.try_recv() {
                        jobs.push(j);
                        if jobs.len() >= 1024 {
                            break;
                        }
                    }
                    let result = w.commit(&jobs);
                    for j in jobs {
                        let r = match &result {
                            Ok(()) => Ok(()),
                            Err(e) => Err(AuditError::Unavailable(e.to_string())),
                        };
                        let _ = j.done.send(r);
                    }
                }
            })
            .map_err(unavailable)?;
        Ok(AuditLog { tx })
    }

    /// Writes `events` and returns once they are on disk.
    pub async fn record(&self, events: Vec<AuditEvent>) -> Result<(), AuditError> {
        if events.is_empty() {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job { events, done })
            .await
            .map_err(|_| AuditError::Unavailable("audit writer stopped".into()))?;
        wait.await
            .map_err(|_| AuditError::Unavailable("audit writer stopped".into()))?
    }
}

impl Writer {
    /// Appends every event of `jobs` and fsyncs once. On failure the file is
    /// cut back to its last committed length and the chain state kept, so a
    /// later batch continues a valid chain.
    fn commit(&mut self, jobs: &[Job]) -> std::io::Result<()> {
        let (seq0, prev0) = (self.seq, self.prev.clone());
        let mut buf = Vec::with_capacity(jobs.len() * 320);
        let time = self
            .clock
            .now()
            .format(&Rfc3339)
            .unwrap_or_else(|_| "unknown".into());
        for e in jobs.iter().flat_map(|j| &j.events) {
            self.seq += 1;
            let line = Line {
                seq: self.seq,
                time: time.clone(),
                request_id: &e.request_id,
                principal: &e.principal,
                role: e.role.as_deref(),
                action: e.action,
                token: e.token.as_deref(),
                classification: e.classification.as_deref(),
                decision: e.decision,
                reason: e.reason.as_deref(),
                prev: &self.prev,
            };
            let body = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
            let mac = self.key.mac(&body);
            buf.extend_from_slice(&body[..body.len() - 1]);
            buf.extend_from_slice(MAC_FIELD.as_bytes());
            buf.extend_from_slice(mac.as_bytes());
            buf.extend_from_slice(b"\"}\n");
            self.prev = mac;
        }
        let r = self
            .file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.write_all(&buf))
            .and_then(|_| self.file.sync_data());
        match r {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "audit write failed");
                let _ = self.file.set_len(self.len);
                self.seq = seq0;
                self.prev = prev0;
                Err(e)
            }
        }
    }
}

/// Finds the chain's end: drops an unterminated last line (a write cut by a
/// crash, never acknowledged), checks the last full line's MAC, and returns
/// (seq, mac, length).
fn resume(file: &mut File, path: &Path, key: &AuditKey) -> Result<(u64, String, u64), AuditError> {
    let io = |e: std::io::Error| AuditError::Unavailable(format!("{}: {e}", path.display()));
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok((0, GENESIS.to_owned(), 0));
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
            return Ok((0, GENESIS.to_owned(), 0));
        };
        let keep = nl + 1;
        end = start + keep as u64;
        tracing::warn!(path = %path.display(), "audit log ended in a partial line (a crash mid-write); removed it");
        file.set_len(end).map_err(io)?;
        tail.truncate(keep);
        if end == 0 {
            return Ok((0, GENESIS.to_owned(), 0));
        }
    }
    let body = &tail[..tail.len() - 1];
    let last_start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last = std::str::from_utf8(&body[last_start..]).map_err(|_| AuditError::Broken {
        path: path.to_owned(),
        line: 0,
        why: "last line is not UTF-8".into(),
    })?;
    let (seq, mac, _) = check_line_full(last, key).map_err(|why| AuditError::Broken {
        path: path.to_owned(),
        line: 0,
        why: format!("last line: {why}"),
    })?;
    Ok((seq, mac, end))
}

/// Checks one line's own MAC; returns (seq, mac, prev).
fn check_line_full(line: &str, key: &AuditKey) -> Result<(u64, String, String), String> {
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
    Ok((parsed.seq, mac.to_owned(), parsed.prev.to_owned()))
}

/// What a verification found.
#[derive(Debug)]
pub struct VerifyReport {
    pub lines: u64,
}

/// Verifies the whole chain of a file; the error names the first broken
/// line (1-based). A last line without its newline is a write in progress
/// (the service runs beside us) and is not judged.
pub fn verify(path: &Path, key: &AuditKey) -> Result<VerifyReport, AuditError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AuditError::Unavailable(format!("{}: {e}", path.display())))?;
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let mut prev = GENESIS.to_owned();
    let mut expect_seq = None;
    let mut n = 0u64;
    for (i, line) in complete.lines().enumerate() {
        let lineno = i as u64 + 1;
        let broken = |why: String| AuditError::Broken {
            path: path.to_owned(),
            line: lineno,
            why,
        };
        let (seq, mac, line_prev) = check_line_full(line, key).map_err(broken)?;
        if line_prev != prev {
            return Err(broken(
                "does not follow the line before it (a line was removed, inserted or moved)".into(),
            ));
        }
        if let Some(want) = expect_seq
            && seq != want
        {
            return Err(broken(format!("sequence {seq} where {want} was expected")));
        }
        expect_seq = Some(seq + 1);
        prev = mac;
        n += 1;
    }
    Ok(VerifyReport { lines: n })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    fn event(i: usize) -> AuditEvent {
        AuditEvent {
            request_id: format!("r{i}"),
            principal: "apikey:test".into(),
            action: "tokenize",
            token: Some(format!("tok_{i}")),
            decision: "allow",
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn chain_survives_restart_and_catches_edits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = AuditKey::new(&DataKey::from_bytes([3; 32]));
        let log = AuditLog::open(&path, key.clone(), Arc::new(SystemClock)).unwrap();
        log.record((0..3).map(event).collect()).await.unwrap();
        drop(log);
        let log = AuditLog::open(&path, key.clone(), Arc::new(SystemClock)).unwrap();
        log.record(vec![event(4)]).await.unwrap();
        assert_eq!(verify(&path, &key).unwrap().lines, 4);

        let good = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        let swapped = [lines[0], lines[2], lines[1], lines[3]].join("\n") + "\n";
        std::fs::write(&path, swapped).unwrap();
        assert!(matches!(
            verify(&path, &key),
            Err(AuditError::Broken { line: 2, .. })
        ));
        let deleted = [lines[0], lines[2], lines[3]].join("\n") + "\n";
        std::fs::write(&path, deleted).unwrap();
        assert!(matches!(
            verify(&path, &key),
            Err(AuditError::Broken { line: 2, .. })
        ));
        std::fs::write(&path, good.replacen("tok_1", "tok_9", 1)).unwrap();
        assert!(matches!(
            verify(&path, &key),
            Err(AuditError::Broken { line: 2, .. })
        ));
    }
}
