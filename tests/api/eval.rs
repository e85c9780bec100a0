//! Accuracy on the labelled corpus in `../shared/eval`, judged by its own
//! script: every planted secret gone, every look-alike kept. The same
//! corpus through `/redact` (streamed over TLS) must give the same bytes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::helpers::spawn_app;

fn eval_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/eval");
    assert!(
        dir.join("eval_redaction.py").exists(),
        "the evaluation corpus is missing at {} (../shared beside the checkout)",
        dir.display()
    );
    dir
}

/// Runs `tokenvault redact --format F` over `input` into `output`.
fn cli_redact(format: &str, input: &Path, output: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(["redact", "--format", format])
        .stdin(std::fs::File::open(input).unwrap())
        .stdout(std::fs::File::create(output).unwrap())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

fn judge(truth: &Path, output: &Path) {
    let out = Command::new("python3")
        .arg(eval_dir().join("eval_redaction.py"))
        .arg(truth)
        .arg(output)
        .output()
        .expect("python3 runs the judge");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "judge failed:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("worst recall"), "{report}");
}

#[test]
fn the_cli_meets_the_corpus_bar() {
    let dir = eval_dir();
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs.txt");
    cli_redact("text", &dir.join("corpus/logs.txt"), &logs);
    judge(&dir.join("corpus/logs.truth.jsonl"), &logs);
    let events = tmp.path().join("events.ndjson");
    cli_redact("ndjson", &dir.join("corpus/events.ndjson"), &events);
    judge(&dir.join("corpus/events.truth.jsonl"), &events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_streams_the_same_bytes_as_the_cli() {
    let dir = eval_dir();
    let app = spawn_app().await;
    let tmp = tempfile::tempdir().unwrap();
    for (format, file, ct) in [
        ("text", "logs.txt", "text/plain"),
        ("ndjson", "events.ndjson", "application/x-ndjson"),
    ] {
        let input = std::fs::read(dir.join("corpus").join(file)).unwrap();
        // A chunked body (no length) takes the streaming path.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            input.chunks(7919).map(|c| Ok(c.to_vec())).collect();
        let res = app
            .client
            .post(format!("{}/redact", app.url))
            .bearer_auth(app.key("log-shipper"))
            .header("content-type", ct)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["trailer"], "tokenvault-findings");
        let served = res.bytes().await.unwrap();
        let cli = tmp.path().join(file);
        cli_redact(format, &dir.join("corpus").join(file), &cli);
        assert!(
            served == std::fs::read(&cli).unwrap(),
            "{file}: service and CLI differ"
        );
    }
}
