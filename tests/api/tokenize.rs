use serde_json::{Value, json};

use crate::emulator::{Backend, backend};
use crate::helpers::{CARDS, freed, luhn, spawn_app, spawn_app_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_brand_round_trips() {
    let app = spawn_app().await;
    let mut tokens = Vec::new();
    for (brand, card) in CARDS {
        let t = app.tokenize(card, json!({})).await;
        assert_eq!(t["brand"], *brand);
        assert_eq!(t["last4"], card[card.len() - 4..]);
        assert_eq!(t["created"], true);
        let token = t["token"].as_str().unwrap();
        assert!(token.starts_with("tok_") && token.len() == 28, "{token}");
        let (s, v) = app.detokenize("admin", token).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["value"], *card);
        assert_eq!(v["masked"], false);
        tokens.push(token.to_owned());
    }
    // Each tokenization is one audit event. On the embedded store it was
    // committed with its record and copied from the outbox, which the
    // line's mark shows.
    let audit = app.audit_text().await;
    for token in &tokens {
        let lines: Vec<&str> = audit
            .lines()
            .filter(|l| l.contains(token.as_str()) && l.contains("\"action\":\"tokenize\""))
            .collect();
        assert_eq!(lines.len(), 1, "{audit}");
        let outbox = lines[0].contains("\"outbox\":\"");
        assert_eq!(outbox, backend() == Backend::Sqlite, "{}", lines[0]);
    }
    app.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spaced_and_dashed_cards_are_normalized() {
    let app = spawn_app().await;
    let t = app.tokenize("4111 1111-1111 1111", json!({})).await;
    let (_, v) = app.detokenize("admin", t["token"].as_str().unwrap()).await;
    assert_eq!(v["value"], "4111111111111111");
    app.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_deterministic_requests_give_one_token() {
    let app = std::sync::Arc::new(spawn_app().await);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.tokenize("5555555555554444", json!({"deterministic": true}))
                .await
        }));
    }
    let mut tokens = std::collections::BTreeSet::new();
    let mut created = 0;
    for t in tasks {
        let v = t.await.unwrap();
        tokens.insert(v["token"].as_str().unwrap().to_owned());
        if v["created"] == true {
            created += 1;
        }
    }
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(created, 1);
    assert_eq!(app.token_rows().await, 1);
    // A later request answers 200 with created=false.
    let (s, v) = app
        .post(
            "/tokenize",
            Some("checkout"),
            &json!({"value": "5555555555554444", "deterministic": true}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["created"], false);
    let token = tokens.into_iter().next().unwrap();
    assert_eq!(v["token"], token);
    // Every request is one event naming the card's token. The one that
    // stored the card committed its event with the record (the embedded
    // store's outbox) or wrote it first (DynamoDB); the others stored
    // nothing and recorded theirs. (On DynamoDB one that lost the race
    // also announced a token of its own and retracted it: not counted.)
    let audit = app.audit_text().await;
    let events = audit
        .lines()
        .filter(|l| l.contains(&token) && l.contains("\"action\":\"tokenize\""))
        .count();
    assert_eq!(events, 51, "{audit}");
    let noted = app.outbox_notes_issued();
    assert_eq!(noted, (backend() == Backend::Sqlite).then_some(1));
    app.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_first_answer() {
    let app = spawn_app().await;
    let body = json!({"value": "4012888888881881"}).to_string();
    let send = |b: String| {
        app.post_raw(
            "/tokenize",
            Some("checkout"),
            "application/json",
            b,
            &[("idempotency-key", "order-42-attempt")],
        )
    };
    let (s1, _, b1) = send(body.clone()).await;
    let (s2, h2, b2) = send(body.clone()).await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (201, 201));
    assert_eq!(b1, b2);
    assert_eq!(h2.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(app.token_rows().await, 1);
    // The same key with another body is refused.
    let (s3, _, b3) = send(json!({"value": "4111111111111111"}).to_string()).await;
    assert_eq!(s3, 422, "{b3}");
    assert_eq!(app.token_rows().await, 1);

    // A batch's replay too; and each replay is audited, one event per
    // token handed out again.
    let batch = json!({"values": ["5555555555554444", "378282246310005", "4111"]}).to_string();
    let send_batch = || {
        app.post_raw(
            "/tokenize",
            Some("checkout"),
            "application/json",
            batch.clone(),
            &[("idempotency-key", "order-43-batch")],
        )
    };
    let (s4, _, b4) = send_batch().await;
    let (s5, h5, b5) = send_batch().await;
    assert_eq!(
        (s4.as_u16(), s5.as_u16(), b4.as_str()),
        (200, 200, b5.as_str())
    );
    assert_eq!(h5["idempotent-replayed"], "true");
    let v: Value = serde_json::from_str(&b4).unwrap();
    let mut tokens: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["token"].as_str())
        .collect();
    assert_eq!(tokens.len(), 2, "{b4}");
    let first: Value = serde_json::from_str(&b1).unwrap();
    tokens.push(first["token"].as_str().unwrap());
    let audit = app.audit_text().await;
    for token in tokens {
        let events: Vec<&str> = audit
            .lines()
            .filter(|l| l.contains(&format!("\"token\":\"{token}\"")))
            .collect();
        assert_eq!(events.len(), 2, "{audit}");
        assert!(events[0].contains("\"reason\":null"), "{audit}");
        // The replay's event is its own request's.
        let request_id = |l: &str| serde_json::from_str::<Value>(l).unwrap()["request_id"].clone();
        assert_ne!(request_id(events[0]), request_id(events[1]));
        assert!(
            events[1].contains("\"action\":\"tokenize\"")
                && events[1].contains("\"decision\":\"allow\",\"reason\":\"idempotent replay\""),
            "{audit}"
        );
    }
    // The same key with another body was refused, and audited.
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains(
                "\"action\":\"tokenize\",\"token\":null,\"classification\":\"pan\",\"decision\":\"deny\",\"reason\":\"idempotency-key-reused\""
            ))
            .count(),
        1,
        "{audit}"
    );
    app.assert_no_leaks().await;
}

