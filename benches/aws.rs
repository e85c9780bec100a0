//! The production backends under load, against moto: KMS calls per 10,000
//! tokenizations, DynamoDB calls per tokenization and per detokenization,
//! and, from the service's own metrics, its own time per request beside the
//! time it spent waiting on DynamoDB and KMS.
//!
//! `cargo bench --bench aws` runs 500 requests per phase and scales the
//! KMS count to 10,000; under `cargo test` (no `--bench`) it runs 50 so the
//! harness is exercised. Not 10,000 for real: moto deep-copies the whole
//! table on every TransactWriteItems (its rollback snapshot), so its time
//! per call grows with the table (2.2 GB and seconds a call by 1,700
//! items) until answers time out; real DynamoDB does not. The DynamoDB
//! waits below are the emulator's, not DynamoDB's; the call counts and the
//! service's own time are ours.
//!
//! Requests go one at a time over one TLS keep-alive connection, so the
//! waits are not inflated by queueing in the (single-threaded) emulator.

/// The allocator the `tokenvault` binary uses, so the figures are its.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(dead_code)]
#[path = "../tests/api/emulator.rs"]
mod emulator;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokenvault::config::{KeyKind, Overrides, RoleSettings, Settings, StoreKind};
use tokenvault::loadgen::test_card;

const API_KEY: &str = "bench-key-0123456789abcdef";

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 500 } else { 50 };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(n));
}

