//! `tokenvault bench`: drives a running vault over TLS with N keep-alive
//! connections and prints throughput and latency percentiles.
//!
//! Closed loop by default (each connection sends its next request when the
//! answer to the last arrives: the most the server takes). With `--rate R`
//! it is open loop: requests are due at a fixed pace and latency counts
//! from when a request was due, not when it went out, so a stalled server
//! is not hidden by a stalled client (coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Healthz,
    Tokenize,
    /// One request of `batch` cards.
    TokenizeBatch,
    Detokenize,
}

impl Op {
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "healthz" => Op::Healthz,
            "tokenize" => Op::Tokenize,
            "tokenize-batch" => Op::TokenizeBatch,
            "detokenize" => Op::Detokenize,
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
    /// Cards per batch request.
    pub batch: usize,
    /// Tokens made first for detokenize.
    pub prepare: usize,
}

/// A run's figures.
#[derive(Debug, Clone)]
pub struct Report {
    pub requests: u64,
    pub errors: u64,
    /// Cards tokenized (batch requests count each card).
    pub items: u64,
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
        )
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

/// One connection's client: HTTP/1.1 keep-alive over one TLS connection.
fn connection(tls: &rustls::ClientConfig) -> anyhow::Result<reqwest::Client> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .http1_only()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()?)
}

struct Shared {
    url: String,
    bearer: String,
    settings: LoadSettings,
    tokens: Vec<String>,
    counter: AtomicU64,
}

impl Shared {
    /// Sends one request; returns (ok, items).
    async fn send(&self, c: &reqwest::Client, op: Op) -> (bool, u64) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let (path, body, items) = match op {
            Op::Healthz => {
                let ok = c
                    .get(format!("{}/healthz", self.url))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                return (ok, 0);
            }
            Op::Tokenize => ("/tokenize", json!({"value": test_card(n)}), 1),
            Op::TokenizeBatch => {
                let b = self.settings.batch as u64;
                let values: Vec<String> = (0..b).map(|k| test_card(n * b + k)).collect();
                ("/tokenize", json!({ "values": values }), b)
            }
            Op::Detokenize => {
                let t = &self.tokens[(n as usize) % self.tokens.len().max(1)];
                ("/detokenize", json!({ "token": t }), 1)
            }
        };
        let r = c
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.bearer)
            .json(&body)
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                (true, items)
            }
            Ok(r) => {
                let _ = r.bytes().await;
                (false, 0)
            }
            Err(_) => (false, 0),
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
        settings.prepare > 0 || settings.mix.iter().all(|m| m.0 != Op::Detokenize),
        "detokenize needs --prepare of at least 1"
    );
    let url = url.trim_end_matches('/').to_owned();
    let mut tokens = Vec::new();
    if settings.mix.iter().any(|m| m.0 == Op::Detokenize) {
        let c = connection(&tls)?;
        let mut made = 0u64;
        while tokens.len() < settings.prepare {
            let values: Vec<String> = (0..1000.min(settings.prepare - tokens.len()) as u64)
                .map(|k| test_card(900_000_000_000 + made + k))
                .collect();
            made += values.len() as u64;
            let r: Value = c
                .post(format!("{url}/tokenize"))
                .bearer_auth(bearer)
                .json(&json!({ "values": values }))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
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
        url,
        bearer: bearer.to_owned(),
        settings: settings.clone(),
        tokens,
        counter: AtomicU64::new(0),
    });
    let start = Instant::now();
    let deadline = start + settings.duration;
    let mut tasks = Vec::new();
    for i in 0..settings.connections {
        let shared = shared.clone();
        let c = connection(&tls)?;
        let per_conn = settings
            .rate
            .map(|r| Duration::from_secs_f64(settings.connections as f64 / r.max(1) as f64));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let (mut errors, mut items) = (0u64, 0u64);
            // Stagger open-loop connections across one period.
            let mut due = start
                + per_conn.map_or(Duration::ZERO, |p| {
                    p.mul_f64(i as f64 / shared.settings.connections as f64)
                });
            while Instant::now() < deadline {
                if per_conn.is_some() {
                    tokio::time::sleep_until(due.into()).await;
                } else {
                    due = Instant::now();
                }
                let op = shared.pick(shared.counter.load(Ordering::Relaxed));
                let (ok, n) = shared.send(&c, op).await;
                lat.push(due.elapsed().as_micros() as u64);
                if ok {
                    items += n;
                } else {
                    errors += 1;
                }
                if let Some(p) = per_conn {
                    due += p;
                }
            }
            (lat, errors, items)
        }));
    }
    let mut lat = Vec::new();
    let (mut errors, mut items) = (0, 0);
    for t in tasks {
        let (l, e, n) = t.await?;
        lat.extend(l);
        errors += e;
        items += n;
    }
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| -> u64 {
        if lat.is_empty() {
            return 0;
        }
        lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1]
    };
    Ok(Report {
        requests: lat.len() as u64,
        errors,
        items,
        seconds,
        latency_us: [pct(0.5), pct(0.9), pct(0.99), pct(0.999), pct(1.0)],
    })
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
