//! Hash-chained audit events.
//!
//! Every tokenize, detokenize (allowed or denied), delete and auth failure
//! is one JSON line. Each line carries `prev`, the MAC of the line before,
//! and `mac`, HMAC-SHA256 under the service-held audit key over the line's
//! bytes without `mac`; an edit, a deletion or a reordering breaks the chain
//! and someone who can write the file but lacks the key cannot mend it.
//!
//! Events reach the chain two ways, and no answer leaves before its events
//! are durable either way:
//! - **Recorded**: [`AuditLog::record`] hands them to the writer thread,
//!   which takes every event waiting, writes them, fsyncs once (group
//!   commit), then wakes the requests.
//! - **Through the store's outbox** (the embedded store): the event of a
//!   tokenization that stores a record (`/tokenize`, deterministic or
//!   not, and `/redact`'s `tokenize`) is committed in the record's own
//!   SQLite transaction, so the two are durable together with one fsync,
//!   and a crash can never leave a token stored without its event. (A
//!   deterministic answer of an existing token stores nothing and is
//!   recorded; past the outbox's bound of uncopied notes, events are
//!   recorded too, after their commit, as they all were before.) The
//!   writer thread, nudged after such commits (once until it next looks),
//!   copies the notes into the chain, fsyncs, and acknowledges them to the
//!   store. Each line names how far the outbox was copied, so a
//!   restart continues from there: notes copied but not yet deleted are not
//!   written twice, and notes not yet copied are not lost. A batch's notes
//!   are one row (`note`), numbered as that many notes, so a line can
//!   name a note inside a row and a restart resumes there. Only a file sink
//!   takes an outbox, since only a file can be read back for that. Notes
//!   are sealed (AES-CMAC under a key derived from the audit key) and
//!   copied only when their seal holds, so whoever can write the database
//!   cannot have the service sign events it never made.
//! - **Before the record** (no outbox, as on DynamoDB, or past its
//!   bound): a deterministic record's event is recorded before the record
//!   is stored ([`AuditLog::herald`]), since its token may be handed to
//!   other requests for the same value at once and can never be taken
//!   back; a token so announced and then not stored gets a second event
//!   (`decision: error`). A random record's event is recorded after it,
//!   and a failure takes the record back: nobody else holds its token.
//!
//! # Layout
//!
//! - this file: events, the handle requests use, the writer thread;
//! - `chain`: the line format, finding the chain's end at start-up,
//!   [`verify`];
//! - `note`: outbox notes, one event's or a batch's, sealed and opened;
//! - `file`: the file sink and its rotation.

mod chain;
mod file;
mod note;

use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use aws_lc_rs::{cmac, hmac};
use tokio::sync::oneshot;

pub use chain::{VerifyReport, verify};
pub use file::{Rotation, rotated_files};
pub use note::NoteMaker;

use crate::clock::Clock;
use crate::crypto::DataKey;
use crate::store::{Outbox, TokenStore};
use chain::{ChainEnd, push_line};
use file::Sink;
use note::{Row, make_note, note_maker};

/// Outbox notes one group copies, about (a batch's row is copied whole);
/// more wait for the next group.
const EXPORT_MAX: u64 = 4096;
/// Most recorded batches one group takes.
const GROUP_MAX: usize = 1024;
/// How long the writer lets outbox notes gather before copying them when
/// no recorded event waits. Nobody waits for these (their notes are
/// durable in the store), and at 7,000 tokenizations/s copying after every
/// store commit meant about a thousand fsyncs a second.
const COPY_DELAY: Duration = Duration::from_millis(5);
/// The writer looks at the outbox at least this often, whatever else
/// arrives: it retries a failed copy, and covers a nudge that never came.
const LOOK_PERIOD: Duration = Duration::from_secs(1);

/// One audited decision. Never holds a value: a token, a classification
/// and who asked, nothing more.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent {
    pub request_id: String,
    pub principal: String,
    /// The assumed role's session name, for an IAM caller (see
    /// [`crate::auth::Principal`]); only then is it in the line.
    pub session: Option<String>,
    pub role: Option<String>,
    pub action: &'static str,
    pub token: Option<String>,
    pub classification: Option<String>,
    /// `allow`, `deny` or `error`.
    pub decision: &'static str,
    /// Why it was denied, or the caller's stated reason (already redacted).
    pub reason: Option<String>,
}

/// Writes one tokenization's event, with its token, on its own: see
/// [`crate::vault::Herald`].
pub struct EventHerald<'a> {
    log: &'a AuditLog,
    event: &'a AuditEvent,
}

#[async_trait::async_trait]
impl crate::vault::Herald for EventHerald<'_> {
    async fn announce(&self, token: &str) -> Result<(), crate::vault::VaultError> {
        let e = AuditEvent {
            token: Some(token.to_owned()),
            ..self.event.clone()
        };
        self.log
            .record(vec![e])
            .await
            .map_err(|e| crate::vault::VaultError::Unavailable(e.to_string()))
    }

    async fn retract(&self, token: &str, why: &'static str) {
        let e = AuditEvent {
            token: Some(token.to_owned()),
            decision: "error",
            reason: Some(why.to_owned()),
            ..self.event.clone()
        };
        if let Err(e) = self.log.record(vec![e]).await {
            tracing::warn!(error = %e, "could not record that an announced tokenization stored nothing");
        }
    }
}

