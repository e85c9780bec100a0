//! IAM login against moto with signature checking on: the `tokenvault`
//! client logs in under an assumed role and detokenizes; every refusal rule
//! answers 401. The moto process is this test's own (signature checking
//! applies to everything it serves from then on); the service runs on the
//! embedded store and local keys, with moto for IAM and STS only.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use serde_json::{Value, json};
use tokenvault::config::IamSettings;

use crate::emulator::start_moto;
use crate::helpers::{CARDS, TestApp, spawn_app_on};
use crate::policy::role;

const SERVER_ID: &str = "tokenvault.test.example";
const CHECKOUT_KEY: &str = "checkout-key-for-the-iam-tests-0123456789";
/// The account the fake STS (`support_app_behind`) answers for.
const ACCOUNT: &str = "123456789012";

fn creds(v: &Value) -> Credentials {
    Credentials::new(
        v["AccessKeyId"].as_str().unwrap(),
        v["SecretAccessKey"].as_str().unwrap(),
        Some(v["SessionToken"].as_str().unwrap().to_owned()),
        None,
        "tests",
    )
}

/// POSTs a login body; the status.
async fn login(app: &TestApp, body: &Value) -> (u16, Value) {
    let (s, v) = app.post("/auth/iam", None, body).await;
    (s.as_u16(), v)
}

