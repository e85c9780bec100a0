//! The embedded store: one SQLite file in WAL mode.
//!
//! SQLite calls block, so none runs on the async workers. Writes go to one
//! writer thread (SQLite allows one writer anyway) that group-commits: it
//! takes every write waiting, runs each inside one transaction (in its own
//! savepoint when it is more than one statement), and commits once, so one
//! sync (`synchronous = FULL`; an `fdatasync`, as `.cargo/config.toml`
//! builds SQLite) makes a whole batch durable before any of its answers
//! leaves. A write that fails rolls back alone. Two reader
//! threads, each with its own connection, serve reads beside the writer,
//! which WAL permits. A checkpointer thread copies the WAL back into the
//! database beside the writer, and syncs it, so commits do not wait for
//! either. The writer and the checkpointer open their files through VFSes
//! of ours (`vfs`): the writer's hands a commit's WAL frames to the kernel
//! in one write instead of two a frame; the checkpointer's syncs the
//! database in small steps, so that no large sync holds up the writer's.
//!
//! The audit outbox: [`TokenStore::insert_tokens_noted`] commits each
//! record it is given with its audit event's note, so such a record never
//! stands without its event, with one sync for both; a batch's records
//! share one row ([`Noted::Group`]) numbered as that many notes. The
//! audit writer reads the notes from its own connection
//! ([`SqliteOutbox`]), copies them into its chained file, and acknowledges
//! them; this writer deletes them in a later transaction, in ranges of
//! `DELETE_NOTES_EVERY`, all but the highest row, which keeps the highest
//! number issued (emptied of its note). Past `OUTBOX_BACKLOG_MAX` uncopied
//! notes it keeps no more, and callers record their events themselves.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

mod checkpoint;
mod vfs;

use checkpoint::{CHECKPOINT_EVERY_COMMITS, checkpointer_loop, sync_main_file};

use super::{
    Expired, IdempotencyClaim, InsertOutcome, KeyItem, Noted, Nudge, Outbox, StoreError,
    TokenRecord, TokenStore,
};

/// The numbered files of `migrations/sqlite`, applied in order and recorded
/// in `schema_migrations`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "0002_idempotency_owner",
        include_str!("../../migrations/sqlite/0002_idempotency_owner.sql"),
    ),
    (
        3,
        "0003_audit_outbox",
        include_str!("../../migrations/sqlite/0003_audit_outbox.sql"),
    ),
    (
        4,
        "0004_audit_outbox_numbers",
        include_str!("../../migrations/sqlite/0004_audit_outbox_numbers.sql"),
    ),
    (
        5,
        "0005_token_slots",
        include_str!("../../migrations/sqlite/0005_token_slots.sql"),
    ),
    (
        6,
        "0006_idempotency_expiry",
        include_str!("../../migrations/sqlite/0006_idempotency_expiry.sql"),
    ),
    (
        7,
        "0007_retired_names",
        include_str!("../../migrations/sqlite/0007_retired_names.sql"),
    ),
    (
        8,
        "0008_retired_names_checked_on_insert",
        include_str!("../../migrations/sqlite/0008_retired_names_checked_on_insert.sql"),
    ),
];

/// The writer's page cache, in KiB (SQLite's default is 2,000). A random
/// token lands on a random leaf of the token index, and once the index
/// outgrew the cache an insert often read its leaf back from the
/// operating system first (17% of the server's `perf` samples at batches,
/// eighth session). Batches after the documented commands' first runs,
/// four alternating pairs: 52,781-65,000 cards/s with the default,
/// 65,113-79,000 with 16 MiB. An earlier session measured 32 MiB slower:
/// SQLite truncates the cache at each commit, walking a hash table that
/// grows with it; at 16 MiB that is 0.56-0.69% of the server's `perf`
/// samples (0.76% at 2 MiB). 32 MiB did no better than 16 and raised peak
/// RSS by up to 34 MB. Open-loop tails at 5,000/s did not separate from
/// the VM's noise (BENCHMARKS-history.md). Given back when the writer goes quiet.
const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// Reader threads, each with its own connection. The first takes the
/// reads while it keeps up; the second serves those that arrive while the
/// first is held up ([`READS_IN_HAND`]). More would only add context
/// switches on a small machine.
const READERS: usize = 2;

/// The SQLite token store.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writes: std::sync::mpsc::Sender<Job>,
    readers: Readers,
    path: PathBuf,
    outbox: Arc<OutboxState>,
    /// The next slot [`TokenStore::reserve_slot`] hands out.
    slots: Arc<AtomicI64>,
}

/// What the writer thread and the outbox's consumer share.
#[derive(Default)]
struct OutboxState {
    /// Set once a consumer opened the outbox: notes are kept from then on
    /// (before, nothing would copy or delete them).
    nudge: OnceLock<Nudge>,
    /// Notes up to here are copied: the writer deletes them.
    acked: AtomicU64,
    /// A write in the open transaction added notes: nudge after commit.
    noted: AtomicBool,
    /// The highest sequence number committed (for the backlog bound).
    issued: AtomicU64,
    /// The highest sequence number inserted by the open transaction: it
    /// counts as issued only once the group commits, since a rolled-back
    /// group's numbers are given out again and its notes never exist.
    issuing: AtomicU64,
    /// The backlog is over its bound (said once when it goes over, once
    /// when it comes back).
    backlogged: AtomicBool,
}

impl OutboxState {
    /// Notes committed and not yet copied.
    fn backlog(&self) -> u64 {
        self.issued
            .load(Ordering::Acquire)
            .saturating_sub(self.acked.load(Ordering::Acquire))
    }
}

/// Notes the outbox holds uncopied at most before tokenizations stop
/// adding to it (about 300 MB): past this the copier is stuck, not slow.
const OUTBOX_BACKLOG_MAX: u64 = 1_000_000;

/// Acknowledged notes are deleted once this many have gathered: one range
/// delete now and then instead of a few rows in every commit.
const DELETE_NOTES_EVERY: u64 = 512;

/// A note takes the number after the highest row's (SQLite's rowid).
/// Past the largest integer SQLite would pick free numbers at random,
/// below the copier's mark, never copied: the table's CHECK (migration
/// 0004) keeps the largest integer out, so that write fails instead.
/// Naming the number here (`max(seq) + 1`) cost about 5,500 instructions
/// a note.
const INSERT_NOTE: &str = "INSERT INTO audit_outbox (note) VALUES (?1)";
/// A group's row takes the last of `?1` numbers after the highest ever
/// issued (the highest row's: see [`DELETE_ACKED_NOTES`]).
const INSERT_GROUP_NOTE: &str = "INSERT INTO audit_outbox (seq, note) VALUES \
     (coalesce((SELECT max(seq) FROM audit_outbox), 0) + ?1, ?2)";
/// Acknowledged rows go, except the one holding the highest number ever
/// issued: a new row takes the number after the highest row's, so with
/// that row gone a number would be issued twice (the outbox has no
/// AUTOINCREMENT: see migration 0004).
const DELETE_ACKED_NOTES: &str = "DELETE FROM audit_outbox \
     WHERE seq <= ?1 AND seq < (SELECT max(seq) FROM audit_outbox)";
/// The kept highest row, once acknowledged, loses its note: a sealed note
/// kept for ever could be copied to a new number by whoever can write the
/// database, and the service would write its event again.
const BLANK_ACKED_TOP: &str = "UPDATE audit_outbox SET note = x'' \
     WHERE seq = (SELECT max(seq) FROM audit_outbox) AND seq <= ?1 AND length(note) > 0";

/// One read for a reader thread; it answers on its own channel.
type Read = Box<dyn FnOnce(&Connection, InHand) + Send>;

/// A read, and its place in its reader's count.
type ReadJob = (InHand, Read);

/// Reads a reader holds (running and queued) before the next goes to
/// another: a slow read (a cold page from disk) keeps at most one fewer
/// queued behind it while another reader has room. At 32 connections of
/// detokenize, 16 against 4: 0.27-0.31 context switches a request on the
/// readers against 0.37-0.43, and 8.2-10.2 µs of their CPU against
/// 9.1-10.9.
const READS_IN_HAND: usize = 16;

/// The reader threads, each with its own queue, and how many reads each
/// has in hand.
struct Readers {
    each: Vec<(std::sync::mpsc::Sender<ReadJob>, Arc<AtomicUsize>)>,
}

/// A read in a reader's hand, counted until it is done (or has panicked,
/// or never reached the reader): dropped before the read answers, so the
/// next read its caller sends finds the reader free.
struct InHand(Arc<AtomicUsize>);

impl InHand {
    fn take(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        InHand(count.clone())
    }
}

