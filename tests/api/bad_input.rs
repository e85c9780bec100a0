use serde_json::{Value, json};

use crate::helpers::spawn_app;

/// Asserts a problem+json answer of `status` and `slug`.
fn is_problem(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
    want: u16,
    slug: &str,
) {
    assert_eq!(status.as_u16(), want, "{body}");
    assert_eq!(
        headers["content-type"], "application/problem+json",
        "{body}"
    );
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        v["type"],
        format!("urn:tokenvault:problem:{slug}"),
        "{body}"
    );
    assert_eq!(v["status"], want);
    assert!(
        v["title"].is_string() && v["request_id"].is_string(),
        "{body}"
    );
    assert_eq!(v["request_id"], headers["x-request-id"].to_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokenize_requests_get_problems_and_change_nothing() {
    let app = spawn_app().await;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("not JSON", "{\"value\": 4111111111111111".into(), 400, "invalid-request"),
        ("a number", json!({"value": 4111111111111111u64}).to_string(), 400, "invalid-request"),
        ("a wrong option type", json!({"value": "4111111111111111", "deterministic": "yes"}).to_string(), 400, "invalid-request"),
        ("an unknown field", json!({"value": "4111111111111111", "cvv": "123"}).to_string(), 400, "invalid-request"),
        ("a Luhn failure", json!({"value": "4111111111111112"}).to_string(), 400, "invalid-value"),
        ("letters", json!({"value": "4111abcd11111111"}).to_string(), 400, "invalid-value"),
        ("11 digits", json!({"value": "41111111111"}).to_string(), 400, "invalid-value"),
        ("20 digits", json!({"value": "41111111111111111111"}).to_string(), 400, "invalid-value"),
        ("empty", json!({"value": ""}).to_string(), 400, "invalid-value"),
        ("no value", json!({}).to_string(), 400, "invalid-request"),
        ("both value and values", json!({"value": "4111111111111111", "values": []}).to_string(), 400, "invalid-request"),
        ("an unknown format", json!({"value": "4111111111111111", "format": "fancy"}).to_string(), 400, "invalid-request"),
        ("an unknown classification", json!({"value": "4111111111111111", "classification": "dna"}).to_string(), 400, "unsupported-classification"),
        ("a negative ttl", json!({"value": "4111111111111111", "ttl_seconds": -5}).to_string(), 400, "invalid-request"),
        ("metadata naming cvv", json!({"value": "4111111111111111", "metadata": {"cvv": "123"}}).to_string(), 400, "invalid-metadata"),
        ("metadata naming a PIN", json!({"value": "4111111111111111", "metadata": {"PIN-block": "1"}}).to_string(), 400, "invalid-metadata"),
        ("metadata holding a card", json!({"value": "4111111111111111", "metadata": {"note": "card 5555 5555 5555 4444"}}).to_string(), 400, "invalid-metadata"),
        ("17 metadata keys", json!({"value": "4111111111111111", "metadata": (0..17).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}).to_string(), 400, "invalid-metadata"),
        ("preserving pii", json!({"value": "x@y.z", "classification": "pii", "format": "preserving"}).to_string(), 400, "unsupported-format"),
    ];
    for (what, body, status, slug) in cases {
        let (s, h, b) = app
            .post_raw("/tokenize", Some("checkout"), "application/json", body, &[])
            .await;
        eprintln!("case: {what}");
        is_problem(s, &h, &b, status, slug);
    }
    let (s, h, b) = app
        .post_raw(
            "/tokenize",
            Some("checkout"),
            "text/plain",
            "4111111111111111",
            &[],
        )
        .await;
    is_problem(s, &h, &b, 415, "unsupported-media-type");

    let huge = format!("{{\"value\": \"{}\"}}", "4".repeat(5 << 20));
    let (s, h, b) = app
        .post_raw("/tokenize", Some("checkout"), "application/json", huge, &[])
        .await;
    is_problem(s, &h, &b, 413, "payload-too-large");

    assert_eq!(app.token_rows().await, 0);
    app.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_problems() {
    let app = spawn_app().await;
    let t = app.tokenize("4111111111111111", json!({})).await;
    let token = t["token"].as_str().unwrap().to_owned();
    let mut typo = token.clone().into_bytes();
    typo[8] = if typo[8] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).unwrap();
    let unknown = tokenvault::vault::token::Token::random().into_string();
    let cases = [
        (typo.as_str(), 400, "invalid-token"),
        ("tok_short", 400, "invalid-token"),
        ("4111111111111111", 400, "invalid-token"),
        ("", 400, "invalid-token"),
        (unknown.as_str(), 404, "not-found"),
    ];
    for (tok, status, slug) in cases {
        let (s, h, b) = app
            .post_raw(
                "/detokenize",
                Some("admin"),
                "application/json",
                json!({ "token": tok }).to_string(),
                &[],
            )
            .await;
        is_problem(s, &h, &b, status, slug);
    }
    let (s, h, b) = app
        .post_raw(
            "/detokenize",
            Some("admin"),
            "application/json",
            json!({"token": token, "reason": "x".repeat(513)}).to_string(),
            &[],
        )
        .await;
    is_problem(s, &h, &b, 400, "invalid-request");
    let (s, v) = app.get("/tokens/4111111111111111", Some("admin")).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(app.token_rows().await, 1);
    app.assert_no_leaks().await;
}