/// A service that logs IAM callers in through `sts_endpoint`, with two
/// roles: `checkout` (an API key, tokenize) and `support` (the IAM role
/// `support_arn`, masked detokenize).
async fn spawn_support_app(sts_endpoint: String, support_arn: &str) -> TestApp {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, CHECKOUT_KEY.as_bytes());
    let mut app = spawn_app_on(None, |s| {
        s.auth.iam = Some(IamSettings {
            server_id: SERVER_ID.into(),
            sts_endpoint,
            sts_region: "us-east-1".into(),
            session_ttl_seconds: 900,
            allow_insecure_sts: true,
            max_concurrent_logins: 64,
        });
        s.api_keys = BTreeMap::from([("checkout".into(), hex::encode(digest.as_ref()))]);
        s.roles = vec![
            role("checkout", "apikey:checkout", &["tokenize"]),
            role(
                "support",
                &format!("iam:{support_arn}"),
                &["detokenize:masked"],
            ),
        ];
    })
    .await;
    app.keys.insert("checkout".into(), CHECKOUT_KEY.into());
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_roles_log_in_through_sts_and_every_refusal_rule_holds() {
    let Some(moto) = start_moto() else { return };
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/iam_setup.py"
        ))
        .arg(&moto.endpoint)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "iam_setup.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let setup: Value = serde_json::from_slice(&out.stdout).unwrap();
    let account = setup["account"].as_str().unwrap().to_owned();
    let sts_endpoint = format!("{}/", moto.endpoint);

    let support_arn = format!("arn:aws:iam::{account}:role/support");
    let mut app = spawn_support_app(sts_endpoint.clone(), &support_arn).await;
    let token = app.tokenize(CARDS[0].1, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // What to sign.
    let (s, what) = app.get("/auth/iam", None).await;
    assert_eq!(s, 200);
    assert_eq!(what["server_id"], SERVER_ID);
    assert_eq!(what["sts_endpoint"], sts_endpoint.as_str());

    // The real client, under each assumed role.
    let client = |role: &str, token: &str, trust: &[&str]| {
        let c = &setup[role];
        let home = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenvault"));
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") || k.starts_with("TOKENVAULT_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .args(["detokenize", "--url", &app.url, "--cacert"])
            .arg(app.data_dir().join("tls/cert.pem"))
            .args(trust)
            .arg(token)
            .env("HOME", home.path())
            .env("AWS_ACCESS_KEY_ID", c["AccessKeyId"].as_str().unwrap())
            .env(
                "AWS_SECRET_ACCESS_KEY",
                c["SecretAccessKey"].as_str().unwrap(),
            )
            .env("AWS_SESSION_TOKEN", c["SessionToken"].as_str().unwrap())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let trust = ["--server-id", SERVER_ID, "--sts-endpoint", &sts_endpoint];
    // Unpinned, the client refuses to sign for a server id other than the
    // URL's host, or for an STS endpoint that is not AWS's over https.
    let (ok, text) = client("support", &token, &[]);
    assert!(!ok && text.contains("refusing"), "{text}");
    let (ok, text) = client("support", &token, &trust[..2]);
    assert!(!ok && text.contains("not an AWS STS endpoint"), "{text}");
    let (ok, text) = client("support", &token, &trust);
    assert!(ok, "{text}");
    assert!(
        text.contains("\"masked\":true") && text.contains("1111"),
        "{text}"
    );
    assert!(!text.contains(CARDS[0].1));
    // A role no policy names logs in, then is denied by default.
    let (ok, text) = client("nobody", &token, &trust);
    assert!(!ok, "{text}");
    assert!(text.contains("403"), "{text}");

    let support = creds(&setup["support"]);
    let sign = |server_id: Option<&str>, at: SystemTime| {
        tokenvault::client::sign_login(server_id, &sts_endpoint, "us-east-1", support.clone(), at)
            .unwrap()
    };
    let now = SystemTime::now();

    // A valid login works once; the same signed request again is a replay.
    // (Signed 30 s ahead: SigV4 dates have one-second steps, so a request
    // signed in the same second as the client's login above would be that
    // very signature, and rightly refused as a replay.)
    let good = sign(Some(SERVER_ID), now + Duration::from_secs(30));
    let (s, v) = login(&app, &good).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["principal"], support_arn.as_str());
    // iam_setup.py assumed the role under the session name `tests`.
    assert_eq!(v["session"], "tests");
    let session = v["session_token"].as_str().unwrap().to_owned();
    assert_eq!(login(&app, &good).await.0, 401, "replay");

    // Each refusal rule. Every case signs afresh (a new signature), so
    // only the rule under test can refuse it.
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut v = sign(Some(SERVER_ID), now + Duration::from_secs(1));
    v["headers"]
        .as_object_mut()
        .unwrap()
        .remove("x-tokenvault-server-id");
    cases.push(("no server-id header", v));
    cases.push((
        "another server id",
        sign(Some("other.example"), now + Duration::from_secs(2)),
    ));
    let mut v = sign(None, now + Duration::from_secs(3));
    v["headers"]["x-tokenvault-server-id"] = json!(SERVER_ID);
    cases.push(("server-id header added after signing", v));
    cases.push((
        "stale date",
        sign(Some(SERVER_ID), now - Duration::from_secs(600)),
    ));
    let mut v = sign(Some(SERVER_ID), now + Duration::from_secs(4));
    v["headers"]["content-type"] = json!("application/x-www-form-urlencoded");
    cases.push(("tampered header (STS rejects the signature)", v));
    let mut v = sign(Some(SERVER_ID), now + Duration::from_secs(5));
    v["body"] = json!(base64_of("Action=GetCallerIdentity&Version=2011-06-15&x=1"));
    cases.push(("changed body", v));
    let mut v = sign(Some(SERVER_ID), now + Duration::from_secs(6));
    v["method"] = json!("GET");
    cases.push(("another method", v));
    for (what, body) in &cases {
        let (s, v) = login(&app, body).await;
        assert_eq!(s, 401, "{what}: {v}");
        assert!(
            !v.to_string().contains("server id") && !v.to_string().contains("date"),
            "{what}: the answer explains nothing: {v}"
        );
    }

    // Another URL: refused, and the service never connects to it.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!("http://{}/", trap.local_addr().unwrap());
    let mut v = tokenvault::client::sign_login(
        Some(SERVER_ID),
        &trap_url,
        "us-east-1",
        support.clone(),
        now + Duration::from_secs(7),
    )
    .unwrap();
    v["url"] = json!(trap_url);
    assert_eq!(login(&app, &v).await.0, 401);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), trap.accept())
            .await
            .is_err(),
        "the service connected to a URL it was handed"
    );

    // Sessions: valid, unknown, expired.
    app.keys.insert("session".into(), session.clone());
    assert_eq!(app.detokenize("session", &token).await.0, 200);
    app.keys.insert(
        "forged".into(),
        format!("{}x", &session[..session.len() - 1]),
    );
    assert_eq!(app.detokenize("forged", &token).await.0, 401);
    app.clock.advance(901);
    assert_eq!(app.detokenize("session", &token).await.0, 401, "expired");

    let audit = app.audit_text().await;
    assert!(audit.contains("\"action\":\"login\""));
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"action\":\"detokenize:masked\"")
                && l.contains(&format!(
                    "\"principal\":\"iam:{support_arn}\",\"session\":\"tests\""
                ))),
        "{audit}"
    );
    assert!(audit.contains("\"reason\":\"replayed signature\""));
    assert!(audit.contains("\"reason\":\"STS refused the signature\""));
    app.assert_no_leaks().await;
    drop(moto);
}

