//! JSON log lines.
//!
//! Every request writes an access-log line, so formatting is on the hot
//! path. `tracing-subscriber`'s own JSON formatter went through serde and a
//! `Debug` string per field and cost about 19,000 instructions a line
//! (callgrind), as much as a third of a `/healthz` request; [`JsonLines`]
//! writes the same fields straight into the line buffer.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::clock::{Fraction, rfc3339};

/// Installs the JSON log subscriber writing to stderr through a logging
/// thread ([`super::gather`]), and returns the guard that writes what is
/// queued when dropped (waiting up to a second): keep it until the process
/// ends. Written from the request path, each access-log line was a `write`
/// system call on a runtime worker. A regular file gets its pages written
/// out as the log grows ([`super::writeback`]).
pub fn init_stderr_logging() -> std::io::Result<super::gather::Guard> {
    let out = super::writeback::WriteBehind::new(std::io::stderr());
    let (writer, guard) = super::gather::start(out, "log-writer")?;
    init_logging(writer);
    Ok(guard)
}

/// Installs the JSON log subscriber writing to `writer`; `RUST_LOG` filters
/// (default `info`). Safe to call twice: the second call is ignored.
pub fn init_logging<W>(writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .event_format(JsonLines)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
}

/// Logs panics as JSON lines with their location only. The message is
/// dropped: the standard library's own panics quote the data they were
/// given (a slice out of bounds quotes the string), and that data can be a
/// card.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%location, "panic");
    }));
}

/// One JSON object a line: `timestamp` (RFC 3339, UTC, microseconds),
/// `level`, the event's fields (its message as `message`), `target`.
/// Spans are not written: the service puts what a line needs in its
/// fields.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Records of the `log` crate (rustls logs through it) arrive with
        // the target "log" and their own as `log.*` fields: restore them.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        w.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut w, time::OffsetDateTime::now_utc())?;
        write!(w, "\",\"level\":\"{}\"", meta.level())?;
        let mut fields = Fields {
            w: &mut w,
            result: Ok(()),
            skip_log_fields: normalized.is_some(),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str(",\"target\":")?;
        write_string(&mut w, meta.target())?;
        w.write_str("}\n")
    }
}

/// `2026-11-29T01:30:00.123456Z`, made by [`rfc3339`]: through `write!`
/// with seven padded arguments it was about 1,500 instructions, on every
/// access-log line.
fn write_timestamp(w: &mut impl fmt::Write, t: time::OffsetDateTime) -> fmt::Result {
    match rfc3339(t, Fraction::Micros) {
        Some(stamp) => w.write_str(stamp.as_str()),
        None => write!(w, "{}", WrittenOut(t)),
    }
}

/// The timestamp through `write!`, for years of other than four digits
/// (and, in tests, as what the digits by hand must match).
struct WrittenOut(time::OffsetDateTime);

impl fmt::Display for WrittenOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        )
    }
}

/// Writes each field as `,"name":value`; the first error stops the rest.
struct Fields<'a, W> {
    w: &'a mut W,
    result: fmt::Result,
    /// The event came from the `log` crate: its `log.*` fields are in the
    /// normalized metadata already.
    skip_log_fields: bool,
}

impl<W: fmt::Write> Fields<'_, W> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.skip_log_fields && field.name().starts_with("log.") {
            return;
        }
        if self.result.is_ok() {
            self.result = (|| {
                self.w.write_char(',')?;
                write_string(self.w, field.name())?;
                self.w.write_char(':')?;
                value(self.w)
            })();
        }
    }
}