/// Audit failures.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    #[error("audit log {path}: line {line}: {why}")]
    Broken {
        path: std::path::PathBuf,
        line: u64,
        why: String,
    },
}

/// The MAC key of the chain, and the key that seals outbox notes.
#[derive(Clone)]
pub struct AuditKey {
    chain: hmac::Key,
    /// AES-256-CMAC (NIST SP 800-38B), under a key derived from the chain
    /// key (HMAC as a PRF over a label). A note read back from the store
    /// is copied only with a valid tag: whoever can write the database
    /// cannot have the service sign events it never made. CMAC, not HMAC:
    /// without SHA extensions on this machine, HMAC-SHA256 of a note cost
    /// about 13,000 instructions, twice per tokenization (seal, check).
    notes: cmac::Key,
}

impl AuditKey {
    pub fn new(secret: &DataKey) -> Self {
        let chain = hmac::Key::new(hmac::HMAC_SHA256, secret.expose());
        let derived = hmac::sign(&chain, b"tokenvault audit outbox note key v1");
        // A 32-byte key for AES-256: cannot fail.
        let notes = cmac::Key::new(cmac::AES_256, derived.as_ref()).expect("a 32-byte AES-256 key");
        Self { chain, notes }
    }

    fn mac(&self, body: &[u8]) -> String {
        crate::crypto::to_hex(hmac::sign(&self.chain, body).as_ref())
    }
}

/// Where a recorded batch's answer goes.
type Done = oneshot::Sender<Result<(), AuditError>>;

/// What the writer thread is asked.
enum Msg {
    /// Write these notes durably, then answer.
    Record { notes: Vec<Vec<u8>>, done: Done },
    /// The store committed notes to its outbox.
    Nudge,
    /// Copy this outbox from now on.
    Attach(Box<dyn Outbox>),
    /// Copy what the outbox holds, answer, and end the thread.
    Stop(Done),
}

/// The handle requests use; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    /// The only strong reference: when the last handle goes, the channel
    /// closes and the writer thread ends. The store's nudge holds a weak
    /// one, since the writer itself holds the store's outbox (and through
    /// it the nudge): a strong one would keep the thread alive forever.
    tx: Arc<std::sync::mpsc::Sender<Msg>>,
    clock: Arc<dyn Clock>,
    key: AuditKey,
    /// A file sink, whose last line says how far an outbox was copied.
    /// Standard output cannot be read back: a restart would copy again
    /// every note acknowledged but not yet deleted, so it takes no outbox.
    resumable: bool,
    /// An outbox is attached: callers' notes have somewhere to go.
    attached: Arc<std::sync::atomic::AtomicBool>,
    /// Shared with the writer: see [`Writer::nudged`].
    nudged: Arc<std::sync::atomic::AtomicBool>,
}

/// An attached outbox and how far it is copied.
struct Copying {
    source: Box<dyn Outbox>,
    epoch: String,
    mark: u64,
    /// An empty row numbered up to here is the store keeping its highest
    /// number (see migration 0004), copied already: skipped. One above
    /// was not there at the start, and is reported like a forged note.
    kept_upto: u64,
}

struct Writer {
    sink: Sink,
    key: AuditKey,
    clock: Arc<dyn Clock>,
    end: ChainEnd,
    outbox: Option<Copying>,
    /// Said once when copying the outbox starts failing, once when it
    /// works again.
    failing: bool,
    /// A nudge is on its way or unanswered: set by the store's nudge, which
    /// sends one only when it was clear, and cleared by the writer just
    /// before it reads the outbox. A store commits thousands of times a
    /// second, and a nudge each woke this thread out of its
    /// [`COPY_DELAY`] wait and back to sleep (3,000 wake-ups a second at
    /// 23,000 tokenizations/s); a commit made before the clear is seen by
    /// the read after it, and one made after it nudges again.
    nudged: Arc<std::sync::atomic::AtomicBool>,
}

impl AuditLog {
    /// Opens (or creates, 0600) the log at `path`, continues the chain found
    /// at its end (or, when the file is new, at the end of the newest file
    /// rotated out of it), and starts the writer thread.
    pub fn open(
        path: &std::path::Path,
        key: AuditKey,
        clock: Arc<dyn Clock>,
    ) -> Result<AuditLog, AuditError> {
        Self::open_rotating(path, Rotation::default(), key, clock)
    }