/// A stand-in for STS on 127.0.0.1: reads each request whole, waits for
/// `gate` to open, then answers `status` with `body`. Its endpoint, and a
/// count of the requests it has read.
async fn fake_sts(
    status: u16,
    body: &'static str,
    gate: tokio::sync::watch::Receiver<bool>,
) -> (String, tokio::sync::watch::Receiver<usize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/", listener.local_addr().unwrap());
    let (seen_tx, seen) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut gate = gate.clone();
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text[..end]
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                seen_tx.send_modify(|n| *n += 1);
                let _ = gate.wait_for(|open| *open).await;
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
            });
        }
    });
    (endpoint, seen)
}

/// STS saying "later" (throttling: HTTP 400 with a `Throttling` code) and
/// a server already at its bound of logins in flight both answer 503 with
/// `Retry-After`, never 401: the caller's credentials were not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_throttling_and_too_many_logins_answer_503() {
    const THROTTLED: &str = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>";
    let (open, gate) = tokio::sync::watch::channel(false);
    let (sts, mut seen) = fake_sts(400, THROTTLED, gate).await;
    let endpoint = sts.clone();
    let app = spawn_app_on(None, |s| {
        s.auth.iam = Some(IamSettings {
            server_id: SERVER_ID.into(),
            sts_endpoint: endpoint,
            sts_region: "us-east-1".into(),
            session_ttl_seconds: 900,
            allow_insecure_sts: true,
            max_concurrent_logins: 1,
        });
    })
    .await;
    let creds = Credentials::new("AKIDEXAMPLE", "not-a-real-secret", None, None, "tests");
    let now = SystemTime::now();
    let sign = |secs: u64| {
        tokenvault::client::sign_login(
            Some(SERVER_ID),
            &sts,
            "us-east-1",
            creds.clone(),
            now + Duration::from_secs(secs),
        )
        .unwrap()
    };
    // The first login holds the one slot while STS sits on it.
    let first = {
        let (url, client, body) = (app.url.clone(), app.client.clone(), sign(1));
        tokio::spawn(async move {
            client
                .post(format!("{url}/auth/iam"))
                .json(&body)
                .send()
                .await
                .unwrap()
        })
    };
    seen.wait_for(|n| *n == 1).await.unwrap();
    let (s, h, b) = app
        .post_raw(
            "/auth/iam",
            None,
            "application/json",
            sign(2).to_string(),
            &[],
        )
        .await;
    assert_eq!(s, 503, "{b}");
    assert!(h.contains_key("retry-after"));
    assert_eq!(*seen.borrow(), 1, "the second login never reached STS");

    // STS answers the first: throttled.
    open.send(true).unwrap();
    let res = first.await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let audit = app.audit_text().await;
    let errors = audit
        .lines()
        .filter(|l| l.contains("\"action\":\"login\"") && l.contains("\"decision\":\"error\""))
        .count();
    assert_eq!(errors, 2, "{audit}");
    assert!(!audit.contains("STS refused the signature"), "{audit}");
    // A slot is free again: the next login reaches STS.
    let (s, _) = login(&app, &sign(3)).await;
    assert_eq!(s, 503);
    assert_eq!(*seen.borrow(), 2);
    app.assert_no_leaks().await;
}

