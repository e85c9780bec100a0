//! Configured API keys and roles: deny by default, reasons, rate limits.

use serde_json::json;
use tokenvault::auth::api_key::digest_hex;
use tokenvault::config::RoleSettings;

use crate::helpers::{TestApp, spawn_app_with};

/// A role with one principal pattern and `perms`.
pub fn role(name: &str, principal: &str, perms: &[&str]) -> RoleSettings {
    RoleSettings {
        name: name.into(),
        principals: vec![principal.into()],
        permissions: perms.iter().map(|p| p.to_string()).collect(),
        classifications: None,
        require_reason: false,
        detokenize_per_minute: 0,
    }
}

const KEYS: [&str; 5] = ["shop", "tool", "fraud", "clerk", "stranger"];

/// A service with API keys `shop`, `tool`, `fraud`, `clerk` and
/// `stranger`, and roles for all but `stranger`.
async fn configured() -> TestApp {
    let mut app = spawn_app_with(|s| {
        for name in KEYS {
            s.api_keys.insert(
                name.into(),
                digest_hex(&format!("{name}-key-0123456789abcdef")),
            );
        }
        let mut support = role("support", "apikey:tool", &["detokenize:masked"]);
        support.detokenize_per_minute = 3;
        let mut fraud = role("fraud-ops", "apikey:fraud", &["detokenize"]);
        fraud.require_reason = true;
        let mut clerk = role("pii-clerk", "apikey:clerk", &["admin"]);
        clerk.classifications = Some(vec!["pii".into()]);
        s.roles = vec![
            role("checkout", "apikey:shop", &["tokenize"]),
            support,
            fraud,
            clerk,
        ];
    })
    .await;
    for name in KEYS {
        app.keys
            .insert(name.into(), format!("{name}-key-0123456789abcdef"));
    }
    assert!(!app.data_dir().join("dev-credentials.json").exists());
    app
}

async fn token(app: &TestApp) -> String {
    let (s, v) = app
        .post(
            "/tokenize",
            Some("shop"),
            &json!({"value": "4111111111111111"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_matching_no_role_may_do_nothing() {
    let app = configured().await;
    let t = token(&app).await;
    let (s, _) = app
        .post(
            "/tokenize",
            Some("stranger"),
            &json!({"value": "4111111111111111"}),
        )
        .await;
    assert_eq!(s, 403);
    assert_eq!(app.detokenize("stranger", &t).await.0, 403);
    let (s, _, _) = app
        .post_raw("/redact", Some("stranger"), "text/plain", "x", &[])
        .await;
    assert_eq!(s, 403);
    // Its refusal counts under no name of its own: a series per stranger
    // would grow the metrics without bound.
    let (_, m) = app.get("/metrics", None).await;
    let m = m.as_str().unwrap();
    assert!(
        m.contains("tokenvault_detokenize_total{principal=\"unmatched\",decision=\"deny\"} 1"),
        "{m}"
    );
    assert!(!m.contains("apikey:stranger"), "{m}");
    app.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_detokenize_can_require_a_reason_which_is_audited_redacted() {
    let app = configured().await;
    let t = token(&app).await;
    let (s, v) = app.detokenize("fraud", &t).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["type"], "urn:tokenvault:problem:reason-required");
    let (s, v) = app
        .post(
            "/detokenize",
            Some("fraud"),
            &json!({"token": t, "reason": "case 77, customer read 5105105105105100 aloud"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"], "4111111111111111");
    let audit = app.audit_text().await;
    assert!(
        audit.contains("case 77, customer read ************5100 aloud"),
        "{audit}"
    );
    app.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detokenize_rate_limit_trips_and_recovers() {
    let app = configured().await;
    let t = token(&app).await;
    for _ in 0..3 {
        assert_eq!(app.detokenize("tool", &t).await.0, 200);
    }
    let res = app
        .client
        .post(format!("{}/detokenize", app.url))
        .bearer_auth(app.key("tool"))
        .json(&json!({ "token": t }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "20");
    // Another principal is not affected.
    assert_eq!(app.detokenize("fraud", &t).await.0, 400);
    app.clock.advance(20);
    assert_eq!(app.detokenize("tool", &t).await.0, 200);
    assert_eq!(app.detokenize("tool", &t).await.0, 429);
    assert!(
        app.audit_text()
            .await
            .contains("\"reason\":\"rate limited\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_limited_to_classifications_deletes_only_those() {
    let app = configured().await;
    let card = token(&app).await;
    let (s, v) = app
        .post(
            "/tokenize",
            Some("shop"),
            &json!({"value": "jane@example.com", "classification": "pii"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let email = v["token"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/tokens/{card}"), Some("clerk")).await,
        403
    );
    assert_eq!(app.token_rows().await, 2);
    assert_eq!(
        app.delete(&format!("/tokens/{email}"), Some("clerk")).await,
        204
    );
    assert_eq!(app.token_rows().await, 1);
    let audit = app.audit_text().await;
    let deletes: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"action\":\"delete\""))
        .collect();
    assert_eq!(deletes.len(), 2, "{audit}");
    assert!(
        deletes[0].contains("\"decision\":\"deny\"")
            && deletes[0].contains("\"classification\":\"pan\""),
        "{audit}"
    );
    assert!(
        deletes[1].contains("\"decision\":\"allow\"")
            && deletes[1].contains("\"classification\":\"pii\"")
            && deletes[1].contains("\"role\":\"pii-clerk\""),
        "{audit}"
    );
    app.assert_no_leaks().await;
}