    /// [`AuditLog::open`], starting a new file as `rotation` says.
    pub fn open_rotating(
        path: &std::path::Path,
        rotation: Rotation,
        key: AuditKey,
        clock: Arc<dyn Clock>,
    ) -> Result<AuditLog, AuditError> {
        let (file, len, end) = file::open_file(path, &key)?;
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
            end,
            outbox: None,
            failing: false,
            nudged: Arc::default(),
        })
    }

    /// A log writing to standard output.
    pub fn stdout(key: AuditKey, clock: Arc<dyn Clock>) -> Result<AuditLog, AuditError> {
        Self::start(Writer {
            sink: Sink::Stdout,
            key,
            clock,
            end: ChainEnd::genesis(),
            outbox: None,
            failing: false,
            nudged: Arc::default(),
        })
    }

    fn start(w: Writer) -> Result<AuditLog, AuditError> {
        let resumable = matches!(w.sink, Sink::File { .. });
        // Unbounded: every sender but `record_detached` waits for its
        // answer, so what waits here is bounded by the requests in flight;
        // a detached batch comes from a request cut off (at most
        // `limits.batch` events), whose client has to send another to
        // make more.
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let clock = w.clock.clone();
        let key = w.key.clone();
        let nudged = w.nudged.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| AuditError::Unavailable(format!("audit writer: {e}")))?;
        Ok(AuditLog {
            tx: Arc::new(tx),
            clock,
            key,
            resumable,
            attached: Arc::default(),
            nudged,
        })
    }

    /// Copies `store`'s outbox into this log from now on, when it has one
    /// and this log writes a file; whether it does. Call once, before
    /// serving.
    pub fn attach_outbox(&self, store: &dyn TokenStore) -> Result<bool, AuditError> {
        if !self.resumable {
            return Ok(false);
        }
        let tx = Arc::downgrade(&self.tx);
        let nudged = self.nudged.clone();
        // A std Sender is Sync; the store's writer calls this after commits.
        let nudge = Box::new(move || nudge_once(&tx, &nudged));
        let outbox = store
            .open_outbox(nudge)
            .map_err(|e| AuditError::Unavailable(format!("audit outbox: {e}")))?;
        let Some(outbox) = outbox else {
            return Ok(false);
        };
        self.tx
            .send(Msg::Attach(outbox))
            .map_err(|_| AuditError::Unavailable("audit writer stopped".into()))?;
        self.attached
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(true)
    }

    /// Whether a store's outbox is attached, so notes are worth making
    /// (on DynamoDB they would be sealed only to be dropped).
    pub fn has_outbox(&self) -> bool {
        self.attached.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Makes `e`'s sealed notes, stamped now, with the tokens given: what
    /// a store commits to its outbox.
    pub fn note_maker(&self, e: &AuditEvent) -> NoteMaker<'_> {
        note_maker(&*self.clock, &self.key, e)
    }

    /// Writes the events of `e`'s deterministic tokenizations before their
    /// records are stored, where the store does not keep their notes.
    pub fn herald<'a>(&'a self, e: &'a AuditEvent) -> EventHerald<'a> {
        EventHerald {
            log: self,
            event: e,
        }
    }

    /// Writes `events` and returns once they are on disk.
    pub async fn record(&self, events: Vec<AuditEvent>) -> Result<(), AuditError> {
        if events.is_empty() {
            return Ok(());
        }
        let notes = events
            .iter()
            .map(|e| make_note(&*self.clock, &self.key, e))
            .collect();
        self.send(notes).await
    }

    /// Hands `events` to the writer without waiting for them: for a
    /// request's future being dropped, which can wait for nothing. A
    /// failure to write them is the writer's to log.
    pub fn record_detached(&self, events: Vec<AuditEvent>) {
        let notes = events
            .iter()
            .map(|e| make_note(&*self.clock, &self.key, e))
            .collect();
        let (done, _) = oneshot::channel();
        if self.tx.send(Msg::Record { notes, done }).is_err() {
            tracing::error!(events = events.len(), "audit writer stopped: events lost");
        }
    }

    /// Returns once every note the store committed before this call (up to
    /// a group's worth) is in the chain and on disk: for tests that read
    /// the file.
    pub async fn sync(&self) -> Result<(), AuditError> {
        self.send(Vec::new()).await
    }

    /// Copies what the outbox holds (up to a group's worth), then ends the
    /// writer thread and returns, so a log opened next on the same file
    /// never runs beside this one. Later calls on any handle of this log
    /// fail. For a graceful stop.
    pub async fn close(self) -> Result<(), AuditError> {
        let stopped = || AuditError::Unavailable("audit writer stopped".into());
        let (done, wait) = oneshot::channel();
        self.tx.send(Msg::Stop(done)).map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }

    async fn send(&self, notes: Vec<Vec<u8>>) -> Result<(), AuditError> {
        let stopped = || AuditError::Unavailable("audit writer stopped".into());
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Msg::Record { notes, done })
            .map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }
}

/// Tells the writer the store committed notes, unless a nudge it has not
/// looked at yet is on its way (see [`Writer::nudged`]).
fn nudge_once(
    tx: &std::sync::Weak<std::sync::mpsc::Sender<Msg>>,
    nudged: &std::sync::atomic::AtomicBool,
) {
    if !nudged.swap(true, std::sync::atomic::Ordering::AcqRel)
        && let Some(tx) = tx.upgrade()
    {
        let _ = tx.send(Msg::Nudge);
    }
}

