//! Bounds in time: the request deadline (`limits.request_timeout_ms`) and
//! a streamed redaction's idle bound (`limits.stream_idle_ms`), each set
//! short here so the tests wait well under a second for them.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, captured_logs, claims, freed, held_open, spawn_app_on, spawn_app_with,
};

/// Waits (up to 10 s, polling) for a log line holding both `id` and `text`.
async fn logged(id: &str, text: &str) -> bool {
    for _ in 0..200 {
        if captured_logs()
            .lines()
            .any(|l| l.contains(id) && l.contains(text))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn problem_type(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    v["type"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_answered_408() {
    let app = spawn_app_with(|s| s.limits.request_timeout_ms = 300).await;
    let (tx, res) = post_held_open(
        &app,
        "/tokenize",
        "checkout",
        "application/json",
        r#"{"value": "41111111"#,
    )
    .await;
    let (s, h, b) = app.record(res).await;
    assert_eq!(s, StatusCode::REQUEST_TIMEOUT, "{b}");
    assert_eq!(h["content-type"], "application/problem+json");
    assert_eq!(problem_type(&b), "urn:tokenvault:problem:request-timeout");
    assert!(b.contains("limits.request_timeout_ms"), "{b}");
    drop(tx);
    app.assert_no_leaks().await;
}

/// The embedded store stalls (another connection holds its write lock):
/// requests are answered `503` with `Retry-After` at their deadline, and
/// the service recovers alone. One stalled on its idempotency claim,
/// which its task frees once the lock goes and it finds nobody waiting, so
/// a retry with the same key runs at once instead of meeting a stale
/// claim (409 for a minute); the other's record, stored once the lock
/// goes, is withdrawn. DynamoDB's stalls are bounded by the SDK's own timeouts
/// (`src/aws.rs`), which answer 503 before this deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_answers_503_at_the_deadline_and_recovers() {
    // Long enough for the first tokenization (a data key made and synced)
    // on a loaded machine; the stalled one waits it out once.
    let app = spawn_app_with(|s| s.limits.request_timeout_ms = 1000).await;
    if app.aws.is_some() {
        return; // the embedded store's own behaviour; it ran on SQLite
    }
    // The class's data key is made first, so the stalled request's own
    // writes are what wait on the lock.
    app.tokenize("4012888888881881", json!({})).await;
    let rows = app.token_rows().await;
    let card = json!({"value": "4111111111111111"}).to_string();
    let keyed = [("idempotency-key", "order-7")];
    let lock = rusqlite::Connection::open(app.data_dir().join("vault.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Two at once: one stalls on its idempotency claim, the other (no key)
    // on storing its record.
    let other = json!({"value": "5555555555554444"}).to_string();
    let ((s, h, b), (s2, _, b2)) = tokio::join!(
        app.post_raw(
            "/tokenize",
            Some("checkout"),
            "application/json",
            card.clone(),
            &keyed,
        ),
        app.post_raw(
            "/tokenize",
            Some("checkout"),
            "application/json",
            other,
            &[]
        ),
    );
    assert_eq!(s2, StatusCode::SERVICE_UNAVAILABLE, "{b2}");
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(h.contains_key("retry-after"), "{h:?}");
    assert_eq!(problem_type(&b), "urn:tokenvault:problem:unavailable");
    let id = h["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        logged(&id, "limits.request_timeout_ms").await,
        "the cause is logged"
    );
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);

    // The lock gone, the unkeyed one's record is stored (and audited) by
    // its task, which then finds nobody waiting: it withdraws the record,
    // audited too. A 503 leaves nothing behind. The keyed one's task frees
    // its claim.
    // (An event is recorded before its delete: both are waited for.)
    let claims = || {
        rusqlite::Connection::open(app.data_dir().join("vault.db"))
            .and_then(|db| db.query_row("SELECT count(*) FROM idempotency", [], |r| r.get(0)))
            .unwrap_or(-1i64)
    };
    let mut withdrawn = false;
    for _ in 0..200 {
        if app.audit_text().await.contains("\"action\":\"withdraw\"")
            && app.token_rows().await == rows
            && claims() == 0
        {
            withdrawn = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(withdrawn, "the unanswered tokenization is withdrawn");

    // The retry goes through: one record, answered once and replayed
    // after.
    let (s, _, first) = app
        .post_raw(
            "/tokenize",
            Some("checkout"),
            "application/json",
            card.clone(),
            &keyed,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(app.token_rows().await, rows + 1);
    let (s, h, again) = app
        .post_raw(
            "/tokenize",
            Some("checkout"),
            "application/json",
            card,
            &keyed,
        )
        .await;
    assert_eq!((s, again.as_str()), (StatusCode::CREATED, first.as_str()));
    assert_eq!(h["idempotent-replayed"], "true");
    app.assert_no_leaks().await;
}

/// Makes the embedded store slow, not locked, so a request's claim
/// commits and its record's insert does not within a short deadline: a
/// trigger on the records' table counts to fifteen million (about three
/// seconds here) before each insert. Dropped by the caller.
fn slow_inserts(app: &TestApp) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(app.data_dir().join("vault.db")).unwrap();
    db.busy_timeout(Duration::from_secs(30)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER slow_store BEFORE INSERT ON tokens BEGIN \
         SELECT count(*) FROM (WITH RECURSIVE n(i) AS \
         (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 15000000) SELECT i FROM n); END",
    )
    .unwrap();
    db
}

/// A keyed tokenization of `body` whose record is still being stored at
/// its 500 ms deadline: answered 503 with `Retry-After`, its claim
/// committed before the stall. Returns once its task is done: its key
/// freed, which comes last. The store is fast again after.
async fn past_its_deadline(app: &TestApp, body: &str, key: &str) {
    let db = slow_inserts(app);
    let (s, h, b) = app
        .post_raw(
            "/tokenize",
            Some("checkout"),
            "application/json",
            body.to_owned(),
            &[("idempotency-key", key)],
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(h.contains_key("retry-after"), "{h:?}");
    assert_eq!(claims(&db), 1, "the claim committed before the stall");
    assert!(freed(&db).await, "the key is freed");
    db.execute_batch("DROP TRIGGER slow_store").unwrap();
}

/// A keyed tokenization past its deadline: its record, stored after, is
/// withdrawn (audited), then its Idempotency-Key freed, so a retry runs
/// afresh at once instead of meeting the stale claim (409 until the
/// lease's minute ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_tokenization_past_its_deadline_frees_its_key() {
    let app = spawn_app_with(|s| s.limits.request_timeout_ms = 500).await;
    if app.aws.is_some() {
        return; // the embedded store's own behaviour; it ran on SQLite
    }
    app.tokenize("4012888888881881", json!({})).await;
    let rows = app.token_rows().await;
    let card = json!({"value": "4111111111111111"}).to_string();
    past_its_deadline(&app, &card, "order-8").await;
    assert!(app.audit_text().await.contains("\"action\":\"withdraw\""));
    assert_eq!(app.token_rows().await, rows, "the record is withdrawn");

    let post = || {
        app.post_raw(
            "/tokenize",
            Some("checkout"),
            "application/json",
            card.clone(),
            &[("idempotency-key", "order-8")],
        )
    };
    let (s, _, first) = post().await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(app.token_rows().await, rows + 1);
    let (s, h, again) = post().await;
    assert_eq!((s, again.as_str()), (StatusCode::CREATED, first.as_str()));
    assert_eq!(h["idempotent-replayed"], "true");
    app.assert_no_leaks().await;
}

/// A keyed tokenization whose answer's write fails after its deadline
/// (the write slow, then refused): the answer may have been kept under the
/// key (a store timeout can land), so its records stay, audited as
/// created, rather than be withdrawn from under a replay; the key is freed.
/// SQLite only: a trigger makes the write slow and fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_stay_when_the_answers_write_fails_past_the_deadline() {
    let app = spawn_app_on(None, |s| s.limits.request_timeout_ms = 500).await;
    let rows = app.token_rows().await;
    let db = rusqlite::Connection::open(app.data_dir().join("vault.db")).unwrap();
    db.busy_timeout(Duration::from_secs(30)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER slow_then_no_answer BEFORE UPDATE ON idempotency BEGIN \
         SELECT count(*) FROM (WITH RECURSIVE n(i) AS \
         (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 15000000) SELECT i FROM n); \
         SELECT RAISE(ABORT, 'no answers today'); END",
    )
    .unwrap();
    let (s, _, b) = app
        .post_raw(
            "/tokenize",
            Some("checkout"),
            "application/json",
            json!({"value": "4111111111111111"}).to_string(),
            &[("idempotency-key", "order-10")],
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(freed(&db).await, "the key is freed");
    db.execute_batch("DROP TRIGGER slow_then_no_answer")
        .unwrap();
    assert_eq!(app.token_rows().await, rows + 1, "the record stays");
    let audit = app.audit_text().await;
    assert!(!audit.contains("\"action\":\"withdraw\""), "{audit}");
    app.assert_no_leaks().await;
}

/// A deterministic tokenization past its deadline keeps its record once
/// its event is written: the token is the card's, and a request for the
/// same card may have been answered with it meanwhile (withdrawn, that
/// token would resolve to nothing). The card's next tokenization finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deterministic_tokenization_past_its_deadline_keeps_its_record() {
    let app = spawn_app_with(|s| s.limits.request_timeout_ms = 500).await;
    if app.aws.is_some() {
        return; // the embedded store's own behaviour; it ran on SQLite
    }
    app.tokenize("4012888888881881", json!({})).await;
    let rows = app.token_rows().await;
    let card = json!({"value": "4111111111111111", "deterministic": true}).to_string();
    past_its_deadline(&app, &card, "order-9").await;
    assert_eq!(app.token_rows().await, rows + 1, "the record stays");
    let audit = app.audit_text().await;
    assert!(!audit.contains("\"action\":\"withdraw\""), "{audit}");

    let (s, v) = app
        .post(
            "/tokenize",
            Some("checkout"),
            &json!({"value": "4111111111111111", "deterministic": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["created"], false);
    let token = v["token"].as_str().unwrap();
    assert!(
        audit.contains(&format!("\"token\":\"{token}\"")),
        "its creation is audited: {audit}"
    );
    assert_eq!(app.token_rows().await, rows + 1);
    app.assert_no_leaks().await;
}

/// POSTs to `path` as `role` a body that stays open after `first`; the
/// sender keeps it open until dropped.
async fn post_held_open(
    app: &TestApp,
    path: &str,
    role: &str,
    content_type: &str,
    first: &str,
) -> (
    tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    reqwest::Response,
) {
    let (tx, body) = held_open();
    tx.send(Ok(first.as_bytes().to_vec())).await.unwrap();
    let res = app
        .client
        .post(format!("{}{path}", app.url))
        .bearer_auth(app.key(role))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (tx, res)
}

/// Starts a streamed redaction whose body stays open after `first`.
async fn stream_held_open(
    app: &TestApp,
    query: &str,
    first: &str,
) -> (
    tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    reqwest::Response,
) {
    let path = format!("/redact{query}");
    post_held_open(app, &path, "log-shipper", "text/plain", first).await
}

/// A client that stops sending its body ends the stream: before any
/// output (a report has none until the end) with a `408` problem, after
/// some with a body cut short. Either way no thread waits on it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_client_stops_sending_is_ended() {
    // 200 ms: well inside the second the head waits for a first output.
    let app = spawn_app_with(|s| s.limits.stream_idle_ms = 200).await;
    let (tx, res) = stream_held_open(&app, "?report=true", "a 4111111111111111\n").await;
    let (s, h, b) = app.record(res).await;
    assert_eq!(s, StatusCode::REQUEST_TIMEOUT, "{b}");
    assert_eq!(h["content-type"], "application/problem+json");
    assert!(b.contains("limits.stream_idle_ms"), "{b}");
    assert!(!b.contains("4111"), "{b}");
    drop(tx);

    // With output: the head normally goes with the first line, and the
    // body is then cut short. On a loaded machine the stall can come
    // before that first output is flushed: then a 408 as above.
    let (tx, res) = stream_held_open(&app, "", "a 4111111111111111\n").await;
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    if res.status() == StatusCode::OK {
        let body = tokio::time::timeout(Duration::from_secs(10), res.bytes())
            .await
            .expect("the stream ends without the client");
        assert!(
            body.is_err(),
            "a stalled stream is cut short, not ended whole"
        );
    } else {
        let (s, _, b) = app.record(res).await;
        assert_eq!(s, StatusCode::REQUEST_TIMEOUT, "{b}");
    }
    assert!(logged(&id, "limits.stream_idle_ms").await);
    drop(tx);
    app.assert_no_leaks().await;
}

/// A client that stops reading its answer ends the stream once the
/// buffers between them are full: the redaction thread does not wait on
/// it for good, and the answer, if read later, is cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_client_stops_reading_is_ended() {
    let app = spawn_app_with(|s| s.limits.stream_idle_ms = 200).await;
    // 48 MiB of card-free lines: more than every buffer on the way (the
    // output channel, hyper's, TLS, both sockets, the client's window).
    let line = format!("{}\n", "log line with nothing to hide ".repeat(8));
    let chunk = line.repeat((256 << 10) / line.len());
    let chunks = (48 << 20) / chunk.len();
    let parts = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let res = app
        .client
        .post(format!("{}/redact", app.url))
        .bearer_auth(app.key("log-shipper"))
        .header("content-type", "text/plain")
        .body(reqwest::Body::wrap_stream(parts))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    // Not reading: the server's sends stall, then give up.
    assert!(
        logged(&id, "the client read nothing for limits.stream_idle_ms").await,
        "the redaction gave up on a client that stopped reading"
    );
    let body = tokio::time::timeout(Duration::from_secs(10), res.bytes())
        .await
        .expect("the answer ends");
    match body {
        Err(_) => {}
        Ok(b) => panic!("a stalled stream completed: {} bytes", b.len()),
    }
    app.assert_no_leaks().await;
}
