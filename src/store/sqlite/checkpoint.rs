//! The checkpointer: copies the writer's committed WAL frames back into
//! the database file beside the writer, so that commits wait for neither
//! the copy nor its sync.

use rusqlite::Connection;

/// Group commits between two nudges of the checkpointer. Small
/// checkpoints often: each ends in an fsync of the database file, which
/// held up the writer's own fsyncs while the disk flushed (before the
/// database was synced in steps, `vfs`). At 5,000
/// tokenizations/s into a table of 300,000 records, p99 was 21-66 ms
/// (median of four runs 33) with a nudge every 256 commits and 15-23 ms
/// (median 17) every 64, each pair run one after the other.
pub(super) const CHECKPOINT_EVERY_COMMITS: u32 = 64;
/// How long the checkpointer leaves the writer's backstop a free path
/// once the WAL has reached the backstop's size ([`stand_aside`]).
const STAND_ASIDE: std::time::Duration = std::time::Duration::from_millis(20);

/// After a checkpoint that found `frames` in the WAL: how long to pause
/// before the next, if at all. Only a checkpoint that copies the whole
/// WAL with no commit meanwhile lets it start over, and under load that
/// is the writer's backstop at [`super::WAL_CHECKPOINT_PAGES`]; but it
/// cannot run while this thread is in a checkpoint (it gives up rather
/// than wait), and a checkpointer nudged without pause kept it out for
/// good: the WAL grew to over a gigabyte in an 8-second batch run
/// (BENCHMARKS-history.md). A pause past that size bounds the WAL whatever the
/// nudges; at 5,000 tokenizations/s the writer commits every few
/// milliseconds, so it gets in within the pause.
fn stand_aside(frames: i64) -> Option<std::time::Duration> {
    (frames >= super::WAL_CHECKPOINT_PAGES).then_some(STAND_ASIDE)
}

/// The checkpointer also runs this often, for a writer gone quiet.
const CHECKPOINT_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// The checkpointer: copies committed WAL frames back into the database
/// (`PASSIVE`: it never blocks the writer or a reader) when nudged or
/// once a period, until the writer is gone. When the writer checkpointed
/// itself (`wal_autocheckpoint`), a commit now and then waited for tens of
/// megabytes to be copied and fsynced: p99 at 5,000 tokenizations/s was
/// 50-60 ms. The writer's own checkpoint stays as the backstop, should
/// this thread fall behind.
///
/// A checkpoint that leaves frames behind (a commit landed meanwhile,
/// which under steady load is every one) wrote pages into the database
/// without an fsync (before the step syncs, `vfs`): SQLite syncs the
/// database only when a checkpoint copies the whole WAL, and that one is
/// usually the writer's own backstop, once the WAL reaches
/// [`super::WAL_CHECKPOINT_PAGES`]. Its fsync then flushed everything
/// the checkpointer had written since the last: 21-29 ms, about once a
/// second at 5,000 tokenizations/s into 400,000 records, with every
/// commit waiting behind it. So this thread syncs the database
/// itself (`sync_db`, [`sync_main_file`]) after each checkpoint that
/// copied frames, off the writer's path. The cost: closed-loop tokenize
/// 3-9% slower, and a page rewritten between two checkpoints reaches the
/// disk twice (write requests +57%). Its connection syncs the database
/// every few pages as the checkpoint writes them (`vfs`), so that sync
/// finds little left.
///
/// Should a sync fail, the thread stops: the kernel reports a failed
/// write back once for each open file, so after a failure this
/// connection's own sync at a whole checkpoint could succeed over pages
/// that never reached the disk, and SQLite would then start the WAL over.
/// The writer's backstop checkpoints on its own file, which still reports
/// the failure, as before this thread synced anything.
pub(super) fn checkpointer_loop(
    conn: Connection,
    mut sync_db: impl FnMut(&Connection) -> std::io::Result<()>,
    nudges: std::sync::mpsc::Receiver<()>,
    mut pause: impl FnMut(std::time::Duration),
) {
    use std::sync::mpsc::RecvTimeoutError;
    // Said once when checkpoints start failing and once when they work
    // again, not every second in between.
    let mut failing = false;
    // The WAL's frames and those copied back at the last checkpoint.
    let mut last = (0i64, 0i64);
    loop {
        match nudges.recv_timeout(CHECKPOINT_PERIOD) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let ran = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match ran {
            // A sync inside the checkpoint failed (a step's, `vfs`, the
            // WAL's or SQLite's closing one); the database file refuses
            // all after it.
            Err(e) if e.sqlite_error().map(|e| e.extended_code) == Some(ERROR_SYNC) => {
                tracing::error!(error = %e, "sqlite sync failed in a checkpoint; checkpoints left to the writer");
                return;
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "sqlite checkpoints failing; the writer checkpoints on its own");
            }
            Err(_) => {}
            Ok((frames, copied)) => {
                if failing {
                    failing = false;
                    tracing::info!("sqlite checkpoints working again");
                }
                // The answer cannot tell a whole checkpoint (synced by
                // SQLite) from one that was overtaken: both report the WAL
                // as it was when the checkpoint began, all of it copied.
                if copied > 0
                    && (frames, copied) != last
                    && let Err(e) = sync_db(&conn)
                {
                    tracing::error!(error = %e, "sqlite database sync failed; checkpoints left to the writer");
                    return;
                }
                last = (frames, copied);
                if let Some(d) = stand_aside(frames) {
                    pause(d);
                }
            }
        }
    }
}