impl Writer {
    /// The writer thread: groups what waits, copies the outbox when nudged
    /// (or once a [`LOOK_PERIOD`]), writes and fsyncs once, then answers.
    fn run(mut self, rx: std::sync::mpsc::Receiver<Msg>) {
        // The last look found a full group: more notes wait.
        let mut more = false;
        let mut last_look = std::time::Instant::now();
        let mut spell = crate::memory::Spell::default();
        loop {
            let wait = if more {
                Duration::ZERO
            } else {
                LOOK_PERIOD.saturating_sub(last_look.elapsed())
            };
            let first = match rx.recv_timeout(wait) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // A look once a period whatever else arrives: it retries a
            // failed copy, and covers a nudge that never came.
            let mut look = more || last_look.elapsed() >= LOOK_PERIOD;
            let mut jobs = Vec::new();
            let mut stop = None;
            let waiting = std::iter::from_fn(|| rx.try_recv().ok());
            for m in first.into_iter().chain(waiting.take(GROUP_MAX)) {
                match m {
                    // An empty batch is `sync`: it waits for a look.
                    Msg::Record { notes, done } => {
                        look |= notes.is_empty();
                        jobs.push((notes, done));
                    }
                    Msg::Nudge => look = true,
                    Msg::Attach(source) => {
                        self.attach(source);
                        look = true;
                    }
                    Msg::Stop(done) => {
                        look = true;
                        stop = Some(done);
                    }
                }
            }
            if look && jobs.is_empty() && !more && stop.is_none() {
                // Only the outbox to copy, and nobody waits for it: let a
                // few milliseconds of notes gather, for one fsync.
                self.gather(&rx, &mut jobs, &mut stop);
            }
            let rows = if look {
                last_look = std::time::Instant::now();
                // A swap, not a store: it reads the last nudge's write, so
                // the commit that nudge followed happens before this read.
                self.nudged.swap(false, std::sync::atomic::Ordering::AcqRel);
                self.pending()
            } else {
                Vec::new()
            };
            let mark = self.outbox.as_ref().map_or(0, |c| c.mark);
            more = rows
                .last()
                .is_some_and(|(seq, _)| *seq >= mark.saturating_add(EXPORT_MAX));
            if jobs.is_empty() && rows.is_empty() {
                if let Some(done) = stop {
                    let _ = done.send(Ok(()));
                    return;
                }
                if spell.quiet(std::time::Instant::now(), crate::memory::QUIET_FOR) {
                    crate::memory::release_thread();
                }
                continue;
            }
            spell.busy();
            let result = self.commit(&jobs, &rows);
            if result.is_err() {
                // Retried at the next look, not at once.
                more = false;
            }
            for (_, done) in jobs {
                let r = match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(AuditError::Unavailable(e.to_string())),
                };
                let _ = done.send(r);
            }
            if let Some(done) = stop {
                let _ = done.send(result.map_err(|e| AuditError::Unavailable(e.to_string())));
                return;
            }
        }
    }

    /// Waits up to [`COPY_DELAY`] for more notes to copy, absorbing
    /// nudges; a recorded batch or a stop (someone waits for it) ends the
    /// wait.
    fn gather(
        &mut self,
        rx: &std::sync::mpsc::Receiver<Msg>,
        jobs: &mut Vec<(Vec<Vec<u8>>, Done)>,
        stop: &mut Option<Done>,
    ) {
        let until = std::time::Instant::now() + COPY_DELAY;
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(Msg::Nudge) => {}
                Ok(Msg::Attach(source)) => self.attach(source),
                Ok(Msg::Record { notes, done }) => {
                    jobs.push((notes, done));
                    return;
                }
                Ok(Msg::Stop(done)) => {
                    *stop = Some(done);
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Starts copying `source`, from where the chain's last line says the
    /// copy of this outbox stood (a line of another database's outbox, or
    /// none, says nothing of this one: every note it holds is copied).
    fn attach(&mut self, mut source: Box<dyn Outbox>) {
        let epoch = source.epoch().to_owned();
        let mark = match self.end.outbox.as_deref().and_then(|m| m.split_once(':')) {
            Some((e, seq)) if e == epoch => seq.parse().unwrap_or(0),
            Some(_) => {
                tracing::info!(
                    "the audit log followed another database's outbox; copying all of this one's"
                );
                0
            }
            None => 0,
        };
        // A database restored from a backup has this epoch but has not
        // issued as far as the file says it copied: its new notes would
        // hide under the mark. Copy all of its notes instead (some may be
        // written twice; none is lost).
        let issued = source.issued();
        let kept_upto = *issued.as_ref().unwrap_or(&0);
        let mark = match issued {
            Ok(issued) if mark > issued => {
                tracing::warn!(
                    mark,
                    issued,
                    "the audit log says more of the outbox was copied than the database ever issued (restored from a backup?); copying all of its notes"
                );
                0
            }
            Ok(_) => mark,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read how far the audit outbox issued; copying all of its notes");
                0
            }
        };
        if mark > 0 {
            // Copied before a restart, perhaps not yet deleted.
            source.acknowledge(mark);
        }
        self.outbox = Some(Copying {
            source,
            epoch,
            mark,
            kept_upto,
        });
    }

    /// The outbox's notes not yet copied (empty when there is none, or it
    /// cannot be read: the next look tries again).
    fn pending(&mut self) -> Vec<(u64, Vec<u8>)> {
        let Some(c) = &mut self.outbox else {
            return Vec::new();
        };
        match c.source.pending(c.mark, EXPORT_MAX) {
            Ok(rows) => rows,
            Err(e) => {
                if !self.failing {
                    self.failing = true;
                    tracing::error!(error = %e, "cannot read the audit outbox; will retry");
                }
                Vec::new()
            }
        }
    }

    /// Appends the outbox's `rows`, then every note of `jobs`, and fsyncs
    /// once; then acknowledges the rows to the store. On failure the file
    /// is cut back to its last committed length and the chain state kept,
    /// so a later group continues a valid chain.
    fn commit(
        &mut self,
        jobs: &[(Vec<Vec<u8>>, Done)],
        rows: &[(u64, Vec<u8>)],
    ) -> std::io::Result<()> {
        let (end0, mark0) = (self.end.clone(), self.outbox.as_ref().map(|c| c.mark));
        let mut buf = Vec::with_capacity((rows.len() + jobs.len()) * 400);
        let mut note = Vec::new();
        for (seq, sealed) in rows {
            let kept = self.outbox.as_ref().is_some_and(|c| *seq <= c.kept_upto);
            if sealed.is_empty() && kept {
                // The store's highest number, kept with no event.
                self.advance(*seq);
                continue;
            }
            match self.key.open_row(sealed) {
                Some(Row::One(one)) => {
                    if self.advance(*seq) {
                        self.push(&mut buf, one);
                    }
                }
                Some(Row::Group { head, tail, tokens }) => {
                    // The row bears the last of its notes' numbers.
                    let first = (seq + 1).saturating_sub(tokens.len() as u64);
                    for (number, token) in (first..).zip(tokens) {
                        // Skipped: copied before a restart cut the row.
                        if self.advance(number) {
                            note.clear();
                            note.extend_from_slice(head);
                            note.extend_from_slice(token);
                            note.extend_from_slice(tail);
                            self.push(&mut buf, &note);
                        }
                    }
                }
                None => {
                    self.advance(*seq);
                    // Not a note this service sealed: say so in the chain
                    // rather than stop copying, and never copy its bytes.
                    tracing::error!(outbox_seq = seq, "an audit outbox note failed its check");
                    let e = AuditEvent {
                        principal: "tokenvault".into(),
                        action: "audit",
                        decision: "error",
                        reason: Some(format!(
                            "outbox note {seq} failed its check (not sealed by this service)"
                        )),
                        ..Default::default()
                    };
                    let note = make_note(&*self.clock, &self.key, &e);
                    self.push(&mut buf, &note);
                }
            }
        }
        for note in jobs.iter().flat_map(|(notes, _)| notes) {
            self.push(&mut buf, note);
        }
        let day = self.clock.unix().div_euclid(86_400);
        match self.sink.append(&buf, day, end0.seq) {
            Ok(()) => {
                if let (Some(c), Some(_)) = (&self.outbox, rows.last()) {
                    c.source.acknowledge(c.mark);
                }
                if self.failing && !rows.is_empty() {
                    self.failing = false;
                    tracing::info!("audit outbox copying again");
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "audit write failed");
                self.failing |= !rows.is_empty();
                self.end = end0;
                if let (Some(c), Some(m)) = (&mut self.outbox, mark0) {
                    c.mark = m;
                }
                Err(e)
            }
        }
    }

    /// Moves the copy's mark to outbox note `number`; false when the mark
    /// is there already (the note was copied before a restart).
    fn advance(&mut self, number: u64) -> bool {
        match &mut self.outbox {
            Some(c) if number > c.mark => {
                c.mark = number;
                true
            }
            _ => false,
        }
    }

    /// Appends the line of `note` to `buf` and moves the chain on.
    fn push(&mut self, buf: &mut Vec<u8>, note: &[u8]) {
        let seq = self.end.seq + 1;
        let mark = self.outbox.as_ref().map(|c| (c.epoch.as_str(), c.mark));
        let mac = push_line(buf, &self.key, seq, note, &self.end.mac, mark);
        // In place: a `format!` a line showed in the writer's profile.
        match (mark, &mut self.end.outbox) {
            (Some((e, m)), Some(text)) => {
                text.clear();
                text.push_str(e);
                text.push(':');
                text.push_str(itoa::Buffer::new().format(m));
            }
            (Some((e, m)), none) => *none = Some(format!("{e}:{m}")),
            (None, end) => *end = None,
        }
        self.end.seq = seq;
        self.end.mac = mac;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::store::Noted;
    use std::path::Path;
    use time::format_description::well_known::Rfc3339;

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

        // The service will not append to a log whose tail was edited:
        // before, only the last line's MAC was checked at start.
        for edited in [
            [lines[0], lines[2], lines[1], lines[3]].join("\n") + "\n",
            [lines[0], lines[2], lines[3]].join("\n") + "\n",
            good.replacen("tok_1", "tok_9", 1),
        ] {
            std::fs::write(&path, &edited).unwrap();
            let opened = AuditLog::open(&path, key.clone(), Arc::new(SystemClock));
            let Err(AuditError::Broken { why, .. }) = opened else {
                panic!("opened a log with an edited tail:\n{edited}");
            };
            assert!(why.contains("before the last"), "{why}");
        }
        std::fs::write(&path, &good).unwrap();
        assert!(AuditLog::open(&path, key.clone(), Arc::new(SystemClock)).is_ok());
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

    fn record(token: &str) -> crate::store::TokenRecord {
        crate::store::TokenRecord {
            token: token.into(),
            classification: "pan".into(),
            format_version: 1,
            ciphertext: vec![1],
            nonce: vec![0; 12],
            data_key_id: "dk".into(),
            fingerprint: None,
            brand: None,
            last4: None,
            first6: None,
            value_len: 16,
            created_at: 1,
            expires_at: None,
            metadata: "{}".into(),
            slot: None,
            slot_in_token: false,
        }
    }

    /// Stores `notes` with records the way a service would, but with a
    /// consumer that never copies them: a crash before the audit writer
    /// got to them.
    async fn commit_uncopied(db: &Path, notes: Vec<Vec<u8>>) {
        use crate::store::sqlite::SqliteStore;
        let store = SqliteStore::open(db).unwrap();
        let _dead = store.open_outbox(Box::new(|| {})).unwrap().unwrap();
        let recs: Vec<_> = (0..notes.len())
            .map(|_| record(&format!("t{}", uuid::Uuid::new_v4())))
            .collect();
        let (got, kept) = store.insert_tokens_noted(&recs, Noted::Each(notes)).await;
        assert!(kept && got.iter().all(|r| r.is_ok()));
    }

    /// Opens the log on `path` and the store on `db` as a start-up does,
    /// and waits for the outbox to be copied.
    async fn start(path: &Path, db: &Path, key: &AuditKey) -> (AuditLog, Arc<dyn TokenStore>) {
        let store: Arc<dyn TokenStore> =
            Arc::new(crate::store::sqlite::SqliteStore::open(db).unwrap());
        let log = AuditLog::open(path, key.clone(), Arc::new(SystemClock)).unwrap();
        assert!(log.attach_outbox(&*store).unwrap());
        log.sync().await.unwrap();
        (log, store)
    }

    /// Notes committed with their records reach the chain exactly once:
    /// copied ones are not written again after a restart (their rows are
    /// deleted only by a later write), uncopied ones are copied at the next
    /// start, also when the live file was just rotated out; a new database
    /// (another epoch) has all its notes copied; an unreadable note is
    /// reported, never copied.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outbox_notes_reach_the_chain_once_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let db = dir.path().join("vault.db");
        let key = AuditKey::new(&DataKey::from_bytes([7; 32]));
        let count = |needle: &str| -> usize {
            let mut files = rotated_files(&path);
            files.push(path.clone());
            files
                .iter()
                .map(|f| std::fs::read_to_string(f).unwrap_or_default())
                .map(|t| t.matches(needle).count())
                .sum()
        };

        let (log, store) = start(&path, &db, &key).await;
        let notes = (1..=2)
            .map(|i| log.note_maker(&event(i)).note(Some(&format!("tok_{i}"))))
            .collect();
        let (_, kept) = store
            .insert_tokens_noted(&[record("a"), record("b")], Noted::Each(notes))
            .await;
        assert!(kept);
        log.sync().await.unwrap();
        assert_eq!((count("tok_1"), count("tok_2")), (1, 1));
        assert_eq!(count("\"outbox\":\""), 2);
        // Copied, acknowledged, not yet deleted: a stop now. Closing ends
        // the writer thread, so no handle of it writes again.
        let other = log.clone();
        log.close().await.unwrap();
        assert!(other.sync().await.is_err());
        drop(store);

        let (log, store) = start(&path, &db, &key).await;
        assert_eq!(verify(&path, &key).unwrap().lines, 2, "not copied twice");
        log.close().await.unwrap();
        drop(store);

        // Committed, never copied; then the live file rotated out and a
        // crash before the new one got a line.
        commit_uncopied(&db, vec![log_note(&key, 3), log_note(&key, 4)]).await;
        let seq = verify(&path, &key).unwrap().lines;
        std::fs::rename(&path, dir.path().join(format!("audit.log.{seq:020}"))).unwrap();
        std::fs::File::create(&path).unwrap();
        let (log, store) = start(&path, &db, &key).await;
        assert_eq!((count("tok_3"), count("tok_4")), (1, 1));
        let report = verify(&path, &key).unwrap();
        assert_eq!((report.lines, report.files), (4, 2));
        log.close().await.unwrap();
        drop(store);
        let (log, store) = start(&path, &db, &key).await;
        assert_eq!(verify(&path, &key).unwrap().lines, 4);
        log.close().await.unwrap();
        drop(store);

        // A new database: its own epoch, its own sequence from 1. Another
        // file, not the old one deleted: the dropped store's threads close
        // its connections after `drop` returns, and the last to close
        // deletes its `-wal` and `-shm` by name, which could by then be
        // the new database's (SQLITE_IOERR at open, seen once in CI).
        let db = dir.path().join("vault-new.db");
        let quoted = AuditEvent {
            reason: Some("said \"read it\" aloud".into()),
            ..event(5)
        };
        let quoted = key.seal(make_note(&SystemClock, &key, &quoted));
        // Written into the database by someone without the key: a note
        // sealed under another key, and bytes with no seal at all.
        let other = AuditKey::new(&DataKey::from_bytes([8; 32]));
        let forged = other.seal(make_note(&SystemClock, &other, &event(6)));
        commit_uncopied(&db, vec![quoted, forged, b"{\"garbage\":1}".to_vec()]).await;
        let (log, store) = start(&path, &db, &key).await;
        assert_eq!(count("tok_5"), 1);
        assert_eq!(count("tok_6"), 0);
        assert_eq!(count("garbage"), 0);
        assert_eq!(count("failed its check"), 2);
        assert_eq!(verify(&path, &key).unwrap().lines, 7);
        log.close().await.unwrap();
        drop(store);
    }

    /// Commits while the writer has not looked yet wake it once; the first
    /// after its look wakes it again.
    #[test]
    fn a_nudge_is_sent_once_until_the_writer_looks() {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = Arc::new(tx);
        let nudged = std::sync::atomic::AtomicBool::new(false);
        let nudges = || rx.try_iter().filter(|m| matches!(m, Msg::Nudge)).count();
        for _ in 0..3 {
            nudge_once(&Arc::downgrade(&tx), &nudged);
        }
        assert_eq!(nudges(), 1);
        // The writer's look clears it before reading the outbox.
        nudged.swap(false, std::sync::atomic::Ordering::AcqRel);
        nudge_once(&Arc::downgrade(&tx), &nudged);
        nudge_once(&Arc::downgrade(&tx), &nudged);
        assert_eq!(nudges(), 1);
    }

    /// A note made from its head and tail is the event serialized whole,
    /// field for field, escapes and nulls included.
    #[test]
    fn notes_are_the_events_fields_in_order() {
        let key = AuditKey::new(&DataKey::from_bytes([9; 32]));
        let clock = crate::clock::ManualClock::new();
        let e = AuditEvent {
            role: Some("sup\"port".into()),
            classification: Some("pan".into()),
            reason: Some("a \\ b\n".into()),
            ..event(1)
        };
        let time = clock.now().format(&Rfc3339).unwrap();
        for (token, session) in [(Some("tok_x"), None), (None, None), (None, Some("al\"ice"))] {
            let e = AuditEvent {
                session: session.map(str::to_owned),
                ..e.clone()
            };
            let mut want = serde_json::json!({
                "time": time,
                "request_id": e.request_id,
                "principal": e.principal,
            });
            // Only an IAM caller's line has a session, after the principal.
            if let Some(s) = session {
                want["session"] = s.into();
            }
            let rest = serde_json::json!({
                "role": e.role,
                "action": e.action,
                "token": token,
                "classification": e.classification,
                "decision": e.decision,
                "reason": e.reason,
            });
            want.as_object_mut()
                .unwrap()
                .extend(rest.as_object().unwrap().clone());
            let got = note_maker(&*clock, &key, &e).unsealed(token);
            assert_eq!(got, serde_json::to_vec(&want).unwrap());
            let sealed = note_maker(&*clock, &key, &e).note(token);
            assert_eq!(key.open(&sealed), Some(&got[..]));
        }
    }

    /// A group's note opens into the very notes its items would have had
    /// one by one; a changed byte or another key's seal opens to nothing.
    #[test]
    fn a_group_note_holds_each_items_note() {
        use crate::vault::Notes;
        let key = AuditKey::new(&DataKey::from_bytes([9; 32]));
        let clock = crate::clock::ManualClock::new();
        let e = AuditEvent {
            reason: Some("a \"quoted\" reason".into()),
            ..event(1)
        };
        let maker = note_maker(&*clock, &key, &e);
        let tokens = ["tok_a", "tok_b", "4111110000001111"];
        let sealed = maker.group(&tokens);
        let Some(Row::Group {
            head,
            tail,
            tokens: got,
        }) = key.open_row(&sealed)
        else {
            panic!("not a group");
        };
        let notes: Vec<Vec<u8>> = got.iter().map(|t| [head, t, tail].concat()).collect();
        let want: Vec<Vec<u8>> = tokens.iter().map(|t| maker.unsealed(Some(t))).collect();
        assert_eq!(notes, want);
        assert_eq!(key.open(&sealed), None, "a group is not one note");
        assert_eq!(key.open_row(&sealed).map(|r| r.len()), Some(3));
        for i in [0, 1, sealed.len() / 2, sealed.len() - 1] {
            let mut bent = sealed.clone();
            bent[i] ^= 1;
            assert!(key.open_row(&bent).is_none(), "byte {i}");
        }
        let other = AuditKey::new(&DataKey::from_bytes([8; 32]));
        assert!(other.open_row(&sealed).is_none());
    }

    /// A batch's group row is copied note by note, each line marking how
    /// far into the row it is, so a crash that kept only part of the row's
    /// lines resumes inside the row: no note lost, none written twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_row_resumes_inside_after_a_cut() {
        use crate::vault::Notes;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let db = dir.path().join("vault.db");
        let key = AuditKey::new(&DataKey::from_bytes([6; 32]));
        let (log, store) = start(&path, &db, &key).await;
        let single = log.note_maker(&event(0)).note(Some("tok_0"));
        store
            .insert_tokens_noted(&[record("z")], Noted::Each(vec![single]))
            .await;
        let group = log
            .note_maker(&event(1))
            .group(&["tok_a", "tok_b", "tok_c"]);
        let (got, kept) = store
            .insert_tokens_noted(
                &[record("a"), record("b"), record("c")],
                Noted::Group(group),
            )
            .await;
        assert!(kept && got.iter().all(|r| r.is_ok()));
        log.sync().await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let marks: Vec<&str> = text
            .lines()
            .map(|l| {
                l.split("\"outbox\":\"")
                    .nth(1)
                    .unwrap()
                    .split(['"', ':'])
                    .nth(1)
                    .unwrap()
            })
            .collect();
        assert_eq!(marks, ["1", "2", "3", "4"]);
        log.close().await.unwrap();
        drop(store);

        // Only the first two of the group's lines survived a crash.
        let keep = text.lines().take(3).map(|l| l.len() + 1).sum::<usize>();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(keep as u64)
            .unwrap();
        let (log, store) = start(&path, &db, &key).await;
        let text = std::fs::read_to_string(&path).unwrap();
        for t in ["tok_0", "tok_a", "tok_b", "tok_c"] {
            assert_eq!(text.matches(&format!("\"{t}\"")).count(), 1, "{t}: {text}");
        }
        assert_eq!(verify(&path, &key).unwrap().lines, 4);
        log.close().await.unwrap();
        drop(store);
    }

    /// A database restored from a backup keeps its epoch but issues
    /// sequence numbers the audit log already passed: its notes are
    /// copied all the same. A log on standard output, which cannot say
    /// how far it copied, takes no outbox.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restored_database_loses_no_note_and_stdout_takes_no_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let db = dir.path().join("vault.db");
        let backup = dir.path().join("backup.db");
        let key = AuditKey::new(&DataKey::from_bytes([4; 32]));

        let (log, store) = start(&path, &db, &key).await;
        let stdout = AuditLog::stdout(key.clone(), Arc::new(SystemClock)).unwrap();
        assert!(!stdout.attach_outbox(&*store).unwrap());
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute("VACUUM INTO ?1", [backup.to_str().unwrap()])
            .unwrap();
        let notes = (1..=2)
            .map(|i| log.note_maker(&event(i)).note(Some(&format!("tok_{i}"))))
            .collect();
        store
            .insert_tokens_noted(&[record("a"), record("b")], Noted::Each(notes))
            .await;
        log.sync().await.unwrap();
        log.close().await.unwrap();
        drop((store, stdout));

        // The backup is opened where it is: replacing the live file would
        // race the dropped store's threads, which close its connections
        // after `drop` returns and delete its `-wal` and `-shm` by name.
        commit_uncopied(&backup, vec![log_note(&key, 3)]).await;
        let (log, store) = start(&path, &backup, &key).await;
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("tok_3").count(), 1, "{text}");
        assert_eq!(verify(&path, &key).unwrap().lines, 3);
        log.close().await.unwrap();
        drop(store);
    }

    /// An empty outbox row the store kept (its highest number) is
    /// skipped, not reported as a note that failed its check; one that
    /// appears later is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_empty_outbox_row_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let db = dir.path().join("vault.db");
        let key = AuditKey::new(&DataKey::from_bytes([5; 32]));
        let (log, store) = start(&path, &db, &key).await;
        log.close().await.unwrap();
        drop(store);
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute("INSERT INTO audit_outbox (seq, note) VALUES (5, x'')", [])
            .unwrap();
        commit_uncopied(&db, vec![log_note(&key, 1)]).await;
        let (log, store) = start(&path, &db, &key).await;
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("\"tok_1\"").count(), 1, "{text}");
        assert!(!text.contains("failed its check"), "{text}");
        assert!(
            text.contains(":6\""),
            "the note after the placeholder: {text}"
        );
        assert_eq!(verify(&path, &key).unwrap().lines, 1);
        // An empty row the store did not keep (written in since the start)
        // is reported like any note that fails its check.
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute("INSERT INTO audit_outbox (seq, note) VALUES (7, x'')", [])
            .unwrap();
        let note = log.note_maker(&event(2)).note(Some("tok_2"));
        store
            .insert_tokens_noted(&[record("b")], Noted::Each(vec![note]))
            .await;
        log.sync().await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("failed its check").count(), 1, "{text}");
        assert_eq!(text.matches("\"tok_2\"").count(), 1, "{text}");
        log.close().await.unwrap();
        drop(store);
    }

    fn log_note(key: &AuditKey, i: usize) -> Vec<u8> {
        key.seal(make_note(&SystemClock, key, &event(i)))
    }
}
