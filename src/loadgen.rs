//! `tokenvault bench`: drives a running vault over TLS with N keep-alive
//! connections and prints throughput and latency percentiles.
//!
//! Closed loop by default (each connection sends its next request when the
//! answer to the last arrives: the most the server takes). With `--rate R`
//! it is open loop: requests are due at a fixed pace, kept by a thread of
//! its own (`pace`), and latency counts from when a request was due, not
//! when it went out, so a stalled server is not hidden by a stalled
//! client (coordinated omission).
//!
//! The load tool shares the machine with the server, so what it spends is
//! taken from the server. Each connection speaks HTTP/1.1 itself over
//! tokio-rustls, one write a request and no parsing beyond the status and
//! `Content-Length`: with reqwest the tool spent 67 µs of CPU a `/healthz`
//! request, more than the server did.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_rustls::client::TlsStream;

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Healthz,
    Tokenize,
    /// One request of `batch` cards.
    TokenizeBatch,
    Detokenize,
    /// One request of `batch` tokens.
    DetokenizeBatch,
}

impl Op {
    /// Whether the operation needs tokens made first.
    fn detokenizes(self) -> bool {
        matches!(self, Op::Detokenize | Op::DetokenizeBatch)
    }

    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "healthz" => Op::Healthz,
            "tokenize" => Op::Tokenize,
            "tokenize-batch" => Op::TokenizeBatch,
            "detokenize" => Op::Detokenize,
            "detokenize-batch" => Op::DetokenizeBatch,
            _ => return None,
        })
    }
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// (operation, weight): each request picks one by weight.
    pub mix: Vec<(Op, u32)>,
    pub connections: usize,
    pub duration: Duration,
    /// Open loop at this many requests a second (all connections).
    pub rate: Option<u64>,
    /// Items per batch request: cards to tokenize, tokens to detokenize.
    pub batch: usize,
    /// Tokens made first for the detokenize operations.
    pub prepare: usize,
}

/// A run's figures.
#[derive(Debug, Clone)]
pub struct Report {
    pub requests: u64,
    pub errors: u64,
    /// Items answered without a problem: cards tokenized and tokens
    /// detokenized, each item of a batch counted.
    pub items: u64,
    /// Open loop: requests due that a connection, still busy, had not sent
    /// when the run ended. Their wait until then counts in the latency (a
    /// server that fell behind is not flattered by the requests it never
    /// saw); they are not counted in `requests`.
    pub unsent: u64,
    pub seconds: f64,
    /// Latency percentiles in microseconds: p50, p90, p99, p99.9, max.
    pub latency_us: [u64; 5],
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [p50, p90, p99, p999, max] = self.latency_us.map(|u| u as f64 / 1000.0);
        writeln!(
            f,
            "{} requests in {:.1} s: {:.0} requests/s, {:.0} items/s, {} errors",
            self.requests,
            self.seconds,
            self.requests as f64 / self.seconds,
            self.items as f64 / self.seconds,
            self.errors
        )?;
        write!(
            f,
            "latency ms: p50 {p50:.2}  p90 {p90:.2}  p99 {p99:.2}  p99.9 {p999:.2}  max {max:.2}"
        )?;
        if self.unsent > 0 {
            write!(
                f,
                "\n{} requests were due but not yet sent when the run ended: \
                 the server fell behind the rate (their wait is in the latency)",
                self.unsent
            )?;
        }
        Ok(())
    }
}

