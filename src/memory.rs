//! Giving memory back to the system when the server goes quiet.
//!
//! Under load the allocator's heaps (mimalloc, one per thread) and
//! SQLite's page caches (glibc's malloc) grow to tens of megabytes, and
//! keep them after the load is gone: mimalloc purges a free page only
//! when the thread that owns it allocates again, and an idle thread does
//! not. So a thread that has had nothing to do for [`QUIET_FOR`] gives
//! back what it holds, once a quiet spell:
//! - threads of our own (SQLite's writer and readers, the audit writer,
//!   the log writer) from their receive loops, through [`recv_quiet`] or
//!   a [`Spell`];
//! - the runtime's workers from the runtime's park hook, when
//!   [`janitor`] asks after a spell with no requests ([`Workers`]).
//!
//! The server also runs on small pages only ([`small_pages_only`]): a
//! huge page is resident whole while any of its 2 MiB is in use.
//!
//! A thread releases only on its own idle time, though others may be busy
//! (the SQLite writer during read-only traffic, say), and `malloc_trim`
//! walks every glibc arena. Nothing here changes what a request sees: a
//! released page cache is read back from the operating system's on the
//! next read.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvError, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long a thread (or the whole server, for the runtime's workers)
/// has nothing to do before it gives memory back. Long enough that a
/// pause between bursts does not pay for refilling caches; short enough
/// that an operator watching RSS after a load test sees it fall.
pub const QUIET_FOR: Duration = Duration::from_secs(2);

/// Keeps the process on 4 KiB pages. mimalloc asks for transparent huge
/// pages over its whole 1 GiB arena (`MADV_HUGEPAGE`), so wherever the
/// kernel grants them (its `madvise` and `always` modes) it backs each
/// 2 MiB range the arena touches with a whole huge page: at the first
/// touch, and again when khugepaged collapses a range [`release_thread`]
/// had partly purged (with `max_ptes_none` at its default, 511, one
/// resident 4 KiB page is enough). The documented commands
/// (BENCHMARKS-history.md, eleventh session), five runs with huge pages and six
/// without: idle RSS after them 37.5-39.4 MB against 26.0-28.4 MB, peak
/// 101.3-126.7 MB against 58.2-75.1 MB. Throughput moved within the VM's
/// noise, except perhaps detokenize: 4.8% lower on average over fourteen
/// alternating pairs, lower in nine. The flag covers the whole process
/// and what it starts (a credential helper the AWS SDK runs, say);
/// pages faulted before `main` (mimalloc's first 4 MB) keep their size.
pub fn small_pages_only() {
    #[cfg(target_os = "linux")]
    // SAFETY: `PR_SET_THP_DISABLE` takes integers only (passed as the
    // `unsigned long`s the kernel reads) and sets a flag of the calling
    // process; a kernel without it answers EINVAL, and the process then
    // runs as before.
    unsafe {
        let (on, unused) = (1 as libc::c_ulong, 0 as libc::c_ulong);
        libc::prctl(libc::PR_SET_THP_DISABLE, on, unused, unused, unused);
    }
}