impl Drop for InHand {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Readers {
    /// Hands `read` to the first reader holding fewer than
    /// [`READS_IN_HAND`], else to the one holding fewest (a reader whose
    /// thread is gone is passed over): the first reader takes every read
    /// while it keeps up, and one that runs reads back to back does not
    /// sleep between them. The readers used to share one queue behind a
    /// mutex: 0.45-0.52 context switches a detokenization on these
    /// threads.
    fn send(
        &self,
        read: impl FnOnce(&Connection, InHand) + Send + 'static,
    ) -> Result<(), StoreError> {
        let held = |i: usize| self.each[i].1.load(Ordering::Acquire);
        let n = self.each.len();
        let first = (0..n)
            .find(|&i| held(i) < READS_IN_HAND)
            .or_else(|| (0..n).min_by_key(|&i| held(i)))
            .unwrap_or(0);
        let mut read: Read = Box::new(read);
        for (queue, count) in self.each[first..].iter().chain(&self.each[..first]) {
            match queue.send((InHand::take(count), read)) {
                Ok(()) => return Ok(()),
                // Its guard dropped: the count is as it was.
                Err(std::sync::mpsc::SendError((_, back))) => read = back,
            }
        }
        Err(StoreError::Unavailable("sqlite readers stopped".into()))
    }
}

/// A reader thread: serves reads from its queue until the store is gone.
/// Reads were `spawn_blocking` tasks; under load tokio grew its blocking
/// pool to dozens of threads, and handing each read to a fresh one cost
/// more context switches than the read itself. A reader that ran a read
/// gives its memory back (`release`) after `quiet` with nothing to do; an
/// idle one does not wake.
fn reader_loop(
    conn: Connection,
    jobs: std::sync::mpsc::Receiver<ReadJob>,
    quiet: std::time::Duration,
    release: fn(&Connection),
) {
    let Ok(mut job) = jobs.recv() else { return };
    loop {
        // Reads already queued behind this one run with it in one read
        // transaction (see [`in_one_read`]). Every one of them was queued
        // before its snapshot is taken, so each still sees every commit
        // answered before it was asked.
        let mut queued = vec![job];
        queued.extend(std::iter::from_fn(|| jobs.try_recv().ok()).take(READS_IN_HAND));
        let run = |(held, read): ReadJob| {
            // A panicking read drops its answer channel (the caller sees
            // an error) and its guard; the thread goes on.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&conn, held)));
        };
        if queued.len() == 1 {
            queued.into_iter().for_each(run);
        } else {
            in_one_read(&conn, || queued.into_iter().for_each(run));
        }
        // A read that panicked inside a transaction of its own (a batch
        // lookup's) left it open: every later read would see that old
        // snapshot, and the WAL could not start over.
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        job = match crate::memory::recv_quiet(&jobs, quiet, || release(&conn)) {
            Ok(j) => j,
            Err(_) => return,
        };
    }
}

/// Runs `f`'s reads on `c` in one read transaction, unless `c` is in
/// one already. Each transaction SQLite opens by itself takes and drops a
/// shared lock on the WAL index (two `fcntl` calls, about a third of a
/// reader's time per detokenization under `perf`) and sets its pager up
/// again; reads that run back to back share that. If the transaction
/// cannot begin, the reads run as they would alone.
fn in_one_read<T>(c: &Connection, f: impl FnOnce() -> T) -> T {
    if !c.is_autocommit() || run_cached(c, "BEGIN").is_err() {
        return f();
    }
    let out = f();
    // A read transaction has nothing to lose: if COMMIT fails, ROLLBACK
    // ends it all the same.
    if run_cached(c, "COMMIT").is_err() {
        let _ = run_cached(c, "ROLLBACK");
    }
    out
}

/// A quiet connection's thread gives back its page cache (SQLite's, in
/// glibc's heap) and its own allocator heap: under load the caches fill
/// to their limit, and nothing shrinks them after.
fn release_memory(conn: &Connection) {
    // Best effort: a connection that cannot shrink keeps its cache.
    let _ = conn.execute_batch("PRAGMA shrink_memory");
    crate::memory::trim_system_allocator();
    crate::memory::release_thread();
}

/// Most writes one transaction takes.
const GROUP_MAX: usize = 512;

type Answer = Result<Box<dyn Any + Send>, StoreError>;

/// One write for the writer thread, and where its answer goes.
struct Job {
    op: Box<dyn FnOnce(&mut Connection) -> Answer + Send>,
    reply: tokio::sync::oneshot::Sender<Answer>,
}

/// Deletes the outbox notes acknowledged since the last time, inside the
/// open transaction; the sequence deleted up to, once committed. A failure
/// only delays the deletion, unless SQLite rolled the transaction back.
fn delete_acked(
    conn: &Connection,
    outbox: &OutboxState,
    deleted: u64,
) -> Result<Option<u64>, StoreError> {
    let ack = outbox.acked.load(Ordering::Acquire);
    if ack < deleted.saturating_add(DELETE_NOTES_EVERY) {
        return Ok(None);
    }
    match conn
        .prepare_cached(DELETE_ACKED_NOTES)
        .and_then(|mut s| s.execute([ack as i64]))
        .and_then(|_| conn.prepare_cached(BLANK_ACKED_TOP)?.execute([ack as i64]))
    {
        Ok(_) => Ok(Some(ack)),
        Err(e) if conn.is_autocommit() => Err(map_err(e)),
        Err(e) => {
            tracing::warn!(error = %e, "could not delete copied audit notes; will retry");
            Ok(None)
        }
    }
}

/// Runs one statement through the connection's statement cache: the
/// writer and the readers begin and commit thousands of times a second,
/// and `execute_batch` parses its SQL anew each time.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The writer thread: group commit until every sender is gone, nudging
/// the checkpointer every [`CHECKPOINT_EVERY_COMMITS`] commits and the
/// outbox's consumer after each commit that added notes.
fn writer_loop(
    mut conn: Connection,
    jobs: std::sync::mpsc::Receiver<Job>,
    checkpoint: std::sync::mpsc::SyncSender<()>,
    outbox: Arc<OutboxState>,
) {
    let mut commits = 0u32;
    // Notes deleted up to here.
    let mut deleted = 0u64;
    while let Ok(first) =
        crate::memory::recv_quiet(&jobs, crate::memory::QUIET_FOR, || release_memory(&conn))
    {
        let mut batch = vec![first];
        while batch.len() < GROUP_MAX {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let deleting = run_cached(&conn, "BEGIN IMMEDIATE")
            .map_err(map_err)
            .and_then(|()| delete_acked(&conn, &outbox, deleted));
        let deleting = match deleting {
            Ok(d) => d,
            Err(e) => {
                for j in batch {
                    let _ = j.reply.send(Err(e.clone()));
                }
                continue;
            }
        };
        let mut answers: Vec<(tokio::sync::oneshot::Sender<Answer>, Answer)> =
            Vec::with_capacity(batch.len());
        let mut jobs = batch.into_iter();
        let mut lost = None;
        for j in jobs.by_ref() {
            // Its caller is gone (past the request deadline, or the client
            // left): nobody would get this write's answer, and a record no
            // one holds a token for is better never made.
            if j.reply.is_closed() {
                continue;
            }
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (j.op)(&mut conn)));
            let Ok(a) = ran else {
                // A panicking write may have written part of its work (a
                // record without its note): the group is rolled back and
                // every job of it fails (callers retry); the thread goes on.
                let e = StoreError::Internal("a store write panicked".into());
                answers.push((j.reply, Err(e.clone())));
                lost = Some(e);
                break;
            };
            answers.push((j.reply, a));
            // SQLite rolls the whole transaction back on some errors (full
            // disk, I/O, out of memory): what ran before is gone, and what
            // would run next would commit on its own. Stop the batch.
            if conn.is_autocommit() {
                lost = Some(StoreError::Unavailable(
                    "sqlite rolled the group transaction back".into(),
                ));
                break;
            }
        }
        if let Some(e) = lost {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            outbox.issuing.store(0, Ordering::Release);
            outbox.noted.store(false, Ordering::Release);
            tracing::error!(error = %e, "sqlite group commit lost");
            for (reply, _) in answers {
                let _ = reply.send(Err(e.clone()));
            }
            for j in jobs {
                let _ = j.reply.send(Err(e.clone()));
            }
            continue;
        }
        // Whatever happens to the group, its notes are no longer pending.
        let issuing = outbox.issuing.swap(0, Ordering::AcqRel);
        match run_cached(&conn, "COMMIT") {
            Ok(()) => {
                outbox.issued.fetch_max(issuing, Ordering::AcqRel);
                // Nudged before anyone is answered, so a caller that then
                // asks the audit log to sync finds its notes copied.
                if outbox.noted.swap(false, Ordering::AcqRel)
                    && let Some(nudge) = outbox.nudge.get()
                {
                    nudge();
                }
                for (reply, a) in answers {
                    let _ = reply.send(a);
                }
                if let Some(d) = deleting {
                    deleted = d;
                }
                commits += 1;
                if commits == CHECKPOINT_EVERY_COMMITS {
                    commits = 0;
                    // Full means a nudge is already waiting.
                    let _ = checkpoint.try_send(());
                }
            }
            Err(e) => {
                // Nothing of the batch is durable: every write fails.
                let _ = conn.execute_batch("ROLLBACK");
                outbox.noted.store(false, Ordering::Release);
                let e = map_err(e);
                tracing::error!(error = %e, "sqlite group commit failed");
                for (reply, _) in answers {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies any
    /// migrations it has not recorded yet.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        create_private(path)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
        // Through the VFS that writes a commit's WAL frames at once.
        let writer_vfs = vfs::register().map_err(StoreError::Internal)?;
        let mut writer =
            Connection::open_with_flags_and_vfs(path, OpenFlags::default(), writer_vfs)
                .map_err(map_err)?;
        configure(&writer).map_err(map_err)?;
        writer
            .pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .map_err(map_err)?;
        if let Some(version) = newer_schema(&writer).map_err(map_err)? {
            return Err(StoreError::Internal(format!(
                "{}: made by a newer tokenvault (schema version {version}); this one knows up to {}",
                path.display(),
                MIGRATIONS.len()
            )));
        }
        migrate(&mut writer).map_err(map_err)?;
        let slots = Arc::new(AtomicI64::new(next_slot(&writer).map_err(map_err)?));
        let readers = (0..READERS)
            .map(|_| {
                let c = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_secs(5))?;
                c.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
                Ok(c)
            })
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(map_err)?;
        let mut each = Vec::with_capacity(READERS);
        for conn in readers {
            let (queue, jobs) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("sqlite-reader".into())
                .spawn(move || reader_loop(conn, jobs, crate::memory::QUIET_FOR, release_memory))
                .map_err(|e| StoreError::Unavailable(format!("sqlite reader thread: {e}")))?;
            each.push((queue, Arc::new(AtomicUsize::new(0))));
        }
        // Through the VFS that syncs the database file in small steps.
        let checkpointer_vfs = vfs::register_checkpointer().map_err(StoreError::Internal)?;
        let checkpointer =
            Connection::open_with_flags_and_vfs(path, OpenFlags::default(), checkpointer_vfs)
                .map_err(map_err)?;
        checkpointer
            .pragma_update(None, "synchronous", "FULL")
            .map_err(map_err)?;
        let (nudge, nudges) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                checkpointer_loop(checkpointer, sync_main_file, nudges, std::thread::sleep)
            })
            .map_err(|e| StoreError::Unavailable(format!("sqlite checkpoint thread: {e}")))?;
        let (writes, jobs) = std::sync::mpsc::channel();
        let outbox = Arc::new(OutboxState::default());
        let state = outbox.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(writer, jobs, nudge, state))
            .map_err(|e| StoreError::Unavailable(format!("sqlite writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                writes,
                readers: Readers { each },
                path: path.to_owned(),
                outbox,
                slots,
            }),
        })
    }

    /// Runs `f` on the writer thread, inside the next group transaction;
    /// answers once that transaction is committed. `f` takes a savepoint
    /// when it makes more than one change.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let op = Box::new(move |c: &mut Connection| -> Answer {
            f(c).map(|v| Box::new(v) as Box<dyn Any + Send>)
                .map_err(map_err)
        });
        self.inner
            .writes
            .send(Job { op, reply })
            .map_err(|_| StoreError::Unavailable("sqlite writer stopped".into()))?;
        let v = answer
            .await
            .map_err(|_| StoreError::Unavailable("sqlite writer stopped".into()))??;
        v.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StoreError::Internal("store answer of the wrong type".into()))
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inner
            .readers
            .send(move |c: &Connection, held: InHand| {
                let read = f(c).map_err(map_err);
                drop(held);
                let _ = reply.send(read);
            })?;
        answer
            .await
            .map_err(|_| StoreError::Internal("a store read failed".into()))?
    }
}

