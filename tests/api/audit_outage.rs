//! An audit log that cannot be written: nothing is revealed, deleted or
//! kept without its event, and the service recovers once it can write.
//!
//! The outage is made without touching the service: the test clock moves
//! to the next day, so the next write must rotate `audit.log` out to its
//! `audit.log.<last seq>` name, and a file already standing there makes
//! the rotation (and so every write) fail, since a rotated file is never
//! overwritten.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::emulator::{Backend, backend};
use crate::helpers::{CARDS, TestApp, spawn_app};

/// Blocks the audit log's next rotation; returns the blocker's path.
async fn block_the_audit_log(app: &TestApp) -> std::path::PathBuf {
    let text = app.audit_text().await;
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let seq = last["seq"].as_u64().unwrap();
    let blocker = app.data_dir().join(format!("audit.log.{seq:020}"));
    std::fs::write(&blocker, b"").unwrap();
    app.clock.advance(86_400);
    blocker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_audit_log_is_down_nothing_is_kept_or_shown_unaudited() {
    let app = spawn_app().await;
    let kept = app.tokenize(CARDS[0].1, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let blocker = block_the_audit_log(&app).await;
    let rows = app.token_rows().await;

    // Detokenize's event comes before the value: no event, no value.
    let (s, v) = app.detokenize("admin", &kept).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v.get("value").is_none(), "{v}");
    // A delete's event comes before the delete: the record stays.
    let s = app.delete(&format!("/tokens/{kept}"), Some("admin")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);

    let (s, h, b) = app
        .post_raw(
            "/tokenize",
            Some("checkout"),
            "application/json",
            json!({"value": CARDS[2].1}).to_string(),
            &[],
        )
        .await;
    let pending = match backend() {
        // The event is committed with its record in the store's outbox,
        // durable already: the log copies it once it can.
        Backend::Sqlite => {
            assert_eq!(s, StatusCode::CREATED, "{b}");
            assert_eq!(app.token_rows().await, rows + 1);
            let v: Value = serde_json::from_str(&b).unwrap();
            Some(v["token"].as_str().unwrap().to_owned())
        }
        // No outbox: a random record's event is written after it, and
        // failing, takes the record back with it.
        Backend::Aws => {
            assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
            assert!(h.contains_key("retry-after"));
            assert_eq!(app.token_rows().await, rows, "no record without its event");
            None
        }
    };

    // The same for a card that /redact tokenizes (a value of its own,
    // deterministic: without an outbox its event is written first, and
    // failing, nothing is stored).
    let rows_now = app.token_rows().await;
    let (s, _, b) = app
        .post_raw(
            "/redact?actions=pan:tokenize",
            Some("checkout"),
            "text/plain",
            format!("paid with {}\n", CARDS[4].1),
            &[],
        )
        .await;
    let redact_pending = match backend() {
        Backend::Sqlite => {
            assert_eq!(s, StatusCode::OK, "{b}");
            assert_eq!(app.token_rows().await, rows_now + 1);
            let token = b.split_whitespace().find(|w| w.starts_with("tok_"));
            Some(token.expect("the card was tokenized").to_owned())
        }
        Backend::Aws => {
            assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
            assert_eq!(
                app.token_rows().await,
                rows_now,
                "no record without its event"
            );
            None
        }
    };

    // The log writable again: everything works, and every value stored
    // has its event.
    std::fs::remove_file(&blocker).unwrap();
    let (s, v) = app.detokenize("admin", &kept).await;
    assert_eq!((s, v["value"].as_str()), (StatusCode::OK, Some(CARDS[0].1)));
    let audit = app.audit_text().await;
    for token in pending.into_iter().chain(redact_pending) {
        assert!(
            audit
                .lines()
                .any(|l| l.contains(&token) && l.contains("\"action\":\"tokenize\"")),
            "{audit}"
        );
    }
    let s = app.delete(&format!("/tokens/{kept}"), Some("admin")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    app.assert_no_leaks().await;
}
