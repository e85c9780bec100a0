//! SQLite VFSes over the default one, for how the store's files reach the
//! disk: the writer's hands a commit's WAL frames to the kernel in one
//! write; the checkpointer's syncs the database file in small steps.
//!
//! ## The writer's: one write a commit
//!
//! SQLite appends each WAL frame with two `pwrite`s, its 24-byte header
//! and its page: a commit of 19 frames made 38 system calls. On this VM a
//! system call costs about 1.9 µs whatever its size: 38 writes of a
//! commit's frames took 74 µs, one write of the same bytes 18 µs (a C
//! loop, 2,000 commits). The writer's connection opens its files through
//! this VFS, the checkpointer's through the one below; the readers use
//! SQLite's own.
//!
//! What it changes, and why that is safe:
//! - Writes to a WAL file that follow one another in the file gather in a
//!   buffer (at most [`GATHER_MAX`] bytes) and reach the file together.
//! - The buffer reaches the file before anything that could look at the
//!   file or make it durable: a read, a size, a truncate, a sync, a lock
//!   or a file control on it, its close, and a write elsewhere in it.
//! - And before the database file's shared-memory barrier and locks go
//!   to the default VFS: SQLite publishes a commit to other connections
//!   between two barriers (`walIndexWriteHdr`), whatever the sync setting,
//!   and lets another writer in by unlocking. So no other connection looks
//!   for a frame still in the buffer, and frames of a rolled-back
//!   transaction (spilled to the WAL, then abandoned) reach the file,
//!   past the log's published end, before anyone else may write there,
//!   never after. The WAL file finds its database file when it is opened
//!   (`sqlite3_database_file_object`).
//! - A failed write is reported by the call that flushed it; the buffer
//!   is dropped, and SQLite rolls the transaction back as for any write
//!   error.
//! - Every other call goes to the default VFS unchanged.
//!
//! ## The checkpointer's: the database synced in steps
//!
//! A checkpoint copies a few megabytes of WAL frames into the database
//! file, and the checkpointer syncs it after (see `checkpointer_loop`).
//! One sync of that much held up every other sync on this VM's disk
//! while it lasted: the writer's WAL syncs took 2-6 ms about 3% of the
//! time, and a commit's answers wait for those. The checkpointer's
//! connection now syncs its database file every [`SYNC_STEP`] bytes it
//! writes there: the sync that closes a checkpoint (SQLite's after a
//! whole one, the checkpointer's own after a partial one) finds at most
//! one step's pages left.
//! - A step sync that fails fails the write that asked for it, and with
//!   it the checkpoint: SQLite then counts none of its frames as copied.
//! - After any failed sync of the checkpointer's database file, the file
//!   refuses every later write and sync, and the checkpointer stops: the
//!   kernel reports a failed write back once a file, and a later sync
//!   could succeed over pages that never reached the disk.
//! - Every other call is as for the writer's VFS (its WAL files gather
//!   nothing: the checkpointer writes none).

use std::ffi::{CStr, c_int, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::ffi;

/// The most a WAL buffer holds before it is written out: a large batch's
/// commit goes out in writes of this size. The default VFS takes at most
/// this much in one write: it masks a length with `0x1ffff`, so a write of
/// 256 KiB would write nothing and report a full disk.
const GATHER_MAX: usize = 0x1ffff;

/// Bytes the checkpointer writes into the database file between two
/// syncs of it: 16 pages. A probe of this VM's disk without the server
/// (WAL-like appends synced 800 times a second, audit-like 200, and
/// 2 MB of scattered pages every 80 ms, 60-120 s each): the small syncs'
/// p99 was 0.42 ms alone, 2.86-3.03 ms with the 2 MB synced at once,
/// 0.59 ms with it synced every 64 KiB and 0.95 ms every 256 KiB. On the
/// server, tokenize at 32 connections: p99 2.88-4.14 ms against
/// 5.96-6.91, throughput the same (BENCHMARKS.md).
const SYNC_STEP: usize = 64 * 1024;

/// What a registered VFS does ([`Kind`]), the default VFS it wraps, and
/// counts of its writes to WAL files, of the bytes written to its stepped
/// files and of their syncs that worked (for tests and measurement).
struct Vfs {
    real: *mut ffi::sqlite3_vfs,
    kind: Kind,
    writes: AtomicU64,
    step_bytes: AtomicU64,
    step_syncs: AtomicU64,
    /// Syncs of stepped files fail (tests only).
    #[cfg(test)]
    fail_syncs: std::sync::atomic::AtomicBool,
}

/// Which of the two VFSes a registered one is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The writer's: a commit's WAL frames gather into one write.
    Writer,
    /// The checkpointer's: its database file is synced every
    /// [`SYNC_STEP`] bytes written.
    Checkpointer,
}

