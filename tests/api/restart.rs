use serde_json::json;

use crate::helpers::{CARDS, MORE_CARDS, spaced, spawn_app, spawn_app_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_audit_chain_survive_a_restart() {
    let mut app = spawn_app().await;
    let mut tokens = Vec::new();
    for (_, card) in CARDS {
        let t = app.tokenize(card, json!({})).await;
        tokens.push((card, t["token"].as_str().unwrap().to_owned()));
    }
    let det = app
        .tokenize("5105105105105100", json!({"deterministic": true}))
        .await;
    app.restart().await;
    for (card, token) in &tokens {
        let (s, v) = app.detokenize("admin", token).await;
        assert_eq!(s, 200);
        assert_eq!(v["value"], **card);
    }
    let again = app
        .tokenize("5105105105105100", json!({"deterministic": true}))
        .await;
    assert_eq!(
        again["token"], det["token"],
        "the fingerprint key survives restarts"
    );
    app.shutdown().await;

    let key = tokenvault::app::audit_key(&app.settings, app.aws.clone())
        .await
        .unwrap();
    let path = app.data_dir().join("audit.log");
    let report = tokenvault::audit::verify(&path, &key).unwrap();
    assert!(
        report.lines as usize >= 2 * CARDS.len() + 2,
        "{}",
        report.lines
    );
    // One byte changed anywhere breaks the chain.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
    std::fs::write(&path, bytes).unwrap();
    assert!(tokenvault::audit::verify(&path, &key).is_err());
    app.assert_no_leaks().await;
}

/// Tokens that name their rows are only as good as the key they were
/// made with: with its key item gone, the service refuses to start (a new
/// key would answer 404 for every one of them); with the item back, the
/// tokens open again. Slots are the embedded store's alone, so this runs
/// on it whatever backend the suite is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_will_not_start_without_the_key_its_tokens_name_rows_with() {
    let mut app = spawn_app_on(None, |_| {}).await;
    let (_, card) = CARDS[0];
    let token = app.tokenize(card, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.shutdown().await;
    let db = rusqlite::Connection::open(app.data_dir().join("vault.db")).unwrap();
    let item: (String, String, String, Vec<u8>, i64) = db
        .query_row(
            "SELECT id, classification, wrapping_key_id, wrapped, created_at FROM key_items \
             WHERE id = 'secret/token-slot/v1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    db.execute("DELETE FROM key_items WHERE id = ?1", [&item.0])
        .unwrap();
    let Err(e) = tokenvault::app::build(&app.settings, app.clock.clone()).await else {
        panic!("started without the slot key");
    };
    assert!(e.to_string().contains("token slot key"), "{e}");
    db.execute(
        "INSERT INTO key_items (id, classification, wrapping_key_id, wrapped, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![item.0, item.1, item.2, item.3, item.4],
    )
    .unwrap();
    drop(db);
    app.restart().await;
    let (s, v) = app.detokenize("admin", &token).await;
    assert_eq!(s, 200);
    assert_eq!(v["value"], card);
    app.assert_no_leaks().await;
}

/// One service to a data directory: a second start on it fails, naming
/// the one that holds it, and changes nothing there; once the first stops,
/// the directory opens again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_service_on_the_same_data_directory_does_not_start() {
    let mut app = spawn_app().await;
    let (_, card) = CARDS[0];
    let token = app.tokenize(card, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let audit = app.audit_text().await;
    let Err(e) = tokenvault::app::build(&app.settings, app.clock.clone()).await else {
        panic!("a second service started on the same data directory");
    };
    let e = e.to_string();
    assert!(
        e.contains("another tokenvault serve")
            && e.contains(&format!("pid {}", std::process::id())),
        "{e}"
    );
    assert_eq!(app.audit_text().await, audit);
    let (s, v) = app.detokenize("admin", &token).await;
    assert_eq!(s, 200);
    assert_eq!(v["value"], card);
    app.restart().await;
    let (s, _) = app.detokenize("admin", &token).await;
    assert_eq!(s, 200);
    app.assert_no_leaks().await;
}

/// Settings for a fresh data directory at `data`, on SQLite whatever
/// backend the suite runs on: these tests look at the files a start makes.
fn settings_in(data: &std::path::Path) -> tokenvault::config::Settings {
    tokenvault::config::Settings::load(
        None,
        Vec::<(String, String)>::new(),
        &tokenvault::config::Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(data.to_owned()),
        },
    )
    .unwrap()
}

/// Starts on `settings`, which must fail before the store opens: the
/// error, once the data directory is checked for what the start must not
/// have made. The store is neither created nor migrated, and no thread of
/// the store's or the audit log's is left running after the error (the
/// data directory's lock would be released while one still wrote).
async fn failed_start(settings: &tokenvault::config::Settings) -> String {
    let clock = tokenvault::clock::ManualClock::new();
    let Err(e) = tokenvault::app::build(settings, clock).await else {
        panic!("the service started");
    };
    for file in ["vault.db", "vault.db-wal", "audit.log"] {
        assert!(!settings.data_dir.join(file).exists(), "{file} was made");
    }
    e.to_string()
}

/// The directory a failed start left starts once `settings` are mended.
async fn starts_once_mended(settings: &tokenvault::config::Settings) {
    let app = tokenvault::app::build(settings, tokenvault::clock::ManualClock::new())
        .await
        .expect("app builds");
    assert!(settings.data_dir.join("vault.db").exists());
    app.state.audit.clone().close().await.unwrap();
}

/// A start that fails on its configuration fails before it opens the
/// store, and the same directory starts once the settings are mended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_cannot_load_stops_the_start_before_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_in(&dir.path().join("data"));
    settings.tls.cert = Some(dir.path().join("missing-cert.pem"));
    settings.tls.key = Some(dir.path().join("missing-key.pem"));
    let e = failed_start(&settings).await;
    assert!(e.starts_with("tls:"), "{e}");
    settings.tls.cert = None;
    settings.tls.key = None;
    starts_once_mended(&settings).await;
}

/// The same for the local master key: one that cannot be read stops the
/// start before the store opens (it was opened first, and migrated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_key_that_cannot_be_read_stops_the_start_before_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("master.key"), b"short").unwrap();
    let settings = settings_in(&data);
    let e = failed_start(&settings).await;
    assert!(e.starts_with("keys:") && e.contains("32 bytes"), "{e}");
    std::fs::remove_file(data.join("master.key")).unwrap();
    starts_once_mended(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_holds_no_card_in_the_clear() {
    let app = spawn_app().await;
    let all: Vec<&str> = CARDS
        .iter()
        .map(|c| c.1)
        .chain(MORE_CARDS.iter().copied())
        .collect();
    for card in &all {
        app.tokenize(card, json!({})).await;
        app.tokenize(card, json!({"deterministic": true, "format": "preserving"}))
            .await;
    }
    let mut scanned = 0;
    for (name, bytes) in app.stored_items().await {
        scanned += bytes.len();
        for card in &all {
            for needle in [card.to_string(), spaced(card)] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{name} holds a card in the clear"
                );
            }
        }
    }
    assert!(scanned > 0);
    if app.aws.is_none() {
        assert!(
            std::fs::metadata(app.data_dir().join("vault.db-wal")).is_ok(),
            "WAL mode"
        );
    }
    app.assert_no_leaks().await;
}