/// Creates the database file owner-only (0600) if it does not exist yet.
/// SQLite would create it under the process umask (0644 is usual), and it
/// makes the `-wal` and `-shm` files with the database file's mode. The
/// rows hold no value in the clear, but they hold last fours, metadata
/// and idempotent answers. An existing file keeps the mode it has.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Pages the WAL grows to before the writer copies them back into the
/// database itself, should the checkpointer thread fall behind (SQLite's
/// default is 1,000). About 40 MiB of WAL, which a restart after a crash
/// reads back in well under a second.
const WAL_CHECKPOINT_PAGES: i64 = 10_000;
/// The WAL file is cut back to this after a checkpoint, so one burst does
/// not leave a large file behind.
const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// Prepared statements a connection keeps (rusqlite keeps 16 unless
/// told). The writer cycles through about 15 (its inserts, deletes and
/// lookups, `BEGIN IMMEDIATE` and `COMMIT`), and the cache evicts the
/// least recently used: one statement past the limit would make every
/// statement in the cycle be parsed again each time it runs.
const STATEMENTS_CACHED: usize = 64;

/// The writer's connection settings; its page cache is sized apart
/// ([`WRITER_CACHE_KIB`]).
fn configure(c: &Connection) -> rusqlite::Result<()> {
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    c.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    c.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// A schema version past the last this binary knows, if the database has
/// one: an older binary must not run on it (after migration 0004 it would
/// delete the outbox row that keeps numbers from being issued twice).
fn newer_schema(c: &Connection) -> rusqlite::Result<Option<i64>> {
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    let has_table: bool = c.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'schema_migrations'",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(None);
    }
    let top: Option<i64> = c.query_row("SELECT max(version) FROM schema_migrations", [], |r| {
        r.get(0)
    })?;
    Ok(top.filter(|&v| v > known))
}

fn migrate(c: &mut Connection) -> rusqlite::Result<()> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL
        ) STRICT;",
    )?;
    for &(version, name, sql) in MIGRATIONS {
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done: Option<i64> = tx
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_none() {
            // Before, too: migration 0005 copies the tokens table, seconds
            // per million records, with the service not yet listening.
            tracing::info!(version, name, "applying sqlite migration");
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, unixepoch())",
                params![version, name],
            )?;
            tracing::info!(version, name, "applied sqlite migration");
        }
        tx.commit()?;
    }
    Ok(())
}

/// Busy, locked, I/O, full or read-only databases are passing conditions
/// (503, retry); anything else is a bug.
fn map_err(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e
        && matches!(
            f.code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
        )
    {
        return StoreError::Unavailable(format!("sqlite: {:?}", f.code));
    }
    // rusqlite's messages name SQL and columns, never bound parameters.
    StoreError::Internal(format!("sqlite: {e}"))
}

// Statements on the hot paths are prepared once per connection and
// cached (`prepare_cached`): parsing SQL per call was a tenth of the
// writer thread's time.

/// Conditional on both the slot and, for a named token, the token: a
/// slot taken or a named token taken inserts nothing.
const INSERT_TOKEN: &str = "INSERT INTO tokens (token, classification, format_version, ciphertext, \
     nonce, data_key_id, fingerprint, brand, last4, first6, value_len, created_at, expires_at, \
     metadata, slot, named) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
     ON CONFLICT DO NOTHING";
/// A record's columns, for the two ways of finding one.
macro_rules! select_record {
    ($where:literal) => {
        concat!(
            "SELECT token, classification, format_version, ciphertext, nonce, data_key_id, \
             fingerprint, brand, last4, first6, value_len, created_at, expires_at, metadata, \
             slot, named FROM tokens WHERE ",
            $where
        )
    };
}
/// The record in a token's slot, if it holds that token.
const SELECT_BY_SLOT: &str = select_record!("slot = ?1 AND token = ?2");
/// A token that names no slot, through `tokens_named` (the query must
/// say `named = 1` for SQLite to use that partial index).
const SELECT_BY_NAME: &str = select_record!("token = ?1 AND named = 1");

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        token: r.get(0)?,
        classification: r.get(1)?,
        format_version: r.get(2)?,
        ciphertext: r.get(3)?,
        nonce: r.get(4)?,
        data_key_id: r.get(5)?,
        fingerprint: r.get(6)?,
        brand: r.get(7)?,
        last4: r.get(8)?,
        first6: r.get(9)?,
        value_len: r.get(10)?,
        created_at: r.get(11)?,
        expires_at: r.get(12)?,
        metadata: r.get(13)?,
        slot: Some(r.get(14)?),
        slot_in_token: r.get::<_, i64>(15)? == 0,
    })
}

/// The record of `token`: in `slot` if the token names one and it is
/// there, else among the named tokens (one from before slots may spell
/// any number).
fn select_token(
    c: &Connection,
    token: &str,
    slot: Option<i64>,
) -> rusqlite::Result<Option<TokenRecord>> {
    if let Some(slot) = slot
        && let Some(r) = c
            .prepare_cached(SELECT_BY_SLOT)?
            .query_row(params![slot, token], token_row)
            .optional()?
    {
        return Ok(Some(r));
    }
    c.prepare_cached(SELECT_BY_NAME)?
        .query_row([token], token_row)
        .optional()
}

/// Deletes the record of `token` (found as [`select_token`] finds it)
/// and its fingerprint item; whether there was one. The item is deleted
/// by its key, read from the record: `fingerprints` has no index on
/// tokens, and a search by token scanned the whole table on the writer
/// thread, holding up every write meanwhile.
fn delete_record(c: &Connection, token: &str, slot: Option<i64>) -> rusqlite::Result<bool> {
    let mut deleted: Option<Option<String>> = None;
    if let Some(slot) = slot {
        deleted = c
            .prepare_cached(
                "DELETE FROM tokens WHERE slot = ?1 AND token = ?2 RETURNING fingerprint",
            )?
            .query_row(params![slot, token], |r| r.get(0))
            .optional()?;
    }
    if deleted.is_none() {
        deleted = c
            .prepare_cached(
                "DELETE FROM tokens WHERE token = ?1 AND named = 1 RETURNING fingerprint",
            )?
            .query_row([token], |r| r.get(0))
            .optional()?;
    }
    let Some(fingerprint) = deleted else {
        return Ok(false);
    };
    if let Some(fp) = fingerprint {
        c.prepare_cached("DELETE FROM fingerprints WHERE fingerprint = ?1 AND token = ?2")?
            .execute(params![fp, token])?;
    }
    Ok(true)
}

/// The slot after the highest taken.
fn next_slot(c: &Connection) -> rusqlite::Result<i64> {
    c.query_row("SELECT coalesce(max(slot), 0) + 1 FROM tokens", [], |r| {
        r.get(0)
    })
}

/// Inserts `rec` and its fingerprint item, if it has one: both or neither.
fn insert_one(
    c: &mut Connection,
    rec: &TokenRecord,
    slots: &AtomicI64,
) -> rusqlite::Result<InsertOutcome> {
    // A random token is one statement, atomic on its own; a deterministic
    // one checks and claims its fingerprint too, so it takes a savepoint
    // (whose SQL is parsed on every call).
    let Some(fp) = &rec.fingerprint else {
        return Ok(if insert_token(c, rec, slots)? == 0 {
            InsertOutcome::TokenTaken
        } else {
            InsertOutcome::Inserted
        });
    };
    let tx = c.savepoint()?;
    let holder: Option<String> = tx
        .prepare_cached("SELECT token FROM fingerprints WHERE fingerprint = ?1")?
        .query_row([fp], |r| r.get(0))
        .optional()?;
    if let Some(token) = holder {
        return Ok(InsertOutcome::FingerprintTaken { token });
    }
    if insert_token(&tx, rec, slots)? == 0 {
        return Ok(InsertOutcome::TokenTaken);
    }
    tx.prepare_cached("INSERT INTO fingerprints (fingerprint, token) VALUES (?1, ?2)")?
        .execute(params![fp, rec.token])?;
    tx.commit()?;
    Ok(InsertOutcome::Inserted)
}

/// Inserts `rec` unless its slot or its named token is taken, or its
/// named token was retired; the number of rows written. A slot taken means
/// another process shares the file (within a run this store hands each
/// slot out once): `slots` moves past the highest taken, so the caller's
/// next try finds a free one. A retired name is checked here rather than by
/// a trigger (migration 0008): any trigger on the insert makes SQLite open
/// a statement journal for every insert, and random tokens, nearly all of
/// them, name their slot and are never retired.
fn insert_token(c: &Connection, rec: &TokenRecord, slots: &AtomicI64) -> rusqlite::Result<usize> {
    let named = !(rec.slot_in_token && rec.slot.is_some());
    if named
        && c.prepare_cached("SELECT 1 FROM retired_names WHERE token = ?1")?
            .exists([&rec.token])?
    {
        return Ok(0);
    }
    let n = c.prepare_cached(INSERT_TOKEN)?.execute(params![
        rec.token,
        rec.classification,
        rec.format_version,
        rec.ciphertext,
        rec.nonce,
        rec.data_key_id,
        rec.fingerprint,
        rec.brand,
        rec.last4,
        rec.first6,
        rec.value_len,
        rec.created_at,
        rec.expires_at,
        rec.metadata,
        rec.slot,
        named,
    ])?;
    if n == 0 && rec.slot.is_some() {
        slots.fetch_max(next_slot(c)?, Ordering::AcqRel);
    }
    Ok(n)
}

/// Inserts each record with its own note (the note only when the record
/// is stored).
fn insert_each_noted(
    c: &mut Connection,
    recs: &[TokenRecord],
    notes: &[Vec<u8>],
    state: &OutboxState,
    slots: &AtomicI64,
) -> rusqlite::Result<Vec<Result<InsertOutcome, StoreError>>> {
    let mut out = Vec::with_capacity(recs.len());
    for (rec, note) in recs.iter().zip(notes) {
        match insert_one(c, rec, slots) {
            Ok(InsertOutcome::Inserted) => {
                let inserted = c
                    .prepare_cached(INSERT_NOTE)
                    .and_then(|mut stmt| stmt.execute([note]));
                if let Err(e) = inserted {
                    return Err(lose_group(c, e));
                }
                state
                    .issuing
                    .fetch_max(c.last_insert_rowid() as u64, Ordering::AcqRel);
                state.noted.store(true, Ordering::Release);
                out.push(Ok(InsertOutcome::Inserted));
            }
            Ok(o) => out.push(Ok(o)),
            // As in `insert_tokens`: the transaction is gone.
            Err(e) if c.is_autocommit() => return Err(e),
            Err(e) => out.push(Err(map_err(e))),
        }
    }
    Ok(out)
}

