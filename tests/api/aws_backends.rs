//! What only the production backends have, against moto: KMS encryption
//! contexts, ciphertexts that do not move between items, conditional key
//! items, a KMS outage ridden out on cached keys, rewrap, and the real
//! binary's `migrate`, `doctor` and `rewrap` configured from the standard
//! AWS environment variables.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_dynamodb::types::AttributeValue;
use reqwest::StatusCode;
use serde_json::json;
use tokenvault::crypto::kms::KmsKeyProvider;
use tokenvault::crypto::{EncryptionContext, KeyError, KeyProvider};
use tokenvault::store::{IdempotencyClaim, InsertOutcome, KeyItem, TokenRecord, TokenStore};

use crate::emulator::{clients, clients_split, create_key, provision, shared_moto};
use crate::helpers::{CARDS, TestApp, spawn_app_on};

/// The store on a table, as the service opens it.
async fn open_store(
    dynamodb: aws_sdk_dynamodb::Client,
    table: &str,
) -> tokenvault::store::dynamodb::DynamoStore {
    tokenvault::store::dynamodb::DynamoStore::open(
        dynamodb,
        table,
        Arc::new(tokenvault::telemetry::Metrics::new()),
    )
    .await
    .unwrap()
}

/// The shared emulator's clients, or `None` (test skipped) outside CI when
/// moto is not installed.
async fn moto_clients() -> Option<tokenvault::aws::Clients> {
    Some(clients(&shared_moto()?.endpoint).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_wraps_under_the_encryption_context_and_refuses_another() {
    let Some(c) = moto_clients().await else {
        return;
    };
    let p = provision(&c).await;
    let kms = KmsKeyProvider::new(c.kms.clone(), p.keys.clone());
    let ctx = EncryptionContext::new("test", "pan");
    let (key, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
    assert_eq!(wrapped.key_id, p.keys["pan"], "wrapped under the pan key");
    let again = kms.decrypt_data_key(&wrapped, &ctx).await.unwrap();
    assert_eq!(key.expose(), again.expose());
    for other in [
        EncryptionContext::new("test", "pii"),
        EncryptionContext::new("prod", "pan"),
        ctx.clone().with("purpose", "fingerprint"),
    ] {
        assert!(
            matches!(
                kms.decrypt_data_key(&wrapped, &other).await,
                Err(KeyError::Unwrap)
            ),
            "a wrong context must not open the key"
        );
    }
    // A pii key is wrapped under the pii key.
    let (_, w) = kms
        .generate_data_key(&EncryptionContext::new("test", "pii"))
        .await
        .unwrap();
    assert_eq!(w.key_id, p.keys["pii"]);
}

/// A key freed by its owner after its answer was kept (a completion that
/// failed yet landed) keeps the answer: the release only frees a claim
/// still waiting for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owners_release_after_the_answer_keeps_the_answer() {
    let Some(c) = moto_clients().await else {
        return;
    };
    let p = provision(&c).await;
    let store = open_store(c.dynamodb.clone(), &p.table).await;
    assert_eq!(
        store.claim_idempotency("k", "h", "a", 0, 10).await.unwrap(),
        IdempotencyClaim::Claimed
    );
    store
        .complete_idempotency("k", "a", 201, "{}", 99)
        .await
        .unwrap();
    store.release_idempotency("k", "a").await.unwrap();
    assert!(matches!(
        store.claim_idempotency("k", "h", "c", 1, 20).await.unwrap(),
        IdempotencyClaim::Done { status: 201, .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loser_of_a_key_item_race_reads_the_winners() {
    let Some(c) = moto_clients().await else {
        return;
    };
    let p = provision(&c).await;
    let store = open_store(c.dynamodb.clone(), &p.table).await;
    let item = |wrapped: &[u8]| KeyItem {
        id: "dk/pan/1".into(),
        classification: "pan".into(),
        wrapping_key_id: p.keys["pan"].clone(),
        wrapped: wrapped.to_vec(),
        created_at: 1,
    };
    assert_eq!(store.put_key_item(&item(b"first")).await.unwrap(), None);
    assert_eq!(
        store.put_key_item(&item(b"second")).await.unwrap(),
        Some(item(b"first")),
        "the second put keeps the first and returns it"
    );
    assert_eq!(
        store.get_key_item("dk/pan/1").await.unwrap(),
        Some(item(b"first"))
    );
}

/// A preserving token once issued is never issued again, its record
/// deleted or not (DynamoDB's TTL removes expired ones unseen): a holder
/// of the old token must never reach another card; one issued before
/// names were kept gets its name when deleted. Random tokens are not
/// kept. A record is withdrawn only by its own nonce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preserving_token_is_never_issued_twice() {
    let Some(c) = moto_clients().await else {
        return;
    };
    let p = provision(&c).await;
    let store = open_store(c.dynamodb.clone(), &p.table).await;
    let record = |token: &str| TokenRecord {
        token: token.into(),
        classification: "pan".into(),
        ciphertext: vec![1, 2, 3],
        nonce: vec![0; 12],
        data_key_id: "dk/pan/1".into(),
        metadata: "{}".into(),
        ..Default::default()
    };
    for (token, again) in [
        ("4111112345671112", InsertOutcome::TokenTaken),
        ("tok_notpreserving", InsertOutcome::Inserted),
    ] {
        let r = record(token);
        assert_eq!(
            store.insert_token(&r).await.unwrap(),
            InsertOutcome::Inserted
        );
        assert!(store.delete_token(token, None).await.unwrap());
        assert_eq!(store.insert_token(&r).await.unwrap(), again, "{token}");
    }
    // A preserving token issued before names were kept (its name item
    // removed here) gets its name when it is deleted.
    let old = record("4111119876541113");
    store.insert_token(&old).await.unwrap();
    c.dynamodb
        .delete_item()
        .table_name(&p.table)
        .key("pk", AttributeValue::S("name#4111119876541113".into()))
        .key("sk", AttributeValue::S("name".into()))
        .send()
        .await
        .unwrap();
    assert!(store.delete_token(&old.token, None).await.unwrap());
    assert_eq!(
        store.insert_token(&old).await.unwrap(),
        InsertOutcome::TokenTaken
    );
    // A record is withdrawn only by its own nonce.
    let r = record("tok_withdrawn");
    store.insert_token(&r).await.unwrap();
    let other = TokenRecord {
        nonce: vec![9; 12],
        ..r.clone()
    };
    assert!(!store.withdraw_record(&other).await.unwrap());
    assert!(store.withdraw_record(&r).await.unwrap());
    assert_eq!(store.get_token("tok_withdrawn", None).await.unwrap(), None);
}

/// Moves `attr` of one token item into another's.
async fn copy_attribute(app: &TestApp, from: &str, to: &str, attrs: &[&str]) {
    let aws = app.aws.as_ref().unwrap();
    let table = app.settings.store.table.clone().unwrap();
    let key = |t: &str| {
        std::collections::HashMap::from([
            ("pk".to_owned(), AttributeValue::S(format!("tok#{t}"))),
            ("sk".to_owned(), AttributeValue::S("tok".into())),
        ])
    };
    let source = aws
        .dynamodb
        .get_item()
        .table_name(&table)
        .set_key(Some(key(from)))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    for attr in attrs {
        aws.dynamodb
            .update_item()
            .table_name(&table)
            .set_key(Some(key(to)))
            .update_expression("SET #a = :v")
            .expression_attribute_names("#a", *attr)
            .expression_attribute_values(":v", source[*attr].clone())
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ciphertext_moved_into_another_item_does_not_open() {
    let Some(c) = moto_clients().await else {
        return;
    };
    let app = spawn_app_on(Some(c), |_| {}).await;
    let a = app.tokenize(CARDS[0].1, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = app.tokenize(CARDS[2].1, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    copy_attribute(&app, &a, &b, &["ciphertext", "nonce"]).await;
    let (status, body) = app.detokenize("admin", &b).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(!body.to_string().contains(CARDS[0].1));
    // The original still opens.
    let (status, body) = app.detokenize("admin", &a).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["value"], CARDS[0].1);
    app.assert_no_leaks().await;
}

/// A TCP proxy in front of the emulator that a test can cut: while down it
/// drops new connections at once and ends open ones. While held, it ends
/// open ones and keeps new ones waiting, unanswered, until released.
struct Cuttable {
    endpoint: String,
    up: Arc<AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
    held: tokio::sync::watch::Sender<bool>,
}

impl Cuttable {
    async fn start(upstream: &str) -> Cuttable {
        let target = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let (held, _) = tokio::sync::watch::channel(false);
        let (flag, gen_tx, held_tx) = (up.clone(), generation.clone(), held.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let mut cut = gen_tx.subscribe();
                let mut hold = held_tx.subscribe();
                tokio::spawn(async move {
                    if hold.wait_for(|held| !held).await.is_err() {
                        return;
                    }
                    cut.mark_unchanged();
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Cuttable {
            endpoint,
            up,
            generation,
            held,
        }
    }

    fn hold(&self, held: bool) {
        self.held.send_replace(held);
        if held {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_outage_runs_on_cached_keys_then_answers_503_and_recovers() {
    let Some(moto) = shared_moto() else { return };
    let proxy = Cuttable::start(&moto.endpoint).await;
    let c = clients_split(&moto.endpoint, &proxy.endpoint).await;
    let app = spawn_app_on(Some(c), |s| s.keys.cache_seconds = 60).await;
    let card = CARDS[0].1;
    let token = app.tokenize(card, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    proxy.set(false);
    // Within the cache period: both directions keep working.
    let (s, _) = app
        .post("/tokenize", Some("checkout"), &json!({"value": CARDS[2].1}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "tokenize on a cached data key");
    let (s, body) = app.detokenize("admin", &token).await;
    assert_eq!((s, body["value"].as_str()), (StatusCode::OK, Some(card)));

    // Past it: 503 with Retry-After, nothing written.
    app.clock.advance(61);
    let rows = app.token_rows().await;
    let (s, h, body) = app
        .post_raw(
            "/tokenize",
            Some("checkout"),
            "application/json",
            json!({"value": CARDS[4].1}).to_string(),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(h.contains_key("retry-after"));
    // A keyed batch holding an invalid card too: nothing done, so 503 as a
    // whole and its key freed, not a 200 of problems kept for replay.
    let keyed_batch = || async {
        app.post_raw(
            "/tokenize",
            Some("checkout"),
            "application/json",
            json!({"values": [CARDS[5].1, "4111111111111112"]}).to_string(),
            &[("idempotency-key", "batch-1")],
        )
        .await
    };
    let (s, h, body) = keyed_batch().await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(h.contains_key("retry-after"));
    assert_eq!(app.token_rows().await, rows, "no partial write");
    let (s, _) = app.detokenize("admin", &token).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let (s, _) = app.get("/readyz", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "not ready without keys");

    // KMS back: recovery without a restart.
    proxy.set(true);
    let (s, body) = app.detokenize("admin", &token).await;
    assert_eq!((s, body["value"].as_str()), (StatusCode::OK, Some(card)));
    let (s, h, body) = keyed_batch().await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(!h.contains_key("idempotent-replayed"), "{body}");
    let results: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(results["results"][0]["token"].is_string(), "{body}");
    assert_eq!(results["results"][1]["problem"]["status"], 400, "{body}");
    app.tokenize(CARDS[4].1, json!({})).await;
    let (s, _) = app.get("/readyz", None).await;
    assert_eq!(s, StatusCode::OK);
    app.assert_no_leaks().await;
}

/// A detokenization cut off by its deadline while the key provider
/// stalls is still audited: an `error` event for its token, though its
/// own events were never made. The provider recovers after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detokenization_past_its_deadline_is_still_audited() {
    let Some(moto) = shared_moto() else { return };
    let proxy = Cuttable::start(&moto.endpoint).await;
    let c = clients_split(&moto.endpoint, &proxy.endpoint).await;
    let app = spawn_app_on(Some(c), |s| {
        s.keys.cache_seconds = 60;
        s.limits.request_timeout_ms = 2000;
    })
    .await;
    let card = CARDS[0].1;
    let token = app.tokenize(card, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Past the cache period, the data key's Decrypt stalls.
    proxy.hold(true);
    app.clock.advance(61);
    let (s, h, body) = app
        .post_raw(
            "/detokenize",
            Some("admin"),
            "application/json",
            json!({"token": token}).to_string(),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let id = h["x-request-id"].to_str().unwrap().to_owned();
    let audited = |text: &str| {
        text.lines().any(|l| {
            l.contains(&format!("\"request_id\":\"{id}\""))
                && l.contains("\"action\":\"detokenize\"")
                && l.contains(&format!("\"token\":\"{token}\""))
                && l.contains("\"decision\":\"error\"")
        })
    };
    let mut found = false;
    for _ in 0..100 {
        if audited(&app.audit_text().await) {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(found, "the attempt is audited");

    proxy.hold(false);
    let (s, body) = app.detokenize("admin", &token).await;
    assert_eq!((s, body["value"].as_str()), (StatusCode::OK, Some(card)));
    app.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fingerprint_left_behind_by_ttl_does_not_block_its_value() {
    let Some(c) = moto_clients().await else {
        return;
    };
    let app = spawn_app_on(Some(c), |_| {}).await;
    let first = app
        .tokenize(CARDS[0].1, json!({"deterministic": true}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // DynamoDB's TTL removed the record but not (yet) its fingerprint item.
    app.aws
        .as_ref()
        .unwrap()
        .dynamodb
        .delete_item()
        .table_name(app.settings.store.table.as_deref().unwrap())
        .key("pk", AttributeValue::S(format!("tok#{first}")))
        .key("sk", AttributeValue::S("tok".into()))
        .send()
        .await
        .unwrap();
    let (s, v) = app
        .post(
            "/tokenize",
            Some("checkout"),
            &json!({"value": CARDS[0].1, "deterministic": true}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_ne!(v["token"].as_str(), Some(first.as_str()));
    app.assert_no_leaks().await;
}

/// The table drifted (a TTL race, an operator's repair): the fingerprint
/// item of a deterministic record names another token. Deleting the
/// record answered 503 on every try; now the record goes and the other
/// token's fingerprint item stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_fingerprint_names_another_token_is_still_deleted() {
    let Some(c) = moto_clients().await else {
        return;
    };
    let app = spawn_app_on(Some(c), |_| {}).await;
    let token = app
        .tokenize(CARDS[0].1, json!({"deterministic": true}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let fp_pk = app
        .stored_items()
        .await
        .into_iter()
        .map(|(name, _)| name)
        .find(|name| name.starts_with("fp#"))
        .expect("a fingerprint item");
    let table = app.settings.store.table.clone().unwrap();
    let dynamodb = &app.aws.as_ref().unwrap().dynamodb;
    dynamodb
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S(fp_pk.clone()))
        .item("sk", AttributeValue::S("fp".into()))
        .item("token", AttributeValue::S("tok_another".into()))
        .send()
        .await
        .unwrap();

    let s = app.delete(&format!("/tokens/{token}"), Some("admin")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(app.token_rows().await, 0);
    let kept = dynamodb
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S(fp_pk))
        .key("sk", AttributeValue::S("fp".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        kept.item().and_then(|i| i.get("token")),
        Some(&AttributeValue::S("tok_another".into()))
    );
    app.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamodb_outage_answers_503_writes_nothing_and_recovers() {
    let Some(moto) = shared_moto() else { return };
    let proxy = Cuttable::start(&moto.endpoint).await;
    let c = clients_split(&proxy.endpoint, &moto.endpoint).await;
    let app = spawn_app_on(Some(c), |_| {}).await;
    let token = app.tokenize(CARDS[0].1, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let rows = app.token_rows().await;

    proxy.set(false);
    for (path, role, body) in [
        ("/tokenize", "checkout", json!({"value": CARDS[2].1})),
        (
            "/tokenize",
            "checkout",
            json!({"value": CARDS[3].1, "deterministic": true}),
        ),
        ("/detokenize", "admin", json!({"token": token})),
    ] {
        let (s, h, b) = app
            .post_raw(path, Some(role), "application/json", body.to_string(), &[])
            .await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{path}: {b}");
        assert!(h.contains_key("retry-after"));
        assert!(b.contains("urn:tokenvault:problem:"), "problem+json: {b}");
    }
    let (s, _) = app.get("/readyz", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);

    proxy.set(true);
    assert_eq!(app.token_rows().await, rows, "nothing half-written");
    let (s, body) = app.detokenize("admin", &token).await;
    assert_eq!(
        (s, body["value"].as_str()),
        (StatusCode::OK, Some(CARDS[0].1))
    );
    app.tokenize(CARDS[3].1, json!({"deterministic": true}))
        .await;
    assert_eq!(app.token_rows().await, rows + 1);
    app.assert_no_leaks().await;
}

/// Every (token, value) detokenizes to its value.
async fn assert_all_open(app: &TestApp, tokens: &[(String, String)]) {
    for (token, value) in tokens {
        let (s, body) = app.detokenize("admin", token).await;
        assert_eq!(
            (s, body["value"].as_str()),
            (StatusCode::OK, Some(value.as_str())),
            "{token}"
        );
    }
}

/// Every key item's wrapping key, read from the table.
async fn wrapping_keys(app: &TestApp) -> Vec<(String, String)> {
    let store = open_store(
        app.aws.as_ref().unwrap().dynamodb.clone(),
        app.settings.store.table.as_deref().unwrap(),
    )
    .await;
    store
        .key_items_after(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.id, k.wrapping_key_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrap_moves_every_key_item_to_a_second_key_and_every_token_still_opens() {
    let Some(c) = moto_clients().await else {
        return;
    };
    let mut app = spawn_app_on(Some(c.clone()), |_| {}).await;
    let mut tokens = Vec::new();
    for (i, (_, card)) in CARDS.iter().enumerate() {
        let extra = if i % 2 == 0 {
            json!({})
        } else {
            json!({"deterministic": true})
        };
        tokens.push((
            app.tokenize(card, extra).await["token"]
                .as_str()
                .unwrap()
                .to_owned(),
            card.to_string(),
        ));
    }
    let (s, v) = app
        .post(
            "/tokenize",
            Some("admin"),
            &json!({"value": "jane@example.com", "classification": "pii"}),
        )
        .await;
    assert!(s.is_success(), "{v}");
    tokens.push((
        v["token"].as_str().unwrap().to_owned(),
        "jane@example.com".into(),
    ));
    // A second epoch's data key too.
    app.clock.advance(86_400);
    tokens.push((
        app.tokenize(CARDS[1].1, json!({})).await["token"]
            .as_str()
            .unwrap()
            .to_owned(),
        CARDS[1].1.to_string(),
    ));

    // Retire the pan key: its data keys and the service secrets move, the
    // pii key's items stay.
    let before = wrapping_keys(&app).await;
    let pan_key = app.settings.keys.kms["pan"].clone();
    let pii_key = app.settings.keys.kms["pii"].clone();
    let under_pan = before.iter().filter(|(_, k)| *k == pan_key).count();
    assert!(under_pan >= 6, "two epochs and four secrets: {before:?}");
    assert!(before.iter().any(|(_, k)| *k == pii_key));
    let second = create_key(&c, "rewrap target").await;
    let kms = KmsKeyProvider::new(c.kms.clone(), app.settings.keys.kms.clone());
    let store = open_store(
        c.dynamodb.clone(),
        app.settings.store.table.as_deref().unwrap(),
    )
    .await;
    let mut opts = tokenvault::rewrap::RewrapOptions {
        to_key: second.clone(),
        from_key: None,
        classification: None,
        dry_run: true,
        limit: None,
        checkpoint: app.data_dir().join("rewrap.checkpoint"),
    };
    let env = app.settings.environment.clone();
    assert!(
        matches!(
            tokenvault::rewrap::run(&store, &kms, &env, &opts, |_, _| {}).await,
            Err(tokenvault::rewrap::RewrapError::Unbounded)
        ),
        "neither a key nor a classification named: refused"
    );
    opts.from_key = Some(pan_key.clone());
    let dry = tokenvault::rewrap::run(&store, &kms, &env, &opts, |_, _| {})
        .await
        .unwrap();
    assert_eq!(dry.rewrapped as usize, under_pan);
    assert_eq!(dry.other_classification as usize, before.len() - under_pan);
    assert_eq!(
        wrapping_keys(&app).await,
        before,
        "a dry run changes nothing"
    );

    // In two stages: one item, then the rest from the checkpoint.
    opts.dry_run = false;
    opts.limit = Some(1);
    let first = tokenvault::rewrap::run(&store, &kms, &env, &opts, |_, _| {})
        .await
        .unwrap();
    assert_eq!((first.rewrapped, first.complete), (1, false));
    assert!(opts.checkpoint.exists());
    // Half-way (one key moved, the rest not), with fresh caches: every
    // token opens.
    app.restart().await;
    assert_all_open(&app, &tokens).await;
    opts.limit = None;
    let mut seen = Vec::new();
    let rest = tokenvault::rewrap::run(&store, &kms, &env, &opts, |done, total| {
        seen.push((done, total))
    })
    .await
    .unwrap();
    assert_eq!(rest.resumed_past, 1, "resumed after the checkpoint");
    assert_eq!(rest.rewrapped as usize, under_pan, "counts carry over");
    assert_eq!(
        seen.last(),
        Some(&(before.len() as u64, before.len() as u64))
    );
    assert!(!opts.checkpoint.exists(), "checkpoint removed at the end");

    let after = wrapping_keys(&app).await;
    assert_eq!(after.len(), before.len());
    for ((id, was), (id2, now)) in before.iter().zip(&after) {
        assert_eq!(id, id2);
        let want = if *was == pan_key { &second } else { was };
        assert_eq!(now, want, "{id}");
    }
    for (name, bytes) in app.stored_items().await {
        assert!(
            !bytes
                .windows(pan_key.len())
                .any(|w| w == pan_key.as_bytes()),
            "{name} still names the retired key"
        );
    }
    // Fresh caches: every token opens through the re-wrapped keys.
    app.restart().await;
    assert_all_open(&app, &tokens).await;
    let again = tokenvault::rewrap::run(&store, &kms, &env, &opts, |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        (
            again.rewrapped as usize,
            again.other_classification as usize
        ),
        (0, before.len()),
        "nothing is left under the retired key"
    );
    app.assert_no_leaks().await;
}

/// The real binary with the standard AWS variables pointing at moto.
fn tokenvault_aws(endpoint: &str, home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tokenvault"));
    for (k, _) in std::env::vars() {
        if k.starts_with("TOKENVAULT_") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c.env("HOME", home)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null());
    c
}

fn run(mut c: Command) -> (bool, String) {
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_doctor_and_rewrap_from_the_command_line() {
    let Some(moto) = shared_moto() else { return };
    let c = clients(&moto.endpoint).await;
    let tmp = tempfile::tempdir().unwrap();
    let pan = create_key(&c, "cli pan").await;
    let pii = create_key(&c, "cli pii").await;
    let table = format!("tv-cli-{}", uuid::Uuid::new_v4().simple());
    let data = tmp.path().join("data");
    tokenvault::tls::ensure_dev_cert(&data.join("tls")).unwrap();
    let config = tmp.path().join("tokenvault.toml");
    std::fs::write(
        &config,
        format!(
            "environment = \"test\"\ndata_dir = \"{}\"\n[store]\nkind = \"dynamodb\"\ntable = \"{table}\"\n\
             [keys]\nkind = \"kms\"\n[keys.kms]\npan = \"{pan}\"\npii = \"{pii}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let cmd = |args: &[&str]| {
        let mut c = tokenvault_aws(&moto.endpoint, tmp.path());
        c.args(args).arg("--config").arg(&config);
        c
    };

    let (ok, out) = run(cmd(&["doctor"]));
    assert!(!ok, "doctor fails before migrate: {out}");
    assert!(out.contains("FAIL") && out.contains("migrate"), "{out}");

    let (ok, out) = run(cmd(&["migrate"]));
    assert!(ok, "{out}");
    for change in ["created table", "TTL", "point-in-time recovery"] {
        assert!(out.contains(change), "{change}: {out}");
    }
    let (ok, out) = run(cmd(&["migrate"]));
    assert!(ok && out.contains("up to date"), "idempotent: {out}");

    let (ok, out) = run(cmd(&["doctor"]));
    assert!(ok, "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    assert_eq!(out.matches("PASS").count(), 2 * 3 + 4 + 1, "{out}");

    c.kms
        .disable_key_rotation()
        .key_id(&pii)
        .send()
        .await
        .unwrap();
    let (ok, out) = run(cmd(&["doctor"]));
    assert!(!ok, "{out}");
    let fail = out.lines().find(|l| l.starts_with("FAIL")).unwrap();
    assert!(fail.contains("pii") && fail.contains("rotat"), "{out}");

    // A vault on the table, then rewrap through the binary.
    let p = open_store(c.dynamodb.clone(), &table).await;
    let keys = std::collections::BTreeMap::from([
        ("pan".to_owned(), pan.clone()),
        ("pii".to_owned(), pii.clone()),
    ]);
    let kms = KmsKeyProvider::new(c.kms.clone(), keys);
    let (_, w) = kms
        .generate_data_key(&EncryptionContext::new("test", "pan"))
        .await
        .unwrap();
    p.put_key_item(&KeyItem {
        id: "dk/pan/7".into(),
        classification: "pan".into(),
        wrapping_key_id: w.key_id,
        wrapped: w.blob,
        created_at: 7,
    })
    .await
    .unwrap();
    let target = create_key(&c, "cli target").await;
    let (ok, out) = run(cmd(&["rewrap", "--to-key", &target]));
    assert!(!ok && out.contains("--from-key"), "unbounded: {out}");
    let (ok, out) = run(cmd(&[
        "rewrap",
        "--to-key",
        &target,
        "--from-key",
        &pan,
        "--dry-run",
    ]));
    assert!(ok && out.contains("would re-wrap 1 key items"), "{out}");
    let (ok, out) = run(cmd(&["rewrap", "--to-key", &target, "--from-key", &pan]));
    assert!(ok && out.contains("re-wrapped 1 key items"), "{out}");
    let item = p.get_key_item("dk/pan/7").await.unwrap().unwrap();
    assert_eq!(item.wrapping_key_id, target);
    let wrapped = tokenvault::crypto::WrappedKey {
        key_id: item.wrapping_key_id,
        blob: item.wrapped,
    };
    assert!(
        kms.decrypt_data_key(&wrapped, &EncryptionContext::new("test", "pan"))
            .await
            .is_ok()
    );
}
