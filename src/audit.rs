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
//!
//! The file sink rotates by size or UTC day: the full file is renamed to
//! `PATH.<last seq, 20 digits>` and a new one started, and the chain runs on
//! across files, so `verify` checks the rotated files and the live one as
//! one chain (a removed file breaks it). The stdout sink is for a log
//! collector; each start begins a new chain there.

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
    sink: Sink,
    key: AuditKey,
    clock: Arc<dyn Clock>,
    seq: u64,
    prev: String,
}

/// Where lines go.
enum Sink {
    /// A file, rotated by size or day; the chain runs on across files.
    File {
        file: File,
        path: PathBuf,
        len: u64,
        rotation: Rotation,
        /// UTC day (Unix days) the current file was started or resumed.
        day: i64,
    },
    /// Standard output (a collector ships it): flushed, not fsynced; each
    /// start begins a new chain.
    Stdout,
}

/// When the file sink starts a new file (by default, never).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rotation {
    /// Past this many bytes (0: never by size).
    pub max_bytes: u64,
    /// When the UTC day changes.
    pub daily: bool,
}

impl AuditLog {
    /// Opens (or creates, 0600) the log at `path`, continues the chain found
    /// at its end (or, when the file is new, at the end of the newest file
    /// rotated out of it), and starts the writer thread.
    pub fn open(path: &Path, key: AuditKey, clock: Arc<dyn Clock>) -> Result<AuditLog, AuditError> {
        Self::open_rotating(path, Rotation::default(), key, clock)
    }

    /// [`AuditLog::open`], starting a new file as `rotation` says.
    pub fn open_rotating(
        path: &Path,
        rotation: Rotation,
        key: AuditKey,
        clock: Arc<dyn Clock>,
    ) -> Result<AuditLog, AuditError> {
        let (file, len, seq, prev) = open_file(path, &key)?;
        // A file resumed from an earlier day rotates at its first write.
        let written = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        let day = match written {
            Some(t) if len > 0 => t.div_euclid(86_400),
            _ => clock.unix().div_euclid(86_400),
        };
        Self::start(Writer {
            sink: Sink::File {
                file,
                path: path.to_owned(),
                len,
                rotation,
                day,
            },
            key,
            clock,
            seq,
            prev,
        })
    }

    /// A log writing to standard output.
    pub fn stdout(key: AuditKey, clock: Arc<dyn Clock>) -> Result<AuditLog, AuditError> {
        Self::start(Writer {
            sink: Sink::Stdout,
            key,
            clock,
            seq: 0,
            prev: GENESIS.to_owned(),
        })
    }

    fn start(mut w: Writer) -> Result<AuditLog, AuditError> {
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
            .map_err(|e| AuditError::Unavailable(format!("audit writer: {e}")))?;
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
        let day = self.clock.unix().div_euclid(86_400);
        match self.sink.append(&buf, day, seq0) {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "audit write failed");
                self.seq = seq0;
                self.prev = prev0;
                Err(e)
            }
        }
    }
}

impl Sink {
    /// Appends `buf` durably; `last_seq` is the sequence of the last line
    /// already written (names a file rotated out before `buf`). On failure
    /// a file is cut back to its last committed length.
    fn append(&mut self, buf: &[u8], today: i64, last_seq: u64) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
            Sink::File {
                file,
                path,
                len,
                rotation,
                day,
            } => {
                let due = *len > 0
                    && ((rotation.max_bytes > 0 && *len + buf.len() as u64 > rotation.max_bytes)
                        || (rotation.daily && today != *day));
                if due {
                    *file = rotate(path, last_seq)?;
                    *len = 0;
                    *day = today;
                }
                let r = file
                    .seek(SeekFrom::Start(*len))
                    .and_then(|_| file.write_all(buf))
                    .and_then(|_| file.sync_data());
                match r {
                    Ok(()) => {
                        *len += buf.len() as u64;
                        Ok(())
                    }
                    Err(e) => {
                        let _ = file.set_len(*len);
                        Err(e)
                    }
                }
            }
        }
    }
}

