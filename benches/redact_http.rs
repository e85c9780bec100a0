//! `/redact` end to end: TLS, HTTP/2 keep-alive, the service on this
//! machine (its runtime on both cores, the client too).

/// The allocator the `tokenvault` binary uses, so the figures are its.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokenvault::clock::SystemClock;
use tokenvault::config::{Overrides, Settings};

#[path = "common/corpus.rs"]
mod corpus;

fn redact_http(c: &mut Criterion) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::load(
        None,
        Vec::<(String, String)>::new(),
        &Overrides {
            listen: None,
            data_dir: Some(dir.path().to_owned()),
        },
    )
    .unwrap();
    let (url, key, client, stop) = rt.block_on(async {
        let app = tokenvault::app::build(&settings, Arc::new(SystemClock))
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(tokenvault::app::serve(
            listener,
            app.tls,
            app.router,
            async {
                let _ = rx.await;
            },
        ));
        let creds: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("dev-credentials.json")).unwrap(),
        )
        .unwrap();
        let pem = std::fs::read(dir.path().join("tls/cert.pem")).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        (
            format!("https://localhost:{port}/redact"),
            creds["log-shipper"].as_str().unwrap().to_owned(),
            client,
            tx,
        )
    });
    let mut g = c.benchmark_group("redact_http");
    g.sample_size(10);
    for (name, ct, data) in [
        ("logs.txt streamed", "text/plain", corpus::read("logs.txt")),
        (
            "events.ndjson streamed",
            "application/x-ndjson",
            corpus::read("events.ndjson"),
        ),
        (
            "clean 16 MiB streamed",
            "text/plain",
            corpus::clean(16 << 20),
        ),
    ] {
        let data = bytes_of(data);
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let res = client
                        .post(&url)
                        .bearer_auth(&key)
                        .header("content-type", ct)
                        .body(data.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 200);
                    res.bytes().await.unwrap().len()
                })
            })
        });
    }
    g.finish();
    let _ = stop.send(());
}

fn bytes_of(v: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from(v)
}

criterion_group!(benches, redact_http);
criterion_main!(benches);
