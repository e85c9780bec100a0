use crate::emulator::{Backend, backend};
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
    assert_eq!(h["tokenvault-findings"], "pan=1, email=1");

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
    app.assert_no_leaks().await;
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

/// A chunked (length-less) body as reqwest sends it.
fn chunked(parts: Vec<String>) -> reqwest::Body {
    let items: Vec<Result<String, std::io::Error>> = parts.into_iter().map(Ok).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(items))
}

/// Posts `parts` as one chunked text body to `path` as `role`.
async fn post_chunked(
    app: &crate::helpers::TestApp,
    path: &str,
    role: &str,
    parts: Vec<String>,
) -> reqwest::Result<reqwest::Response> {
    app.client
        .post(format!("{}{path}", app.url))
        .bearer_auth(app.key(role))
        .header("content-type", "text/plain")
        .body(chunked(parts))
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_bodies_end_with_a_findings_trailer() {
    let app = spawn_app().await;
    // curl shows trailers in its header dump; reqwest does not expose them.
    let dump = app.data_dir().join("headers.txt");
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--fail-with-body",
            "-X",
            "POST",
            "-T",
            "-",
            "-H",
            "TE: trailers",
        ])
        .arg("--cacert")
        .arg(app.data_dir().join("tls/cert.pem"))
        .args([
            "-H",
            &format!("Authorization: Bearer {}", app.key("log-shipper")),
        ])
        .args(["-H", "Content-Type: text/plain", "-D"])
        .arg(&dump)
        .arg(format!("{}/redact", app.url))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(b"a 4111111111111111\nb x@y.io\n")?;
            c.wait_with_output()
        })
        .expect("curl runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "a ************1111\nb ******\n"
    );
    let headers = std::fs::read_to_string(&dump).unwrap().to_ascii_lowercase();
    assert!(
        headers.contains("tokenvault-findings: pan=1, email=1"),
        "{headers}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_over_its_limit_is_cut_short_never_passed_through() {
    let app = crate::helpers::spawn_app_with(|s| s.limits.redact_stream_bytes = 4096).await;
    let mut parts: Vec<String> = (0..100)
        .map(|i| format!("line {i} {}\n", "x".repeat(60)))
        .collect();
    parts.push("late card 4111111111111111\n".into());
    let res = post_chunked(&app, "/redact", "log-shipper", parts).await;
    // Depending on how far the redaction got when the body passed its
    // limit: a 413 problem (no output yet), a stream reset before the head
    // (the client's send fails), or a `200` whose body then fails. Never a
    // whole redacted body.
    match res {
        Err(_) => {}
        Ok(res) if res.status() == 413 => {
            assert_eq!(res.headers()["content-type"], "application/problem+json");
            let b = res.text().await.unwrap();
            assert!(!b.contains("4111"), "{b}");
        }
        Ok(res) => {
            assert_eq!(res.status(), 200);
            if let Ok(b) = res.bytes().await {
                panic!("a stream over its limit completed: {} bytes", b.len());
            }
        }
    }
}

/// The head of a streamed answer waits for its first output, so a stream
/// that fails before any (its first chunk over the limit here) is answered
/// with a problem, not a `200` cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_failing_before_its_first_output_gets_a_problem() {
    let app = crate::helpers::spawn_app_with(|s| s.limits.redact_stream_bytes = 64).await;
    let send = |client: &reqwest::Client, parts: Vec<String>, query: &'static str| {
        client
            .post(format!("{}/redact{query}", app.url))
            .bearer_auth(app.key("log-shipper"))
            .header("content-type", "text/plain")
            .body(chunked(parts))
            .send()
    };
    let first = format!("card 4111111111111111 {}\n", "x".repeat(200));
    // Its own client: the server closes the connection it left unread.
    let own = crate::helpers::client_trusting(&app.data_dir().join("tls/cert.pem"));
    let res = send(&own, vec![first, "more\n".into()], "").await.unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let b = res.text().await.unwrap();
    assert!(b.contains("redact_stream_bytes"), "{b}");
    assert!(!b.contains("4111"), "{b}");

    // Within the limit the stream is answered as before: lines, a report,
    // or nothing at all for an empty body.
    let res = send(&app.client, vec!["a 4111111111111111\n".into()], "")
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "a ************1111\n");
    let res = send(
        &app.client,
        vec!["a 4111111111111111\n".into()],
        "?report=true",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["findings"]["pan"], 1, "{v}");
    let res = send(&app.client, vec![], "").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "");
    app.assert_no_leaks().await;
}

