//! Building the service from settings, and serving it.
//!
//! [`build`] turns [`Settings`] into an [`App`]: the router with its state
//! and the TLS configuration. [`serve`] takes an already bound listener and
//! a shutdown future, so tests bind `127.0.0.1:0` and stop it at will.

use std::future::Future;
use std::path::PathBuf;
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

use crate::audit::{AuditKey, AuditLog};
use crate::auth::api_key::{ApiKeys, parse_digest};
use crate::auth::dev;
use crate::auth::policy::Policy;
use crate::clock::Clock;
use crate::config::Settings;
use crate::crypto::Keyring;
use crate::crypto::fingerprint::FingerprintKey;
use crate::crypto::keyring::KeyringSettings;
use crate::crypto::local::LocalKeyProvider;
use crate::http::{Access, AppState};
use crate::redact::{HashKey, Redactor};
use crate::store::TokenStore;
use crate::store::sqlite::SqliteStore;
use crate::telemetry::Metrics;
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
    pub state: AppState,
    pub info: StartupInfo,
}

/// What start-up made or found, for the banner.
#[derive(Debug, Clone)]
pub struct StartupInfo {
    pub data_dir: PathBuf,
    pub cert: PathBuf,
    pub cert_generated: bool,
    /// The dev credentials file, when dev identities are in force.
    pub dev_credentials: Option<PathBuf>,
    pub master_key: PathBuf,
    pub master_key_created: bool,
    pub audit_log: PathBuf,
}

/// Build failures: each names what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

fn fail(what: &str) -> impl FnOnce(&dyn std::fmt::Display) -> BuildError + '_ {
    move |e| BuildError(format!("{what}: {e}"))
}

/// Opens the store and keys, loads the service-held secrets, the access
/// rules and the certificate, and assembles the router.
pub async fn build(settings: &Settings, clock: Arc<dyn Clock>) -> Result<App, BuildError> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| fail("data_dir")(&e))?;
    let metrics = Arc::new(Metrics::new());

    let Opened {
        store,
        keyring,
        master_key,
        master_key_created,
    } = open_vault(settings, clock.clone(), metrics.clone(), true)?;
    let keyring = Arc::new(keyring);
    tracing::info!(
        key_provider = keyring.provider().kind(),
        store = %settings.resolve(&settings.store.path).display(),
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
    let audit_log = settings.resolve(&settings.audit.path);
    let audit = AuditLog::open(&audit_log, AuditKey::new(&audit_secret), clock.clone())
        .map_err(|e| fail("audit")(&e))?;

    let (api_keys, roles, dev_credentials) = if settings.uses_dev_credentials() {
        let path = settings.data_dir.join("dev-credentials.json");
        let (keys, roles, _) =
            dev::load_or_create(&path).map_err(|e| fail("dev credentials")(&e))?;
        (keys, roles, Some(path))
    } else {
        (settings.api_keys.clone(), settings.roles.clone(), None)
    };
    let policy = Policy::from_settings(&roles).map_err(|e| BuildError(e.to_string()))?;
    let access = Access {
        api_keys: ApiKeys::from_settings(&api_keys),
        policy,
    };

    let (cert, key, cert_generated) = match (&settings.tls.cert, &settings.tls.key) {
        (Some(c), Some(k)) => (settings.resolve(c), settings.resolve(k), false),
        _ => crate::tls::ensure_dev_cert(&settings.data_dir.join("tls"))
            .map_err(|e| fail("tls")(&e))?,
    };
    let tls = crate::tls::server_config(&cert, &key).map_err(|e| fail("tls")(&e))?;

    let vault = Arc::new(Vault::new(
        store,
        keyring.clone(),
        fingerprints,
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
    let state = AppState {
        vault,
        keyring,
        redactor: Arc::new(redactor),
        audit,
        metrics,
        access: Arc::new(RwLock::new(Arc::new(access))),
        limits: settings.limits.clone(),
        metrics_bearer: parse_digest(&settings.metrics.bearer_digest),
        limiter: Arc::new(crate::auth::rate::RateLimiter::new(clock.clone())),
        clock,
    };
    let router = crate::http::router(state.clone());
    Ok(App {
        router,
        tls,
        state,
        info: StartupInfo {
            data_dir: settings.data_dir.clone(),
            cert,
            cert_generated,
            dev_credentials,
            master_key,
            master_key_created,
            audit_log,
        },
    })
}

/// The store and keyring of a vault.
struct Opened {
    store: Arc<dyn TokenStore>,
    keyring: Keyring,
    master_key: PathBuf,
    master_key_created: bool,
}

/// Opens the store and the key provider; with `create` false, refuses to
/// make a new vault or master key (for tools that only read one).
fn open_vault(
    settings: &Settings,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    create: bool,
) -> Result<Opened, BuildError> {
    let store_path = settings.resolve(&settings.store.path);
    let master_key = settings.resolve(&settings.keys.master_key);
    if !create {
        for p in [&store_path, &master_key] {
            if !p.exists() {
                return Err(BuildError(format!("{} does not exist", p.display())));
            }
        }
    }
    let store: Arc<dyn TokenStore> =
        Arc::new(SqliteStore::open(&store_path).map_err(|e| fail("store")(&e))?);
    let (provider, master_key_created) =
        LocalKeyProvider::open_or_create(&master_key).map_err(|e| fail("keys")(&e))?;
    let keyring = Keyring::new(
        Arc::new(provider),
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
        keyring,
        master_key,
        master_key_created,
    })
}

/// The audit chain key of a vault, for `audit verify`: opens the store and
/// key provider (SQLite WAL allows it beside a running service), refuses a
/// vault or master key that does not exist, and unwraps the service-held
/// audit key without ever creating one.
pub async fn audit_key(settings: &Settings) -> Result<AuditKey, BuildError> {
    let opened = open_vault(
        settings,
        Arc::new(crate::clock::SystemClock),
        Arc::new(Metrics::new()),
        false,
    )?;
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
        let service = TowerToHyperService::new(router.clone());
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