/// The name a file gets when rotated out: its path plus the sequence of
/// its last line, zero-padded so names sort in chain order.
fn rotated_name(path: &Path, last_seq: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{last_seq:020}"));
    PathBuf::from(name)
}

/// Files rotated out of `path`, oldest first.
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", base.to_string_lossy());
    let mut out: Vec<PathBuf> = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .into_iter()
    .flatten()
    .flatten()
    .filter_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let rest = name.strip_prefix(&prefix)?;
        (rest.len() == 20 && rest.bytes().all(|b| b.is_ascii_digit())).then(|| dir.join(&name))
    })
    .collect();
    out.sort();
    out
}

/// Moves the full file aside and starts a new one at `path`. Never
/// overwrites a rotated file; if the new file cannot be made, the old one
/// is put back, so the writer's state stays true and a later batch retries.
fn rotate(path: &Path, last_seq: u64) -> std::io::Result<File> {
    let rotated = rotated_name(path, last_seq);
    if rotated.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists; not overwriting it", rotated.display()),
        ));
    }
    std::fs::rename(path, &rotated)?;
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::rename(&rotated, path);
            return Err(e);
        }
    };
    // Make the new names durable. The new file is in use either way: a
    // failure here is logged, not undone (undoing could lose lines).
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(error = %e, "audit rotation: directory fsync failed");
    }
    tracing::info!(path = %path.display(), last_seq, "audit log rotated");
    Ok(file)
}

/// Opens the live file and finds where the chain stands: (file, length,
/// seq, mac of the last line).
fn open_file(path: &Path, key: &AuditKey) -> Result<(File, u64, u64, String), AuditError> {
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
    let (mut seq, mut prev, len) = resume(&mut file, path, key)?;
    if len == 0
        && let Some(last) = rotated_files(path).pop()
    {
        // A new file after a rotation: the chain goes on from the last one.
        let mut old = File::open(&last).map_err(unavailable)?;
        (seq, prev, _) = resume(&mut old, &last, key)?;
    }
    Ok((file, len, seq, prev))
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
            let (seq, mac, line_prev) = check_line_full(line, key).map_err(broken)?;
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
                && seq != want
            {
                return Err(broken(format!("sequence {seq} where {want} was expected")));
            }
            expect_seq = Some(seq + 1);
            prev = mac;
            n += 1;
        }
    }
    Ok(VerifyReport {
        lines: n,
        files: files.len(),
    })
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

    #[tokio::test]
    async fn the_chain_runs_on_across_rotated_files_and_a_removed_file_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = AuditKey::new(&DataKey::from_bytes([5; 32]));
        let clock = crate::clock::ManualClock::new();
        let rotation = Rotation {
            max_bytes: 700,
            daily: true,
        };
        let log = AuditLog::open_rotating(&path, rotation, key.clone(), clock.clone()).unwrap();
        for i in 0..6 {
            log.record(vec![event(i)]).await.unwrap();
        }
        clock.advance(86_400);
        log.record(vec![event(6)]).await.unwrap();
        drop(log);
        // Reopened on a fresh file: the chain still continues.
        let log = AuditLog::open_rotating(&path, rotation, key.clone(), clock.clone()).unwrap();
        log.record(vec![event(7)]).await.unwrap();
        drop(log);
        let rotated = rotated_files(&path);
        assert!(rotated.len() >= 2, "{rotated:?}");
        let report = verify(&path, &key).unwrap();
        assert_eq!((report.lines, report.files), (8, rotated.len() + 1));
        std::fs::remove_file(&rotated[1]).unwrap();
        assert!(matches!(
            verify(&path, &key),
            Err(AuditError::Broken { line: 1, .. })
        ));
    }
}
