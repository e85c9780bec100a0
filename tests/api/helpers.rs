//! Spawning the service for tests: real TLS on 127.0.0.1:0, a real SQLite
//! file in a temporary data dir, a manual clock, and every log line the
//! process writes captured so tests can check that no card leaked.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::Value;
use tokenvault::clock::ManualClock;
use tokenvault::config::{KeyKind, Overrides, Settings, StoreKind};

use crate::emulator::{Backend, backend, clients, provision, shared_moto};

/// Cards of every brand, all valid test numbers. Any of them showing up in
/// a log line, an audit event or an error body is a leak.
pub const CARDS: &[(&str, &str)] = &[
    ("visa", "4111111111111111"),
    ("visa", "4222222222222"),
    ("mastercard", "5555555555554444"),
    ("mastercard", "2223003122003222"),
    ("amex", "378282246310005"),
    ("discover", "6011111111111117"),
    ("jcb", "3530111333300000"),
    ("diners", "36227206271667"),
    ("unionpay", "6200000000000005"),
    ("maestro", "6759649826438453"),
];

/// Cards used only by particular tests, also checked for leaks.
pub const MORE_CARDS: &[&str] = &["4012888888881881", "5105105105105100", "371449635398431"];

/// Everything the tracing subscriber writes, for every app in this process.
fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        tokenvault::telemetry::init_logging(move || Capture(writer.clone()));
        // Panics go to the captured log (checked for leaks) and, for the
        // test's own report, to the default hook as well.
        let default = std::panic::take_hook();
        tokenvault::telemetry::install_panic_hook();
        let logged = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            logged(info);
            default(info);
        }));
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured log so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

/// A running service.
pub struct TestApp {
    pub url: String,
    pub client: Client,
    pub keys: BTreeMap<String, String>,
    pub clock: Arc<ManualClock>,
    /// Keeps the data dir alive for the test.
    _dir: tempfile::TempDir,
    pub settings: Settings,
    /// AWS clients (at the emulator) when the backend is `aws`.
    pub aws: Option<tokenvault::aws::Clients>,
    /// Bodies of every error answer, checked for leaks.
    pub error_bodies: Mutex<Vec<String>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The running service's audit log, to wait for its outbox copies.
    audit: Option<tokenvault::audit::AuditLog>,
    /// The running service's handler state, for tests that drive a piece
    /// of it directly.
    state: Option<tokenvault::http::AppState>,
    /// Watches the certificate files, as `serve` does.
    watcher: Option<tokio::task::JoinHandle<()>>,
    /// Deletes expired entries, as `serve` does.
    sweeper: Option<tokio::task::JoinHandle<()>>,
    /// The running service's hold on its data directory, as `serve`
    /// keeps it.
    lock: Option<tokenvault::app::DataDirLock>,
}

/// Starts the embedded default in a fresh data dir.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the service with settings adjusted by `f`, on the backend
/// `TOKENVAULT_TEST_BACKEND` names.
pub async fn spawn_app_with(f: impl FnOnce(&mut Settings)) -> TestApp {
    let aws = match backend() {
        Backend::Sqlite => None,
        Backend::Aws => {
            let moto = shared_moto().expect("TOKENVAULT_TEST_BACKEND=aws needs moto in .venv");
            Some(clients(&moto.endpoint).await)
        }
    };
    spawn_app_on(aws, f).await
}

/// Starts the service on DynamoDB and KMS through `aws` (a table and keys
/// of its own are made first), or on the embedded default with `None`.
pub async fn spawn_app_on(
    aws: Option<tokenvault::aws::Clients>,
    f: impl FnOnce(&mut Settings),
) -> TestApp {
    log_buffer();
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
    if let Some(clients) = &aws {
        let p = provision(clients).await;
        settings.store.kind = StoreKind::Dynamodb;
        settings.store.table = Some(p.table);
        settings.keys.kind = KeyKind::Kms;
        settings.keys.kms = p.keys;
    }
    f(&mut settings);
    let clock = ManualClock::new();
    let mut app = TestApp {
        url: String::new(),
        client: Client::new(),
        keys: BTreeMap::new(),
        clock,
        _dir: dir,
        settings,
        aws,
        error_bodies: Mutex::new(Vec::new()),
        stop: None,
        task: None,
        audit: None,
        state: None,
        watcher: None,
        sweeper: None,
        lock: None,
    };
    app.start().await;
    app
}

/// A request body the test feeds by hand: it stays open until the sender
/// is dropped.
pub fn held_open() -> (
    tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    reqwest::Body,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let parts = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|part| (part, rx))
    });
    (tx, reqwest::Body::wrap_stream(parts))
}