/// A valid Visa test number from a counter: `4`, 14 digits, Luhn digit.
pub fn test_card(i: u64) -> String {
    let body = format!("4{:014}", i % 100_000_000_000_000);
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(k, c)| {
            let d = u32::from(c - b'0');
            if k % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// Where the server is: `https://host[:port][/base]`.
#[derive(Debug, Clone)]
struct Target {
    /// Connected to and named in TLS (no brackets for IPv6).
    host: String,
    port: u16,
    /// As the URL gave it, for the `Host` header.
    authority: String,
    /// Path prefix before each route, no trailing slash.
    base: String,
    tls: Arc<rustls::ClientConfig>,
}

impl Target {
    fn parse(url: &str, tls: rustls::ClientConfig) -> anyhow::Result<Target> {
        let rest = url
            .strip_prefix("https://")
            .context("the bench speaks HTTPS only: give --url https://host[:port]")?;
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        // `[v6]:port`, `[v6]`, `host:port` or `host`.
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (h, rest) = v6.split_once(']').context("--url: no closing ]")?;
                let port = match rest {
                    "" => None,
                    p => Some(p.strip_prefix(':').context("--url: junk after ]")?),
                };
                (h, port)
            }
            None => match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let port = port
            .map_or(Ok(443), str::parse)
            .context("--url: bad port")?;
        anyhow::ensure!(!host.is_empty(), "--url names no host");
        let mut tls = tls;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Target {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            base: base.to_owned(),
            tls: Arc::new(tls),
        })
    }

    /// Sends one request on `conn`, opening a connection first if there is
    /// none. A kept-alive connection the server has meanwhile closed (its
    /// idle timeout) fails before any answer byte: that request is sent
    /// once more on a new connection. A connection that failed, or that the
    /// answer says is closing, is dropped.
    async fn exchange(
        &self,
        conn: &mut Option<Conn>,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut retried = false;
        loop {
            let reused = conn.is_some();
            let once = async {
                if conn.is_none() {
                    *conn = Some(Conn::open(self).await?);
                }
                let c = conn.as_mut().expect("opened above");
                c.request(self, method, path, bearer, body).await
            };
            let failed = match tokio::time::timeout(ANSWER_TIMEOUT, once).await {
                Ok(Ok(a)) => {
                    if a.close {
                        *conn = None;
                    }
                    return Ok((a.status, a.body));
                }
                Ok(Err(e)) => e,
                Err(_) => anyhow::anyhow!("no answer within {ANSWER_TIMEOUT:?}"),
            };
            let stale = reused && conn.as_ref().is_some_and(|c| !c.received);
            *conn = None;
            if retried || !stale {
                return Err(failed);
            }
            retried = true;
        }
    }
}

/// Latencies each connection has room for before its buffer grows.
const LATENCIES_PER_CONN: usize = 1 << 16;

/// How long one request (with its connection's opening) may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// One answer.
struct Answer {
    status: u16,
    body: Vec<u8>,
    /// The server said `Connection: close`.
    close: bool,
}

/// Longest answer head the bench reads.
const MAX_HEAD: usize = 16 * 1024;

/// One keep-alive HTTP/1.1 connection over TLS.
struct Conn {
    stream: TlsStream<TcpStream>,
    /// Bytes read past the last answer (none with one request in flight,
    /// but a server may send early).
    buf: Vec<u8>,
    /// The request being written, reused.
    out: Vec<u8>,
    /// Whether any byte of the current answer has arrived.
    received: bool,
}

impl Conn {
    async fn open(t: &Target) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect((t.host.as_str(), t.port)).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from(t.host.clone())?;
        let stream = tokio_rustls::TlsConnector::from(t.tls.clone())
            .connect(name, tcp)
            .await?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            out: Vec::with_capacity(1024),
            received: false,
        })
    }

    /// Sends one request and reads its answer.
    async fn request(
        &mut self,
        t: &Target,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> anyhow::Result<Answer> {
        self.out.clear();
        self.received = !self.buf.is_empty();
        use std::io::Write as _;
        write!(
            self.out,
            "{method} {}{path} HTTP/1.1\r\nhost: {}\r\n",
            t.base, t.authority
        )?;
        if let Some(b) = bearer {
            write!(self.out, "authorization: Bearer {b}\r\n")?;
        }
        if !body.is_empty() {
            write!(
                self.out,
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            )?;
        }
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(body);
        self.stream.write_all(&self.out).await?;
        self.stream.flush().await?;
        // The head.
        let head_end = loop {
            if let Some(i) = memchr::memmem::find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            anyhow::ensure!(self.buf.len() < MAX_HEAD, "answer head too long");
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("answer head not UTF-8")?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no status line")?;
        let mut length = None;
        let mut close = false;
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .trim()
                        .parse::<usize>()
                        .context("bad content-length")?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                anyhow::bail!("the bench reads Content-Length answers only");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.trim().eq_ignore_ascii_case("close");
            }
        }
        let length = length.unwrap_or(0);
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        Ok(Answer {
            status,
            body,
            close,
        })
    }

    /// Reads what has arrived into the spare capacity of `buf`: a zeroed
    /// 8 KiB array per read was 2.5% of the tool's CPU.
    async fn fill(&mut self) -> anyhow::Result<()> {
        self.buf.reserve(8192);
        let n = self.stream.read_buf(&mut self.buf).await?;
        anyhow::ensure!(n > 0, "the server closed the connection");
        self.received = true;
        Ok(())
    }
}