/// Inserts the records and one row for the group's `note`, numbered by
/// the last of as many numbers as there are records; or, when a record
/// cannot be stored, none of them. Not a savepoint: SQLite copies every
/// page a savepoint changes into a sub-journal first (a temporary file),
/// which for a 1,000-card batch wrote 2.4 MB more than the batch itself;
/// the records stored are deleted again instead, on the rare path.
fn insert_group_noted(
    c: &mut Connection,
    recs: &[TokenRecord],
    note: &[u8],
    state: &OutboxState,
    slots: &AtomicI64,
) -> rusqlite::Result<Vec<Result<InsertOutcome, StoreError>>> {
    let mut out = Vec::with_capacity(recs.len());
    let mut whole = true;
    for rec in recs {
        match insert_one(c, rec, slots) {
            Ok(InsertOutcome::Inserted) => out.push(Ok(InsertOutcome::Inserted)),
            Ok(o) => {
                whole = false;
                out.push(Ok(o));
            }
            Err(e) if c.is_autocommit() => return Err(e),
            Err(e) => {
                whole = false;
                out.push(Err(map_err(e)));
            }
        }
    }
    if !whole {
        for (rec, o) in recs.iter().zip(&mut out) {
            if matches!(o, Ok(InsertOutcome::Inserted)) {
                // Were a record to stay, it would commit without its note:
                // on failure the whole group transaction goes.
                if let Err(e) = withdraw(c, rec) {
                    return Err(lose_group(c, e));
                }
                *o = Ok(InsertOutcome::Withdrawn);
            }
        }
        return Ok(out);
    }
    let inserted = c
        .prepare_cached(INSERT_GROUP_NOTE)
        .and_then(|mut stmt| stmt.execute(params![recs.len() as i64, note]));
    if let Err(e) = inserted {
        return Err(lose_group(c, e));
    }
    state
        .issuing
        .fetch_max(c.last_insert_rowid() as u64, Ordering::AcqRel);
    state.noted.store(true, Ordering::Release);
    Ok(out)
}

/// Deletes `rec`, just inserted by this transaction, and its fingerprint
/// item: exactly its row (by its slot where it has one), or an error, so
/// the caller rolls the group back rather than leave a record without
/// its note.
fn withdraw(c: &Connection, rec: &TokenRecord) -> rusqlite::Result<()> {
    if let Some(fp) = &rec.fingerprint {
        c.prepare_cached("DELETE FROM fingerprints WHERE fingerprint = ?1 AND token = ?2")?
            .execute(params![fp, rec.token])?;
    }
    let n = match rec.slot {
        Some(slot) => c
            .prepare_cached("DELETE FROM tokens WHERE slot = ?1 AND token = ?2")?
            .execute(params![slot, rec.token])?,
        None => c
            .prepare_cached("DELETE FROM tokens WHERE token = ?1 AND named = 1")?
            .execute([&rec.token])?,
    };
    if n != 1 {
        return Err(rusqlite::Error::StatementChangedRows(n));
    }
    Ok(())
}

/// A record is in and its note is not: rolls the whole group transaction
/// back (the writer then fails every job of it, and callers retry), so no
/// record is committed without its note. A savepoint per job would do it
/// for this job alone, at about 9,000 instructions a request on every
/// request; this path is a failing disk.
fn lose_group(c: &Connection, e: rusqlite::Error) -> rusqlite::Error {
    if !c.is_autocommit() {
        let _ = c.execute_batch("ROLLBACK");
    }
    e
}

/// The outbox's reading side: its own read-only connection, so copying
/// notes never waits behind the writer or takes a reader thread.
pub struct SqliteOutbox {
    conn: Connection,
    epoch: String,
    state: Arc<OutboxState>,
}

impl Outbox for SqliteOutbox {
    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn pending(&mut self, after: u64, limit: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, note FROM audit_outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(map_err)?;
        let mut rows = stmt
            .query(params![after as i64, limit.min(i64::MAX as u64) as i64])
            .map_err(map_err)?;
        let mut out = Vec::new();
        let end = after.saturating_add(limit);
        while let Some(row) = rows.next().map_err(map_err)? {
            let seq = row.get::<_, i64>(0).map_err(map_err)? as u64;
            out.push((seq, row.get(1).map_err(map_err)?));
            if seq >= end {
                break;
            }
        }
        Ok(out)
    }

    fn issued(&mut self) -> Result<u64, StoreError> {
        // The highest row is never deleted: it holds the highest number
        // ever issued.
        self.conn
            .query_row("SELECT coalesce(max(seq), 0) FROM audit_outbox", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|s| s.max(0) as u64)
            .map_err(map_err)
    }

    fn acknowledge(&self, upto: u64) {
        self.state.acked.fetch_max(upto, Ordering::AcqRel);
    }
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyItem> {
    Ok(KeyItem {
        id: r.get(0)?,
        classification: r.get(1)?,
        wrapping_key_id: r.get(2)?,
        wrapped: r.get(3)?,
        created_at: r.get(4)?,
    })
}

fn get_key(c: &Connection, id: &str) -> rusqlite::Result<Option<KeyItem>> {
    c.prepare_cached(
        "SELECT id, classification, wrapping_key_id, wrapped, created_at FROM key_items WHERE id = ?1",
    )?
    .query_row([id], key_row)
    .optional()
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn insert_token(&self, record: &TokenRecord) -> Result<InsertOutcome, StoreError> {
        let rec = record.clone();
        let slots = self.inner.slots.clone();
        self.write(move |c| insert_one(c, &rec, &slots)).await
    }

    async fn insert_tokens(
        &self,
        records: &[TokenRecord],
    ) -> Vec<Result<InsertOutcome, StoreError>> {
        if records.is_empty() {
            return Vec::new();
        }
        let recs = records.to_vec();
        let n = recs.len();
        let slots = self.inner.slots.clone();
        let job = self.write(move |c| {
            let mut out = Vec::with_capacity(recs.len());
            for rec in &recs {
                match insert_one(c, rec, &slots) {
                    Ok(o) => out.push(Ok(o)),
                    // SQLite rolled the whole transaction back (full disk,
                    // I/O): what ran before is gone, and the next insert
                    // would commit on its own. The writer fails the batch.
                    Err(e) if c.is_autocommit() => return Err(e),
                    Err(e) => out.push(Err(map_err(e))),
                }
            }
            Ok(out)
        });
        match job.await {
            Ok(out) => out,
            Err(e) => vec![Err(e); n],
        }
    }

    fn open_outbox(&self, nudge: Nudge) -> Result<Option<Box<dyn Outbox>>, StoreError> {
        let conn = Connection::open_with_flags(
            &self.inner.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(map_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(map_err)?;
        let epoch: String = conn
            .query_row("SELECT epoch FROM audit_outbox_epochs", [], |r| r.get(0))
            .map_err(map_err)?;
        let mut outbox = SqliteOutbox {
            conn,
            epoch,
            state: self.inner.outbox.clone(),
        };
        // Where the last run left the outbox: issued up to the highest
        // sequence ever used, and (as far as this store can tell)
        // acknowledged up to the note before the first one still held, so
        // the backlog counts the notes left over, and an outbox holding
        // only its emptied highest row none (it must not count every note
        // of the database's life, or the bound would turn the outbox off
        // for good). A group's row bears the last of its numbers, so a
        // group held first counts one.
        let issued = outbox.issued()?;
        let first_held: Option<i64> = outbox
            .conn
            .query_row(
                "SELECT min(seq) FROM audit_outbox WHERE length(note) > 0",
                [],
                |r| r.get(0),
            )
            .map_err(map_err)?;
        let acked = first_held.map_or(issued, |s| (s.max(1) - 1) as u64);
        self.inner.outbox.issued.fetch_max(issued, Ordering::AcqRel);
        self.inner.outbox.acked.fetch_max(acked, Ordering::AcqRel);
        if self.inner.outbox.nudge.set(nudge).is_err() {
            return Err(StoreError::Internal(
                "the audit outbox has a consumer already".into(),
            ));
        }
        Ok(Some(Box::new(outbox)))
    }

    fn outbox_backlog(&self) -> Option<u64> {
        let state = &self.inner.outbox;
        state.nudge.get()?;
        Some(state.backlog())
    }

    async fn insert_tokens_noted(
        &self,
        records: &[TokenRecord],
        notes: Noted,
    ) -> (Vec<Result<InsertOutcome, StoreError>>, bool) {
        let shaped = match &notes {
            Noted::Each(each) => each.len() == records.len(),
            // Not for fingerprinted records: withdrawing one could leave
            // another's answer naming it (`FingerprintTaken`).
            Noted::Group(_) => {
                !records.is_empty() && records.iter().all(|r| r.fingerprint.is_none())
            }
        };
        if self.inner.outbox.nudge.get().is_none() {
            return (self.insert_tokens(records).await, false);
        }
        if !shaped {
            // Never a fingerprinted record without its note (see
            // `keeps_notes`); no caller sends one so.
            if records.iter().any(|r| r.fingerprint.is_some()) {
                let e = StoreError::Internal("notes that do not fit their records".into());
                return (vec![Err(e); records.len()], false);
            }
            return (self.insert_tokens(records).await, false);
        }
        if records.is_empty() {
            return (Vec::new(), true);
        }
        let state = &self.inner.outbox;
        let backlog = state.backlog();
        if backlog > OUTBOX_BACKLOG_MAX {
            // The copier is stuck (audit disk full, say): stop growing the
            // outbox; the caller records its events itself, and fails while
            // the audit log cannot write them.
            if !state.backlogged.swap(true, Ordering::AcqRel) {
                tracing::error!(
                    backlog,
                    "the audit outbox is not being copied; tokenizations now record their events directly"
                );
            }
            // A deterministic record's event must come before it (see
            // `keeps_notes`); the caller asked just as the bound was
            // crossed, and tries again that way.
            if records.iter().any(|r| r.fingerprint.is_some()) {
                let e = StoreError::Unavailable("the audit outbox is backlogged".into());
                return (vec![Err(e); records.len()], false);
            }
            return (self.insert_tokens(records).await, false);
        }
        if state.backlogged.swap(false, Ordering::AcqRel) {
            tracing::info!("the audit outbox is being copied again");
        }
        let recs = records.to_vec();
        let n = recs.len();
        let state = state.clone();
        let slots = self.inner.slots.clone();
        let job = self.write(move |c| match notes {
            Noted::Each(notes) => insert_each_noted(c, &recs, &notes, &state, &slots),
            Noted::Group(note) => insert_group_noted(c, &recs, &note, &state, &slots),
        });
        match job.await {
            Ok(out) => (out, true),
            Err(e) => (vec![Err(e); n], true),
        }
    }

    fn keeps_notes(&self) -> bool {
        let state = &self.inner.outbox;
        state.nudge.get().is_some() && state.backlog() <= OUTBOX_BACKLOG_MAX
    }

    fn has_slots(&self) -> bool {
        true
    }

    fn reserve_slot(&self) -> Option<i64> {
        Some(self.inner.slots.fetch_add(1, Ordering::Relaxed))
    }

    async fn holds_slotted_tokens(&self) -> Result<bool, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM tokens WHERE named = 0)",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn get_token(
        &self,
        token: &str,
        slot: Option<i64>,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let token = token.to_owned();
        self.read(move |c| select_token(c, &token, slot)).await
    }

    /// One read job for the whole batch: the trait's default asks once a
    /// token, and every ask is a hop to a reader thread and back.
    async fn get_tokens(
        &self,
        tokens: &[(&str, Option<i64>)],
    ) -> Result<Vec<Option<TokenRecord>>, StoreError> {
        let tokens: Vec<(String, Option<i64>)> =
            tokens.iter().map(|(t, s)| ((*t).to_owned(), *s)).collect();
        self.read(move |c| {
            in_one_read(c, || {
                tokens
                    .iter()
                    .map(|(t, slot)| select_token(c, t, *slot))
                    .collect()
            })
        })
        .await
    }

    async fn token_for_fingerprint(&self, fingerprint: &str) -> Result<Option<String>, StoreError> {
        let fp = fingerprint.to_owned();
        self.read(move |c| {
            c.prepare_cached("SELECT token FROM fingerprints WHERE fingerprint = ?1")?
                .query_row([fp], |r| r.get(0))
                .optional()
        })
        .await
    }

    async fn delete_token(&self, token: &str, slot: Option<i64>) -> Result<bool, StoreError> {
        let token = token.to_owned();
        self.write(move |c| {
            let tx = c.savepoint()?;
            let deleted = delete_record(&tx, &token, slot)?;
            tx.commit()?;
            Ok(deleted)
        })
        .await
    }

    async fn withdraw_record(&self, record: &TokenRecord) -> Result<bool, StoreError> {
        let (token, nonce, slot) = (record.token.clone(), record.nonce.clone(), record.slot);
        self.write(move |c| {
            let n = match slot {
                Some(slot) => c
                    .prepare_cached(
                        "DELETE FROM tokens WHERE slot = ?1 AND token = ?2 AND nonce = ?3",
                    )?
                    .execute(params![slot, token, nonce])?,
                None => c
                    .prepare_cached(
                        "DELETE FROM tokens WHERE token = ?1 AND named = 1 AND nonce = ?2",
                    )?
                    .execute(params![token, nonce])?,
            };
            Ok(n > 0)
        })
        .await
    }

    async fn expired_tokens(&self, now: i64, limit: usize) -> Result<Vec<Expired>, StoreError> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT token, slot, classification FROM tokens \
                 WHERE expires_at <= ?1 LIMIT ?2",
            )?
            .query_map(params![now, limit as i64], |r| {
                Ok(Expired {
                    token: r.get(0)?,
                    slot: Some(r.get(1)?),
                    classification: r.get(2)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn purge_idempotency(&self, now: i64, limit: usize) -> Result<usize, StoreError> {
        self.write(move |c| {
            c.prepare_cached(
                "DELETE FROM idempotency WHERE key IN \
                 (SELECT key FROM idempotency WHERE expires_at <= ?1 LIMIT ?2)",
            )?
            .execute(params![now, limit as i64])
        })
        .await
    }

    async fn release_fingerprint(&self, fp: &str, token: &str) -> Result<(), StoreError> {
        let (fp, token) = (fp.to_owned(), token.to_owned());
        self.write(move |c| {
            c.execute(
                "DELETE FROM fingerprints WHERE fingerprint = ?1 AND token = ?2",
                [fp, token],
            )
            .map(|_| ())
        })
        .await
    }

    async fn put_key_item(&self, item: &KeyItem) -> Result<Option<KeyItem>, StoreError> {
        let item = item.clone();
        self.write(move |c| {
            let tx = c.savepoint()?;
            let n = tx.execute(
                "INSERT INTO key_items (id, classification, wrapping_key_id, wrapped, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
                params![
                    item.id,
                    item.classification,
                    item.wrapping_key_id,
                    item.wrapped,
                    item.created_at
                ],
            )?;
            let existing = if n == 0 {
                get_key(&tx, &item.id)?
            } else {
                None
            };
            tx.commit()?;
            Ok(existing)
        })
        .await
    }

    async fn get_key_item(&self, id: &str) -> Result<Option<KeyItem>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| get_key(c, &id)).await
    }

    async fn key_items_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyItem>, StoreError> {
        let after = after.unwrap_or("").to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT id, classification, wrapping_key_id, wrapped, created_at FROM key_items \
                 WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            st.query_map(params![after, limit], key_row)?.collect()
        })
        .await
    }

