use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz", None).await.0, 200);
    let (s, v) = app.get("/readyz", None).await;
    assert_eq!((s.as_u16(), v["status"].as_str()), (200, Some("ready")));
    let t = app.tokenize("4111111111111111", json!({})).await;
    app.detokenize("support", t["token"].as_str().unwrap())
        .await;
    app.post_raw(
        "/redact",
        Some("log-shipper"),
        "text/plain",
        "4111111111111111",
        &[],
    )
    .await;
    // Copied (the embedded default's outbox) or recorded directly: none
    // is left behind once the log has synced.
    app.audit_text().await;
    let (s, m) = app.get("/metrics", None).await;
    assert_eq!(s, 200);
    let m = m.as_str().unwrap();
    for name in [
        "tokenvault_audit_outbox_backlog 0",
        "tokenvault_http_requests_total{route=\"/tokenize\",status=\"201\"} 1",
        "tokenvault_http_request_duration_seconds_bucket",
        "tokenvault_kms_requests_total{operation=\"GenerateDataKey\",outcome=\"ok\"}",
        "tokenvault_datakey_cache_total{result=\"miss\"}",
        "tokenvault_detokenize_total{principal=\"apikey:support\",decision=\"allow\"} 1",
        "tokenvault_redact_bytes_total 16",
        "tokenvault_redact_findings_total{type=\"pan\"} 1",
        "tokenvault_http_request_own_duration_seconds_count{route=\"/tokenize\"} 1",
        "tokenvault_dependency_request_duration_seconds_bucket",
    ] {
        assert!(m.contains(name), "missing {name} in\n{m}");
    }
    let provider = if app.aws.is_some() { "kms" } else { "local" };
    let generated = format!(
        "tokenvault_dependency_requests_total{{dependency=\"{provider}\",operation=\"GenerateDataKey\",outcome=\"ok\"}}"
    );
    assert!(m.contains(&generated), "missing {generated} in\n{m}");
    if app.aws.is_some() {
        for call in ["TransactWriteItems", "BatchGetItem"] {
            let line = format!(
                "tokenvault_dependency_requests_total{{dependency=\"dynamodb\",operation=\"{call}\",outcome=\"ok\"}} 1"
            );
            assert!(m.contains(&line), "missing {line} in\n{m}");
        }
        // DynamoDB's calls, made in the tokenization's own task, count as
        // the request's waits: its own time is less than its whole time.
        let sum = |name: &str| -> f64 {
            let prefix = format!("tokenvault_{name}_sum{{route=\"/tokenize\"}} ");
            let line = m.lines().find(|l| l.starts_with(&prefix));
            line.expect(&prefix)[prefix.len()..].parse().unwrap()
        };
        let (whole, own) = (
            sum("http_request_duration_seconds"),
            sum("http_request_own_duration_seconds"),
        );
        assert!(own < whole, "own {own} of {whole}");
    }
    assert!(!m.contains("4111111111111111"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/nope", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert!(res.headers().contains_key("x-request-id"));
    let res = app
        .client
        .put(format!("{}/tokenize", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_a_bearer() {
    let digest = tokenvault::auth::api_key::digest_hex("scrape-secret");
    let app = crate::helpers::spawn_app_with(|s| s.metrics.bearer_digest = digest).await;
    assert_eq!(app.get("/metrics", None).await.0, 401);
    let res = app
        .client
        .get(format!("{}/metrics", app.url))
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// The load tool speaks HTTP/1.1 itself; it must count real answers: the
/// tokens it tokenizes are stored, detokenize finds them, and a wrong
/// key counts every request as an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_drives_every_operation() {
    use tokenvault::loadgen::{LoadSettings, Op, run};
    let app = spawn_app().await;
    let tls = tokenvault::tls::client_config(Some(&app.data_dir().join("tls/cert.pem"))).unwrap();
    let settings = LoadSettings {
        mix: vec![
            (Op::Healthz, 1),
            (Op::Tokenize, 1),
            (Op::TokenizeBatch, 1),
            (Op::Detokenize, 1),
            (Op::DetokenizeBatch, 1),
        ],
        connections: 2,
        duration: std::time::Duration::from_millis(400),
        rate: None,
        batch: 10,
        prepare: 5,
    };
    let before = app.token_rows().await;
    let r = run(&app.url, app.key("admin"), tls.clone(), settings.clone())
        .await
        .unwrap();
    assert!(r.requests >= 4, "{r}");
    assert_eq!(r.errors, 0, "{r}");
    assert!(r.items > 0, "{r}");
    // Every card counted was stored (plus the five prepared).
    let tokenized = app.token_rows().await - before;
    assert!(
        tokenized >= 5 && tokenized as u64 <= r.items + 5,
        "{tokenized} rows, {r}"
    );

    // Open loop: 100 requests a second for 0.4 s makes 40 due, no more
    // sent (fewer only if the machine stalls for most of the run).
    let paced = LoadSettings {
        mix: vec![(Op::Healthz, 1)],
        rate: Some(100),
        ..settings.clone()
    };
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        run(&app.url, app.key("admin"), tls.clone(), paced),
    )
    .await
    .expect("an open-loop run ends with its duration")
    .unwrap();
    assert!((10..=40).contains(&(r.requests + r.unsent)), "{r}");
    assert_eq!(r.errors, 0, "{r}");

    let wrong = LoadSettings {
        mix: vec![(Op::Tokenize, 1)],
        prepare: 0,
        ..settings
    };
    let r = run(&app.url, "not-a-key", tls, wrong).await.unwrap();
    assert!(r.requests > 0 && r.errors == r.requests, "{r}");
}
