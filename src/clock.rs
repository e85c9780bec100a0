//! Time as a dependency.
//!
//! TTL expiry and data-key epochs and cache lifetimes all read the clock, and
//! tests must move time forward without sleeping, so every component takes an
//! `Arc<dyn Clock>` instead of calling `SystemTime::now()` itself. Times
//! leave as RFC 3339 text through [`rfc3339`].

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

/// How much of a second [`rfc3339`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fraction {
    /// Always six digits (the access log's lines line up).
    Micros,
    /// Nanoseconds without their trailing zeros, and no fraction at all
    /// for a whole second: what `time`'s `Rfc3339` writes, which audit
    /// lines and answers have always had.
    Trimmed,
}

/// RFC 3339 text of an instant, in UTC, held without an allocation.
#[derive(Clone, Copy)]
pub struct Stamp {
    buf: [u8; 30],
    len: u8,
}

impl Stamp {
    pub fn as_str(&self) -> &str {
        // ASCII digits and separators only.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// `t` in UTC as RFC 3339 (`2026-11-29T01:30:00.123456Z`), its digits put
/// in place by hand: through `time`'s formatter or `write!` it was about
/// 1,500 instructions, and every access-log line, audit event and
/// tokenization answer has one. `None` for a year RFC 3339 cannot write
/// (before 0 or after 9999).
pub fn rfc3339(t: OffsetDateTime, fraction: Fraction) -> Option<Stamp> {
    let t = t.checked_to_offset(time::UtcOffset::UTC)?;
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut buf = *b"0000-00-00T00:00:00.000000000Z";
    let mut put = |at: usize, width: usize, mut n: u32| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, u32::from(u8::from(t.month())));
    put(8, 2, u32::from(t.day()));
    put(11, 2, u32::from(t.hour()));
    put(14, 2, u32::from(t.minute()));
    put(17, 2, u32::from(t.second()));
    let end = match fraction {
        Fraction::Micros => {
            put(20, 6, t.microsecond());
            26
        }
        Fraction::Trimmed => {
            let mut nanos = t.nanosecond();
            if nanos == 0 {
                19
            } else {
                let mut digits = 9;
                while nanos.is_multiple_of(10) {
                    nanos /= 10;
                    digits -= 1;
                }
                put(20, digits, nanos);
                20 + digits
            }
        }
    };
    buf[end] = b'Z';
    Some(Stamp {
        buf,
        len: end as u8 + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    /// The digits by hand are `time`'s own RFC 3339 text, fraction
    /// trimmed as it trims it, over every field's digits.
    #[test]
    fn stamps_are_what_the_formatter_writes() {
        use time::macros::datetime;
        let check = |t: OffsetDateTime| {
            let got = rfc3339(t, Fraction::Trimmed).unwrap();
            assert_eq!(got.as_str(), t.format(&Rfc3339).unwrap());
            let micros = rfc3339(t, Fraction::Micros).unwrap();
            assert_eq!(
                micros.as_str(),
                format!("{}.{:06}Z", &got.as_str()[..19], t.nanosecond() / 1000)
            );
        };
        let mut t = datetime!(2026-11-29 01:30:00 UTC);
        check(t);
        for step in [1, 10, 1_000, 120_000_000, 987_654_321] {
            for _ in 0..2000 {
                t += time::Duration::new(86_399 * 3 + 7_261, step);
                check(t);
            }
        }
        check(datetime!(0000-01-01 00:00:00 UTC));
        check(datetime!(9999-12-31 23:59:59.999999999 UTC));
        let east = datetime!(2026-11-29 01:30:00.5 +02:00);
        assert_eq!(
            rfc3339(east, Fraction::Trimmed).unwrap().as_str(),
            "2026-11-28T23:30:00.5Z"
        );
    }
}