/// An assumed role's session name (of the people sharing a role, who made
/// the call) comes back from the login and is in the audit event of the
/// login and of every call made with the session, whose chain still
/// verifies; calls by an API key carry none. A session name that could
/// hold a card number is withheld, in the answer and in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_name_is_audited_and_withheld_when_it_could_hold_a_card() {
    for (name, recorded) in [
        ("alice@example.com", "alice@example.com"),
        ("4111-1111-1111-1111", "(withheld)"),
    ] {
        let (mut app, signed) = support_app_behind(&format!(
            "arn:aws:sts::{ACCOUNT}:assumed-role/support/{name}"
        ))
        .await;
        let token = app.tokenize(CARDS[1].1, json!({})).await["token"].clone();
        // A body that is no login request is refused, and audited.
        for junk in ["{\"method\":", "{\"method\":\"POST\"}"] {
            let (s, _, b) = app
                .post_raw("/auth/iam", None, "application/json", junk, &[])
                .await;
            assert_eq!(s, 400, "{b}");
        }
        let (s, v) = login(&app, &signed).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v["principal"],
            format!("arn:aws:iam::{ACCOUNT}:role/support")
        );
        assert_eq!(v["session"], recorded);
        app.keys.insert(
            "support".into(),
            v["session_token"].as_str().unwrap().into(),
        );
        let (s, v) = app.detokenize("support", token.as_str().unwrap()).await;
        assert_eq!(s, 200, "{v}");

        let audit = app.audit_text().await;
        let field = format!("\"session\":{}", json!(recorded));
        let line = |action: &str| {
            audit
                .lines()
                .find(|l| l.contains(&format!("\"action\":\"{action}")))
                .unwrap_or_else(|| panic!("no {action} event: {audit}"))
                .to_owned()
        };
        let malformed = audit
            .lines()
            .filter(|l| {
                l.contains("\"principal\":\"anonymous\"")
                    && l.contains("\"action\":\"login\"")
                    && l.contains("\"decision\":\"deny\",\"reason\":\"malformed login request\"")
            })
            .count();
        assert_eq!(malformed, 2, "{audit}");
        let allowed = audit
            .lines()
            .find(|l| l.contains("\"action\":\"login\"") && l.contains("\"decision\":\"allow\""))
            .unwrap();
        assert!(allowed.contains(&field), "{audit}");
        assert!(line("detokenize").contains(&field), "{audit}");
        assert!(!line("tokenize").contains("\"session\""), "{audit}");
        assert!(!audit.contains("4111-1111-1111-1111"), "{audit}");
        assert!(!crate::helpers::captured_logs().contains("4111-1111-1111-1111"));
        app.assert_no_leaks().await;

        app.shutdown().await;
        let key = tokenvault::app::audit_key(&app.settings, app.aws.clone())
            .await
            .unwrap();
        let report = tokenvault::audit::verify(&app.data_dir().join("audit.log"), &key).unwrap();
        assert_eq!(
            report.lines, 5,
            "tokenize, two malformed logins, login, detokenize"
        );
    }

    // A role whose name could hold a card is refused (policy matches on
    // the name, so it cannot be withheld), and the name is in no log.
    let card_role = format!("arn:aws:sts::{ACCOUNT}:assumed-role/5105105105105100/bob");
    let (app, signed) = support_app_behind(&card_role).await;
    let (s, v) = login(&app, &signed).await;
    assert_eq!(s, 401, "{v}");
    let audit = app.audit_text().await;
    assert!(
        audit.contains(
            "\"decision\":\"deny\",\"reason\":\"a role or user name that could hold a card number\""
        ),
        "{audit}"
    );
    assert!(!audit.contains("5105105105105100"), "{audit}");
    assert!(!crate::helpers::captured_logs().contains("5105105105105100"));
    app.assert_no_leaks().await;
}

/// A support service (`spawn_support_app`) whose STS, a fake one, says
/// every signature is `arn`'s, and a login signed for it.
async fn support_app_behind(arn: &str) -> (TestApp, Value) {
    let answer: &'static str = Box::leak(
        format!(
            "<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>{arn}</Arn>\
             <UserId>AROAEXAMPLE:x</UserId><Account>{ACCOUNT}</Account>\
             </GetCallerIdentityResult></GetCallerIdentityResponse>"
        )
        .into_boxed_str(),
    );
    let (open, gate) = tokio::sync::watch::channel(true);
    // Kept open for good: the fake answers at once, for the test's life.
    std::mem::forget(open);
    let (sts, _) = fake_sts(200, answer, gate).await;
    let app = spawn_support_app(sts.clone(), &format!("arn:aws:iam::{ACCOUNT}:role/support")).await;
    let creds = Credentials::new("AKIDEXAMPLE", "not-a-real-secret", None, None, "tests");
    let signed = tokenvault::client::sign_login(
        Some(SERVER_ID),
        &sts,
        "us-east-1",
        creds,
        SystemTime::now(),
    )
    .unwrap();
    (app, signed)
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