    async fn rewrap_key_item(
        &self,
        id: &str,
        old: &[u8],
        new_key_id: &str,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let (id, old, new_key_id, new) = (
            id.to_owned(),
            old.to_vec(),
            new_key_id.to_owned(),
            new.to_vec(),
        );
        self.write(move |c| {
            c.execute(
                "UPDATE key_items SET wrapping_key_id = ?3, wrapped = ?4 WHERE id = ?1 AND wrapped = ?2",
                params![id, old, new_key_id, new],
            )
            .map(|n| n == 1)
        })
        .await
    }

    async fn claim_idempotency(
        &self,
        key: &str,
        request_hash: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<IdempotencyClaim, StoreError> {
        let key = key.to_owned();
        let hash = request_hash.to_owned();
        let owner = owner.to_owned();
        self.write(move |c| {
            let tx = c.savepoint()?;
            let row: Option<(String, Option<u16>, Option<String>, i64)> = tx
                .query_row(
                    "SELECT request_hash, status, response, expires_at FROM idempotency WHERE key = ?1",
                    [&key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let claim = match row {
                Some((request_hash, Some(status), Some(response), exp)) if exp > now => {
                    IdempotencyClaim::Done {
                        request_hash,
                        status,
                        response,
                    }
                }
                Some((request_hash, _, _, exp)) if exp > now => {
                    IdempotencyClaim::InProgress { request_hash }
                }
                _ => {
                    tx.execute(
                        "INSERT OR REPLACE INTO idempotency (key, request_hash, status, response, expires_at, owner) \
                         VALUES (?1, ?2, NULL, NULL, ?3, ?4)",
                        params![key, hash, lease_until, owner],
                    )?;
                    IdempotencyClaim::Claimed
                }
            };
            tx.commit()?;
            Ok(claim)
        })
        .await
    }

    async fn complete_idempotency(
        &self,
        key: &str,
        owner: &str,
        status: u16,
        response: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let key = key.to_owned();
        let owner = owner.to_owned();
        let response = response.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE idempotency SET status = ?2, response = ?3, expires_at = ?4 \
                 WHERE key = ?1 AND owner = ?5 AND status IS NULL",
                params![key, status, response, expires_at, owner],
            )
            .map(|_| ())
        })
        .await
    }

