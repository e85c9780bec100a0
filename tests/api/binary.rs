//! The real binary, as a user runs it: `serve` on the embedded default,
//! `audit verify`, `redact`. Every child writes to a file and is killed
//! when the test ends, failure included.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{CARDS, client_trusting};

const BIN: &str = env!("CARGO_BIN_EXE_tokenvault");

/// Kills the child on drop, so a failing test leaves nothing running.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A command with no inherited TOKENVAULT_* settings.
fn tokenvault() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        // mimalloc turns huge pages off itself under this one, which
        // would hide whether the server does.
        if k.starts_with("TOKENVAULT_") || k == "MIMALLOC_ALLOW_THP" {
            c.env_remove(k);
        }
    }
    c
}

fn wait_for(log: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {needle:?}; output:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `serve` on a free port with `args`, its standard error in
/// `out_path` and its standard output beside it (`.stdout`); returns the
/// guard, the banner and the URL (as `localhost`).
fn start_serve(args: &[&std::ffi::OsStr], out_path: &Path) -> (ChildGuard, String, String) {
    let child = tokenvault()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(out_path.with_extension("stdout")).unwrap())
        .stderr(File::create(out_path).unwrap())
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    let banner = wait_for(out_path, "BACK UP");
    let url = banner
        .lines()
        .find_map(|l| l.strip_prefix("tokenvault listening on "))
        .unwrap()
        .trim()
        .replace("127.0.0.1", "localhost");
    (guard, banner, url)
}

/// Runs `cmd` with `input` on its standard input; its output.
fn with_stdin(mut cmd: Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_embedded_default_from_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out_path = tmp.path().join("serve.log");
    let (mut guard, banner, url) =
        start_serve(&["--data-dir".as_ref(), data.as_os_str()], &out_path);
    assert!(banner.contains("dev-credentials.json"));
    assert!(banner.contains("WARNING: the local key provider is for development"));
    assert_eq!(mode(&data.join("master.key")), 0o600);
    assert_eq!(
        std::fs::metadata(data.join("master.key")).unwrap().len(),
        32
    );
    assert_eq!(mode(&data.join("dev-credentials.json")), 0o600);
    assert_eq!(mode(&data.join("tls/key.pem")), 0o600);
    assert_eq!(mode(&data.join("vault.db")), 0o600);
    assert_eq!(mode(&data.join("vault.db-wal")), 0o600);
    assert_eq!(mode(&data.join("audit.log")), 0o600);
    assert_eq!(mode(&data.join("serve.lock")), 0o600);
    // No transparent huge pages: with them, idle RSS stayed 10-16 MB
    // higher. Where this process has them off already (a kernel without
    // them, or a parent that turned them off), the child proves nothing.
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    if own.contains("THP_enabled:\t1") {
        let status = std::fs::read_to_string(format!("/proc/{}/status", guard.0.id())).unwrap();
        assert!(status.contains("THP_enabled:\t0"), "{status}");
    }
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("dev-credentials.json")).unwrap()).unwrap();
    for role in ["checkout", "support", "admin", "log-shipper"] {
        assert!(creds[role].as_str().unwrap().len() >= 32, "{role}");
    }

    let client = client_trusting(&data.join("tls/cert.pem"));
    let health = client.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let card = CARDS[0].1;
    let post = |path: &str, role: &str, body: serde_json::Value| {
        client
            .post(format!("{url}{path}"))
            .bearer_auth(creds[role].as_str().unwrap())
            .json(&body)
            .send()
    };
    let t: serde_json::Value = post("/tokenize", "checkout", json!({ "value": card }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let d: serde_json::Value = post("/detokenize", "admin", json!({ "token": t["token"] }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["value"], card);

    // A second service on the same directory stops at once, naming the
    // first; the first serves on.
    let pid = guard.0.id().to_string();
    let twin_err = tmp.path().join("twin.err");
    let mut twin = ChildGuard(
        tokenvault()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&twin_err).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = twin.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "a second serve on one data dir kept running"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let twin_says = std::fs::read_to_string(&twin_err).unwrap();
    assert!(!status.success(), "{twin_says}");
    assert!(
        twin_says.contains(&format!("another tokenvault serve (pid {pid}) is using it")),
        "{twin_says}"
    );
    let health = client.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // SIGTERM drains and exits cleanly.
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = guard.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&out_path).unwrap()
        + &std::fs::read_to_string(out_path.with_extension("stdout")).unwrap();
    assert!(!log.contains(card), "a card reached the server's output");

    // A second start reuses what the first made.
    let first_cert = std::fs::read(data.join("tls/cert.pem")).unwrap();
    let first_creds = std::fs::read(data.join("dev-credentials.json")).unwrap();
    verify_audit(&data, true);
    let out2 = tmp.path().join("serve2.log");
    let child = tokenvault()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(File::create(&out2).unwrap())
        .stderr(File::create(tmp.path().join("serve2.err")).unwrap())
        .spawn()
        .unwrap();
    let _guard2 = ChildGuard(child);
    let err2 = tmp.path().join("serve2.err");
    wait_for(&err2, "BACK UP");
    assert_eq!(
        std::fs::read(data.join("tls/cert.pem")).unwrap(),
        first_cert
    );
    assert_eq!(
        std::fs::read(data.join("dev-credentials.json")).unwrap(),
        first_creds
    );
    // audit verify works beside a running service, and catches an edit.
    verify_audit(&data, true);
    let audit = data.join("audit.log");
    let mut bytes = std::fs::read(&audit).unwrap();
    let i = bytes.iter().position(|&b| b == b'a').unwrap();
    bytes[i] = b'e';
    std::fs::write(&audit, bytes).unwrap();
    verify_audit(&data, false);
}

fn sha256_hex(s: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes()).as_ref())
}