struct Shared {
    target: Target,
    bearer: String,
    settings: LoadSettings,
    tokens: Vec<String>,
    counter: AtomicU64,
}

impl Shared {
    /// Sends one request on `conn`; returns (ok, items). A batch is ok
    /// only when every item of it was answered without a problem (a batch
    /// answers 2xx however many of its items failed), and counts the items
    /// that were.
    async fn send(&self, conn: &mut Option<Conn>, op: Op) -> (bool, u64) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let (method, path, body, items) = match op {
            Op::Healthz => ("GET", "/healthz", String::new(), 0),
            Op::Tokenize => (
                "POST",
                "/tokenize",
                format!(r#"{{"value":"{}"}}"#, test_card(n)),
                1,
            ),
            Op::TokenizeBatch => {
                let b = self.settings.batch as u64;
                let values: Vec<String> = (0..b).map(|k| test_card(n * b + k)).collect();
                let body = serde_json::json!({ "values": values }).to_string();
                ("POST", "/tokenize", body, b)
            }
            Op::Detokenize => {
                let t = &self.tokens[(n as usize) % self.tokens.len().max(1)];
                ("POST", "/detokenize", format!(r#"{{"token":"{t}"}}"#), 1)
            }
            Op::DetokenizeBatch => {
                let (b, held) = (self.settings.batch, self.tokens.len().max(1));
                let from = (n as usize).wrapping_mul(b) % held;
                let tokens: Vec<&String> = (0..b)
                    .filter_map(|k| self.tokens.get((from + k) % held))
                    .collect();
                let body = serde_json::json!({ "tokens": tokens }).to_string();
                ("POST", "/detokenize", body, b as u64)
            }
        };
        let bearer = (op != Op::Healthz).then_some(self.bearer.as_str());
        match self
            .target
            .exchange(conn, method, path, bearer, body.as_bytes())
            .await
        {
            Ok((status, answer)) if (200..300).contains(&status) => {
                if matches!(op, Op::TokenizeBatch | Op::DetokenizeBatch) {
                    let done = answered_items(&answer);
                    (done == items, done)
                } else {
                    (true, items)
                }
            }
            _ => (false, 0),
        }
    }

    fn pick(&self, n: u64) -> Op {
        let total: u32 = self.settings.mix.iter().map(|m| m.1).sum();
        let mut x = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) as u32 % total.max(1);
        for (op, w) in &self.settings.mix {
            if x < *w {
                return *op;
            }
            x -= w;
        }
        self.settings.mix[0].0
    }
}

/// Runs the load against `url` with `bearer`, trusting `tls`'s roots.
pub async fn run(
    url: &str,
    bearer: &str,
    tls: rustls::ClientConfig,
    settings: LoadSettings,
) -> anyhow::Result<Report> {
    anyhow::ensure!(!settings.mix.is_empty(), "nothing to send");
    anyhow::ensure!(
        settings.prepare > 0 || settings.mix.iter().all(|m| !m.0.detokenizes()),
        "detokenize needs --prepare of at least 1"
    );
    let target = Target::parse(url, tls)?;
    let mut tokens = Vec::new();
    if settings.mix.iter().any(|m| m.0.detokenizes()) {
        let mut c = None;
        let mut made = 0u64;
        while tokens.len() < settings.prepare {
            let values: Vec<String> = (0..1000.min(settings.prepare - tokens.len()) as u64)
                .map(|k| test_card(900_000_000_000 + made + k))
                .collect();
            made += values.len() as u64;
            let body = serde_json::json!({ "values": values }).to_string();
            let (status, answer) = target
                .exchange(&mut c, "POST", "/tokenize", Some(bearer), body.as_bytes())
                .await?;
            anyhow::ensure!(
                (200..300).contains(&status),
                "preparing tokens: /tokenize answered {status}"
            );
            let r: Value = serde_json::from_slice(&answer)?;
            let answered = r["results"].as_array().map_or(0, Vec::len);
            anyhow::ensure!(answered > 0, "preparing tokens: the batch answered none");
            for item in r["results"].as_array().into_iter().flatten() {
                if let Some(t) = item["token"].as_str() {
                    tokens.push(t.to_owned());
                }
            }
        }
    }
    let shared = Arc::new(Shared {
        target,
        bearer: bearer.to_owned(),
        settings: settings.clone(),
        tokens,
        counter: AtomicU64::new(0),
    });
    // Connections open, and latency buffers are allocated and touched,
    // before the clock starts, so the run measures requests, not handshakes
    // or the kernel zeroing the buffers' pages (5% of the tool's CPU in a
    // 5-second run with 64 connections).
    let mut conns = Vec::with_capacity(settings.connections);
    for _ in 0..settings.connections {
        let open = tokio::time::timeout(ANSWER_TIMEOUT, Conn::open(&shared.target)).await;
        let conn =
            open.map_err(|_| anyhow::anyhow!("connecting took over {ANSWER_TIMEOUT:?}"))??;
        // Filled with ones, not zeros: zeroed memory fresh from the system
        // is allocated untouched, and would fault in during the run.
        let mut lat = vec![1u64; LATENCIES_PER_CONN];
        std::hint::black_box(&lat);
        lat.clear();
        conns.push((conn, lat));
    }
    let start = Instant::now();
    let deadline = start + settings.duration;
    // Open loop: one thread makes every request due, connection by
    // connection in turn, and the connection sends it when it is free.
    let (pacer, dues): (_, Vec<Option<UnboundedReceiver<Instant>>>) = match settings.rate {
        Some(rate) => {
            let (senders, receivers): (Vec<_>, Vec<_>) = (0..settings.connections)
                .map(|_| tokio::sync::mpsc::unbounded_channel())
                .unzip();
            let pacer = std::thread::Builder::new()
                .name("bench-pacer".into())
                .spawn(move || pace(rate, start, deadline, senders))
                .context("starting the pacing thread")?;
            (Some(pacer), receivers.into_iter().map(Some).collect())
        }
        None => (None, (0..settings.connections).map(|_| None).collect()),
    };
    let mut tasks = Vec::new();
    for ((c, mut lat), mut due_rx) in conns.into_iter().zip(dues) {
        let shared = shared.clone();
        let mut c = Some(c);
        tasks.push(tokio::spawn(async move {
            let (mut errors, mut items, mut unsent) = (0u64, 0u64, 0u64);
            while Instant::now() < deadline {
                let due = match &mut due_rx {
                    Some(rx) => match rx.recv().await {
                        Some(due) => due,
                        None => break,
                    },
                    None => Instant::now(),
                };
                let op = shared.pick(shared.counter.load(Ordering::Relaxed));
                let (ok, n) = shared.send(&mut c, op).await;
                lat.push(due.elapsed().as_micros() as u64);
                if ok {
                    items += n;
                } else {
                    errors += 1;
                }
            }
            if let Some(rx) = &mut due_rx {
                rx.close();
                while let Ok(due) = rx.try_recv() {
                    lat.push(due.elapsed().as_micros() as u64);
                    unsent += 1;
                }
            }
            (lat, errors, items, unsent)
        }));
    }
    let mut lat = Vec::new();
    let (mut errors, mut items, mut unsent) = (0, 0, 0);
    for t in tasks {
        let (l, e, n, u) = t.await?;
        lat.extend(l);
        errors += e;
        items += n;
        unsent += u;
    }
    let seconds = start.elapsed().as_secs_f64();
    // A pacer that died would have ended the run early, unnoticed.
    if let Some(pacer) = pacer
        && tokio::task::spawn_blocking(move || pacer.join())
            .await?
            .is_err()
    {
        anyhow::bail!("the pacing thread panicked");
    }
    lat.sort_unstable();
    let pct = |p: f64| -> u64 {
        if lat.is_empty() {
            return 0;
        }
        lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1]
    };
    Ok(Report {
        requests: lat.len() as u64 - unsent,
        errors,
        items,
        unsent,
        seconds,
        latency_us: [pct(0.5), pct(0.9), pct(0.99), pct(0.999), pct(1.0)],
    })
}