/// SQLite's extended code for a failed sync.
const ERROR_SYNC: std::ffi::c_int = rusqlite::ffi::SQLITE_IOERR_FSYNC;

/// Syncs `conn`'s database file through SQLite's own descriptor of it.
/// A descriptor of our own would do the same sync, but closing it would
/// drop every POSIX lock this process holds on the file, the other
/// connections' included (SQLite's own files never close while locks
/// are held, for that reason).
pub(super) fn sync_main_file(conn: &Connection) -> std::io::Result<()> {
    use rusqlite::ffi;
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: an open connection's handle, used on this thread only; the
    // file control writes one `sqlite3_file` pointer into `file`.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast(),
        )
    };
    if rc != ffi::SQLITE_OK || file.is_null() {
        return Err(std::io::Error::other(format!(
            "no database file to sync (sqlite code {rc})"
        )));
    }
    // SAFETY: the file and its methods live as long as the connection,
    // which nothing else uses meanwhile.
    let rc = unsafe {
        match (*file).pMethods.as_ref().and_then(|m| m.xSync) {
            Some(sync) => sync(file, ffi::SQLITE_SYNC_NORMAL),
            None => ffi::SQLITE_MISUSE,
        }
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "sync failed (sqlite code {rc})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rusqlite::{Connection, OpenFlags};

    use super::*;
    use crate::store::sqlite::{configure, vfs};

    /// A database in WAL mode in `dir` with a committed table, and the
    /// connection that made it.
    fn wal_with_a_table(dir: &Path) -> (PathBuf, Connection) {
        let path = dir.join("vault.db");
        let writer = Connection::open(&path).unwrap();
        configure(&writer).unwrap();
        writer
            .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        (path, writer)
    }

    /// The checkpointer syncs the database file after a checkpoint that
    /// copied frames, and not after one that found nothing new.
    #[test]
    fn the_checkpointer_syncs_the_database_after_copying_frames() {
        let dir = tempfile::tempdir().unwrap();
        let (path, writer) = wal_with_a_table(dir.path());
        let syncs = Arc::new(AtomicUsize::new(0));
        let counted = syncs.clone();
        let (nudge, nudges) = std::sync::mpsc::sync_channel(0);
        let checkpointer = Connection::open(&path).unwrap();
        let thread = std::thread::spawn(move || {
            checkpointer_loop(
                checkpointer,
                move |_: &Connection| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                },
                nudges,
                |_| panic!("stood aside for a small WAL"),
            )
        });
        // A rendezvous channel: a send returns once the loop took it, so
        // the second of two returns once the checkpoint of the first ran.
        let checkpoint = || {
            nudge.send(()).unwrap();
            nudge.send(()).unwrap();
        };
        checkpoint();
        assert_eq!(syncs.load(Ordering::SeqCst), 1, "the table copied");
        checkpoint();
        assert_eq!(syncs.load(Ordering::SeqCst), 1, "nothing new to copy");
        writer.execute("INSERT INTO t VALUES (2)", []).unwrap();
        checkpoint();
        assert_eq!(syncs.load(Ordering::SeqCst), 2, "a new commit copied");
        drop(nudge);
        thread.join().unwrap();
    }

    /// A failed sync stops the checkpointer: its own sync at a later whole
    /// checkpoint would not report the failure again.
    #[test]
    fn the_checkpointer_stops_when_a_sync_fails() {
        let dir = tempfile::tempdir().unwrap();
        // Kept open: the last connection to close checkpoints the WAL.
        let (path, _writer) = wal_with_a_table(dir.path());
        let (nudge, nudges) = std::sync::mpsc::sync_channel(0);
        let checkpointer = Connection::open(&path).unwrap();
        let thread = std::thread::spawn(move || {
            checkpointer_loop(
                checkpointer,
                |_: &Connection| Err(std::io::Error::other("disk gone")),
                nudges,
                |_| {},
            )
        });
        // (Refused already, should the period's own checkpoint come first.)
        let _ = nudge.send(());
        // Refused once the loop has returned and dropped its receiver.
        assert!(nudge.send(()).is_err(), "the checkpointer went on");
        thread.join().unwrap();
    }

    /// A sync that fails inside a checkpoint (the checkpointer's VFS
    /// syncs the database every few pages it writes) stops the
    /// checkpointer too.
    #[test]
    fn the_checkpointer_stops_when_a_step_sync_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (path, writer) = wal_with_a_table(dir.path());
        // More than a step's pages, so that a step syncs first.
        writer
            .execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
                 INSERT INTO t SELECT randomblob(1000) FROM n;",
            )
            .unwrap();
        let name = vfs::register_failing(c"tv-ckpt-test-loop").unwrap();
        let checkpointer =
            Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), name).unwrap();
        let (nudge, nudges) = std::sync::mpsc::sync_channel(0);
        let thread = std::thread::spawn(move || {
            checkpointer_loop(checkpointer, |_: &Connection| Ok(()), nudges, |_| {})
        });
        let _ = nudge.send(());
        assert!(nudge.send(()).is_err(), "the checkpointer went on");
        thread.join().unwrap();
    }

    /// Past the backstop's size the checkpointer pauses after each
    /// checkpoint, so that the writer's backstop can start the WAL over.
    #[test]
    fn the_checkpointer_stands_aside_once_the_wal_is_large() {
        assert_eq!(stand_aside(super::super::WAL_CHECKPOINT_PAGES - 1), None);
        assert_eq!(
            stand_aside(super::super::WAL_CHECKPOINT_PAGES),
            Some(STAND_ASIDE)
        );
        let dir = tempfile::tempdir().unwrap();
        let (path, writer) = wal_with_a_table(dir.path());
        // One transaction of more pages than the backstop's size.
        writer
            .execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                 INSERT INTO t SELECT randomblob(3000) FROM n",
                [super::super::WAL_CHECKPOINT_PAGES],
            )
            .unwrap();
        let paused = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = paused.clone();
        let (nudge, nudges) = std::sync::mpsc::sync_channel(0);
        let checkpointer = Connection::open(&path).unwrap();
        let thread = std::thread::spawn(move || {
            checkpointer_loop(
                checkpointer,
                |_: &Connection| Ok(()),
                nudges,
                move |d| seen.lock().unwrap().push(d),
            )
        });
        nudge.send(()).unwrap();
        nudge.send(()).unwrap();
        drop(nudge);
        thread.join().unwrap();
        let paused = paused.lock().unwrap();
        assert!(!paused.is_empty(), "never stood aside");
        assert!(paused.iter().all(|&d| d == STAND_ASIDE));
    }

    /// The sync through SQLite's own file works on a real database.
    #[test]
    fn the_main_file_syncs_through_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("vault.db")).unwrap();
        configure(&conn).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        sync_main_file(&conn).unwrap();
    }
}
