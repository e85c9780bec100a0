//! Building the service from settings, and serving it.
//!
//! [`build`] turns [`Settings`] into an [`App`]: the router with its state
//! and the TLS configuration. [`serve`] takes an already bound listener and
//! a shutdown future, so tests bind `127.0.0.1:0` and stop it at will.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::audit::Rotation;
use crate::audit::{AuditKey, AuditLog};
use crate::auth::api_key::{ApiKeys, parse_digest};
use crate::auth::dev;
use crate::auth::iam::IamLogin;
use crate::auth::policy::Policy;
use crate::auth::session::Sessions;
use crate::aws::Clients;
use crate::clock::Clock;
use crate::config::{AuditSink, KeyKind, Settings, StoreKind};
use crate::crypto::KeyProvider;
use crate::crypto::fingerprint::FingerprintKey;
use crate::crypto::keyring::{KeyringError, KeyringSettings};
use crate::crypto::kms::KmsKeyProvider;
use crate::crypto::local::LocalKeyProvider;
use crate::crypto::slot::SlotKey;
use crate::crypto::{DataKey, Keyring};
use crate::http::{Access, AppState, Shared};
use crate::redact::{HashKey, Redactor};
use crate::store::TokenStore;
use crate::store::dynamodb::DynamoStore;
use crate::store::sqlite::SqliteStore;
use crate::telemetry::Metrics;
use crate::tls::ReloadingCert;
use crate::vault::Vault;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers (also the idle limit
/// between keep-alive requests).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A built service, ready to serve.
pub struct App {
    pub router: Router,
    pub tls: Arc<ServerConfig>,
    /// Spawn `cert.cert.watch(cert.period)` beside the server to pick up a
    /// renewed certificate.
    pub cert: CertReload,
    /// Spawn `sweeper.run()` beside the server to delete expired entries;
    /// stop it before closing the audit log.
    pub sweeper: crate::expiry::Sweeper,
    pub state: AppState,
    pub info: StartupInfo,
    /// Keep it while serving: dropping it lets another `serve` open the
    /// data directory.
    pub lock: DataDirLock,
}

/// The running service's hold on its data directory (an exclusive
/// `flock` on `serve.lock` in it, released by the kernel when the process
/// ends, however it ends). Two services on one directory would hand out
/// the same SQLite row numbers (each counts from the table's end) and
/// append to one audit chain from two ends, which then fails to verify.
/// Tools that only read, or write through conditions (`audit verify`,
/// `rewrap`, `doctor`), do not take it and run beside the service.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Takes the lock, or says which process holds it.
    pub fn take(dir: &Path) -> Result<DataDirLock, BuildError> {
        use std::io::{Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("serve.lock");
        // Owner-only: `flock` needs no more than a read handle, so a file
        // others can open is one anybody on the machine could hold to keep
        // the service from starting.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| fail("data_dir lock")(&format!("{}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok())
                    .map_or_else(String::new, |pid| format!(" (pid {pid})"));
                return Err(BuildError(format!(
                    "data_dir {}: another tokenvault serve{pid} is using it; \
                     stop it, or give this one another --data-dir",
                    dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(fail("data_dir lock")(&format!("{}: {e}", path.display())));
            }
        }
        // For the message above; the lock, not this, is what counts.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(DataDirLock { _file: file })
    }
}

/// The served certificate and how often to look for a new one.
pub struct CertReload {
    pub cert: Arc<ReloadingCert>,
    pub period: Duration,
}

/// The API keys and roles in force: the configured ones, or with none
/// configured the development identities (and their file).
pub fn access(settings: &Settings) -> Result<(Access, Option<PathBuf>), BuildError> {
    let (api_keys, roles, dev_credentials) = if settings.uses_dev_credentials() {
        let path = settings.data_dir.join("dev-credentials.json");
        let (keys, roles, _) =
            dev::load_or_create(&path).map_err(|e| fail("dev credentials")(&e))?;
        (keys, roles, Some(path))
    } else {
        (settings.api_keys.clone(), settings.roles.clone(), None)
    };
    let policy = Policy::from_settings(&roles).map_err(|e| BuildError(e.to_string()))?;
    Ok((
        Access {
            api_keys: ApiKeys::from_settings(&api_keys),
            policy,
        },
        dev_credentials,
    ))
}

/// What start-up made or found, for the banner.
#[derive(Debug, Clone)]
pub struct StartupInfo {
    pub data_dir: PathBuf,
    pub cert: PathBuf,
    pub cert_generated: bool,
    /// The dev credentials file, when dev identities are in force.
    pub dev_credentials: Option<PathBuf>,
    /// What holds the records (`sqlite FILE` or `dynamodb TABLE`).
    pub store: String,
    /// The local master key file and whether it was just created; `None`
    /// with KMS.
    pub master_key: Option<(PathBuf, bool)>,
    /// Where audit events go: the file, or standard output.
    pub audit_log: String,
}

/// Build failures: each names what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

fn fail(what: &str) -> impl FnOnce(&dyn std::fmt::Display) -> BuildError + '_ {
    move |e| BuildError(format!("{what}: {e}"))
}

/// The key of slotted tokens: made on first use, but never made again
/// once tokens name slots under it (a new key would find none of them).
async fn slot_key(keyring: &Keyring, store: &dyn TokenStore) -> Result<DataKey, BuildError> {
    const NAME: &str = "token-slot";
    match keyring.existing_service_secret(NAME, 1).await {
        Err(KeyringError::UnknownKey) => {
            if store
                .holds_slotted_tokens()
                .await
                .map_err(|e| fail("token slot key")(&e))?
            {
                return Err(BuildError(
                    "token slot key: the store holds tokens that name their slots, but not \
                     the key they were made with: restore the key item \
                     `secret/token-slot/v1` (table `key_items`) from a backup of vault.db"
                        .into(),
                ));
            }
            keyring.service_secret(NAME, 1).await
        }
        found => found,
    }
    .map_err(|e| fail("token slot key")(&e))
}

/// Loads the access rules and the certificate, opens the keys and the
/// store, loads the service-held secrets, opens the audit log last, and
/// assembles the router. AWS clients, when the settings need them, come
/// from the standard AWS chain.
pub async fn build(settings: &Settings, clock: Arc<dyn Clock>) -> Result<App, BuildError> {
    build_with_aws(settings, clock, None).await
}

/// [`build`] with the AWS clients given (tests point them at an emulator).
pub async fn build_with_aws(
    settings: &Settings,
    clock: Arc<dyn Clock>,
    aws: Option<Clients>,
) -> Result<App, BuildError> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| fail("data_dir")(&e))?;
    // Before anything opens the store: a second service must not migrate
    // or write it either.
    let lock = DataDirLock::take(&settings.data_dir)?;
    let metrics = Arc::new(Metrics::new());

    // What needs only the settings and files of its own comes first: a
    // start that fails on configuration leaves the store unopened and
    // starts no thread of the store's or the audit log's.
    let iam = match &settings.auth.iam {
        Some(iam) => {
            let tls = crate::tls::client_config(None).map_err(|e| fail("STS client")(&e))?;
            Some(Arc::new(
                IamLogin::new(iam.clone(), tls).map_err(|e| fail("auth.iam")(&e))?,
            ))
        }
        None => None,
    };

    let (access, dev_credentials) = access(settings)?;

    let (cert, key, cert_generated) = match (&settings.tls.cert, &settings.tls.key) {
        (Some(c), Some(k)) => (settings.resolve(c), settings.resolve(k), false),
        _ => crate::tls::ensure_dev_cert(&settings.data_dir.join("tls"))
            .map_err(|e| fail("tls")(&e))?,
    };
    let reloading = Arc::new(ReloadingCert::load(&cert, &key).map_err(|e| fail("tls")(&e))?);
    let client_ca = settings.tls.client_ca.as_ref().map(|c| settings.resolve(c));
    let tls = crate::tls::server_config(
        reloading.clone(),
        settings.tls.client_auth,
        client_ca.as_deref(),
    )
    .map_err(|e| fail("tls")(&e))?;

    let Opened {
        store,
        store_name,
        keyring,
        master_key,
    } = open_vault(settings, clock.clone(), metrics.clone(), true, aws).await?;
    let keyring = Arc::new(keyring);
    tracing::info!(
        key_provider = keyring.provider().kind(),
        store = %store_name,
        "vault opened"
    );
    let fp_secret = keyring
        .service_secret("fingerprint", 1)
        .await
        .map_err(|e| fail("fingerprint key")(&e))?;
    let fingerprints = FingerprintKey::new("fp1", &fp_secret);
    let audit_secret = keyring
        .service_secret("audit", 1)
        .await
        .map_err(|e| fail("audit key")(&e))?;
    let session_secret = keyring
        .service_secret("session", 1)
        .await
        .map_err(|e| fail("session key")(&e))?;
    let sessions = Arc::new(Sessions::new(&session_secret));
    // Made only for a store with slots: DynamoDB finds records by token
    // alone and needs no such key.
    let slots = if store.has_slots() {
        Some(SlotKey::new(&slot_key(&keyring, &*store).await?))
    } else {
        None
    };
    let vault = Arc::new(Vault::new(
        store,
        keyring.clone(),
        fingerprints,
        slots,
        clock.clone(),
        settings.tokens.clone(),
    ));
    let hash_secret = keyring
        .service_secret("redact-hash", 1)
        .await
        .map_err(|e| fail("redaction hash key")(&e))?;
    let redactor = Redactor::new(
        &settings.redact.engine(),
        Some(HashKey::new("rh1", hash_secret.expose())),
    )
    .map_err(|e| fail("redact")(&e))?;
    // The audit log last: its writer starts copying the outbox the
    // moment it is attached, so a start that fails after it would leave
    // that thread writing the chain after the data directory's lock is
    // released. Only the attach itself can fail after it, and then the
    // writer is stopped first.
    let audit_log = settings.resolve(&settings.audit.path);
    let audit = match settings.audit.sink {
        AuditSink::Stdout => AuditLog::stdout(AuditKey::new(&audit_secret), clock.clone()),
        _ => AuditLog::open_rotating(
            &audit_log,
            Rotation {
                max_bytes: settings.audit.max_bytes,
                daily: settings.audit.rotate_daily,
            },
            AuditKey::new(&audit_secret),
            clock.clone(),
        ),
    }
    .map_err(|e| fail("audit")(&e))?;
    // The embedded store commits tokenizations' events with their records;
    // the log copies them from its outbox.
    if let Err(e) = audit.attach_outbox(&**vault.store()) {
        let _ = audit.close().await;
        return Err(fail("audit")(&e));
    }
    let state = AppState::new(Shared {
        vault,
        keyring,
        redactor: Arc::new(redactor),
        audit,
        metrics,
        access: Arc::new(RwLock::new(Arc::new(access))),
        limits: settings.limits.clone(),
        metrics_bearer: parse_digest(&settings.metrics.bearer_digest),
        limiter: Arc::new(crate::auth::rate::RateLimiter::new(clock.clone())),
        sessions,
        iam,
        clock,
    });
    let router = crate::http::router(state.clone());
    let sweeper = crate::expiry::Sweeper {
        store: state.vault.store().clone(),
        audit: state.audit.clone(),
        clock: state.clock.clone(),
        period: Duration::from_millis(settings.store.purge_interval_ms),
    };
    Ok(App {
        router,
        tls,
        cert: CertReload {
            cert: reloading,
            period: Duration::from_secs(settings.tls.reload_seconds),
        },
        sweeper,
        state,
        info: StartupInfo {
            data_dir: settings.data_dir.clone(),
            cert,
            cert_generated,
            dev_credentials,
            store: store_name,
            master_key,
            audit_log: match settings.audit.sink {
                AuditSink::Stdout => "standard output".to_owned(),
                _ => audit_log.display().to_string(),
            },
        },
        lock,
    })
}