/// A reqwest client that trusts exactly `cert` (PEM).
pub fn client_trusting(cert: &Path) -> Client {
    let pem = std::fs::read(cert).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Negotiate HTTP/2 as curl and browsers do. Over HTTP/1.1 an early
    // answer (413 before the body is read) closes the connection while a
    // large upload is still being written, and the client sees EPIPE.
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

use rustls::pki_types::pem::PemObject;

impl TestApp {
    pub fn data_dir(&self) -> PathBuf {
        self.settings.data_dir.clone()
    }

    async fn start(&mut self) {
        log_buffer();
        let app =
            tokenvault::app::build_with_aws(&self.settings, self.clock.clone(), self.aws.clone())
                .await
                .expect("app builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.audit = Some(app.state.audit.clone());
        self.state = Some(app.state.clone());
        let task = tokio::spawn(async move {
            tokenvault::app::serve(listener, app.tls, app.router, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        self.url = format!("https://localhost:{}", addr.port());
        self.client = client_trusting(&app.info.cert);
        // With configured API keys there are no dev credentials; such tests
        // put their own keys in `keys`.
        if let Ok(creds) = std::fs::read(self.data_dir().join("dev-credentials.json")) {
            self.keys = serde_json::from_slice(&creds).unwrap();
        }
        self.stop = Some(tx);
        self.task = Some(task);
        self.watcher = Some(tokio::spawn(app.cert.cert.clone().watch(app.cert.period)));
        self.sweeper = Some(tokio::spawn(app.sweeper.run()));
        self.lock = Some(app.lock);
    }

    /// Stops the service (draining requests) and starts it again on the same
    /// data dir.
    pub async fn restart(&mut self) {
        self.shutdown().await;
        self.start().await;
    }

    pub async fn shutdown(&mut self) {
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        if let Some(s) = self.sweeper.take() {
            s.abort();
            let _ = s.await;
        }
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(35), t)
                .await
                .expect("server drains")
                .unwrap();
        }
        self.state = None;
        // As `serve` does: the log's thread ends before a restart opens
        // the file again.
        if let Some(audit) = self.audit.take() {
            audit
                .close()
                .await
                .expect("the audit log copies its outbox");
        }
        self.lock = None;
    }

    /// The running service's handler state.
    pub fn state(&self) -> tokenvault::http::AppState {
        self.state.clone().expect("the service runs")
    }

    /// The dev API key of a role.
    pub fn key(&self, role: &str) -> &str {
        &self.keys[role]
    }

    /// Takes an answer apart, keeping an error's body for the leak check.
    pub async fn record(&self, res: Response) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.text().await.unwrap();
        if status.as_u16() >= 400 {
            self.error_bodies.lock().unwrap().push(body.clone());
        }
        (status, headers, body)
    }

    /// POSTs JSON as `role` (None: no credentials); returns status and body.
    pub async fn post(&self, path: &str, role: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let (s, _, b) = self
            .post_raw(path, role, "application/json", body.to_string(), &[])
            .await;
        (s, serde_json::from_str(&b).unwrap_or(Value::Null))
    }

    /// POSTs raw bytes with a content type and extra headers.
    pub async fn post_raw(
        &self,
        path: &str,
        role: Option<&str>,
        content_type: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body);
        if let Some(r) = role {
            req = req.bearer_auth(self.key(r));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.unwrap();
        self.record(res).await
    }

    pub async fn get(&self, path: &str, role: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.client.get(format!("{}{path}", self.url));
        if let Some(r) = role {
            req = req.bearer_auth(self.key(r));
        }
        let (s, _, b) = self.record(req.send().await.unwrap()).await;
        (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }

    pub async fn delete(&self, path: &str, role: Option<&str>) -> StatusCode {
        let mut req = self.client.delete(format!("{}{path}", self.url));
        if let Some(r) = role {
            req = req.bearer_auth(self.key(r));
        }
        self.record(req.send().await.unwrap()).await.0
    }

    /// Tokenizes one card as checkout and returns the answer.
    pub async fn tokenize(&self, card: &str, extra: Value) -> Value {
        let mut body = serde_json::json!({ "value": card });
        if let Value::Object(m) = extra {
            body.as_object_mut().unwrap().extend(m);
        }
        let (s, v) = self.post("/tokenize", Some("checkout"), &body).await;
        assert!(s.is_success(), "tokenize: {s} {v}");
        v
    }

    pub async fn detokenize(&self, role: &str, token: &str) -> (StatusCode, Value) {
        self.post(
            "/detokenize",
            Some(role),
            &serde_json::json!({ "token": token }),
        )
        .await
    }

    /// Token records in the store, read straight from it (the SQLite file
    /// or a scan of the DynamoDB table).
    pub async fn token_rows(&self) -> i64 {
        match &self.aws {
            None => {
                let c = rusqlite::Connection::open(self.data_dir().join("vault.db")).unwrap();
                c.query_row("SELECT count(*) FROM tokens", [], |r| r.get(0))
                    .unwrap()
            }
            Some(_) => self
                .stored_items()
                .await
                .iter()
                .filter(|(name, _)| name.starts_with("tok#"))
                .count() as i64,
        }
    }

    /// How many audit notes the embedded store's outbox ever took (each a
    /// record's event committed with it); `None` on DynamoDB, which has no
    /// outbox.
    pub fn outbox_notes_issued(&self) -> Option<i64> {
        self.aws.as_ref().map_or_else(
            || {
                let c = rusqlite::Connection::open(self.data_dir().join("vault.db")).unwrap();
                // The highest row is never deleted: it holds the highest
                // number issued, and a batch's row counts all its notes.
                let seq = c
                    .query_row("SELECT coalesce(max(seq), 0) FROM audit_outbox", [], |r| {
                        r.get(0)
                    })
                    .unwrap();
                Some(seq)
            },
            |_| None,
        )
    }

    /// Everything the store holds, as (name, bytes): the SQLite files
    /// (WAL included), or every DynamoDB item with every attribute, binary
    /// ones included, named by its partition key.
    pub async fn stored_items(&self) -> Vec<(String, Vec<u8>)> {
        let Some(aws) = &self.aws else {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(self.data_dir()).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if name.starts_with("vault.db") {
                    out.push((name, std::fs::read(&path).unwrap()));
                }
            }
            return out;
        };
        let table = self.settings.store.table.clone().unwrap();
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = aws
                .dynamodb
                .scan()
                .table_name(&table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            for item in page.items() {
                let mut bytes = Vec::new();
                for (k, v) in item {
                    bytes.extend_from_slice(k.as_bytes());
                    bytes.push(b'=');
                    attribute_bytes(v, &mut bytes);
                    bytes.push(b'\n');
                }
                let name = match item.get("pk") {
                    Some(aws_sdk_dynamodb::types::AttributeValue::S(pk)) => pk.clone(),
                    _ => "?".into(),
                };
                out.push((name, bytes));
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return out;
            }
        }
    }

    /// The whole audit trail: the rotated files (`audit.log.<last seq>`,
    /// zero-padded, so in order by name), then the current one. The log
    /// rotates at midnight UTC, and a test that advances its clock near
    /// midnight crosses it. Waits first for the events the store committed
    /// to be copied from its outbox into the file.
    pub async fn audit_text(&self) -> String {
        if let Some(audit) = &self.audit {
            audit.sync().await.expect("the audit log copies its outbox");
        }
        let dir = self.data_dir();
        let mut rotated: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("audit.log."))
                    })
                    .collect()
            })
            .unwrap_or_default();
        rotated.sort();
        rotated.push(dir.join("audit.log"));
        rotated
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    /// Fails if any test card stands in the logs, the audit log or an
    /// error body, bare or with separators.
    pub async fn assert_no_leaks(&self) {
        let logs = captured_logs();
        let audit = self.audit_text().await;
        let errors = self.error_bodies.lock().unwrap().join("\n");
        for card in CARDS.iter().map(|c| c.1).chain(MORE_CARDS.iter().copied()) {
            for (name, text) in [
                ("log", &logs),
                ("audit log", &audit),
                ("error body", &errors),
            ] {
                assert!(!text.contains(card), "a test card leaked into the {name}");
                let spaced = spaced(card);
                assert!(
                    !text.contains(&spaced),
                    "a test card leaked into the {name}"
                );
            }
        }
    }
}