/// A streamed report has no output before the body ends; its head goes
/// after a short wait anyway, not at the request timeout (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_report_answers_its_head_before_the_body_ends() {
    let app = spawn_app().await;
    let (tx, body) = crate::helpers::held_open();
    tx.send(Ok("a 4111111111111111\n".into())).await.unwrap();
    let sent = app
        .client
        .post(format!("{}/redact?report=true", app.url))
        .bearer_auth(app.key("log-shipper"))
        .header("content-type", "text/plain")
        .body(body)
        .send();
    let res = tokio::time::timeout(std::time::Duration::from_secs(10), sent)
        .await
        .expect("the head comes while the body is still open")
        .unwrap();
    assert_eq!(res.status(), 200);
    tx.send(Ok("b x@y.io\n".into())).await.unwrap();
    drop(tx);
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["findings"]["pan"], 1, "{v}");
    assert_eq!(v["findings"]["email"], 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_hash_report_and_budget_over_http() {
    let app = spawn_app().await;
    let text = "paid 4111111111111111 then 4111 1111 1111 1111 by a@b.io\n";
    let (s, _, b) = app
        .post_raw(
            "/redact?actions=pan:tokenize",
            Some("checkout"),
            "text/plain",
            text,
            &[],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let tokens: Vec<&str> = b
        .split_whitespace()
        .filter(|w| w.starts_with("tok_"))
        .collect();
    assert_eq!(tokens.len(), 2, "{b}");
    assert_eq!(tokens[0], tokens[1], "one card, one token");
    let (_, v) = app.detokenize("admin", tokens[0]).await;
    assert_eq!(v["value"], "4111111111111111");
    // Two events, one per card found; the first stored the card, with its
    // event through the embedded store's outbox.
    let audit = app.audit_text().await;
    let events = audit
        .lines()
        .filter(|l| l.contains(tokens[0]) && l.contains("\"reason\":\"redact\""))
        .count();
    assert_eq!(events, 2, "{audit}");
    let noted = app.outbox_notes_issued();
    assert_eq!(noted, (backend() == Backend::Sqlite).then_some(1));
    // Tokenizing while redacting needs the tokenize permission.
    let (s, _, _) = app
        .post_raw(
            "/redact?actions=pan:tokenize",
            Some("log-shipper"),
            "text/plain",
            text,
            &[],
        )
        .await;
    assert_eq!(s, 403);

    let (_, _, b) = app
        .post_raw(
            "/redact?actions=pan:hash,email:hash",
            Some("log-shipper"),
            "text/plain",
            text,
            &[],
        )
        .await;
    let hashes: Vec<&str> = b
        .split_whitespace()
        .filter(|w| w.starts_with("[HASH:pan:rh1:"))
        .collect();
    assert_eq!(hashes.len(), 2, "{b}");
    assert_eq!(
        hashes[0], hashes[1],
        "separators do not change a card's hash"
    );
    assert!(b.contains("[HASH:email:rh1:"));

    let (s, h, b) = app
        .post_raw(
            "/redact?report=true",
            Some("log-shipper"),
            "application/json",
            r#"{"payment":{"card":"4111111111111111","cvv":"123"},"who":"a@b.io"}"#,
            &[],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["findings"]["pan"], 1);
    assert_eq!(v["findings"]["cvv"], 1);
    assert_eq!(v["paths"]["$.payment.card"], "pan");
    assert_eq!(v["paths"]["$.payment.cvv"], "cvv");
    assert!(!b.contains("4111") && !b.contains("123\""));

    let (_, _, b) = app
        .post_raw(
            "/redact?budget_ms=0",
            Some("log-shipper"),
            "text/plain",
            "abc\nde\n",
            &[],
        )
        .await;
    assert_eq!(b, "***\n**\n");
    let (s, _, _) = app
        .post_raw(
            "/redact?budget_ms=999999",
            Some("log-shipper"),
            "text/plain",
            "x",
            &[],
        )
        .await;
    assert_eq!(s, 400);
    app.assert_no_leaks().await;
}

/// A streamed body (chunked, over 1 KiB) that tokenizes: each sighting of
/// a card is an event, the card is stored once with its note, and a card
/// split across chunks is found whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_audits_each_card_it_tokenizes() {
    let app = spawn_app().await;
    let filler = "x".repeat(600);
    let parts = vec![
        format!("{filler}\npaid 4111111111111111\n"),
        format!("{filler}\nagain 41111111"),
        "11111111 and 5500005555555559\n".to_owned(),
        format!("{filler}\nonce more 4111111111111111\n"),
    ];
    let res = post_chunked(&app, "/redact?actions=pan:tokenize", "checkout", parts)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let b = res.text().await.unwrap();
    assert!(
        !b.contains("4111111111111111") && !b.contains("5500005555555559"),
        "{b}"
    );
    let tokens: Vec<&str> = b
        .split_whitespace()
        .filter(|w| w.starts_with("tok_"))
        .collect();
    assert_eq!(tokens.len(), 4, "{b}");
    assert!(tokens[0] == tokens[1] && tokens[1] == tokens[3], "{b}");
    assert_ne!(tokens[0], tokens[2]);
    let (_, v) = app.detokenize("admin", tokens[2]).await;
    assert_eq!(v["value"], "5500005555555559");
    let audit = app.audit_text().await;
    let events = |t: &str| {
        audit
            .lines()
            .filter(|l| l.contains(t) && l.contains("\"reason\":\"redact\""))
            .count()
    };
    assert_eq!((events(tokens[0]), events(tokens[2])), (3, 1), "{audit}");
    assert_eq!(
        app.outbox_notes_issued(),
        (backend() == Backend::Sqlite).then_some(2),
        "one stored record, one note, per card"
    );
    app.assert_no_leaks().await;
}

/// A streamed body sent with `Expect: 100-continue` (curl asks for it on
/// bodies over 1 MiB) gets `100 Continue` before the answer: had the
/// answer's head gone first, the client would wait before sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_is_asked_for_with_100_continue() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Bodies over 1 KiB are streamed.
    let app = crate::helpers::spawn_app_with(|s| s.limits.body_bytes = 1024).await;
    let body = format!("{}paid 4111111111111111\n", "x".repeat(2000) + "\n");
    let mut cfg =
        tokenvault::tls::client_config(Some(&app.data_dir().join("tls/cert.pem"))).unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let addr = app.url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let head = format!(
        "POST /redact HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n",
        app.key("log-shipper"),
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut first = [0u8; 25];
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tls.read_exact(&mut first),
    )
    .await
    .expect("an answer to the head")
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&first),
        "HTTP/1.1 100 Continue\r\n\r\n"
    );
    tls.write_all(body.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tls.read_to_end(&mut rest),
    )
    .await
    .expect("the answer")
    .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.contains("paid ************1111\n"), "{rest}");
    app.assert_no_leaks().await;
}