/// Gives back the free pages of the calling thread's allocator heap.
/// `mi_collect` is a no-op for a heap that holds nothing, and harmless
/// where mimalloc is not the global allocator (the library's tests).
pub fn release_thread() {
    // SAFETY: `mi_collect` takes no pointers; it walks the calling
    // thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Gives back glibc's free memory, where SQLite allocates: its caches,
/// once shrunk, stay with glibc's arenas otherwise.
pub fn trim_system_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Receives from `rx`; when nothing comes for `quiet`, runs `on_quiet`
/// once and then waits without a timeout, so an idle thread does not
/// wake again until there is work.
pub fn recv_quiet<T>(
    rx: &Receiver<T>,
    quiet: Duration,
    on_quiet: impl FnOnce(),
) -> Result<T, RecvError> {
    match rx.recv_timeout(quiet) {
        Ok(v) => Ok(v),
        Err(RecvTimeoutError::Disconnected) => Err(RecvError),
        Err(RecvTimeoutError::Timeout) => {
            on_quiet();
            rx.recv()
        }
    }
}

/// One quiet spell of a thread that wakes on a period whether or not
/// there is work (the audit writer): says when to give memory back, once
/// a spell. Time comes in as an argument, for the tests.
#[derive(Debug, Default)]
pub struct Spell {
    since: Option<Instant>,
    released: bool,
}

impl Spell {
    /// The thread did some work: a new spell starts at its next quiet
    /// wake-up.
    pub fn busy(&mut self) {
        self.since = None;
        self.released = false;
    }

    /// The thread woke at `now` and found nothing to do: true once a
    /// spell, when the spell has lasted `quiet`.
    pub fn quiet(&mut self, now: Instant, quiet: Duration) -> bool {
        let since = *self.since.get_or_insert(now);
        if self.released || now.saturating_duration_since(since) < quiet {
            return false;
        }
        self.released = true;
        true
    }
}

/// Requests seen, for the janitor to tell a quiet spell. One relaxed
/// increment a request.
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Counts a request (the access-log middleware calls this, for all but
/// health probes: a load balancer probing every second would otherwise
/// keep the server from ever being quiet).
pub fn note_request() {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
}

/// Requests seen since the start.
pub fn requests() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

/// The runtime's workers, asked to give memory back. A worker can only
/// release its own heap, and only when it is not running a task: it does
/// so in the park hook, the first time it parks after an ask.
#[derive(Debug)]
pub struct Workers {
    count: usize,
    /// Bumped by each ask.
    asked: AtomicU64,
    /// Workers that released since the last ask.
    answered: AtomicUsize,
}

thread_local! {
    /// The last ask this worker answered.
    static ANSWERED: Cell<u64> = const { Cell::new(0) };
}

impl Workers {
    /// For a runtime of `count` workers.
    pub fn new(count: usize) -> Arc<Self> {
        Arc::new(Self {
            count: count.max(1),
            asked: AtomicU64::new(0),
            answered: AtomicUsize::new(0),
        })
    }

    /// A multi-thread runtime builder with this many workers and the park
    /// hook that answers asks.
    pub fn runtime(self: &Arc<Self>) -> tokio::runtime::Builder {
        let me = self.clone();
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(self.count)
            .enable_all()
            .on_thread_park(move || me.on_park());
        b
    }

    /// The park hook: one atomic load when there is no new ask, which is
    /// every park under load. It runs before the worker counts as parked,
    /// so work arriving during a release waits for it (a few hundred
    /// microseconds, once a quiet spell).
    fn on_park(&self) {
        let asked = self.asked.load(Ordering::Acquire);
        if ANSWERED.get() == asked {
            return;
        }
        ANSWERED.set(asked);
        release_thread();
        self.answered.fetch_add(1, Ordering::AcqRel);
    }

    /// Asks every worker to release at its next park. A worker answering
    /// the previous ask as this one starts may be counted for it: the
    /// janitor then stops waking early, and that worker releases at the
    /// next spell instead.
    pub fn ask(&self) {
        self.answered.store(0, Ordering::Release);
        self.asked.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether every worker answered the last ask.
    pub fn all_answered(&self) -> bool {
        self.answered.load(Ordering::Acquire) >= self.count
    }

    /// Workers that answered the last ask.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Acquire)
    }

    /// Gets parked workers to wake and park again: a spawned task that
    /// finds the spawner's slot taken is queued, and a queued task wakes a
    /// parked worker to steal it when none is already searching. Which
    /// worker wakes is tokio's choice, so the janitor tries a few times.
    /// Must run inside the runtime.
    pub fn wake(&self) {
        for _ in 0..2 * self.count {
            tokio::spawn(async {});
        }
    }
}

/// The janitor's decisions, apart from time and the runtime.
#[derive(Debug, Default)]
pub struct Quiet {
    /// Requests seen at the last tick.
    last: Option<u64>,
    /// Requests seen when the workers were last asked.
    asked_at: Option<u64>,
}

impl Quiet {
    /// A tick seeing `requests` so far: true when the workers should be
    /// asked (no request since the last tick, and none since the last ask
    /// either: one ask a spell).
    pub fn tick(&mut self, requests: u64) -> bool {
        let quiet = self.last == Some(requests);
        self.last = Some(requests);
        if !quiet || self.asked_at == Some(requests) {
            return false;
        }
        self.asked_at = Some(requests);
        true
    }
}

/// Ticks an ask keeps waking workers that have not answered: tokio wakes
/// the most recently parked worker first, and on a many-core machine some
/// may not wake at all; an idle server should not spawn tasks forever.
const WAKE_TICKS: u32 = 3;

/// Asks the runtime's workers to give memory back after each spell of
/// `period` with no request (counted by `requests`), and wakes the ones
/// that have not answered for up to [`WAKE_TICKS`] ticks. Runs until
/// aborted.
pub async fn janitor(workers: Arc<Workers>, requests: impl Fn() -> u64, period: Duration) {
    let mut quiet = Quiet::default();
    let mut wakes_left = 0;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if quiet.tick(requests()) {
            workers.ask();
            wakes_left = WAKE_TICKS;
        }
        if wakes_left > 0 && !workers.all_answered() {
            wakes_left -= 1;
            workers.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recv_quiet_releases_once_after_the_quiet_period_then_waits() {
        let (tx, rx) = std::sync::mpsc::channel();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            tx.send(7).unwrap();
            tx
        });
        let mut released = 0;
        let got = recv_quiet(&rx, Duration::from_millis(20), || released += 1);
        assert_eq!(got, Ok(7));
        assert_eq!(released, 1, "released once, then waited without a timeout");

        let tx = sender.join().unwrap();
        tx.send(8).unwrap();
        let got = recv_quiet(&rx, Duration::from_secs(60), || released += 1);
        assert_eq!(got, Ok(8));
        assert_eq!(released, 1, "a message waiting: no release");

        drop(tx);
        assert_eq!(
            recv_quiet(&rx, Duration::from_millis(1), || ()),
            Err(RecvError)
        );
    }

    #[test]
    fn a_spell_releases_once_after_lasting_the_quiet_period() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut spell = Spell::default();
        assert!(!spell.quiet(t0, 2 * s), "the spell starts");
        assert!(!spell.quiet(t0 + s, 2 * s), "not long enough");
        assert!(spell.quiet(t0 + 2 * s, 2 * s), "long enough");
        assert!(!spell.quiet(t0 + 3 * s, 2 * s), "once a spell");
        spell.busy();
        assert!(!spell.quiet(t0 + 10 * s, 2 * s), "a new spell starts");
        assert!(!spell.quiet(t0 + 11 * s, 2 * s));
        assert!(spell.quiet(t0 + 12 * s, 2 * s));
    }

    #[test]
    fn the_janitor_asks_once_a_spell_with_no_requests() {
        let mut q = Quiet::default();
        assert!(!q.tick(0), "the first tick only looks");
        assert!(q.tick(0), "a period with no request");
        assert!(!q.tick(0), "once a spell");
        assert!(!q.tick(5), "requests came");
        assert!(!q.tick(9), "still coming");
        assert!(q.tick(9), "quiet again");
        assert!(!q.tick(9));
    }

    #[test]
    fn every_worker_answers_an_ask_at_its_next_park() {
        let workers = Workers::new(2);
        let rt = workers.runtime().build().unwrap();
        rt.block_on(async {
            // Both workers run and park before any ask: nothing to answer.
            let busy: Vec<_> = (0..8).map(|_| tokio::spawn(async {})).collect();
            for b in busy {
                b.await.unwrap();
            }
            assert_eq!(workers.answered(), 0);

            workers.ask();
            let waker = workers.clone();
            for _ in 0..500 {
                if workers.all_answered() {
                    break;
                }
                // From a task, as the janitor does.
                let w = waker.clone();
                tokio::spawn(async move { w.wake() }).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(workers.answered(), 2, "each worker answers once");
        });
    }

    #[test]
    fn a_worker_answers_an_ask_once() {
        let workers = Workers::new(2);
        workers.on_park();
        assert_eq!(workers.answered(), 0, "no ask yet");
        workers.ask();
        workers.on_park();
        workers.on_park();
        assert_eq!(workers.answered(), 1, "once for one ask");
        assert!(!workers.all_answered());
        workers.ask();
        assert_eq!(workers.answered(), 0, "a new ask");
        workers.on_park();
        assert_eq!(workers.answered(), 1);
    }
}