/// One open file of these VFSes. SQLite allocates `szOsFile` bytes for it
/// (8-byte aligned): this header, then the default VFS's own file.
#[repr(C)]
struct File {
    /// Must come first: SQLite sees a `sqlite3_file`.
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    vfs: *const Vfs,
    is_wal: bool,
    /// A WAL file of the writer's VFS: its writes gather.
    gathers: bool,
    /// A database file of the checkpointer's VFS: synced in steps.
    steps: bool,
    /// Bytes written since the last sync (stepped files).
    unsynced: usize,
    /// A sync of this stepped file failed: it refuses writes and syncs.
    failed: bool,
    /// Gathered bytes, which belong at `start` in the file.
    buf: Vec<u8>,
    start: i64,
    /// A database file: its open WAL file, flushed before the database
    /// file's shared-memory barrier and locks. A WAL file: its database
    /// file, whose link it clears when it closes (SQLite closes a WAL
    /// before its database file).
    peer: *mut File,
}

const _: () = assert!(std::mem::align_of::<File>() <= 8);

/// Where the default VFS's file starts within ours.
const REAL_OFFSET: usize = std::mem::size_of::<File>().next_multiple_of(16);

/// The name the writer opens its connection with.
pub(super) const NAME: &str = "tokenvault-wal";
const NAME_C: &CStr = c"tokenvault-wal";
/// The name the checkpointer opens its connection with.
const CHECKPOINTER_NAME: &str = "tokenvault-checkpoint";
const CHECKPOINTER_NAME_C: &CStr = c"tokenvault-checkpoint";

/// Registers the writer's VFS once (not as the default VFS); its name,
/// once it is.
pub(super) fn register() -> Result<&'static str, String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| register_as(NAME_C, Kind::Writer).map(|_| ()))
        .clone()
        .map(|()| NAME)
}

/// Registers the checkpointer's VFS once; its name, once it is.
pub(super) fn register_checkpointer() -> Result<&'static str, String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| register_as(CHECKPOINTER_NAME_C, Kind::Checkpointer).map(|_| ()))
        .clone()
        .map(|()| CHECKPOINTER_NAME)
}

/// Registers, under `name`, a checkpointer's VFS whose syncs fail.
#[cfg(test)]
pub(super) fn register_failing(name: &'static CStr) -> Result<&'static str, String> {
    let state = register_as(name, Kind::Checkpointer)?;
    state.fail_syncs.store(true, Ordering::Relaxed);
    name.to_str().map_err(|e| e.to_string())
}

/// Registers a VFS of `kind` under `name`; returns its state.
fn register_as(name: &'static CStr, kind: Kind) -> Result<&'static Vfs, String> {
    // SAFETY: sqlite3_vfs_find initializes SQLite if needed and returns
    // the default VFS, which lives as long as the process.
    let real = unsafe { ffi::sqlite3_vfs_find(std::ptr::null()) };
    if real.is_null() {
        return Err("sqlite has no default VFS".into());
    }
    let state: &'static Vfs = Box::leak(Box::new(Vfs {
        real,
        kind,
        writes: AtomicU64::new(0),
        step_bytes: AtomicU64::new(0),
        step_syncs: AtomicU64::new(0),
        #[cfg(test)]
        fail_syncs: std::sync::atomic::AtomicBool::new(false),
    }));
    // SAFETY: `real` is a valid VFS; the copy keeps every function of it
    // but opening (none of them reads `pAppData`), and lives as long as
    // the process (leaked), as SQLite requires of a registered VFS.
    unsafe {
        let mut vfs: ffi::sqlite3_vfs = std::ptr::read(real);
        vfs.pNext = std::ptr::null_mut();
        vfs.zName = name.as_ptr();
        vfs.pAppData = state as *const Vfs as *mut c_void;
        vfs.szOsFile = c_int::try_from(REAL_OFFSET)
            .ok()
            .and_then(|o| o.checked_add((*real).szOsFile))
            .ok_or("sqlite VFS file size overflows")?;
        vfs.xOpen = Some(x_open);
        let vfs = Box::leak(Box::new(vfs));
        let rc = ffi::sqlite3_vfs_register(vfs, 0);
        if rc != ffi::SQLITE_OK {
            return Err(format!("sqlite VFS registration failed: {rc}"));
        }
    }
    Ok(state)
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