/// A redaction that panics after tokenizing a card still has that
/// tokenization audited: the tokenizer, dropped as the panic unwinds,
/// records what `settle` never got to. The card is known already, so on
/// either store its event is one waiting to be recorded (a first sighting
/// rides with its record in the embedded store's outbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redaction_that_panics_still_audits_its_tokenizations() {
    use tokenvault::auth::Principal;
    use tokenvault::http::redact::Job;
    use tokenvault::redact::{Format, Tokenizer};

    let app = spawn_app().await;
    let token = app
        .tokenize(
            "4111111111111111",
            serde_json::json!({"deterministic": true}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let state = app.state();
    let job = Job {
        opts: state.redactor.options(),
        state,
        caller: Principal::new("apikey:checkout".into()),
        format: Format::Text,
        request_id: "redaction-that-panics".into(),
        waits: None,
    };
    let joined = tokio::task::spawn_blocking(move || {
        let tokenizer = job.tokenizer();
        let got = tokenizer.tokenize_card("4111111111111111").unwrap();
        assert_eq!(got, token);
        panic!("the engine failed after a tokenization");
    })
    .await;
    // The planned panic, not a failed assertion before it.
    let panic = joined.expect_err("the task panicked").into_panic();
    assert_eq!(
        panic.downcast_ref::<&str>(),
        Some(&"the engine failed after a tokenization")
    );
    let mut audited = false;
    for _ in 0..200 {
        if app
            .audit_text()
            .await
            .lines()
            .any(|l| l.contains("redaction-that-panics") && l.contains("\"reason\":\"redact\""))
        {
            audited = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(audited, "the tokenization's event is recorded");
    app.assert_no_leaks().await;
}
