use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_full_masked_or_nothing() {
    let app = spawn_app().await;
    let t = app.tokenize("378282246310005", json!({})).await;
    let token = t["token"].as_str().unwrap();

    let (s, v) = app.detokenize("admin", token).await;
    assert_eq!(
        (s.as_u16(), v["value"].as_str()),
        (200, Some("378282246310005"))
    );
    let (s, v) = app.detokenize("support", token).await;
    assert_eq!(s, 200);
    assert_eq!(v["value"], "***********0005");
    assert_eq!(v["masked"], true);
    for role in ["checkout", "log-shipper"] {
        let (s, v) = app.detokenize(role, token).await;
        assert_eq!(s, 403, "{role}: {v}");
        assert_eq!(v["type"], "urn:tokenvault:problem:forbidden");
    }
    // A caller with no right is refused before its body is judged: a
    // malformed request is an attempt too (one event for no token).
    for body in [
        json!({"tokens": []}),
        json!({"token": token, "tokens": [token]}),
        json!({"token": token, "reason": "x".repeat(600)}),
    ] {
        let (s, v) = app.post("/detokenize", Some("checkout"), &body).await;
        assert_eq!(s, 403, "{body}: {v}");
    }
    // Even one that is not this endpoint's JSON at all.
    for raw in ["{\"token\":", "{\"tokn\": \"x\"}"] {
        let (s, _, b) = app
            .post_raw(
                "/detokenize",
                Some("checkout"),
                "application/json",
                raw,
                &[],
            )
            .await;
        assert_eq!(s, 403, "{raw}: {b}");
    }
    // Every attempt, allowed or not, is in the audit log.
    let audit = app.audit_text().await;
    let detok: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"action\":\"detokenize"))
        .collect();
    assert_eq!(detok.len(), 10, "{audit}");
    assert_eq!(
        detok
            .iter()
            .filter(|l| l.contains("\"decision\":\"deny\""))
            .count(),
        8
    );
    app.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_callers_get_401_and_are_audited() {
    let app = spawn_app().await;
    let (s, v) = app
        .post("/tokenize", None, &json!({"value": "4111111111111111"}))
        .await;
    assert_eq!(s, 401);
    assert_eq!(v["type"], "urn:tokenvault:problem:unauthenticated");
    let res = app
        .client
        .post(format!("{}/detokenize", app.url))
        .bearer_auth("tv_checkout_not-a-real-key")
        .json(&json!({"token": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_eq!(app.token_rows().await, 0);
    let audit = app.audit_text().await;
    assert_eq!(
        audit.matches("\"action\":\"authenticate\"").count(),
        2,
        "{audit}"
    );
    app.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_actions_get_403_and_change_nothing() {
    let app = spawn_app().await;
    let t = app.tokenize("5555555555554444", json!({})).await;
    let token = t["token"].as_str().unwrap();
    let (s, _) = app
        .post(
            "/tokenize",
            Some("support"),
            &json!({"value": "4111111111111111"}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = app
        .post(
            "/tokenize",
            Some("log-shipper"),
            &json!({"value": "4111111111111111"}),
        )
        .await;
    assert_eq!(s, 403);
    // A caller with no right to tokenize is refused before its body is
    // judged, and audited.
    let before = app.audit_text().await.lines().count();
    for body in [
        json!({"values": []}),
        json!({"value": "4111111111111111", "values": ["4111111111111111"]}),
        json!({"value": "4111111111111111", "classification": "nope"}),
    ] {
        let (s, v) = app.post("/tokenize", Some("support"), &body).await;
        assert_eq!(s, 403, "{body}: {v}");
    }
    for raw in ["{\"value\":", "[\"4111111111111111\"]"] {
        let (s, _, b) = app
            .post_raw("/tokenize", Some("support"), "application/json", raw, &[])
            .await;
        assert_eq!(s, 403, "{raw}: {b}");
    }
    let audit = app.audit_text().await;
    let denied = audit.lines().skip(before);
    assert_eq!(
        denied
            .filter(|l| l.contains("\"action\":\"tokenize\"") && l.contains("\"deny\""))
            .count(),
        6,
        "{audit}"
    );
    assert_eq!(
        app.delete(&format!("/tokens/{token}"), Some("support"))
            .await,
        403
    );
    assert_eq!(
        app.get(&format!("/tokens/{token}"), Some("checkout"))
            .await
            .0,
        403
    );
    assert_eq!(app.token_rows().await, 1);
    assert_eq!(app.detokenize("admin", token).await.0, 200);
    app.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_token_and_its_fingerprint() {
    let app = spawn_app().await;
    let t = app
        .tokenize("3530111333300000", json!({"deterministic": true}))
        .await;
    let token = t["token"].as_str().unwrap();
    let (s, m) = app.get(&format!("/tokens/{token}"), Some("support")).await;
    assert_eq!(s, 200);
    assert_eq!(m["brand"], "jcb");
    assert_eq!(m["last4"], "0000");
    assert_eq!(
        app.delete(&format!("/tokens/{token}"), Some("admin")).await,
        204
    );
    assert_eq!(app.detokenize("admin", token).await.0, 404);
    assert_eq!(
        app.delete(&format!("/tokens/{token}"), Some("admin")).await,
        404
    );
    // The fingerprint went too: the same card gets a new token.
    let again = app
        .tokenize("3530111333300000", json!({"deterministic": true}))
        .await;
    assert_ne!(again["token"], t["token"]);
    assert_eq!(again["created"], true);
    assert!(app.audit_text().await.contains("\"action\":\"delete\""));
    app.assert_no_leaks().await;
}