/// The embedded store's database, with a trigger made by `sql` (dropped
/// by the caller) to fail a write.
fn with_trigger(app: &crate::helpers::TestApp, sql: &str) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(app.data_dir().join("vault.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
    db.execute_batch(sql).unwrap();
    db
}

/// An answer that cannot be kept under its Idempotency-Key (the store
/// fails that one write) is still sent, and the key is freed: a retry
/// runs afresh at once instead of meeting a stale claim (409 until the
/// lease's minute ends). SQLite only: a trigger fails the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_answer_cannot_be_kept_is_freed() {
    let app = spawn_app_on(None, |_| {}).await;
    let db = with_trigger(
        &app,
        "CREATE TRIGGER keep_no_answer BEFORE UPDATE ON idempotency \
         BEGIN SELECT RAISE(ABORT, 'no answers today'); END",
    );
    let send = || {
        app.post_raw(
            "/tokenize",
            Some("checkout"),
            "application/json",
            json!({"value": "4012888888881881"}).to_string(),
            &[("idempotency-key", "order-43")],
        )
    };
    let (s, _, first) = send().await;
    assert_eq!(s, 201, "{first}");
    // The key is freed after the answer is sent.
    assert!(freed(&db).await, "the key is freed");
    db.execute_batch("DROP TRIGGER keep_no_answer").unwrap();

    let (s, h, again) = send().await;
    assert_eq!(s, 201, "{again}");
    assert!(h.get("idempotent-replayed").is_none(), "{h:?}");
    assert_ne!(again, first, "run afresh: a token of its own");
    assert_eq!(app.token_rows().await, 2);
    app.assert_no_leaks().await;
}

