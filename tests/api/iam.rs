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

    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, CHECKOUT_KEY.as_bytes());
    let support_arn = format!("arn:aws:iam::{account}:role/support");
    let sts = sts_endpoint.clone();
    let mut app = spawn_app_on(None, |s| {
        s.auth.iam = Some(IamSettings {
            server_id: SERVER_ID.into(),
            sts_endpoint: sts,
            sts_region: "us-east-1".into(),
            session_ttl_seconds: 900,
            allow_insecure_sts: true,
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
    assert!(audit.contains("\"reason\":\"replayed signature\""));
    assert!(audit.contains("\"reason\":\"STS refused the signature\""));
    app.assert_no_leaks().await;
    drop(moto);
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
