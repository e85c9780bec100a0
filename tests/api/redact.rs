use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_json_and_ndjson_are_redacted_in_shape() {
    let app = spawn_app().await;
    let (s, h, b) = app
        .post_raw(
            "/redact",
            Some("log-shipper"),
            "text/plain",
            "paid with 4111 1111 1111 1111 by ann@example.com\nkept tok_FORl3FnIyAedSrx8rNbHlV ts=1701541583094\n",
            &[],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        "paid with **** **** **** 1111 by ***************\nkept tok_FORl3FnIyAedSrx8rNbHlV ts=1701541583094\n"
    );
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(h["tokenvault-findings"], "email=1, pan=1");

    let (s, h, b) = app
        .post_raw(
            "/redact",
            Some("checkout"),
            "application/json",
            r#"{"payment":{"card":5555555555554444,"note":"to \"bo@x.io\""},"n":[1,2]}"#,
            &[],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        r#"{"payment":{"card":"************4444","note":"to \"*******\""},"n":[1,2]}"#
    );
    assert_eq!(h["content-type"], "application/json");

    let (s, h, b) = app
        .post_raw(
            "/redact",
            Some("log-shipper"),
            "application/x-ndjson",
            "{\"c\":\"6011111111111117\"}\nnot json 6011-1111-1111-1117\n\n",
            &[],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        "{\"c\":\"************1117\"}\nnot json ****-****-****-1117\n\n"
    );
    assert_eq!(h["content-type"], "application/x-ndjson");
    assert_eq!(h["tokenvault-findings"], "pan=2");
    app.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_select_detectors_and_actions() {
    let app = spawn_app().await;
    let text = "c=378282246310005 e=ann@example.com";
    let (_, _, b) = app
        .post_raw(
            "/redact?actions=pan:label",
            Some("log-shipper"),
            "text/plain",
            text,
            &[],
        )
        .await;
    assert_eq!(b, "c=[REDACTED:pan] e=***************");
    let (_, h, b) = app
        .post_raw(
            "/redact?detectors=email",
            Some("log-shipper"),
            "text/plain",
            text,
            &[],
        )
        .await;
    assert_eq!(b, "c=378282246310005 e=***************");
    assert_eq!(h["tokenvault-findings"], "email=1");
    let (s, _, b) = app
        .post_raw(
            "/redact?detectors=dna",
            Some("log-shipper"),
            "text/plain",
            text,
            &[],
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, _, _) = app
        .post_raw("/redact", Some("log-shipper"), "text/html", text, &[])
        .await;
    assert_eq!(s, 415);
    let (s, _, _) = app
        .post_raw("/redact", Some("support"), "text/plain", text, &[])
        .await;
    assert_eq!(s, 403);
    let (s, _, b) = app
        .post_raw(
            "/redact",
            Some("log-shipper"),
            "application/json",
            "{\"a\": 378282246310005",
            &[],
        )
        .await;
    assert_eq!(s, 400);
    assert!(!b.contains("378282246310005"));
}