/// A batch answered `200` with an item that failed for the store's sake is
/// kept whole under its Idempotency-Key, as documented: a retry under the
/// key is replayed (its stored cards are not stored twice), and the failed
/// card is resent under a new key. SQLite only: a trigger fails one card's
/// insert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_failed_item_is_kept_whole_under_its_key() {
    let app = spawn_app_on(None, |_| {}).await;
    let db = with_trigger(
        &app,
        "CREATE TRIGGER no_1881 BEFORE INSERT ON tokens WHEN NEW.last4 = '1881' \
         BEGIN SELECT RAISE(ABORT, 'not this one'); END",
    );
    let app = &app;
    let send = |body: serde_json::Value, key: &'static str| async move {
        app.post_raw(
            "/tokenize",
            Some("checkout"),
            "application/json",
            body.to_string(),
            &[("idempotency-key", key)],
        )
        .await
    };
    let batch = json!({"values": ["4111111111111111", "4012888888881881"]});
    let (s, _, first) = send(batch.clone(), "order-44").await;
    assert_eq!(s, 200, "{first}");
    let parsed: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert!(parsed["results"][0]["token"].is_string(), "{first}");
    assert!(
        parsed["results"][1]["problem"]["status"].as_u64() >= Some(500),
        "{first}"
    );
    // One that stored nothing, an item failed for the store's sake beside
    // an invalid one, is answered 503 whole and its key freed.
    let nothing = json!({"values": ["4012888888881881", "4111111111111112"]});
    let (s, _, b) = send(nothing.clone(), "order-45").await;
    assert_eq!(s, 503, "{b}");
    db.execute_batch("DROP TRIGGER no_1881").unwrap();
    // Its key goes after the answer: a retry meets 409 until then.
    let mut retried = None;
    for _ in 0..200 {
        let (s, h, b) = send(nothing.clone(), "order-45").await;
        if s != 409 {
            retried = Some((s, h, b));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (s, h, b) = retried.expect("the key is freed");
    assert_eq!(s, 200, "{b}");
    assert!(h.get("idempotent-replayed").is_none(), "{h:?}");
    let rows = app.token_rows().await;

    let (s, h, again) = send(batch, "order-44").await;
    assert_eq!((s.as_u16(), again.as_str()), (200, first.as_str()));
    assert_eq!(h["idempotent-replayed"], "true");
    assert_eq!(app.token_rows().await, rows, "nothing stored twice");
    let (s, _, resent) = send(json!({"values": ["4012888888881881"]}), "order-44-b").await;
    assert_eq!(s, 200, "{resent}");
    assert_eq!(app.token_rows().await, rows + 1);
    app.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserving_tokens_keep_last_four_and_length_and_fail_luhn() {
    let app = spawn_app().await;
    for (_, card) in CARDS {
        let t = app.tokenize(card, json!({"format": "preserving"})).await;
        let tok = t["token"].as_str().unwrap();
        assert_eq!(tok.len(), card.len());
        assert!(tok.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(&tok[tok.len() - 4..], &card[card.len() - 4..]);
        assert!(!luhn(tok), "a preserving token passed Luhn");
        let (_, v) = app.detokenize("admin", tok).await;
        assert_eq!(v["value"], *card);
    }
    let t = app
        .tokenize("4111111111111111", json!({"format": "preserving_bin"}))
        .await;
    let tok = t["token"].as_str().unwrap();
    assert!(tok.starts_with("411111") && tok.ends_with("1111") && !luhn(tok));
    let (s, m) = app.get(&format!("/tokens/{tok}"), Some("admin")).await;
    assert_eq!(s, 200);
    assert_eq!(m["first6"], "411111");
    // Amex keeps too few random digits between BIN and last four.
    let (s, v) = app
        .post(
            "/tokenize",
            Some("checkout"),
            &json!({"value": "378282246310005", "format": "preserving_bin"}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["type"], "urn:tokenvault:problem:unsupported-format");
    app.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_by_the_clock() {
    let app = spawn_app().await;
    let t = app
        .tokenize("6011111111111117", json!({"ttl_seconds": 3600}))
        .await;
    let token = t["token"].as_str().unwrap();
    assert!(t["expires_at"].is_string());
    app.clock.advance(3599);
    assert_eq!(app.detokenize("admin", token).await.0, 200);
    app.clock.advance(1);
    let (s, v) = app.detokenize("admin", token).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(
        app.get(&format!("/tokens/{token}"), Some("admin")).await.0,
        404
    );
    // A deterministic token that expired is replaced, not resurrected.
    let d1 = app
        .tokenize(
            "6011111111111117",
            json!({"deterministic": true, "ttl_seconds": 60}),
        )
        .await;
    app.clock.advance(61);
    let rows = app.token_rows().await;
    let d2 = app
        .tokenize("6011111111111117", json!({"deterministic": true}))
        .await;
    assert_ne!(d1["token"], d2["token"]);
    assert_eq!(d2["created"], true);
    // The expired holder's record is not deleted on this caller's path,
    // unaudited: the sweeper deletes it, with its expire event
    // (tests/api/expiry.rs). One record in, none out.
    assert_eq!(app.token_rows().await, rows + 1);
    app.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_keep_order_and_report_per_item_problems() {
    let app = spawn_app().await;
    let (s, v) = app
        .post(
            "/tokenize",
            Some("checkout"),
            &json!({"values": ["4111111111111111", "4111111111111112", "378282246310005", "abc"]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 4);
    assert_eq!(r[0]["last4"], "1111");
    assert_eq!(
        r[1]["problem"]["type"],
        "urn:tokenvault:problem:invalid-value"
    );
    assert_eq!(r[1]["problem"]["status"], 400);
    assert_eq!(r[2]["brand"], "amex");
    assert_eq!(r[3]["problem"]["status"], 400);
    assert_eq!(app.token_rows().await, 2);

    let tokens = json!([
        r[0]["token"],
        "tok_notavalidtokenatallxxxxxx",
        r[2]["token"]
    ]);
    let (s, v) = app
        .post("/detokenize", Some("support"), &json!({ "tokens": tokens }))
        .await;
    assert_eq!(s, 200, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r[0]["value"], "************1111");
    assert_eq!(
        r[1]["problem"]["type"],
        "urn:tokenvault:problem:invalid-token"
    );
    assert_eq!(r[2]["value"], "***********0005");
    assert_eq!(r[2]["masked"], true);

    let many: Vec<String> = (0..1001).map(|_| "4111111111111111".to_owned()).collect();
    let (s, v) = app
        .post("/tokenize", Some("checkout"), &json!({ "values": many }))
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["type"], "urn:tokenvault:problem:batch-too-large");
    app.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_values_tokenize_and_mask_whole() {
    let app = spawn_app().await;
    let t = app
        .tokenize("jane.doe@example.com", json!({"classification": "pii"}))
        .await;
    assert_eq!(t["classification"], "pii");
    assert!(t["last4"].is_null());
    let token = t["token"].as_str().unwrap();
    let (_, v) = app.detokenize("support", token).await;
    assert_eq!(v["value"], "********************");
    let (_, v) = app.detokenize("admin", token).await;
    assert_eq!(v["value"], "jane.doe@example.com");
}