/// A config with API keys `keys` (name, key) and roles (name, principal,
/// permissions).
fn access_config(data: &Path, keys: &[(&str, &str)], roles: &[(&str, &str, &str)]) -> String {
    let mut c = format!("data_dir = \"{}\"\n[api_keys]\n", data.display());
    for (name, key) in keys {
        c += &format!("{name} = \"{}\"\n", sha256_hex(key));
    }
    for (name, principal, perms) in roles {
        c += &format!(
            "[[roles]]\nname = \"{name}\"\nprincipals = [\"{principal}\"]\npermissions = [{perms}]\n"
        );
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_keys_and_roles_and_keeps_them_when_the_file_is_bad() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("tokenvault.toml");
    let (old_key, new_key) = (
        "old-key-0123456789abcdef0123456789",
        "new-key-0123456789abcdef0123456789",
    );
    // Audit events go to standard output here, as to a log collector.
    std::fs::write(
        &config,
        access_config(
            &data,
            &[("old", old_key)],
            &[("checkout", "apikey:old", "\"tokenize\"")],
        ) + "[audit]\nsink = \"stdout\"\n",
    )
    .unwrap();
    let out_path = tmp.path().join("serve.log");
    let (guard, _, url) = start_serve(&["--config".as_ref(), config.as_os_str()], &out_path);
    let client = client_trusting(&data.join("tls/cert.pem"));
    let tokenize = |key: &'static str| {
        client
            .post(format!("{url}/tokenize"))
            .bearer_auth(key)
            .json(&json!({ "value": CARDS[0].1 }))
            .send()
    };
    assert_eq!(tokenize(old_key).await.unwrap().status(), 201);
    assert_eq!(tokenize(new_key).await.unwrap().status(), 401);
    let hup = || {
        assert!(
            Command::new("kill")
                .args(["-HUP", &guard.0.id().to_string()])
                .status()
                .unwrap()
                .success()
        )
    };

    // The old key revoked, a new key with a new role.
    std::fs::write(
        &config,
        access_config(
            &data,
            &[("new", new_key)],
            &[("ops", "apikey:new", "\"tokenize\", \"detokenize\"")],
        ),
    )
    .unwrap();
    hup();
    wait_for(&out_path, "SIGHUP: access rules reloaded");
    assert_eq!(tokenize(old_key).await.unwrap().status(), 401);
    assert_eq!(tokenize(new_key).await.unwrap().status(), 201);

    // The command-line client, with an API key and the vault's own CA.
    let client_tokenize = |key: &str| {
        let mut cmd = tokenvault();
        cmd.args(["tokenize", "--url", &url, "--api-key", key, "--cacert"])
            .arg(data.join("tls/cert.pem"));
        let out = with_stdin(cmd, format!("{}\n", CARDS[2].1).as_bytes());
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = client_tokenize(new_key);
    assert!(ok && text.contains("\"token\":\"tok_"), "{text}");
    let (ok, text) = client_tokenize(old_key);
    assert!(!ok && text.contains("401"), "{text}");
    assert!(!text.contains(CARDS[2].1));

    // A bad file is refused; the running rules stay.
    std::fs::write(
        &config,
        "[[roles]]\nname = \"x\"\npermissions = [\"fly\"]\n",
    )
    .unwrap();
    hup();
    wait_for(&out_path, "SIGHUP: configuration refused");
    assert_eq!(tokenize(new_key).await.unwrap().status(), 201);
    assert_eq!(tokenize(old_key).await.unwrap().status(), 401);
}

fn verify_audit(data: &PathBuf, ok: bool) {
    let out = tokenvault()
        .args(["audit", "verify"])
        .arg(data.join("audit.log"))
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.success(),
        ok,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with(if ok { "ok:" } else { "BROKEN" }),
        "{text}"
    );
}