/// Makes requests due at `rate` a second from `start` until `deadline`,
/// handing each due time to the next connection in turn (so each
/// connection's requests are due `connections / rate` apart, the
/// connections staggered across that period).
///
/// On a thread of its own, sleeping with the operating system's timer:
/// tokio's timer counts whole milliseconds and wakes a sleeper after the
/// tick that follows its deadline, so requests went out about a
/// millisecond late, several released at each tick, and that lateness
/// counted as the server's latency (BENCHMARKS-history.md, thirteenth session).
/// This thread is late too, by its wake-up, but by far less.
fn pace(rate: u64, start: Instant, deadline: Instant, connections: Vec<UnboundedSender<Instant>>) {
    if connections.is_empty() {
        return;
    }
    for k in 0u64.. {
        let due = due_at(start, rate, k);
        if due >= deadline {
            return;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let to = &connections[k as usize % connections.len()];
        if to.send(due).is_err() {
            return;
        }
    }
}

/// When the `k`th request (from 0) is due at `rate` a second: whole
/// nanoseconds from the start, so no rounding of a period accumulates.
fn due_at(start: Instant, rate: u64, k: u64) -> Instant {
    let nanos = u128::from(k) * 1_000_000_000 / u128::from(rate.max(1));
    start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The items of a batch answer (`{"results": [...]}`) that carry no
/// problem; none when the answer is not one.
fn answered_items(answer: &[u8]) -> u64 {
    serde_json::from_slice::<Value>(answer)
        .ok()
        .and_then(|v| {
            v["results"]
                .as_array()
                .map(|r| r.iter().filter(|i| i.get("problem").is_none()).count() as u64)
        })
        .unwrap_or(0)
}

/// Parses `tokenize=70,detokenize=30` (or one operation name).
pub fn parse_mix(s: &str) -> Option<Vec<(Op, u32)>> {
    s.split(',')
        .map(|part| match part.split_once('=') {
            Some((op, w)) => Some((Op::parse(op.trim())?, w.trim().parse().ok()?)),
            None => Some((Op::parse(part.trim())?, 1)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> rustls::ClientConfig {
        crate::tls::client_config(None).expect("a client config from the system roots")
    }

    /// A TLS server on port 0 that reads one request per connection,
    /// answers it `200 ok` when `answer` is set, and closes the connection
    /// (a server's idle timeout, without `Connection: close`); with the
    /// client config that trusts it and the count of connections taken.
    async fn closing_server(
        dir: &std::path::Path,
        answer: bool,
    ) -> (Target, Arc<std::sync::atomic::AtomicUsize>) {
        let (cert, key, _) = crate::tls::ensure_dev_cert(dir).expect("a dev certificate");
        let reloading = Arc::new(crate::tls::ReloadingCert::load(&cert, &key).expect("cert"));
        let server =
            crate::tls::server_config(reloading, crate::config::ClientAuth::Off, None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = taken.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    while memchr::memmem::find(&head, b"\r\n\r\n").is_none() {
                        if s.read_buf(&mut head).await.unwrap_or(0) == 0 {
                            return;
                        }
                    }
                    if answer {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                    let _ = s.shutdown().await;
                });
            }
        });
        let url = format!("https://localhost:{port}");
        let target = Target::parse(&url, crate::tls::client_config(Some(&cert)).unwrap()).unwrap();
        (target, taken)
    }

    /// A kept-alive connection the server has closed fails before any
    /// answer byte: the request is sent once more on a new connection.
    #[tokio::test]
    async fn a_request_on_a_connection_the_server_closed_is_sent_again_once() {
        let dir = tempfile::tempdir().unwrap();
        let (target, taken) = closing_server(dir.path(), true).await;
        let mut conn = None;
        for _ in 0..3 {
            let (status, body) = target
                .exchange(&mut conn, "GET", "/healthz", None, b"")
                .await
                .expect("answered, on a new connection when the old one was closed");
            assert_eq!((status, body.as_slice()), (200, b"ok".as_slice()));
        }
        assert_eq!(
            taken.load(Ordering::SeqCst),
            3,
            "one connection per request"
        );

        // A new connection that closes unanswered is an error, not a loop.
        let dir = tempfile::tempdir().unwrap();
        let (target, taken) = closing_server(dir.path(), false).await;
        let mut conn = None;
        assert!(
            target
                .exchange(&mut conn, "GET", "/healthz", None, b"")
                .await
                .is_err()
        );
        assert_eq!(taken.load(Ordering::SeqCst), 1);
        assert!(conn.is_none(), "a failed connection is dropped");
    }

    /// Requests fall due on the schedule, not when the pacer woke: each
    /// due time is `start` plus a whole number of periods, handed to the
    /// connections in turn, and none at or past the deadline.
    #[test]
    fn the_pacer_hands_each_connection_its_due_times_in_turn() {
        let start = Instant::now();
        let period = Duration::from_millis(2);
        let (senders, mut receivers): (Vec<_>, Vec<_>) = (0..3)
            .map(|_| tokio::sync::mpsc::unbounded_channel())
            .unzip();
        pace(500, start, start + period * 10, senders);
        // It waited for each (`sleep` never returns early).
        assert!(start.elapsed() >= period * 9);
        for (i, rx) in receivers.iter_mut().enumerate() {
            let mut got = Vec::new();
            while let Ok(due) = rx.try_recv() {
                got.push(due);
            }
            let want: Vec<_> = (0..10u32)
                .filter(|k| *k as usize % 3 == i)
                .map(|k| start + period * k)
                .collect();
            assert_eq!(got, want, "connection {i}");
        }

        // A connection gone (its run over) stops the pacer.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        drop(rx);
        let begun = Instant::now();
        pace(1, begun, begun + Duration::from_secs(10), vec![tx]);
        assert!(begun.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn due_times_do_not_drift_with_a_rounded_period() {
        let start = Instant::now();
        // A third of a second is no whole number of nanoseconds.
        assert_eq!(due_at(start, 3, 3), start + Duration::from_secs(1));
        assert_eq!(due_at(start, 3, 3_000), start + Duration::from_secs(1_000));
        assert_eq!(due_at(start, 0, 2), start + Duration::from_secs(2));
    }

    #[test]
    fn a_batch_counts_only_the_items_answered_without_a_problem() {
        let answer = br#"{"results":[{"token":"tok_a","value":"4111"},{"problem":{"status":404}},{"token":"tok_b"}]}"#;
        assert_eq!(answered_items(answer), 2);
        assert_eq!(answered_items(br#"{"results":[]}"#), 0);
        assert_eq!(answered_items(b"not json"), 0);
        assert_eq!(answered_items(br#"{"token":"tok_a"}"#), 0);
    }

    #[test]
    fn a_target_is_read_from_the_url() {
        let t = |u: &str| Target::parse(u, tls()).map(|t| (t.host, t.port, t.authority, t.base));
        for (url, host, port, authority, base) in [
            (
                "https://localhost:9443",
                "localhost",
                9443,
                "localhost:9443",
                "",
            ),
            (
                "https://vault.example/",
                "vault.example",
                443,
                "vault.example",
                "",
            ),
            (
                "https://lb.example:8443/vault/",
                "lb.example",
                8443,
                "lb.example:8443",
                "/vault",
            ),
            ("https://[::1]:8443", "::1", 8443, "[::1]:8443", ""),
            ("https://[::1]", "::1", 443, "[::1]", ""),
        ] {
            let want = (host.into(), port, authority.into(), base.into());
            assert_eq!(t(url).unwrap(), want, "{url}");
        }
        assert!(t("https://[::1]x").is_err());
        assert!(t("http://localhost:9443").is_err());
        assert!(t("https://localhost:port").is_err());
        assert!(t("https://:9443").is_err());
    }
}