/// The metric samples of a Prometheus text exposition.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// Sum of samples whose name starts with `name` and holding every `label`.
fn sum(m: &[(String, f64)], name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(name) && labels.iter().all(|l| k.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

/// The median of a histogram's observations between two snapshots,
/// interpolated within its bucket as Prometheus' `histogram_quantile` does.
fn p50(before: &[(String, f64)], after: &[(String, f64)], name: &str, labels: &[&str]) -> f64 {
    let buckets = |m: &[(String, f64)]| -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = m
            .iter()
            .filter(|(k, _)| {
                k.starts_with(&format!("{name}_bucket")) && labels.iter().all(|l| k.contains(l))
            })
            .map(|(k, c)| {
                let le = k.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
                (le.parse::<f64>().unwrap_or(f64::INFINITY), *c)
            })
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let (b0, b1) = (buckets(before), buckets(after));
    let delta: Vec<(f64, f64)> = b1
        .iter()
        .map(|(le, c)| {
            let was = b0.iter().find(|(l, _)| l == le).map_or(0.0, |x| x.1);
            (*le, c - was)
        })
        .collect();
    let total = delta.last().map_or(0.0, |x| x.1);
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = total / 2.0;
    let mut prev = (0.0, 0.0);
    for (le, cum) in delta {
        if cum >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            return prev.0 + (le - prev.0) * (rank - prev.1) / (cum - prev.1).max(1.0);
        }
        prev = (le, cum);
    }
    f64::NAN
}

struct Bench {
    url: String,
    client: reqwest::Client,
}

impl Bench {
    async fn metrics(&self) -> Vec<(String, f64)> {
        let text = self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        samples(&text)
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let res = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.unwrap()
    }
}

/// One phase's figures.
fn report(
    phase: &str,
    route: &str,
    n: u64,
    secs: f64,
    before: &[(String, f64)],
    after: &[(String, f64)],
) {
    let d = |name: &str, labels: &[&str]| sum(after, name, labels) - sum(before, name, labels);
    let kms = d("tokenvault_kms_requests_total", &[]);
    let ddb = d(
        "tokenvault_dependency_requests_total",
        &["dependency=\"dynamodb\""],
    );
    let route_label = format!("route=\"{route}\"");
    let own = p50(
        before,
        after,
        "tokenvault_http_request_own_duration_seconds",
        &[&route_label],
    );
    let total = p50(
        before,
        after,
        "tokenvault_http_request_duration_seconds",
        &[&route_label],
    );
    println!(
        "{phase}: {n} requests in {secs:.1} s ({:.0}/s)",
        n as f64 / secs
    );
    println!(
        "  KMS calls: {kms} ({:.2} per 10,000)",
        kms * 10_000.0 / n as f64
    );
    println!(
        "  DynamoDB calls: {ddb} ({:.2} per request)",
        ddb / n as f64
    );
    for op in [
        "GetItem",
        "TransactWriteItems",
        "BatchGetItem",
        "PutItem",
        "UpdateItem",
    ] {
        let c = d(
            "tokenvault_dependency_requests_total",
            &["dependency=\"dynamodb\"", &format!("operation=\"{op}\"")],
        );
        if c > 0.0 {
            let wait = p50(
                before,
                after,
                "tokenvault_dependency_request_duration_seconds",
                &["dependency=\"dynamodb\"", &format!("operation=\"{op}\"")],
            );
            println!(
                "    {op}: {:.2} per request, p50 {:.2} ms",
                c / n as f64,
                wait * 1e3
            );
        }
    }
    println!(
        "  p50 per request: {:.3} ms in all, {:.3} ms of the service's own",
        total * 1e3,
        own * 1e3
    );
}

async fn run(n: u64) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let Some(moto) = emulator::start_moto() else {
        return;
    };
    let clients = emulator::clients(&moto.endpoint).await;
    let p = emulator::provision(&clients).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::load(
        None,
        Vec::<(String, String)>::new(),
        &Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(dir.path().join("data")),
        },
    )
    .unwrap();
    settings.store.kind = StoreKind::Dynamodb;
    settings.store.table = Some(p.table.clone());
    settings.keys.kind = KeyKind::Kms;
    settings.keys.kms = p.keys.clone();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, API_KEY.as_bytes());
    settings.api_keys = BTreeMap::from([("bench".to_owned(), hex::encode(digest.as_ref()))]);
    settings.roles = vec![RoleSettings {
        name: "bench".into(),
        principals: vec!["apikey:bench".into()],
        permissions: vec!["tokenize".into(), "detokenize".into()],
        classifications: None,
        require_reason: false,
        detokenize_per_minute: 0,
    }];
    let app = tokenvault::app::build_with_aws(
        &settings,
        Arc::new(tokenvault::clock::SystemClock),
        Some(clients),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let cert = app.info.cert.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tokenvault::app::serve(
        listener,
        app.tls,
        app.router,
        async {
            let _ = stopped.await;
        },
    ));
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&cert).unwrap();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let b = Bench {
        url,
        client: reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .build()
            .unwrap(),
    };

    let start_up = b.metrics().await;
    println!(
        "start-up: {} KMS calls (service secrets and nothing else)",
        sum(&start_up, "tokenvault_kms_requests_total", &[])
    );
    b.post("/tokenize", serde_json::json!({"value": test_card(0)}))
        .await;

    let m0 = b.metrics().await;
    let t = Instant::now();
    let mut tokens = Vec::with_capacity(n as usize);
    for i in 1..=n {
        let v = b
            .post("/tokenize", serde_json::json!({"value": test_card(i)}))
            .await;
        tokens.push(v["token"].as_str().unwrap().to_owned());
    }
    let m1 = b.metrics().await;
    report(
        "tokenize (random)",
        "/tokenize",
        n,
        t.elapsed().as_secs_f64(),
        &m0,
        &m1,
    );

    let t = Instant::now();
    for tok in &tokens {
        b.post("/detokenize", serde_json::json!({"token": tok}))
            .await;
    }
    let m2 = b.metrics().await;
    report(
        "detokenize (one token a request)",
        "/detokenize",
        n,
        t.elapsed().as_secs_f64(),
        &m1,
        &m2,
    );

    let det = (n / 10).max(10);
    let t = Instant::now();
    for i in 1..=det {
        b.post(
            "/tokenize",
            serde_json::json!({"value": test_card(1_000_000 + i), "deterministic": true}),
        )
        .await;
    }
    let m3 = b.metrics().await;
    report(
        "tokenize (deterministic, new values)",
        "/tokenize",
        det,
        t.elapsed().as_secs_f64(),
        &m2,
        &m3,
    );

    let _ = stop.send(());
    let _ = server.await;
}
