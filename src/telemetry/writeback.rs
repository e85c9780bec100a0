//! Write-behind for the log when stderr is a regular file.
//!
//! Every request logs a line of about 240 bytes: at 70,000 requests/s
//! about 17 MB/s of log. Written to a file, those pages sat in the page
//! cache until the kernel's flusher took them, 30 seconds later
//! (`vm.dirty_expire_centisecs`), a few hundred megabytes at a time after
//! a busy minute, and the vault's WAL fsyncs queued behind that burst.
//! After the documented benchmark sequence the open loop at 5,000
//! tokenizations/s had a p99 of 18.4 and 30.1 ms in two runs of three
//! with the log in a file, and 2.3-3.5 ms in three runs with it thrown
//! away (BENCHMARKS.md). So once [`WRITEBACK_STEP`] bytes are written,
//! the log's own thread asks the kernel to start writing them out
//! (`sync_file_range`, which does not wait for the disk, though queuing
//! the writes can block briefly): the log reaches the disk a little at a
//! time, as it is written. Six alternating pairs of that sequence: p99
//! 1.82-5.07 ms against 2.41-65.00, the largest latency 5.5-48.7 ms
//! against 7.4-107.3, and detokenize, run 16 seconds in,
//! 22,139-25,784/s against 18,946-25,171. A pipe, a socket or a terminal
//! has no pages to write: nothing is asked of it.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};

/// Bytes written between two requests to start writeback.
pub const WRITEBACK_STEP: usize = 256 * 1024;

/// An output that starts the writeback of what was written to it, every
/// [`WRITEBACK_STEP`] bytes, on `flush`, if it is a regular file.
pub struct WriteBehind<W> {
    out: W,
    /// Whether `out` is a regular file, found once.
    regular_file: bool,
    /// Written to a regular file since writeback was last started.
    unstarted: usize,
    /// Times the kernel took a request to start writeback, for the tests.
    started: usize,
}

impl<W: Write + AsFd> WriteBehind<W> {
    /// Wraps `out`. Whether it is a regular file is asked once, through a
    /// duplicate descriptor dropped straight after; should that fail, the
    /// log goes on as it was, with no writeback asked.
    pub fn new(out: W) -> Self {
        let regular_file = out
            .as_fd()
            .try_clone_to_owned()
            .map(std::fs::File::from)
            .and_then(|f| f.metadata())
            .is_ok_and(|m| m.file_type().is_file());
        Self {
            out,
            regular_file,
            unstarted: 0,
            started: 0,
        }
    }
}

impl<W: Write + AsFd> Write for WriteBehind<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        if self.regular_file {
            self.unstarted += n;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        if self.unstarted >= WRITEBACK_STEP {
            self.unstarted = 0;
            if start_writeback(self.out.as_fd()) {
                self.started += 1;
            }
        }
        Ok(())
    }
}

/// Asks the kernel to start writing the file's dirty pages out, without
/// waiting for the disk. A failure changes nothing the log needs.
#[cfg(target_os = "linux")]
fn start_writeback(file: BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: an open descriptor, borrowed for the call; offset and length
    // 0 mean the whole file; the call writes no memory of ours.
    unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: BorrowedFd<'_>) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Into a regular file: every byte arrives, and writeback is started
    /// once each step's worth is written, on the flush after it (this
    /// checks the stepping, and that the kernel took each request).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_gets_writeback_started_every_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut w = WriteBehind::new(std::fs::File::create(&path).unwrap());
        let line = vec![b'x'; 1000];
        let mut written = 0;
        let put = |w: &mut WriteBehind<std::fs::File>, flush: bool| {
            w.write_all(&line).unwrap();
            if flush {
                w.flush().unwrap();
            }
            line.len()
        };
        while written < WRITEBACK_STEP - line.len() {
            written += put(&mut w, true);
        }
        assert_eq!(w.started, 0, "started before a step was written");
        written += put(&mut w, false);
        written += put(&mut w, false);
        assert_eq!(w.started, 0, "started before the flush");
        w.flush().unwrap();
        assert_eq!(w.started, 1);
        w.flush().unwrap();
        assert_eq!(w.started, 1, "started again with nothing new");
        for _ in 0..WRITEBACK_STEP / line.len() + 1 {
            written += put(&mut w, true);
        }
        assert_eq!(w.started, 2, "a second step");
        drop(w);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, written);
    }

    /// A socket (as a pipe or a terminal) has no pages: nothing is asked
    /// of it, nothing is counted, and every byte still arrives.
    #[test]
    fn a_socket_gets_no_writeback() {
        use std::io::Read;
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut w = WriteBehind::new(a);
        assert!(!w.regular_file);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got.len()
        });
        let chunk = vec![b'y'; 64 * 1024];
        for _ in 0..8 {
            w.write_all(&chunk).unwrap();
            w.flush().unwrap();
        }
        assert_eq!((w.started, w.unstarted), (0, 0));
        drop(w);
        assert_eq!(reader.join().unwrap(), 8 * chunk.len());
    }
}