/// Our file behind `f`.
///
/// # Safety
/// `f` is a file this VFS opened and has not closed, and no other
/// reference to it is live.
unsafe fn ours<'a>(f: *mut ffi::sqlite3_file) -> &'a mut File {
    // SAFETY: per the contract; `File` starts with the `sqlite3_file`.
    unsafe { &mut *f.cast::<File>() }
}

/// The default VFS's file and methods behind `file`.
fn real(file: &File) -> (*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods) {
    // SAFETY: `real` was opened by the default VFS, whose methods live as
    // long as the process, and stays open as long as `file`.
    unsafe { (file.real, &*(*file.real).pMethods) }
}

/// Writes out what `file` gathered.
fn flush(file: &mut File) -> c_int {
    if file.buf.is_empty() {
        return ffi::SQLITE_OK;
    }
    let (real, m) = real(file);
    let rc = match m.xWrite {
        // SAFETY: the buffer is `len` readable bytes; `real` is open.
        Some(write) => unsafe {
            write(
                real,
                file.buf.as_ptr().cast(),
                file.buf.len() as c_int,
                file.start,
            )
        },
        None => ffi::SQLITE_IOERR_WRITE,
    };
    // SAFETY: the `Vfs` is leaked: it lives as long as the process.
    unsafe { (*file.vfs).writes.fetch_add(1, Ordering::Relaxed) };
    file.buf.clear();
    rc
}