    async fn release_idempotency(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        let owner = owner.to_owned();
        self.write(move |c| {
            c.execute(
                "DELETE FROM idempotency WHERE key = ?1 AND owner = ?2 AND status IS NULL",
                [key, owner],
            )
            .map(|_| ())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map(|_| ())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reader test's threads, once for each time one gave its memory
    /// back.
    static RELEASED_BY: std::sync::Mutex<Vec<std::thread::ThreadId>> =
        std::sync::Mutex::new(Vec::new());

    fn released_by(id: std::thread::ThreadId) -> usize {
        let all = RELEASED_BY.lock().unwrap();
        all.iter().filter(|t| **t == id).count()
    }

    #[test]
    fn reads_go_to_the_first_free_reader_and_readers_that_ran_one_release() {
        use std::sync::Barrier;
        use std::time::{Duration, Instant};
        let mut each = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..3 {
            let (queue, jobs) = std::sync::mpsc::channel::<ReadJob>();
            let conn = Connection::open_in_memory().unwrap();
            threads.push(std::thread::spawn(move || {
                reader_loop(conn, jobs, Duration::from_millis(20), |_| {
                    RELEASED_BY
                        .lock()
                        .unwrap()
                        .push(std::thread::current().id());
                })
            }));
            each.push((queue, Arc::new(AtomicUsize::new(0))));
        }
        let ids: Vec<_> = threads.iter().map(|t| t.thread().id()).collect();
        let readers = Readers { each };
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            ids.iter().all(|id| released_by(*id) == 0),
            "no read yet: nothing to release"
        );

        // A read that says which reader ran it, once `both` (if any) lets
        // it go.
        let (ran, on) = std::sync::mpsc::channel();
        let read = |both: Option<Arc<Barrier>>| {
            let ran = ran.clone();
            move |_: &Connection, held: InHand| {
                if let Some(both) = both {
                    both.wait();
                }
                drop(held);
                ran.send(std::thread::current().id()).unwrap();
            }
        };
        let next = || {
            on.recv_timeout(Duration::from_secs(10))
                .expect("a read ran")
        };

        // Reads one after another all go to the first reader.
        for _ in 0..5 {
            readers.send(read(None)).unwrap();
            assert_eq!(next(), ids[0]);
        }

        // A read held up on the first reader, with as many behind it as it
        // holds: the next read goes to the second, and the two run at once
        // (they wait for each other).
        let both = Arc::new(Barrier::new(2));
        readers.send(read(Some(both.clone()))).unwrap();
        for _ in 1..READS_IN_HAND {
            readers.send(read(None)).unwrap();
        }
        readers.send(read(Some(both))).unwrap();
        let mut took: Vec<_> = (0..=READS_IN_HAND).map(|_| next()).collect();
        took.sort_by_key(|id| *id != ids[0]);
        assert_eq!(took[READS_IN_HAND], ids[1]);
        assert!(took[..READS_IN_HAND].iter().all(|id| *id == ids[0]));

        // A panicking read gives its place back too.
        readers
            .send(|_: &Connection, _: InHand| panic!("a failing read"))
            .unwrap();
        readers.send(read(None)).unwrap();
        assert_eq!(next(), ids[0]);
        let counted_out = || {
            readers
                .each
                .iter()
                .all(|(_, n)| n.load(Ordering::SeqCst) == 0)
        };
        assert!(counted_out(), "every read counted out");

        // Each reader that ran a read gives its memory back once it is
        // quiet, and not again until it runs another: the second ran one
        // read, the first 23. The idle third never does.
        let deadline = Instant::now() + Duration::from_secs(10);
        while (released_by(ids[0]) == 0 || released_by(ids[1]) == 0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!((1..=23).contains(&released_by(ids[0])));
        assert_eq!(released_by(ids[1]), 1);
        assert_eq!(released_by(ids[2]), 0, "the idle third");

        // A reader whose thread is gone is passed over.
        let (gone, _) = std::sync::mpsc::channel::<ReadJob>();
        let gone = Readers {
            each: vec![
                (gone, Arc::new(AtomicUsize::new(0))),
                readers.each[1].clone(),
            ],
        };
        gone.send(read(None)).unwrap();
        assert_eq!(next(), ids[1]);
        assert!(gone.each.iter().all(|(_, n)| n.load(Ordering::SeqCst) == 0));

        drop((readers, gone));
        for t in threads {
            t.join().unwrap();
        }
    }

    /// Reads queued behind a running one run together in one read
    /// transaction, and see a commit made before they were queued; a read
    /// alone runs in none, and none is left open after.
    #[test]
    fn reads_queued_together_share_one_snapshot_that_sees_earlier_commits() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let w = Connection::open(&path).unwrap();
        w.pragma_update(None, "journal_mode", "WAL").unwrap();
        w.execute_batch("CREATE TABLE t (k INTEGER)").unwrap();
        let (queue, jobs) = std::sync::mpsc::channel::<ReadJob>();
        let conn = Connection::open(&path).unwrap();
        let reader =
            std::thread::spawn(move || reader_loop(conn, jobs, Duration::from_secs(60), |_| {}));
        // (in a transaction, rows seen) of each read, in order.
        let (saw, seen) = std::sync::mpsc::channel::<(bool, i64)>();
        let (started, running) = std::sync::mpsc::channel();
        let read = |hold: Option<std::sync::mpsc::Receiver<()>>| {
            let (saw, started) = (saw.clone(), started.clone());
            let job: Read = Box::new(move |c: &Connection, held: InHand| {
                if let Some(hold) = hold {
                    started.send(()).unwrap();
                    hold.recv().unwrap();
                }
                let rows = c
                    .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                    .unwrap();
                drop(held);
                saw.send((!c.is_autocommit(), rows)).unwrap();
            });
            (InHand::take(&Arc::new(AtomicUsize::new(0))), job)
        };
        let next = || seen.recv_timeout(Duration::from_secs(10)).unwrap();
        let (go, hold) = std::sync::mpsc::channel();
        queue.send(read(Some(hold))).unwrap();
        running.recv_timeout(Duration::from_secs(10)).unwrap();
        // Committed before the next three are queued, while the first
        // read is held up.
        w.execute("INSERT INTO t VALUES (1)", []).unwrap();
        for _ in 0..3 {
            queue.send(read(None)).unwrap();
        }
        go.send(()).unwrap();
        assert_eq!(next(), (false, 1), "the first read ran alone");
        for _ in 0..3 {
            assert_eq!(next(), (true, 1), "queued reads share a transaction");
        }
        w.execute("INSERT INTO t VALUES (2)", []).unwrap();
        queue.send(read(None)).unwrap();
        assert_eq!(next(), (false, 2), "none left open after");
        // A read that panics inside a transaction of its own leaves none
        // open either: the next read sees a later commit.
        let (failing, failed) = std::sync::mpsc::channel();
        let panics: Read = Box::new(move |c: &Connection, _: InHand| {
            in_one_read(c, || {
                c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                    .unwrap();
                failing.send(()).unwrap();
                panic!("a failing read");
            })
        });
        queue
            .send((InHand::take(&Arc::new(AtomicUsize::new(0))), panics))
            .unwrap();
        // Ran alone (nothing queued with it), snapshot taken.
        failed.recv_timeout(Duration::from_secs(10)).unwrap();
        w.execute("INSERT INTO t VALUES (3)", []).unwrap();
        queue.send(read(None)).unwrap();
        assert_eq!(next(), (false, 3), "the panicked read's snapshot is gone");
        drop(queue);
        reader.join().unwrap();
    }

    #[test]
    fn every_migration_file_is_listed_in_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS.iter().map(|m| format!("{}.sql", m.1)).collect();
        assert_eq!(files, listed);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.0, i as i64 + 1);
        }
    }

    fn record(token: &str, fp: Option<&str>) -> TokenRecord {
        TokenRecord {
            token: token.into(),
            classification: "pan".into(),
            format_version: 1,
            ciphertext: vec![1, 2, 3],
            nonce: vec![0; 12],
            data_key_id: "dk/pan/1".into(),
            fingerprint: fp.map(Into::into),
            brand: Some("visa".into()),
            last4: Some("1111".into()),
            first6: None,
            value_len: 16,
            created_at: 1,
            expires_at: None,
            metadata: "{}".into(),
            slot: None,
            slot_in_token: false,
        }
    }

    /// Past the backlog's bound the store keeps no notes: a random record
    /// is stored without its note (its caller records the event), but a
    /// deterministic one is refused, since its event must then come first
    /// (`keeps_notes`, which the vault asks before it stores one).
    #[tokio::test]
    async fn past_the_backlog_bound_a_fingerprinted_record_is_refused_not_stored_unnoted() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("vault.db")).unwrap();
        assert!(!s.keeps_notes(), "no consumer yet");
        let _outbox = s.open_outbox(Box::new(|| {})).unwrap().unwrap();
        assert!(s.keeps_notes());
        s.inner
            .outbox
            .issued
            .store(OUTBOX_BACKLOG_MAX + 1, Ordering::SeqCst);
        assert!(!s.keeps_notes());

        let (got, kept) = s
            .insert_tokens_noted(
                &[record("d", Some("fp"))],
                Noted::Each(vec![b"nd".to_vec()]),
            )
            .await;
        assert!(!kept);
        assert!(
            matches!(got[..], [Err(StoreError::Unavailable(_))]),
            "{got:?}"
        );
        assert_eq!(s.token_for_fingerprint("fp").await.unwrap(), None);
        assert_eq!(s.get_token("d", None).await.unwrap(), None);

        let (got, kept) = s
            .insert_tokens_noted(&[record("r", None)], Noted::Each(vec![b"nr".to_vec()]))
            .await;
        assert!(!kept);
        assert!(matches!(got[..], [Ok(InsertOutcome::Inserted)]), "{got:?}");
    }

    /// The writer's own checkpoint waits for 10,000 WAL pages; 300 small
    /// commits reach the database file only through the checkpointer.
    #[tokio::test]
    async fn the_checkpointer_copies_commits_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        let s = SqliteStore::open(&path).unwrap();
        for i in 0..300 {
            s.insert_token(&record(&format!("t{i}"), None))
                .await
                .unwrap();
        }
        // A copy of the main file alone holds what was checkpointed.
        let copy = dir.path().join("copy.db");
        let in_file = || -> rusqlite::Result<i64> {
            std::fs::copy(&path, &copy)
                .map_err(|e| rusqlite::Error::InvalidPath(e.to_string().into()))?;
            Connection::open(&copy)?.query_row("SELECT count(*) FROM tokens", [], |r| r.get(0))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match in_file() {
                Ok(300) => break,
                // Not there yet, or copied mid-write.
                _ => assert!(std::time::Instant::now() < deadline, "never checkpointed"),
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    #[tokio::test]
    async fn inserts_are_conditional_and_migrations_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            s.insert_token(&record("a", Some("f"))).await.unwrap(),
            InsertOutcome::Inserted
        );
        assert_eq!(
            s.insert_token(&record("a", None)).await.unwrap(),
            InsertOutcome::TokenTaken
        );
        assert_eq!(
            s.insert_token(&record("b", Some("f"))).await.unwrap(),
            InsertOutcome::FingerprintTaken { token: "a".into() }
        );
        assert!(s.get_token("b", None).await.unwrap().is_none());
        assert!(s.delete_token("a", None).await.unwrap());
        assert_eq!(s.token_for_fingerprint("f").await.unwrap(), None);
        // A name once issued is never issued again, its record gone or not:
        // a holder of the old token must never reach another card.
        assert_eq!(
            s.insert_token(&record("a", None)).await.unwrap(),
            InsertOutcome::TokenTaken
        );
        assert!(s.get_token("a", None).await.unwrap().is_none());
        let slotted = TokenRecord {
            slot: Some(s.reserve_slot().unwrap()),
            slot_in_token: true,
            ..record("s", None)
        };
        assert_eq!(
            s.insert_token(&slotted).await.unwrap(),
            InsertOutcome::Inserted
        );
        assert!(s.delete_token("s", slotted.slot).await.unwrap());
        // A token naming its slot is not kept: it is never drawn twice.
        let again = TokenRecord {
            slot: Some(s.reserve_slot().unwrap()),
            ..slotted
        };
        assert_eq!(
            s.insert_token(&again).await.unwrap(),
            InsertOutcome::Inserted
        );
        // A claim is completed or released only by its owner.
        assert_eq!(
            s.claim_idempotency("k", "h", "a", 0, 10).await.unwrap(),
            IdempotencyClaim::Claimed
        );
        assert_eq!(
            s.claim_idempotency("k", "h", "b", 11, 20).await.unwrap(),
            IdempotencyClaim::Claimed
        );
        s.release_idempotency("k", "a").await.unwrap();
        s.complete_idempotency("k", "a", 201, "late", 99)
            .await
            .unwrap();
        assert_eq!(
            s.claim_idempotency("k", "h", "c", 12, 20).await.unwrap(),
            IdempotencyClaim::InProgress {
                request_hash: "h".into()
            }
        );
        s.complete_idempotency("k", "b", 201, "{}", 99)
            .await
            .unwrap();
        // Its owner's release after the answer (a completion that failed
        // yet landed) keeps the answer.
        s.release_idempotency("k", "b").await.unwrap();
        assert!(matches!(
            s.claim_idempotency("k", "h", "c", 13, 20).await.unwrap(),
            IdempotencyClaim::Done { status: 201, .. }
        ));
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        s.ping().await.unwrap();
    }

    /// A request's records go in one job; each answers on its own, as
    /// `insert_token` would.
    #[tokio::test]
    async fn many_records_in_one_job_answer_each_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("vault.db")).unwrap();
        s.insert_token(&record("held", Some("f-held")))
            .await
            .unwrap();
        let batch = [
            record("a", None),
            record("held", None),
            record("b", Some("f-b")),
            record("c", Some("f-held")),
            record("a", None),
            record("d", Some("f-b")),
        ];
        let got: Vec<_> = s
            .insert_tokens(&batch)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            got,
            [
                InsertOutcome::Inserted,
                InsertOutcome::TokenTaken,
                InsertOutcome::Inserted,
                InsertOutcome::FingerprintTaken {
                    token: "held".into()
                },
                InsertOutcome::TokenTaken,
                InsertOutcome::FingerprintTaken { token: "b".into() },
            ]
        );
        // What answered Inserted is stored; what did not is not.
        for (t, stored) in [("a", true), ("b", true), ("c", false), ("d", false)] {
            assert_eq!(s.get_token(t, None).await.unwrap().is_some(), stored, "{t}");
        }
        assert_eq!(
            s.token_for_fingerprint("f-b").await.unwrap().as_deref(),
            Some("b")
        );
        assert!(s.insert_tokens(&[]).await.is_empty());
        // Read back in one job, in the order asked, a gap where none is.
        let found: Vec<Option<String>> = s
            .get_tokens(&[
                ("b", None),
                ("c", None),
                ("held", None),
                ("a", None),
                ("b", None),
            ])
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.map(|r| r.token))
            .collect();
        let want = [Some("b"), None, Some("held"), Some("a"), Some("b")];
        assert_eq!(found, want.map(|t| t.map(str::to_owned)));
        assert!(s.get_tokens(&[]).await.unwrap().is_empty());
    }

    /// Notes are kept only once a consumer opened the outbox; each is
    /// committed with its record (a record not inserted leaves none), read
    /// back in order, and deleted by the write after its acknowledgement.
    #[tokio::test]
    async fn outbox_notes_commit_with_their_records_and_go_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("vault.db")).unwrap();
        let (_, kept) = s
            .insert_tokens_noted(&[record("before", None)], Noted::Each(vec![b"n0".to_vec()]))
            .await;
        assert!(!kept, "no consumer yet: the caller records its own events");
        assert_eq!(s.outbox_backlog(), None);

        let nudges = Arc::new(AtomicU64::new(0));
        let n = nudges.clone();
        let mut outbox = s
            .open_outbox(Box::new(move || {
                n.fetch_add(1, Ordering::SeqCst);
            }))
            .unwrap()
            .unwrap();
        assert!(s.open_outbox(Box::new(|| {})).is_err(), "one consumer");
        assert_eq!(outbox.epoch().len(), 16);
        assert!(outbox.pending(0, 10).unwrap().is_empty());

        let (got, kept) = s
            .insert_tokens_noted(
                &[record("a", None), record("before", None), record("b", None)],
                Noted::Each(vec![b"na".to_vec(), b"taken".to_vec(), b"nb".to_vec()]),
            )
            .await;
        assert!(kept);
        assert_eq!(
            got.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            [
                InsertOutcome::Inserted,
                InsertOutcome::TokenTaken,
                InsertOutcome::Inserted
            ]
        );
        // The nudge comes before the answer.
        assert_eq!(nudges.load(Ordering::SeqCst), 1);
        assert_eq!(s.outbox_backlog(), Some(2));
        let rows = outbox.pending(0, 10).unwrap();
        let notes: Vec<&[u8]> = rows.iter().map(|r| &r.1[..]).collect();
        assert_eq!(notes, [&b"na"[..], b"nb"]);
        assert!(rows[0].0 < rows[1].0);
        assert_eq!(outbox.pending(rows[0].0, 10).unwrap().len(), 1);
        assert_eq!(outbox.pending(0, 1).unwrap().len(), 1);

        // Acknowledged rows are deleted by a later write, in ranges of at
        // least DELETE_NOTES_EVERY.
        outbox.acknowledge(rows[0].0);
        assert_eq!(s.outbox_backlog(), Some(1));
        s.insert_tokens_noted(&[record("c", None)], Noted::Each(vec![b"nc".to_vec()]))
            .await;
        assert_eq!(
            outbox.pending(0, 10).unwrap().len(),
            3,
            "too few to delete yet"
        );
        let many: Vec<TokenRecord> = (0..DELETE_NOTES_EVERY)
            .map(|i| record(&format!("m{i}"), None))
            .collect();
        let notes = vec![b"nm".to_vec(); many.len()];
        s.insert_tokens_noted(&many, Noted::Each(notes)).await;
        let all = outbox.pending(0, 10_000).unwrap();
        assert_eq!(all.len() as u64, 3 + DELETE_NOTES_EVERY);
        let top = all.last().unwrap().0;
        outbox.acknowledge(top);
        s.insert_tokens_noted(&[record("d", None)], Noted::Each(vec![b"nd".to_vec()]))
            .await;
        // Every acknowledged row is gone but the highest, which holds the
        // highest number issued; numbers are never reused.
        let last = outbox.pending(0, 10_000).unwrap();
        assert_eq!(last.len(), 2);
        assert_eq!(last[0].0, top);
        let last = &last[1..];
        assert_eq!(last[0].1, b"nd");
        assert!(last[0].0 > top);

        // A note that cannot be inserted takes its record back out with it
        // (the whole group is rolled back and fails; callers retry).
        s.write(|c| {
            c.execute_batch(
                "CREATE TRIGGER refuse_note BEFORE INSERT ON audit_outbox \
                 WHEN NEW.note = x'6e6f' BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
        })
        .await
        .unwrap();
        let backlog = s.outbox_backlog();
        let (got, kept) = s
            .insert_tokens_noted(
                &[record("ok1", None), record("refused", None)],
                Noted::Each(vec![b"n1".to_vec(), b"no".to_vec()]),
            )
            .await;
        assert!(kept);
        assert!(got.iter().all(Result::is_err), "{got:?}");
        for t in ["ok1", "refused"] {
            assert!(s.get_token(t, None).await.unwrap().is_none(), "{t}");
        }
        // A group's note likewise.
        let (got, _) = s
            .insert_tokens_noted(
                &[record("g1", None), record("g2", None)],
                Noted::Group(b"no".to_vec()),
            )
            .await;
        assert!(got.iter().all(Result::is_err), "{got:?}");
        for t in ["g1", "g2"] {
            assert!(s.get_token(t, None).await.unwrap().is_none(), "{t}");
        }
        assert_eq!(outbox.pending(last[0].0, 10).unwrap().len(), 0);
        assert_eq!(
            s.outbox_backlog(),
            backlog,
            "a rolled-back note is not counted as issued"
        );
        s.write(|c| c.execute_batch("DROP TRIGGER refuse_note"))
            .await
            .unwrap();

        // A copier that is stuck: past the bound no more notes are kept,
        // and callers record their own events; once it catches up, they
        // are kept again.
        let top = last[0].0;
        s.inner
            .outbox
            .issued
            .store(top + OUTBOX_BACKLOG_MAX + 1, Ordering::SeqCst);
        let (_, kept) = s
            .insert_tokens_noted(&[record("e", None)], Noted::Each(vec![b"ne".to_vec()]))
            .await;
        assert!(!kept);
        outbox.acknowledge(top + OUTBOX_BACKLOG_MAX);
        let (_, kept) = s
            .insert_tokens_noted(&[record("f", None)], Noted::Each(vec![b"nf".to_vec()]))
            .await;
        assert!(kept);
    }

    /// A write that panics halfway commits nothing of what it wrote, and
    /// the writer thread goes on.
    #[tokio::test]
    async fn a_panicking_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("vault.db")).unwrap();
        let got = s
            .write(|c| -> rusqlite::Result<()> {
                insert_one(c, &record("half", None), &AtomicI64::new(1))?;
                panic!("a bug after the first insert");
            })
            .await;
        assert!(got.is_err());
        assert!(s.get_token("half", None).await.unwrap().is_none());
        assert_eq!(
            s.insert_token(&record("after", None)).await.unwrap(),
            InsertOutcome::Inserted
        );
        assert!(s.get_token("after", None).await.unwrap().is_some());
    }

    /// The backlog gauge counts notes a last run left uncopied from the
    /// moment the outbox is opened again, not only those issued since.
    #[tokio::test]
    async fn the_backlog_counts_notes_left_by_the_last_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            let outbox = s.open_outbox(Box::new(|| {})).unwrap().unwrap();
            let recs: Vec<_> = ["a", "b", "c"].map(|t| record(t, None)).into();
            s.insert_tokens_noted(&recs, Noted::Each(vec![b"n".to_vec(); 3]))
                .await;
            outbox.acknowledge(1);
            assert_eq!(s.outbox_backlog(), Some(2));
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.outbox_backlog(), None, "no consumer yet");
        let mut outbox = s.open_outbox(Box::new(|| {})).unwrap().unwrap();
        assert_eq!(s.outbox_backlog(), Some(3), "nothing acknowledged yet");
        outbox.acknowledge(1);
        assert_eq!(s.outbox_backlog(), Some(2));
        outbox.acknowledge(3);
        assert_eq!(s.outbox_backlog(), Some(0));
        // Every note copied and deleted as the writer deletes them (the
        // highest row kept, blanked), then a restart: nothing is left,
        // however many the database ever issued.
        s.write(|c| {
            c.execute(DELETE_ACKED_NOTES, [3])?;
            c.execute(BLANK_ACKED_TOP, [3])
        })
        .await
        .unwrap();
        assert_eq!(outbox.pending(0, 10).unwrap(), [(3, vec![])]);
        drop((s, outbox));
        let s = SqliteStore::open(&path).unwrap();
        let _outbox = s.open_outbox(Box::new(|| {})).unwrap().unwrap();
        assert_eq!(s.outbox_backlog(), Some(0), "an empty outbox holds nothing");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_group_commit_and_a_failing_write_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("vault.db")).unwrap();
        // 400 writes at once, 100 fingerprints held four ways each: every
        // write lands in some batch, and one token per fingerprint wins.
        let mut tasks = Vec::new();
        for i in 0..400 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let fp = format!("f{}", i % 100);
                s.insert_token(&record(&format!("t{i}"), Some(&fp))).await
            }));
        }
        let mut inserted = 0;
        for t in tasks {
            if t.await.unwrap().unwrap() == InsertOutcome::Inserted {
                inserted += 1;
            }
        }
        assert_eq!(inserted, 100);
        // A write that fails (a statement error) rolls back to its
        // savepoint; the others in its batch commit.
        let bad = s.write(|c| {
            let tx = c.savepoint()?;
            tx.execute(
                "INSERT INTO fingerprints (fingerprint, token) VALUES ('x', 'y')",
                [],
            )?;
            tx.execute("INSERT INTO no_such_table VALUES (1)", [])?;
            tx.commit()
        });
        let after = record("after", Some("g"));
        let good = s.insert_token(&after);
        let (bad, good) = tokio::join!(bad, good);
        assert!(bad.is_err());
        assert_eq!(good.unwrap(), InsertOutcome::Inserted);
        assert_eq!(s.token_for_fingerprint("x").await.unwrap(), None);
        assert_eq!(
            s.token_for_fingerprint("g").await.unwrap().as_deref(),
            Some("after")
        );
    }

    /// A group's note is one row numbered by the last of as many numbers
    /// as it has records, committed only with all of them: a record that
    /// cannot be stored withdraws the others and leaves no row. Numbers go
    /// on from the highest ever issued, deleted rows included.
    #[tokio::test]
    async fn a_group_note_is_one_row_counting_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("vault.db")).unwrap();
        let mut outbox = s.open_outbox(Box::new(|| {})).unwrap().unwrap();
        let (_, kept) = s
            .insert_tokens_noted(&[record("one", None)], Noted::Each(vec![b"n1".to_vec()]))
            .await;
        assert!(kept);

        let recs: Vec<_> = ["g1", "g2", "g3"].map(|t| record(t, None)).into();
        let (got, kept) = s
            .insert_tokens_noted(&recs, Noted::Group(b"g".to_vec()))
            .await;
        assert!(kept);
        assert!(
            got.iter().all(|o| matches!(o, Ok(InsertOutcome::Inserted))),
            "{got:?}"
        );
        let rows = outbox.pending(0, 10).unwrap();
        assert_eq!(rows, [(1, b"n1".to_vec()), (4, b"g".to_vec())]);
        assert_eq!(s.outbox_backlog(), Some(4));
        assert_eq!(outbox.issued().unwrap(), 4);
        // A read ends at the row whose number reaches the limit: notes are
        // counted, not rows.
        assert_eq!(outbox.pending(0, 1).unwrap().len(), 1);
        assert_eq!(outbox.pending(0, 2).unwrap().len(), 2);
        assert_eq!(outbox.pending(1, 1).unwrap(), [(4, b"g".to_vec())]);

        let taken: Vec<_> = ["w1", "one", "w2"].map(|t| record(t, None)).into();
        let (got, kept) = s
            .insert_tokens_noted(&taken, Noted::Group(b"w".to_vec()))
            .await;
        assert!(kept);
        assert_eq!(
            got.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            [
                InsertOutcome::Withdrawn,
                InsertOutcome::TokenTaken,
                InsertOutcome::Withdrawn
            ]
        );
        for t in ["w1", "w2"] {
            assert!(s.get_token(t, None).await.unwrap().is_none(), "{t}");
        }
        assert_eq!(outbox.pending(0, 10).unwrap().len(), 2);
        assert_eq!(s.outbox_backlog(), Some(4));

        // Every row acknowledged and deleted but the highest, which keeps
        // the number: numbers go on after it.
        outbox.acknowledge(4);
        s.write(move |c| c.execute(DELETE_ACKED_NOTES, [4]))
            .await
            .unwrap();
        assert_eq!(outbox.pending(0, 10).unwrap(), [(4, b"g".to_vec())]);
        let recs: Vec<_> = ["h1", "h2"].map(|t| record(t, None)).into();
        s.insert_tokens_noted(&recs, Noted::Group(b"h".to_vec()))
            .await;
        assert_eq!(outbox.pending(4, 10).unwrap(), [(6, b"h".to_vec())]);
    }

    /// A database a newer tokenvault migrated is refused, not written.
    #[tokio::test]
    async fn a_database_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute("INSERT INTO schema_migrations VALUES (99, 'future', 0)", [])
            .unwrap();
        let Err(e) = SqliteStore::open(&path) else {
            panic!("opened a newer database");
        };
        assert!(e.to_string().contains("schema version 99"), "{e}");
    }

    /// A database at `path` with the first `n` migrations applied, as an
    /// older tokenvault left it.
    fn migrated_to(path: &Path, n: usize) -> Connection {
        let mut c = Connection::open(path).unwrap();
        c.execute_batch(
            "CREATE TABLE schema_migrations (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL
            ) STRICT;",
        )
        .unwrap();
        let tx = c.transaction().unwrap();
        for &(version, name, sql) in &MIGRATIONS[..n] {
            tx.execute_batch(sql).unwrap();
            tx.execute(
                "INSERT INTO schema_migrations VALUES (?1, ?2, 0)",
                params![version, name],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        c
    }

    /// A database whose outbox still had AUTOINCREMENT, its rows all
    /// copied and deleted: migration 0004 keeps the highest number issued
    /// in an empty row, so the next note is numbered after it.
    #[tokio::test]
    async fn the_outbox_keeps_its_numbers_across_migration_4() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        {
            let mut c = migrated_to(&path, 3);
            let tx = c.transaction().unwrap();
            for _ in 0..7 {
                tx.execute("INSERT INTO audit_outbox (note) VALUES (x'01')", [])
                    .unwrap();
            }
            tx.execute("DELETE FROM audit_outbox", []).unwrap();
            tx.commit().unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let mut outbox = s.open_outbox(Box::new(|| {})).unwrap().unwrap();
        assert_eq!(outbox.issued().unwrap(), 7);
        assert_eq!(outbox.pending(0, 10).unwrap(), [(7, vec![])]);
        s.insert_tokens_noted(&[record("a", None)], Noted::Each(vec![b"n".to_vec()]))
            .await;
        assert_eq!(outbox.pending(7, 10).unwrap(), [(8, b"n".to_vec())]);
        // Near the largest integer the next note is refused, with its
        // record, not given a number at random.
        s.write(|c| {
            c.execute(
                "INSERT INTO audit_outbox (seq, note) VALUES (9223372036854775806, x'')",
                [],
            )
        })
        .await
        .unwrap();
        let (got, _) = s
            .insert_tokens_noted(&[record("b", None)], Noted::Each(vec![b"n".to_vec()]))
            .await;
        assert!(got[0].is_err(), "{got:?}");
        assert!(s.get_token("b", None).await.unwrap().is_none());
    }

    /// `record(token)` in `slot`, its token naming it.
    fn slotted(token: &str, slot: i64) -> TokenRecord {
        TokenRecord {
            slot: Some(slot),
            slot_in_token: true,
            ..record(token, None)
        }
    }

    /// A name retired under migration 0007's insert trigger stays retired
    /// once migration 0008 has dropped that trigger: the writer's own
    /// check refuses it, and a named token never retired still goes in.
    #[tokio::test]
    async fn migration_8_keeps_names_retired_under_7() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        {
            let c = migrated_to(&path, 7);
            c.execute(
                "INSERT INTO tokens (token, named, classification, format_version, ciphertext, \
                 nonce, data_key_id, value_len, created_at) \
                 VALUES ('gone', 1, 'pan', 1, x'01', x'00', 'dk', 16, 1)",
                [],
            )
            .unwrap();
            c.execute("DELETE FROM tokens WHERE token = 'gone'", [])
                .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let triggers: i64 = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'tokens'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(triggers, 1, "only the delete trigger is left");
        assert_eq!(
            s.insert_token(&record("gone", None)).await.unwrap(),
            InsertOutcome::TokenTaken
        );
        assert!(s.get_token("gone", None).await.unwrap().is_none());
        assert_eq!(
            s.insert_token(&record("fresh", None)).await.unwrap(),
            InsertOutcome::Inserted
        );
    }

    /// Records from before slots keep their row numbers and are found by
    /// token through the one index left; new records take the slots after
    /// them and are found by slot, and only with their own token.
    #[tokio::test]
    async fn migration_5_keeps_old_records_findable_and_new_ones_take_slots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        {
            let mut c = migrated_to(&path, 4);
            let tx = c.transaction().unwrap();
            for t in ["old1", "old2", "old3"] {
                tx.execute(
                    "INSERT INTO tokens (token, classification, format_version, ciphertext, \
                     nonce, data_key_id, value_len, created_at) \
                     VALUES (?1, 'pan', 1, x'01', x'00', 'dk', 16, 1)",
                    [t],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        for (t, rowid) in [("old1", 1), ("old2", 2), ("old3", 3)] {
            // Found by name, whatever slot the token seems to spell.
            for slot in [None, Some(rowid), Some(99)] {
                let got = s.get_token(t, slot).await.unwrap().unwrap();
                assert_eq!((got.slot, got.slot_in_token), (Some(rowid), false));
            }
        }
        assert_eq!(s.reserve_slot(), Some(4));
        assert_eq!(
            s.insert_token(&slotted("new4", 4)).await.unwrap(),
            InsertOutcome::Inserted
        );
        let got = s.get_token("new4", Some(4)).await.unwrap().unwrap();
        assert_eq!(got, slotted("new4", 4));
        // Its slot with another token, or the token without its slot:
        // nothing.
        assert!(s.get_token("old1", Some(4)).await.unwrap().is_some());
        assert!(s.get_token("other", Some(4)).await.unwrap().is_none());
        assert!(s.get_token("new4", None).await.unwrap().is_none());
        assert!(s.get_token("new4", Some(5)).await.unwrap().is_none());
        // A named token is still unique; a slot is taken once.
        assert_eq!(
            s.insert_token(&TokenRecord {
                slot: Some(5),
                ..record("old2", None)
            })
            .await
            .unwrap(),
            InsertOutcome::TokenTaken
        );
        assert_eq!(
            s.insert_token(&slotted("again", 4)).await.unwrap(),
            InsertOutcome::TokenTaken
        );
        let indexes: Vec<String> = Connection::open(&path)
            .unwrap()
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tokens' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(indexes, ["tokens_expires_at", "tokens_named"]);
        // Deleting goes by slot, or by name.
        assert!(!s.delete_token("new4", Some(3)).await.unwrap());
        assert!(s.delete_token("new4", Some(4)).await.unwrap());
        assert!(s.delete_token("old3", Some(4)).await.unwrap());
        assert!(s.get_token("old3", None).await.unwrap().is_none());
    }

    /// Two stores on one file (two processes) hand out the same slot
    /// numbers: the second to insert one is told it is taken, and its next
    /// slot is past every slot taken.
    #[tokio::test]
    async fn a_slot_taken_by_another_process_moves_the_counter_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        let a = SqliteStore::open(&path).unwrap();
        let b = SqliteStore::open(&path).unwrap();
        for i in 0..3 {
            let slot = b.reserve_slot().unwrap();
            let rec = slotted(&format!("b{i}"), slot);
            assert_eq!(b.insert_token(&rec).await.unwrap(), InsertOutcome::Inserted);
        }
        let slot = a.reserve_slot().unwrap();
        assert_eq!(slot, 1);
        assert_eq!(
            a.insert_token(&slotted("a", slot)).await.unwrap(),
            InsertOutcome::TokenTaken
        );
        let slot = a.reserve_slot().unwrap();
        assert_eq!(slot, 4);
        assert_eq!(
            a.insert_token(&slotted("a", slot)).await.unwrap(),
            InsertOutcome::Inserted
        );
        assert!(b.get_token("a", Some(4)).await.unwrap().is_some());
    }

    /// A slotted group with one slot taken: the others are withdrawn, row
    /// for row, and the table holds what it held.
    #[tokio::test]
    async fn a_slotted_group_is_withdrawn_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("vault.db")).unwrap();
        let _outbox = s.open_outbox(Box::new(|| {})).unwrap().unwrap();
        let first = s.reserve_slot().unwrap();
        s.insert_token(&slotted("first", first)).await.unwrap();
        let count =
            || s.read(|c| c.query_row("SELECT count(*) FROM tokens", [], |r| r.get::<_, i64>(0)));
        assert_eq!(count().await.unwrap(), 1);
        let recs = [
            slotted("x1", s.reserve_slot().unwrap()),
            slotted("x2", first),
            slotted("x3", s.reserve_slot().unwrap()),
        ];
        let (got, kept) = s
            .insert_tokens_noted(&recs, Noted::Group(b"x".to_vec()))
            .await;
        assert!(kept);
        assert_eq!(
            got.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            [
                InsertOutcome::Withdrawn,
                InsertOutcome::TokenTaken,
                InsertOutcome::Withdrawn
            ]
        );
        assert_eq!(count().await.unwrap(), 1);
        for r in &recs {
            assert!(s.get_token(&r.token, r.slot).await.unwrap().is_none());
        }
    }

    /// After a restart the slot of the highest record, deleted, is handed
    /// out again; its old token finds nothing in it.
    #[tokio::test]
    async fn a_slot_handed_out_again_after_a_restart_does_not_answer_its_old_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        let s = SqliteStore::open(&path).unwrap();
        let slot = s.reserve_slot().unwrap();
        s.insert_token(&slotted("old", slot)).await.unwrap();
        assert!(s.delete_token("old", Some(slot)).await.unwrap());
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.reserve_slot(), Some(slot));
        s.insert_token(&slotted("new", slot)).await.unwrap();
        assert!(s.get_token("old", Some(slot)).await.unwrap().is_none());
        assert!(s.get_token("new", Some(slot)).await.unwrap().is_some());
    }
}