/// The raw bytes of an attribute, nested ones included.
fn attribute_bytes(v: &aws_sdk_dynamodb::types::AttributeValue, out: &mut Vec<u8>) {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    match v {
        A::S(s) | A::N(s) => out.extend_from_slice(s.as_bytes()),
        A::B(b) => out.extend_from_slice(b.as_ref()),
        A::Ss(v) | A::Ns(v) => v.iter().for_each(|s| out.extend_from_slice(s.as_bytes())),
        A::Bs(v) => v.iter().for_each(|b| out.extend_from_slice(b.as_ref())),
        A::L(v) => v.iter().for_each(|x| attribute_bytes(x, out)),
        A::M(m) => m.iter().for_each(|(k, x)| {
            out.extend_from_slice(k.as_bytes());
            attribute_bytes(x, out)
        }),
        _ => {}
    }
}

/// `4111 1111 1111 1111`.
pub fn spaced(card: &str) -> String {
    card.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Luhn check, independent of the crate's.
pub fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = u32::from(c - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Idempotency-Keys claimed or answered, in the embedded store `db`.
pub fn claims(db: &rusqlite::Connection) -> i64 {
    db.query_row("SELECT count(*) FROM idempotency", [], |r| r.get(0))
        .unwrap()
}

/// Waits (up to 20 s, polling) until `db` holds no Idempotency-Key.
pub async fn freed(db: &rusqlite::Connection) -> bool {
    for _ in 0..400 {
        if claims(db) == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