/// The store and keyring of a vault.
pub struct Opened {
    pub store: Arc<dyn TokenStore>,
    /// For logs and the banner.
    pub store_name: String,
    pub keyring: Keyring,
    /// The local master key file and whether it was just created.
    pub master_key: Option<(PathBuf, bool)>,
}

/// Opens the key provider, then the store; with `create` false, refuses to
/// make a new SQLite vault or master key (for tools that only read one).
/// `aws`: clients to use; loaded from the standard chain when the settings
/// need AWS and none are given.
pub async fn open_vault(
    settings: &Settings,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    create: bool,
    aws: Option<Clients>,
) -> Result<Opened, BuildError> {
    let needs_aws =
        settings.store.kind == StoreKind::Dynamodb || settings.keys.kind == KeyKind::Kms;
    let aws = match (needs_aws, aws) {
        (false, _) => None,
        (true, Some(c)) => Some(c),
        (true, None) => Some(Clients::from_env().await.map_err(BuildError)?),
    };
    // A tool pointed at the wrong directory hears of the missing vault,
    // not of the missing key beside it.
    let sqlite_path = settings.resolve(&settings.store.path);
    if !create && settings.store.kind != StoreKind::Dynamodb && !sqlite_path.exists() {
        return Err(BuildError(format!(
            "{} does not exist",
            sqlite_path.display()
        )));
    }
    // The key provider first: a master key that cannot be read stops the
    // start before the store is created, migrated or given threads.
    let (provider, master_key): (Arc<dyn KeyProvider>, _) = match (settings.keys.kind, &aws) {
        (KeyKind::Kms, Some(aws)) => (
            Arc::new(KmsKeyProvider::new(
                aws.kms.clone(),
                settings.keys.kms.clone(),
            )),
            None,
        ),
        _ => {
            let path = settings.resolve(&settings.keys.master_key);
            if !create && !path.exists() {
                return Err(BuildError(format!("{} does not exist", path.display())));
            }
            let (provider, created) =
                LocalKeyProvider::open_or_create(&path).map_err(|e| fail("keys")(&e))?;
            (Arc::new(provider), Some((path, created)))
        }
    };
    let (store, store_name): (Arc<dyn TokenStore>, String) = match (settings.store.kind, &aws) {
        (StoreKind::Dynamodb, Some(aws)) => {
            let table = settings.store.table.as_deref().unwrap_or_default();
            let store = DynamoStore::open(aws.dynamodb.clone(), table, metrics.clone())
                .await
                .map_err(|e| fail("store")(&e))?;
            (Arc::new(store), format!("dynamodb {table}"))
        }
        _ => {
            let store = SqliteStore::open(&sqlite_path).map_err(|e| fail("store")(&e))?;
            (Arc::new(store), format!("sqlite {}", sqlite_path.display()))
        }
    };
    let keyring = Keyring::new(
        provider,
        store.clone(),
        KeyringSettings {
            environment: settings.environment.clone(),
            epoch_seconds: settings.keys.data_key_epoch_seconds,
            cache_seconds: settings.keys.cache_seconds,
        },
        clock,
        metrics,
    );
    Ok(Opened {
        store,
        store_name,
        keyring,
        master_key,
    })
}

/// The audit chain key of a vault, for `audit verify`: opens the store and
/// key provider (SQLite WAL allows it beside a running service), refuses a
/// vault or master key that does not exist, and unwraps the service-held
/// audit key without ever creating one.
pub async fn audit_key(settings: &Settings, aws: Option<Clients>) -> Result<AuditKey, BuildError> {
    let opened = open_vault(
        settings,
        Arc::new(crate::clock::SystemClock),
        Arc::new(Metrics::new()),
        false,
        aws,
    )
    .await?;
    let keyring = opened.keyring;
    let secret = keyring
        .existing_service_secret("audit", 1)
        .await
        .map_err(|e| fail("audit key")(&e))?;
    Ok(AuditKey::new(&secret))
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves, then
/// stops accepting and drains in-flight requests (at most 30 s).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            // A verified client certificate names the connection's
            // principal; handlers see it as a request extension.
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(crate::tls::client_principal)
                .map(crate::auth::Principal::new);
            let service = TowerToHyperService::new(router.layer(axum::Extension(Arc::new(
                crate::auth::Connection {
                    cert: peer,
                    ..Default::default()
                },
            ))));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("shutdown: in-flight requests did not finish in time");
        }
    }
    Ok(())
}