impl<W: fmt::Write> Visit for Fields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |w| write_string(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        if value.is_finite() {
            self.field(field, |w| write!(w, "{value}"));
        } else {
            self.field(field, |w| write!(w, "\"{value}\""));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` fields arrive here too, their `Debug` being `x`'s `Display`.
        self.field(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

fn write_string(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// JSON string escaping over a writer, so a `Display` value is escaped as
/// it is formatted, without a string of its own.
struct Escaped<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let mut start = 0;
        // Runs without an escape go out whole; the test per byte is one
        // table load, on every string of every access-log line.
        for (i, &b) in bytes.iter().enumerate() {
            if !ESCAPE[usize::from(b)] {
                continue;
            }
            self.0.write_str(&s[start..i])?;
            match b {
                b'"' => self.0.write_str("\\\"")?,
                b'\\' => self.0.write_str("\\\\")?,
                b'\n' => self.0.write_str("\\n")?,
                b'\r' => self.0.write_str("\\r")?,
                b'\t' => self.0.write_str("\\t")?,
                _ => write!(self.0, "\\u{b:04x}")?,
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

/// Bytes a JSON string cannot hold as they are: quote, backslash, control
/// characters and DEL.
static ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0x7f] = true;
    t
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines_of(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let buf = Buf::default();
        let b = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || b.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// rustls logs through the `log` crate: its lines keep their own
    /// target and carry no `log.*` fields.
    #[test]
    fn a_log_crate_record_keeps_its_target() {
        let v = lines_of(|| {
            tracing_log::format_trace(
                &log::Record::builder()
                    .target("rustls::server::hs")
                    .level(log::Level::Warn)
                    .args(format_args!("no ALPN match"))
                    .build(),
            )
            .unwrap();
        });
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["target"], "rustls::server::hs");
        assert_eq!(v[0]["level"], "WARN");
        assert_eq!(v[0]["message"], "no ALPN match");
        let keys: Vec<&String> = v[0].as_object().unwrap().keys().collect();
        assert!(keys.iter().all(|k| !k.starts_with("log.")), "{keys:?}");
    }

    #[test]
    fn timestamps_by_hand_match_the_formatted_ones() {
        use time::macros::datetime;
        let mut t = datetime!(2026-11-29 01:30:00.000123 UTC);
        let check = |t: time::OffsetDateTime| {
            let mut s = String::new();
            write_timestamp(&mut s, t).unwrap();
            assert_eq!(s, WrittenOut(t).to_string());
            s
        };
        assert_eq!(check(t), "2026-11-29T01:30:00.000123Z");
        // Every field's digits, over a few thousand steps of odd length.
        for _ in 0..5000 {
            t += time::Duration::new(86_399 * 3 + 7_261, 987_654_321);
            check(t);
        }
        assert_eq!(
            check(datetime!(0001-01-01 00:00:00 UTC)),
            "0001-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            check(datetime!(9999-12-31 23:59:59.999999 UTC)),
            "9999-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let lines = lines_of(|| {
            let err = "quote \" backslash \\ newline \n bell \u{7} é";
            tracing::warn!(
                route = "/tokenize",
                status = 503u16,
                delta = -4i64,
                ok = false,
                ratio = 0.5f64,
                nan = f64::NAN,
                error = %err,
                "store down"
            );
        });
        assert_eq!(lines.len(), 1);
        let v = &lines[0];
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "store down");
        assert_eq!(v["route"], "/tokenize");
        assert_eq!(v["status"], 503);
        assert_eq!(v["delta"], -4);
        assert_eq!(v["ok"], false);
        assert_eq!(v["ratio"], 0.5);
        assert_eq!(v["nan"], "NaN");
        assert_eq!(v["error"], "quote \" backslash \\ newline \n bell \u{7} é");
        assert!(v["target"].as_str().unwrap().contains("telemetry"));
        assert!(v.get("log.target").is_none());
        let ts = v["timestamp"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
            "{ts}"
        );
    }

    /// Every character a string can hold comes back from the JSON text
    /// written for it, alone or among others.
    #[test]
    fn escaped_strings_read_back_as_they_were() {
        let all: String = (0u8..=127)
            .map(char::from)
            .chain(['é', '€', '😀'])
            .collect();
        let mut cases: Vec<String> = all.chars().map(String::from).collect();
        cases.push(all.clone());
        cases.push(format!("a{all}b{all}"));
        cases.push(String::new());
        for s in cases {
            let mut out = String::new();
            write_string(&mut out, &s).unwrap();
            assert!(!out.bytes().any(|b| b < 0x20 || b == 0x7f), "{out:?}");
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s, "{out}");
        }
    }
}
