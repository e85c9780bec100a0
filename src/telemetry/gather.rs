//! The logging thread: log lines reach stderr a few at a time, not one
//! system call each.
//!
//! Every request logs a line. `tracing-appender`'s worker woke for each
//! line that found it waiting and wrote what it had each time its queue
//! ran dry: at 17,000 detokenizations/s about 8,500 `write`s and 4,500
//! wake-ups a second, 4–7 µs of CPU a request between the thread and the
//! runtime workers that woke it. This thread, once a line wakes it, lets
//! lines gather for [`GATHER_FOR`] (a send to a thread that is not waiting
//! costs no wake-up) and writes them in one go.
//!
//! Nothing is dropped: the queue holds [`QUEUE_LINES`] lines and logging
//! waits when it is full; should the thread be gone, lines are written
//! straight to the output. A line waits about [`GATHER_FOR`] (longer only
//! while the thread works through a backlog); a process killed outright
//! loses what waits. The guard, dropped as the process ends, waits until
//! what was queued is written, for at most a second.

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long lines gather once one arrives.
pub const GATHER_FOR: Duration = Duration::from_millis(10);

/// Lines the queue holds before logging waits.
pub const QUEUE_LINES: usize = 32 * 1024;

/// How long the guard waits for the thread to write what is queued.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// Bytes written at most in one call.
const WRITE_MAX: usize = 1 << 20;

enum Msg {
    Line(Vec<u8>),
    /// Write what is queued, then say so.
    Flush(SyncSender<()>),
}

/// Where lines go when the thread is gone: the output itself.
type Direct<W> = Arc<Mutex<W>>;

/// The writing side, cloned into every event (a `MakeWriter`).
pub struct Gathering<W: Write + Send + 'static> {
    queue: SyncSender<Msg>,
    direct: Direct<W>,
}

impl<W: Write + Send + 'static> Clone for Gathering<W> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            direct: self.direct.clone(),
        }
    }
}

/// When dropped, waits (at most a second) until the thread wrote every
/// line queued before.
pub struct Guard {
    queue: SyncSender<Msg>,
}

/// Starts the thread writing to `out`.
pub fn start<W: Write + Send + 'static>(
    out: W,
    thread_name: &str,
) -> std::io::Result<(Gathering<W>, Guard)> {
    let (queue, lines) = std::sync::mpsc::sync_channel(QUEUE_LINES);
    let direct = Arc::new(Mutex::new(out));
    let out = direct.clone();
    std::thread::Builder::new()
        .name(thread_name.into())
        .spawn(move || run(lines, &out))?;
    Ok((
        Gathering {
            queue: queue.clone(),
            direct,
        },
        Guard { queue },
    ))
}

fn run<W: Write>(lines: Receiver<Msg>, out: &Mutex<W>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let first = match crate::memory::recv_quiet(
            &lines,
            crate::memory::QUIET_FOR,
            crate::memory::release_thread,
        ) {
            Ok(m) => m,
            Err(_) => return,
        };
        let mut flushed = take(first, &mut buf);
        if flushed.is_none() {
            // Gather: a sender finds this thread asleep, not waiting on the
            // queue, and does not wake it.
            std::thread::sleep(GATHER_FOR);
        }
        while flushed.is_none() {
            match lines.try_recv() {
                Ok(m) => flushed = take(m, &mut buf),
                Err(_) => break,
            }
            if buf.len() >= WRITE_MAX {
                write(out, &mut buf);
            }
        }
        write(out, &mut buf);
        if let Some(done) = flushed {
            // The thread goes on: a line logged after this (the process
            // winding down) is still written.
            let _ = done.send(());
        }
    }
}

/// Adds a line to `buf`, or gives whom to tell once it is written.
fn take(m: Msg, buf: &mut Vec<u8>) -> Option<SyncSender<()>> {
    match m {
        Msg::Line(l) => {
            buf.extend_from_slice(&l);
            None
        }
        Msg::Flush(done) => Some(done),
    }
}

/// A failed write to stderr has nowhere to be reported: the lines go.
fn write<W: Write>(out: &Mutex<W>, buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
    let _ = out.write_all(buf).and_then(|()| out.flush());
    buf.clear();
}

impl<W: Write + Send + 'static> Write for Gathering<W> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        match self.queue.try_send(Msg::Line(line.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(m)) => {
                if let Err(e) = self.queue.send(m) {
                    direct(&self.direct, e.0);
                }
            }
            Err(TrySendError::Disconnected(m)) => direct(&self.direct, m),
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The thread is gone: the line goes straight out.
fn direct<W: Write>(out: &Mutex<W>, m: Msg) {
    if let Msg::Line(l) = m {
        let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.write_all(&l).and_then(|()| out.flush());
    }
}

impl<'a, W: Write + Send + 'static> tracing_subscriber::fmt::MakeWriter<'a> for Gathering<W> {
    type Writer = Gathering<W>;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for Guard {
    /// Never waits past [`FLUSH_WAIT`] in all, even on a full queue whose
    /// output is stuck (a stalled pipe): the process must be able to end.
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + FLUSH_WAIT;
        let (done, written) = std::sync::mpsc::sync_channel(1);
        let mut msg = Msg::Flush(done);
        loop {
            match self.queue.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
        let _ = written.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Lines from several threads come out whole, each thread's in order,
    /// all of them by the time the guard is dropped, and a line logged
    /// after that still comes out.
    #[test]
    fn every_line_comes_out_whole_and_in_order() {
        let out = Shared::default();
        let (w, guard) = start(out.clone(), "log-test").unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        w.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 80_000);
        w.clone().write_all(b"after\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while out.0.lock().unwrap().len() == text.len() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(2));
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        let mut lines = text.lines();
        for line in lines.by_ref().take(80_000) {
            let (t, i) = line.split_once(' ').unwrap();
            let t: usize = t.parse().unwrap();
            assert_eq!(i.parse::<usize>().unwrap(), next[t], "{line}");
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4]);
        assert_eq!(lines.collect::<Vec<_>>(), ["after"]);
    }

    /// A lone line is written without waiting for more: within the gather
    /// period (the test allows a second for a busy machine).
    #[test]
    fn a_lone_line_is_written_soon() {
        let out = Shared::default();
        let (mut w, _guard) = start(out.clone(), "log-test").unwrap();
        w.write_all(b"one\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while out.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"one\n");
    }
}
