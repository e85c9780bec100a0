//! Expired records and idempotency entries leave the store: the embedded
//! store's sweeper deletes them (each record audited first); DynamoDB's
//! TTL does it there, where only the answers are checked.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{CARDS, TestApp, spawn_app_with};

/// A count from the embedded store's file.
fn count(app: &TestApp, table: &str) -> i64 {
    let c = rusqlite::Connection::open(app.data_dir().join("vault.db")).unwrap();
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Waits (up to 10 s, polling) until `table` holds `want` rows.
async fn until_rows(app: &TestApp, table: &str, want: i64) {
    for _ in 0..200 {
        if count(app, table) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{table} holds {} rows, not {want}", count(app, table));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_records_and_idempotency_entries_are_deleted() {
    let app = spawn_app_with(|s| s.store.purge_interval_ms = 100).await;
    let token = |v: Value| v["token"].as_str().unwrap().to_owned();
    let short = token(app.tokenize(CARDS[0].1, json!({"ttl_seconds": 60})).await);
    let kept = token(app.tokenize(CARDS[2].1, json!({})).await);
    let det = json!({"ttl_seconds": 60, "deterministic": true});
    let held = token(app.tokenize(CARDS[4].1, det.clone()).await);
    let (s, _, _) = app
        .post_raw(
            "/tokenize",
            Some("checkout"),
            "application/json",
            json!({"value": CARDS[5].1}).to_string(),
            &[("idempotency-key", "order-1")],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let sqlite = app.aws.is_none();
    if sqlite {
        assert_eq!(count(&app, "fingerprints"), 1);
        assert_eq!(count(&app, "idempotency"), 1);
    }
    let rows = app.token_rows().await;

    app.clock.advance(61);
    for t in [&short, &held] {
        assert_eq!(app.detokenize("admin", t).await.0, StatusCode::NOT_FOUND);
    }
    if sqlite {
        // Both expired records go, with the deterministic one's
        // fingerprint; the rest stays.
        until_rows(&app, "tokens", rows - 2).await;
        until_rows(&app, "fingerprints", 0).await;
        let audit = app.audit_text().await;
        for t in [&short, &held] {
            assert!(
                audit.lines().any(|l| l.contains(t.as_str())
                    && l.contains("\"action\":\"expire\"")
                    && l.contains("system:expiry")),
                "{t} has its expire event:\n{audit}"
            );
        }
        assert!(
            !audit
                .lines()
                .any(|l| l.contains(kept.as_str()) && l.contains("\"action\":\"expire\"")),
            "{audit}"
        );
        assert_eq!(count(&app, "idempotency"), 1, "not expired yet");
    }
    let (s, v) = app.detokenize("admin", &kept).await;
    assert_eq!((s, v["value"].as_str()), (StatusCode::OK, Some(CARDS[2].1)));
    // The value is free for a new deterministic token.
    let again = app.tokenize(CARDS[4].1, det).await;
    assert_eq!(again["created"], true);
    assert_ne!(token(again), held);

    // Idempotent answers are kept 24 hours.
    app.clock.advance(24 * 3600);
    if sqlite {
        until_rows(&app, "idempotency", 0).await;
    }
    app.assert_no_leaks().await;
}