/// A database file's WAL file goes out first.
fn flush_peer_wal(file: &mut File) -> c_int {
    if file.is_wal || file.peer.is_null() {
        return ffi::SQLITE_OK;
    }
    // SAFETY: the link is set while the WAL file is open and cleared when
    // it closes; SQLite calls the database file's shared-memory methods
    // from outside any method of its WAL file, so no other reference to
    // it is live.
    flush(unsafe { &mut *file.peer })
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    f: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite gives `szOsFile` bytes at `f`, 8-byte aligned, and
    // our VFS's `pAppData` is the leaked `Vfs`.
    unsafe {
        let state = (*vfs).pAppData as *const Vfs;
        let real = f.cast::<u8>().add(REAL_OFFSET).cast::<ffi::sqlite3_file>();
        (*f).pMethods = std::ptr::null();
        (*real).pMethods = std::ptr::null();
        let Some(open) = (*(*state).real).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        let rc = open((*state).real, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // SQLite closes a file whose methods are set even when its
            // open failed; ours are not, so close the real one here.
            if let Some(close) = (*real).pMethods.as_ref().and_then(|m| m.xClose) {
                close(real);
            }
            return rc;
        }
        let is_wal = flags & ffi::SQLITE_OPEN_WAL != 0;
        let kind = (*state).kind;
        // A WAL file's database file, if this VFS opened it too.
        let db = if is_wal && !name.is_null() {
            let db = ffi::sqlite3_database_file_object(name);
            if !db.is_null() && std::ptr::eq((*db).pMethods, &METHODS) {
                db.cast::<File>()
            } else {
                std::ptr::null_mut()
            }
        } else {
            std::ptr::null_mut()
        };
        let file = f.cast::<File>();
        std::ptr::write(
            file,
            File {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                real,
                vfs: state,
                is_wal,
                gathers: is_wal && kind == Kind::Writer,
                steps: flags & ffi::SQLITE_OPEN_MAIN_DB != 0 && kind == Kind::Checkpointer,
                unsynced: 0,
                failed: false,
                buf: Vec::new(),
                start: 0,
                peer: db,
            },
        );
        if !db.is_null() {
            (*db).peer = file;
        }
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn x_close(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file it opened through us, once, and the
    // WAL file before its database file; after this the memory is
    // SQLite's again, so the buffer is dropped here.
    unsafe {
        let file = ours(f);
        let flushed = flush(file);
        if file.is_wal && !file.peer.is_null() {
            (*file.peer).peer = std::ptr::null_mut();
        }
        let (real, m) = real(file);
        let closed = m.xClose.map_or(ffi::SQLITE_OK, |close| close(real));
        std::ptr::drop_in_place(&mut file.buf);
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn x_write(
    f: *mut ffi::sqlite3_file,
    data: *const c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: `f` is ours and open; SQLite gives `amt` readable bytes at
    // `data`.
    unsafe {
        let file = ours(f);
        if file.failed {
            return ffi::SQLITE_IOERR_FSYNC;
        }
        let len = usize::try_from(amt).unwrap_or(0);
        let follows = !file.buf.is_empty() && off == file.start + file.buf.len() as i64;
        if !file.buf.is_empty() && (!follows || file.buf.len() + len > GATHER_MAX) {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if !file.gathers || len > GATHER_MAX {
            let (real, m) = real(file);
            let rc = m
                .xWrite
                .map_or(ffi::SQLITE_IOERR_WRITE, |w| w(real, data, amt, off));
            if rc != ffi::SQLITE_OK || !file.steps {
                return rc;
            }
            (*file.vfs)
                .step_bytes
                .fetch_add(len as u64, Ordering::Relaxed);
            file.unsynced += len;
            if file.unsynced < SYNC_STEP {
                return ffi::SQLITE_OK;
            }
            return sync(file, ffi::SQLITE_SYNC_NORMAL);
        }
        if file.buf.is_empty() {
            file.start = off;
        }
        file.buf
            .extend_from_slice(std::slice::from_raw_parts(data.cast::<u8>(), len));
        ffi::SQLITE_OK
    }
}

/// Syncs `file` through the default VFS; a stepped file that fails to
/// sync refuses every later write and sync.
fn sync(file: &mut File, flags: c_int) -> c_int {
    if file.failed {
        return ffi::SQLITE_IOERR_FSYNC;
    }
    let (real, m) = real(file);
    #[cfg(test)]
    {
        // SAFETY: the `Vfs` is leaked: it lives as long as the process.
        let fail = unsafe { (*file.vfs).fail_syncs.load(Ordering::Relaxed) };
        if file.steps && fail {
            file.failed = true;
            return ffi::SQLITE_IOERR_FSYNC;
        }
    }
    // SAFETY: `real` is open; the flags are SQLite's.
    let rc = m
        .xSync
        .map_or(ffi::SQLITE_IOERR_FSYNC, |s| unsafe { s(real, flags) });
    if rc == ffi::SQLITE_OK {
        file.unsynced = 0;
        if file.steps {
            // SAFETY: the `Vfs` is leaked: it lives as long as the process.
            unsafe { (*file.vfs).step_syncs.fetch_add(1, Ordering::Relaxed) };
        }
    } else {
        file.failed = file.steps;
    }
    rc
}

unsafe extern "C" fn x_sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: `f` is ours and open.
    unsafe {
        let file = ours(f);
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        sync(file, flags)
    }
}

/// Methods that flush this file (and, for a database file, its WAL file
/// when `$peer` says so) first, then call the default VFS's method of the
/// same name with the same arguments.
macro_rules! flush_then {
    ($name:ident, $field:ident, $missing:expr, $peer:expr, ($($arg:ident: $ty:ty),*) -> c_int) => {
        unsafe extern "C" fn $name(f: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: `f` is ours and open; the arguments are SQLite's.
            unsafe {
                let file = ours(f);
                let mut rc = flush(file);
                if rc == ffi::SQLITE_OK && $peer {
                    rc = flush_peer_wal(file);
                }
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                let (real, m) = real(file);
                m.$field.map_or($missing, |g| g(real $(, $arg)*))
            }
        }
    };
}

/// Methods that call the default VFS's method unchanged.
macro_rules! pass {
    ($name:ident, $field:ident, $missing:expr, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        unsafe extern "C" fn $name(f: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            // SAFETY: `f` is ours and open; the arguments are SQLite's.
            unsafe {
                let (real, m) = real(ours(f));
                m.$field.map_or($missing, |g| g(real $(, $arg)*))
            }
        }
    };
}

flush_then!(x_read, xRead, ffi::SQLITE_IOERR_READ, false,
    (buf: *mut c_void, amt: c_int, off: ffi::sqlite3_int64) -> c_int);
flush_then!(x_truncate, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, false,
    (size: ffi::sqlite3_int64) -> c_int);
flush_then!(x_file_size, xFileSize, ffi::SQLITE_IOERR_FSTAT, false,
    (size: *mut ffi::sqlite3_int64) -> c_int);
flush_then!(x_lock, xLock, ffi::SQLITE_IOERR_LOCK, false, (level: c_int) -> c_int);
flush_then!(x_unlock, xUnlock, ffi::SQLITE_IOERR_UNLOCK, false, (level: c_int) -> c_int);
flush_then!(x_check_reserved_lock, xCheckReservedLock, ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
    false, (out: *mut c_int) -> c_int);
flush_then!(x_file_control, xFileControl, ffi::SQLITE_NOTFOUND, false,
    (op: c_int, arg: *mut c_void) -> c_int);
flush_then!(x_shm_lock, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, true,
    (offset: c_int, n: c_int, flags: c_int) -> c_int);
pass!(x_sector_size, xSectorSize, 4096, () -> c_int);
pass!(x_device_characteristics, xDeviceCharacteristics, 0, () -> c_int);
pass!(x_shm_map, xShmMap, ffi::SQLITE_IOERR_SHMMAP,
    (page: c_int, size: c_int, extend: c_int, pp: *mut *mut c_void) -> c_int);
pass!(x_shm_unmap, xShmUnmap, ffi::SQLITE_OK, (delete: c_int) -> c_int);
pass!(x_unfetch, xUnfetch, ffi::SQLITE_OK,
    (off: ffi::sqlite3_int64, p: *mut c_void) -> c_int);

unsafe extern "C" fn x_fetch(
    f: *mut ffi::sqlite3_file,
    off: ffi::sqlite3_int64,
    amt: c_int,
    pp: *mut *mut c_void,
) -> c_int {
    // SAFETY: `f` is ours and open; `pp` is SQLite's out-pointer.
    unsafe {
        let file = ours(f);
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let (real, m) = real(file);
        match m.xFetch {
            Some(fetch) => fetch(real, off, amt, pp),
            None => {
                *pp = std::ptr::null_mut();
                ffi::SQLITE_OK
            }
        }
    }
}

/// The barrier SQLite puts between the two copies of a commit's WAL
/// index header: the WAL's buffer goes out before it, so a commit is in
/// the file before it is published, whatever the sync setting.
unsafe extern "C" fn x_shm_barrier(f: *mut ffi::sqlite3_file) {
    // SAFETY: `f` is ours and open. A barrier cannot report an error.
    // With `synchronous = FULL`, the writer's setting, the WAL's sync
    // before publication has already emptied the buffer and this flush
    // finds nothing; only under a lighter setting, which the store never
    // uses, could a failed write here go unreported.
    unsafe {
        let file = ours(f);
        let _ = flush_peer_wal(file);
        let (real, m) = real(file);
        if let Some(barrier) = m.xShmBarrier {
            barrier(real);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    /// A database whose writer opens through a VFS of this kind registered
    /// under `name` (each test its own, so its write count is its own).
    fn open(
        dir: &std::path::Path,
        name: &'static CStr,
        sync: &str,
    ) -> (Connection, Connection, &'static AtomicU64) {
        let writes = &register_as(name, Kind::Writer).unwrap().writes;
        let path = dir.join("t.db");
        let writer = Connection::open_with_flags_and_vfs(
            &path,
            OpenFlags::default(),
            name.to_str().unwrap(),
        )
        .unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.pragma_update(None, "synchronous", sync).unwrap();
        writer
            .execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
            .unwrap();
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        (writer, reader, writes)
    }

    /// SQLite finds the database at `c` whole.
    fn assert_whole(c: &Connection) {
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    fn count(c: &Connection) -> i64 {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn the_names_are_the_registered_ones() {
        assert_eq!(NAME_C.to_str().unwrap(), NAME);
        assert_eq!(register().unwrap(), NAME);
        assert_eq!(CHECKPOINTER_NAME_C.to_str().unwrap(), CHECKPOINTER_NAME);
        assert_eq!(register_checkpointer().unwrap(), CHECKPOINTER_NAME);
    }

    /// A WAL of `rows` rows of 1,000 bytes, committed by a writer on
    /// SQLite's own VFS (kept open: the last connection to close
    /// checkpoints the WAL), and a checkpointer's connection through the
    /// VFS registered under `name`.
    fn wal_and_checkpointer(
        dir: &std::path::Path,
        name: &'static CStr,
        kind: Kind,
        rows: u32,
    ) -> (Connection, Connection, &'static Vfs) {
        let state = register_as(name, kind).unwrap();
        let path = dir.join("t.db");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer
            .execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
            .unwrap();
        writer
            .execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                 INSERT INTO t (k, v) SELECT printf('k%05d', i), randomblob(1000) FROM n",
                [rows],
            )
            .unwrap();
        let checkpointer = Connection::open_with_flags_and_vfs(
            &path,
            OpenFlags::default(),
            name.to_str().unwrap(),
        )
        .unwrap();
        (writer, checkpointer, state)
    }

    /// (WAL frames, frames copied) of a passive checkpoint on `c`.
    fn checkpoint(c: &Connection) -> rusqlite::Result<(i64, i64)> {
        c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        })
    }

    /// The checkpointer's connection syncs the database file once every
    /// `SYNC_STEP` bytes it copies into it, then once to close the whole
    /// checkpoint, and the copy is whole.
    #[test]
    fn the_checkpointer_syncs_the_database_in_steps() {
        let dir = tempfile::tempdir().unwrap();
        let (_w, c, state) =
            wal_and_checkpointer(dir.path(), c"tv-ckpt-test-steps", Kind::Checkpointer, 1200);
        let (frames, copied) = checkpoint(&c).unwrap();
        assert!(
            frames > 272 && copied == frames,
            "{frames} frames, {copied} copied"
        );
        let bytes = state.step_bytes.load(Ordering::Relaxed) as usize;
        let syncs = state.step_syncs.load(Ordering::Relaxed) as usize;
        // 272 pages (16 x 17) or more: a step of 17 pages would sync
        // fewer times.
        assert!(bytes >= 272 * 4096, "{bytes} bytes copied");
        assert_eq!(
            syncs,
            bytes / SYNC_STEP + 1,
            "{syncs} syncs for {bytes} bytes"
        );
        drop(c);
        let fresh = Connection::open(dir.path().join("t.db")).unwrap();
        assert_eq!(count(&fresh), 1200);
    }

    /// The writer's VFS syncs nothing by itself.
    #[test]
    fn the_writers_vfs_takes_no_steps() {
        let dir = tempfile::tempdir().unwrap();
        let (_w, c, state) =
            wal_and_checkpointer(dir.path(), c"tv-ckpt-test-nosteps", Kind::Writer, 400);
        assert!(checkpoint(&c).unwrap().1 > 100);
        assert_eq!(state.step_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(state.step_syncs.load(Ordering::Relaxed), 0);
    }

    /// A failed step sync fails the checkpoint, which then counts nothing
    /// copied; the file refuses every write and sync after it, even once
    /// syncs work again, and the WAL keeps every row.
    #[test]
    fn a_failed_step_sync_fails_the_checkpoint_and_all_after() {
        let dir = tempfile::tempdir().unwrap();
        let (w, c, state) =
            wal_and_checkpointer(dir.path(), c"tv-ckpt-test-fail", Kind::Checkpointer, 400);
        state.fail_syncs.store(true, Ordering::Relaxed);
        let code =
            |r: rusqlite::Result<(i64, i64)>| r.unwrap_err().sqlite_error().unwrap().extended_code;
        assert_eq!(code(checkpoint(&c)), ffi::SQLITE_IOERR_FSYNC);
        // It failed at the first step.
        assert_eq!(state.step_bytes.load(Ordering::Relaxed) as usize, SYNC_STEP);
        assert_eq!(state.step_syncs.load(Ordering::Relaxed), 0);
        state.fail_syncs.store(false, Ordering::Relaxed);
        assert_eq!(code(checkpoint(&c)), ffi::SQLITE_IOERR_FSYNC);
        assert_eq!(count(&w), 400);
        // Another connection copies all of it, and the rows are whole.
        let other = Connection::open(dir.path().join("t.db")).unwrap();
        let (frames, copied) = checkpoint(&other).unwrap();
        assert_eq!(copied, frames);
        drop((c, other, w));
        let fresh = Connection::open(dir.path().join("t.db")).unwrap();
        assert_eq!(count(&fresh), 400);
        assert_whole(&fresh);
    }

    /// Each commit's frames (a table page, an index page, more as the
    /// tree grows: SQLite's two writes each) reach the file in one write.
    #[test]
    fn a_commit_is_one_write_and_other_connections_see_it() {
        let dir = tempfile::tempdir().unwrap();
        let (w, r, writes) = open(dir.path(), c"tv-wal-test-full", "FULL");
        let before = writes.load(Ordering::Relaxed);
        for i in 0..200u64 {
            w.execute(
                "INSERT INTO t (k, v) VALUES (?1, zeroblob(300))",
                [format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15))],
            )
            .unwrap();
            assert_eq!(count(&r), i as i64 + 1);
        }
        let n = writes.load(Ordering::Relaxed) - before;
        // One write a commit; the WAL's header once more.
        assert!((200..=201).contains(&n), "{n} writes for 200 commits");
    }

    /// With a sync setting that does not sync at commit, the barrier
    /// still sends the buffer out before SQLite publishes the commit.
    #[test]
    fn a_commit_is_visible_without_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (w, r, _) = open(dir.path(), c"tv-wal-test-off", "OFF");
        for i in 0..50 {
            w.execute(
                "INSERT INTO t (k, v) VALUES (?1, randomblob(5000))",
                [format!("k{i}")],
            )
            .unwrap();
            assert_eq!(count(&r), i + 1);
        }
    }

    /// A transaction whose pages spilled to the WAL and that then rolled
    /// back leaves no bytes to be written later: another writer's frames
    /// take those places in the file, and must stay.
    #[test]
    fn a_rolled_back_transaction_leaves_nothing_to_overwrite_another_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (w, _r, _) = open(dir.path(), c"tv-wal-test-rollback", "FULL");
        w.pragma_update(None, "cache_size", 10).unwrap();
        // An empty WAL: undoing the transaction then reads its pages back
        // from the database file, and nothing reads the WAL.
        w.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        w.execute_batch(
            "BEGIN;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 150)
             INSERT INTO t (k, v) SELECT printf('k%05d', i), randomblob(700) FROM n;
             ROLLBACK;",
        )
        .unwrap();
        let other = Connection::open(dir.path().join("t.db")).unwrap();
        other
            .busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        other
            .execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
                 INSERT INTO t (k, v) SELECT printf('o%05d', i), randomblob(500) FROM n;",
            )
            .unwrap();
        w.execute("INSERT INTO t (k, v) VALUES ('last', x'00')", [])
            .unwrap();
        drop((w, other));
        let c = Connection::open(dir.path().join("t.db")).unwrap();
        assert_eq!(count(&c), 101);
        assert_whole(&c);
    }

    /// A commit larger than the buffer goes out in several writes, none
    /// larger than the default VFS takes, and reads back whole, from this
    /// connection (its pages spill to the WAL mid-transaction) and from
    /// another, and from a copy of the files as a crash would leave them.
    #[test]
    fn a_commit_larger_than_the_buffer_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (w, r, writes) = open(dir.path(), c"tv-wal-test-large", "FULL");
        w.pragma_update(None, "cache_size", 50).unwrap();
        let before = writes.load(Ordering::Relaxed);
        w.execute_batch(
            "BEGIN;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
             INSERT INTO t (k, v) SELECT printf('k%05d', i), randomblob(700) FROM n;
             UPDATE t SET v = randomblob(700) WHERE k < 'k00500';
             COMMIT;",
        )
        .unwrap();
        assert!(writes.load(Ordering::Relaxed) - before > 10);
        assert_eq!(count(&w), 2000);
        assert_eq!(count(&r), 2000);
        let copy = dir.path().join("copy");
        std::fs::create_dir(&copy).unwrap();
        for f in ["t.db", "t.db-wal"] {
            std::fs::copy(dir.path().join(f), copy.join(f)).unwrap();
        }
        let c = Connection::open(copy.join("t.db")).unwrap();
        assert_eq!(count(&c), 2000);
        assert_whole(&c);
    }

    /// Syncs this thread made, by kind: this test binary's own `fsync` and
    /// `fdatasync` stand in for libc's for every caller in it (the static
    /// SQLite library's among them), count, and go on to the kernel.
    /// Counted per thread, since the tests run side by side.
    #[cfg(target_os = "linux")]
    mod syncs {
        use std::cell::Cell;
        use std::ffi::c_int;

        thread_local! {
            pub static FULL: Cell<u64> = const { Cell::new(0) };
            pub static DATA: Cell<u64> = const { Cell::new(0) };
        }

        #[unsafe(no_mangle)]
        extern "C" fn fsync(fd: c_int) -> c_int {
            FULL.with(|n| n.set(n.get() + 1));
            // SAFETY: the system call libc's `fsync` makes, with its argument.
            unsafe { libc::syscall(libc::SYS_fsync, libc::c_long::from(fd)) as c_int }
        }

        #[unsafe(no_mangle)]
        extern "C" fn fdatasync(fd: c_int) -> c_int {
            DATA.with(|n| n.set(n.get() + 1));
            // SAFETY: the system call libc's `fdatasync` makes, with its argument.
            unsafe { libc::syscall(libc::SYS_fdatasync, libc::c_long::from(fd)) as c_int }
        }
    }

    /// The WAL's syncs are `fdatasync`s (`.cargo/config.toml` builds SQLite
    /// with `HAVE_FDATASYNC`; without it SQLite calls `fsync`): a commit
    /// rewrites WAL pages in place, and `fsync` also wrote the file's inode
    /// for its new modification time, a second I/O every commit on this
    /// VM's disk. `fdatasync` still writes the inode when the file's size
    /// changes, which a read of the data needs.
    #[cfg(target_os = "linux")]
    #[test]
    fn commits_sync_the_wal_with_fdatasync() {
        let dir = tempfile::tempdir().unwrap();
        let (w, _r, _) = open(dir.path(), c"tv-wal-test-datasync", "FULL");
        let (full, data) = (syncs::FULL.with(|n| n.get()), syncs::DATA.with(|n| n.get()));
        for i in 0..20 {
            w.execute("INSERT INTO t (k, v) VALUES (?1, x'00')", [format!("k{i}")])
                .unwrap();
        }
        let full = syncs::FULL.with(|n| n.get()) - full;
        let data = syncs::DATA.with(|n| n.get()) - data;
        assert_eq!(
            (full, data >= 20),
            (0, true),
            "{full} fsyncs, {data} fdatasyncs"
        );
    }
}
