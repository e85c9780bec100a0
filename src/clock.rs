//! Time as a dependency.
//!
//! TTL expiry and data-key epochs and cache lifetimes all read the clock, and
//! tests must move time forward without sleeping, so every component takes an
//! `Arc<dyn Clock>` instead of calling `SystemTime::now()` itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

/// A source of wall-clock time, injected so tests can control it.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> OffsetDateTime;

    /// Seconds since the Unix epoch, the unit the store persists.
    fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to; for tests of expiry.
#[derive(Debug)]
pub struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    /// Starts at the current wall-clock time so stored timestamps look real.
    pub fn new() -> Arc<Self> {
        let now = OffsetDateTime::now_utc();
        Arc::new(Self {
            millis: AtomicI64::new((now.unix_timestamp_nanos() / 1_000_000) as i64),
        })
    }

    /// Moves time forward by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.millis.fetch_add(seconds * 1000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        let ms = self.millis.load(Ordering::SeqCst);
        OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
            .expect("manual clock within range")
    }
}
