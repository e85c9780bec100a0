//! The AWS emulator (moto server) for the tests of the production backends.
//!
//! One moto server per test process, started on first use on a free
//! loopback port by `tests/support/moto_guard.py` from the project's
//! `.venv` (which `scripts/test` installs). Its output goes to a file in the
//! target directory, it runs in its own process group, and the guard stops
//! it as soon as this process is gone, failure or kill included. Each test
//! gets its own table and KMS keys (unique names), so tests share the
//! emulator without resetting it under each other.
//!
//! Which backend the API suite runs on comes from `TOKENVAULT_TEST_BACKEND`
//! (`sqlite`, the default, or `aws`): one suite, two backends. Where the
//! emulator is missing, `CI=true` fails the test; elsewhere the test says
//! why and returns.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_kms::config::{Credentials, Region};
use tokenvault::aws::Clients;

/// Which backend the API suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Aws,
}

pub fn backend() -> Backend {
    match std::env::var("TOKENVAULT_TEST_BACKEND").as_deref() {
        Ok("aws") => Backend::Aws,
        Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("TOKENVAULT_TEST_BACKEND={other}: expected sqlite or aws"),
    }
}

/// A running moto server.
pub struct Moto {
    pub endpoint: String,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        // The whole process group: the server and anything it started.
        let pgid = self.child.id() as i32;
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The virtual environment's python, when moto is installed there.
fn python() -> Option<PathBuf> {
    let py = project_dir().join(".venv/bin/python");
    let ok = py.exists()
        && Command::new(&py)
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    ok.then_some(py)
}

/// Starts a moto server of its own (for a test that stops it), or `None`
/// when moto is not installed outside CI.
pub fn start_moto() -> Option<Moto> {
    let Some(py) = python() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "moto is not installed in .venv: run ./scripts/test, which installs it"
        );
        eprintln!("SKIPPED: moto is not installed in .venv (./scripts/test installs it)");
        return None;
    };
    let logs = project_dir().join("target/moto");
    std::fs::create_dir_all(&logs).unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let port_file = logs.join(format!("{id}.port"));
    let log = std::fs::File::create(logs.join(format!("{id}.log"))).unwrap();
    let child = std::os::unix::process::CommandExt::process_group(
        Command::new(py)
            .arg(project_dir().join("tests/support/moto_guard.py"))
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
        0,
    )
    .spawn()
    .expect("start moto");
    let mut moto = Moto {
        endpoint: String::new(),
        child,
    };
    let start = Instant::now();
    loop {
        if let Ok(port) = std::fs::read_to_string(&port_file) {
            moto.endpoint = format!("http://127.0.0.1:{}", port.trim());
            let _ = std::fs::remove_file(&port_file);
            return Some(moto);
        }
        if let Ok(Some(status)) = moto.child.try_wait() {
            panic!("moto exited at start ({status}); see target/moto/{id}.log");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "moto did not start in 60 s; see target/moto/{id}.log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The moto server this process shares, started on first use.
pub fn shared_moto() -> Option<&'static Moto> {
    static MOTO: OnceLock<Option<Moto>> = OnceLock::new();
    MOTO.get_or_init(start_moto).as_ref()
}

/// Clients for an endpoint, with the emulator's dummy credentials.
pub async fn clients(endpoint: &str) -> Clients {
    clients_split(endpoint, endpoint).await
}

/// Clients with DynamoDB and KMS at different endpoints (a test points
/// KMS at a proxy it can cut).
pub async fn clients_split(dynamodb: &str, kms: &str) -> Clients {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .endpoint_url(dynamodb)
        .load()
        .await;
    let mut c = Clients::from_sdk(&sdk);
    if kms != dynamodb {
        let conf = c.kms.config().to_builder().endpoint_url(kms).build();
        c.kms = aws_sdk_kms::Client::from_conf(conf);
    }
    c
}

/// A table and KMS keys of a test's own.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub table: String,
    /// Classification → key ARN.
    pub keys: BTreeMap<String, String>,
}

/// Makes a KMS key with rotation on; returns its ARN.
pub async fn create_key(c: &Clients, description: &str) -> String {
    let key = c
        .kms
        .create_key()
        .description(description)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    c.kms
        .enable_key_rotation()
        .key_id(key.key_id())
        .send()
        .await
        .unwrap();
    key.arn.unwrap()
}

/// Creates KMS keys for `pan` and `pii` and a migrated table.
pub async fn provision(c: &Clients) -> Provisioned {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut keys = BTreeMap::new();
    for class in ["pan", "pii"] {
        keys.insert(
            class.to_owned(),
            create_key(c, &format!("tv-{id}-{class}")).await,
        );
    }
    let table = format!("tv-{id}");
    tokenvault::store::migrate::migrate(&c.dynamodb, &table, None)
        .await
        .unwrap();
    Provisioned { table, keys }
}