#[test]
fn redact_filters_stdin_to_stdout() {
    let mut cmd = tokenvault();
    cmd.args(["redact", "--format", "ndjson"]);
    let out = with_stdin(
        cmd,
        b"{\"card\": 4111111111111111, \"who\": \"a@b.io\"}\nplain 5555-5555-5555-4444\n",
    );
    assert!(out.status.success());
    // The event keeps its spacing; the card held in a number becomes a
    // string holding its mask.
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"card\": \"************1111\", \"who\": \"******\"}\nplain ****-****-****-4444\n"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("findings: pan=2, email=1"));
}

#[test]
fn a_bad_setting_stops_start_up_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tokenvault()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .env("TOKENVAULT_LIMITS__BATCH", "lots")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOKENVAULT_LIMITS__BATCH"));
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "[tokens]\nformatt = \"random\"\n").unwrap();
    let out = tokenvault()
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("formatt"));
}

/// A closed standard output (`tokenvault bench | head -1`) ends a command
/// with exit status 1 and nothing on standard error: no panic (`doctor`
/// printed with `println!`, which panics), no "Broken pipe" message
/// (`redact` reported its failed write).
#[test]
fn a_closed_standard_output_ends_a_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "paid with 4111111111111111\n").unwrap();
    let commands: [&[&str]; 2] = [&["doctor", "--data-dir"], &["redact"]];
    for args in commands {
        // No reader: the command's first write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut cmd = tokenvault();
        cmd.args(args);
        if args[0] == "doctor" {
            cmd.arg(dir.path().join("data"));
        }
        let out = cmd
            .stdin(File::open(&input).unwrap())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
}

/// `kill -9` in the middle of tokenize traffic: after a restart, every
/// token that was answered has exactly one tokenize event in the audit
/// log (committed with its record, copied from the outbox at the latest
/// at the start), and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_under_load_loses_no_audit_event() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let args = ["--data-dir".as_ref(), data.as_os_str()];
    let (mut guard, _, url) = start_serve(&args, &tmp.path().join("serve.log"));
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("dev-credentials.json")).unwrap()).unwrap();
    let key = creds["checkout"].as_str().unwrap().to_owned();
    let client = client_trusting(&data.join("tls/cert.pem"));

    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, url, key, answered) =
            (client.clone(), url.clone(), key.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            // Until the server is gone.
            while let Ok(res) = client
                .post(format!("{url}/tokenize"))
                .bearer_auth(&key)
                .json(&json!({ "values": [CARDS[0].1, CARDS[1].1] }))
                .send()
                .await
            {
                let Ok(v) = res.json::<serde_json::Value>().await else {
                    break;
                };
                for item in v["results"].as_array().into_iter().flatten() {
                    if let Some(t) = item["token"].as_str() {
                        answered.lock().unwrap().push(t.to_owned());
                    }
                }
            }
        }));
    }
    // Some traffic, then the kill while requests are in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.lock().unwrap().len() < 400 {
        assert!(Instant::now() < deadline, "too few answers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    guard.0.kill().unwrap();
    guard.0.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();

    let (_guard2, _, _) = start_serve(&args, &tmp.path().join("serve2.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    // The whole trail: a run across midnight UTC rotates the file.
    let trail = || {
        let mut files = tokenvault::audit::rotated_files(&data.join("audit.log"));
        files.push(data.join("audit.log"));
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect::<String>()
    };
    let audit = loop {
        let audit = trail();
        if answered.iter().all(|t| audit.contains(t.as_str())) {
            break audit;
        }
        assert!(
            Instant::now() < deadline,
            "answered tokens with no audit event after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for t in &answered {
        assert_eq!(audit.matches(t.as_str()).count(), 1, "{t}");
    }
    // Stronger: every stored token has its event, the ones committed but
    // never answered (in flight at the kill) included.
    let db = rusqlite::Connection::open_with_flags(
        data.join("vault.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let stored: Vec<String> = db
        .prepare("SELECT token FROM tokens")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(stored.len() >= answered.len());
    for t in &stored {
        assert_eq!(audit.matches(t.as_str()).count(), 1, "{t}");
    }
    verify_audit(&data, true);
}
