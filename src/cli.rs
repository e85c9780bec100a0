//! The command line: `serve`, `redact`, `migrate`, `rewrap`, `doctor`,
//! `audit verify`, and the client commands `tokenize` and `detokenize`.

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::aws::Clients;
use crate::clock::SystemClock;
use crate::config::{KeyKind, Overrides, Settings, StoreKind};
use crate::redact::format::RedactError;
use crate::redact::lines::{LineSplitter, Piece};
use crate::redact::{Action, Format, HashKey, Redactor};

/// Longest line the filter holds; a longer one is replaced by a marker.
const MAX_LINE: usize = 1 << 20;

/// `println!` that hands the error back: `println!` panics when standard
/// output is closed (`tokenvault bench | head -1`), and a panic is no
/// answer. [`run`] ends quietly when standard output's reader is gone, as
/// `head`'s user expects.
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(stdout_error)
    };
}

/// Standard output's reader went away. Only writes to standard output
/// are wrapped in it, so a broken pipe to a server (the load tool's
/// sockets, the client) is still reported.
#[derive(Debug, thiserror::Error)]
#[error("standard output closed: {0}")]
struct StdoutClosed(std::io::Error);

/// A failed write to standard output, as [`StdoutClosed`] when its reader
/// is gone.
fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed(e).into()
    } else {
        e.into()
    }
}

/// tokenvault: a payment-data vault and PII redaction service.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTPS service (the embedded default with no configuration).
    Serve(VaultArgs),
    /// Redact stdin to stdout with the engine behind /redact.
    Redact(RedactArgs),
    /// Create or update the DynamoDB table (idempotent; reports changes).
    Migrate(VaultArgs),
    /// Re-wrap every stored key under another KMS key (KMS ReEncrypt).
    Rewrap(RewrapArgs),
    /// Check KMS keys, the table and the certificate; non-zero on a failure.
    Doctor(VaultArgs),
    /// Tokenize a value read from stdin on a running vault (client).
    Tokenize(TokenizeArgs),
    /// Detokenize a token on a running vault (client).
    Detokenize(DetokenizeArgs),
    /// Load a running vault over TLS and print throughput and latency.
    Bench(BenchArgs),
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// Where the vault's settings come from.
#[derive(Debug, Clone, clap::Args)]
struct VaultArgs {
    /// TOML configuration file.
    #[arg(long, env = "TOKENVAULT_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8443; env TOKENVAULT_LISTEN].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory [default: ./tokenvault-data; env TOKENVAULT_DATA_DIR].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Text,
    Json,
    Ndjson,
}

#[derive(Debug, clap::Args)]
struct RedactArgs {
    /// Input format: text and ndjson stream line by line with bounded
    /// memory; json reads one whole document.
    #[arg(long, value_enum, default_value = "text")]
    format: FormatArg,
    /// Detectors to run, comma-separated (default: every detector but ip).
    #[arg(long)]
    detectors: Option<String>,
    /// Actions per detector, e.g. `pan:label,email:hash` (default: mask).
    #[arg(long)]
    actions: Option<String>,
    /// A line taking longer than this is masked whole (fail closed).
    #[arg(long)]
    budget_ms: Option<u64>,
    /// Scan only: print counts and JSON paths, never values.
    #[arg(long)]
    report: bool,
    /// Key file for the hash action (at least 32 bytes). Anyone holding the
    /// key can brute-force a card's hash: keep it as secret as the cards.
    #[arg(long)]
    hash_key: Option<PathBuf>,
    /// TOML configuration whose [redact] section sets the defaults.
    #[arg(long, env = "TOKENVAULT_CONFIG")]
    config: Option<PathBuf>,
}

/// How the client reaches and proves itself to a vault.
#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// The vault's base URL (https://host:port).
    #[arg(long)]
    url: String,
    /// An API key; without it the client logs in with the ambient AWS
    /// credentials (IAM).
    #[arg(long)]
    api_key: Option<String>,
    /// A CA bundle to trust beside the system roots (a self-signed vault).
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// IAM login: the server id to sign for (default: the host of --url).
    #[arg(long)]
    server_id: Option<String>,
    /// IAM login: the STS endpoint to sign for, when not an AWS one over
    /// https (a local emulator).
    #[arg(long)]
    sts_endpoint: Option<String>,
}

impl ClientArgs {
    fn credentials(&self) -> crate::client::Credentials {
        match &self.api_key {
            Some(k) => crate::client::Credentials::ApiKey(k.clone()),
            None => crate::client::Credentials::Iam(crate::client::IamTrust {
                server_id: self.server_id.clone(),
                sts_endpoint: self.sts_endpoint.clone(),
            }),
        }
    }
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Operations and weights: `tokenize`, `tokenize-batch`, `detokenize`,
    /// `detokenize-batch`, `healthz`, e.g. `tokenize=70,detokenize=30`.
    #[arg(long, default_value = "tokenize")]
    mix: String,
    /// Keep-alive TLS connections, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Open loop at this many requests a second in all (default: closed
    /// loop, as fast as answers come).
    #[arg(long)]
    rate: Option<u64>,
    /// Cards per `tokenize-batch` request, tokens per `detokenize-batch`.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Tokens made first for `detokenize` and `detokenize-batch`.
    #[arg(long, default_value_t = 10_000)]
    prepare: usize,
}

#[derive(Debug, clap::Args)]
struct TokenizeArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// `pan` (default) or `pii`.
    #[arg(long, default_value = "pan")]
    classification: String,
}

#[derive(Debug, clap::Args)]
struct DetokenizeArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The token.
    token: String,
    /// Why the full value is needed (some roles require it; it is audited,
    /// redacted).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, clap::Args)]
struct RewrapArgs {
    #[command(flatten)]
    vault: VaultArgs,
    /// The KMS key to move to (id, ARN or alias).
    #[arg(long)]
    to_key: String,
    /// Only items wrapped under this KMS key (the one to retire).
    #[arg(long)]
    from_key: Option<String>,
    /// Only this classification's keys (service secrets count as pan).
    #[arg(long)]
    classification: Option<String>,
    /// Report what would change, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Re-wrap at most N items this run; the next run resumes after them.
    #[arg(long)]
    limit: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of an audit log; names the first broken line.
    Verify {
        /// The audit log file.
        file: PathBuf,
        #[command(flatten)]
        vault: VaultArgs,
    },
}

/// Parses the command line and runs it.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Redact(args) => redact(args),
        Command::Migrate(args) => migrate(args),
        Command::Rewrap(args) => rewrap(args),
        Command::Doctor(args) => doctor(args),
        Command::Tokenize(args) => tokenize(args),
        Command::Bench(args) => bench(args),
        Command::Detokenize(args) => detokenize(args),
        Command::Audit {
            command: AuditCommand::Verify { file, vault },
        } => audit_verify(file, vault),
    };
    match result {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<StdoutClosed>().is_some() => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("tokenvault: {e}");
            ExitCode::FAILURE
        }
    }
}

fn settings(args: &VaultArgs) -> anyhow::Result<Settings> {
    Ok(Settings::load(
        args.config.as_deref(),
        std::env::vars(),
        &Overrides {
            listen: args.listen,
            data_dir: args.data_dir.clone(),
        },
    )?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The runtime's worker count: `TOKIO_WORKER_THREADS` when set (tokio's
/// own variable, which an explicit count would otherwise override), else
/// one per core.
fn worker_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
}

fn serve(args: VaultArgs) -> anyhow::Result<ExitCode> {
    crate::memory::small_pages_only();
    let settings = settings(&args)?;
    let _log_flush = crate::telemetry::init_stderr_logging()?;
    crate::telemetry::install_panic_hook();
    let workers = crate::memory::Workers::new(worker_threads());
    workers.runtime().build()?.block_on(async move {
        let app = crate::app::build(&settings, Arc::new(SystemClock)).await?;
        // Held until the process exits (the kernel lets go of it then):
        // past the audit log's last copy, even one that outlives its
        // timeout below.
        std::mem::forget(app.lock);
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| anyhow::anyhow!("listen on {}: {e}", settings.listen))?;
        let addr = listener.local_addr()?;
        print_banner(addr, &app.info);
        let watcher = tokio::spawn(app.cert.cert.clone().watch(app.cert.period));
        let sweeper = tokio::spawn(app.sweeper.run());
        let reloader = tokio::spawn(reload_on_sighup(
            args,
            app.state.clone(),
            settings.uses_dev_credentials(),
        ));
        let janitor = tokio::spawn(crate::memory::janitor(
            workers,
            crate::memory::requests,
            crate::memory::QUIET_FOR,
        ));
        tracing::info!(%addr, "serving");
        crate::app::serve(listener, app.tls, app.router, shutdown_signal()).await?;
        watcher.abort();
        reloader.abort();
        janitor.abort();
        // Gone (not just told to go) before the audit log closes.
        sweeper.abort();
        let _ = sweeper.await;
        // Events committed with their records are safe in the store either
        // way; copying them now leaves the audit file complete at a stop.
        let audit = app.state.audit.clone().close();
        match tokio::time::timeout(std::time::Duration::from_secs(5), audit).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "audit: could not copy the outbox at stop; it is copied at the next start"),
            Err(_) => tracing::warn!("audit: copying the outbox at stop timed out; it is copied at the next start"),
        }
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// On SIGHUP, re-reads the configuration and puts its API keys and roles
/// in force; a file that does not load is refused and the running rules
/// kept. So is a file with no API keys and no roles when the service runs
/// on configured ones: that would switch a production service to the
/// development identities (an emptied or half-written file does that).
/// Other settings need a restart.
async fn reload_on_sighup(args: VaultArgs, state: crate::http::AppState, started_dev: bool) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; access rules reload only on restart");
        return;
    };
    while hup.recv().await.is_some() {
        let loaded = settings(&args).and_then(|s| {
            anyhow::ensure!(
                started_dev || !s.uses_dev_credentials(),
                "it defines no API keys and no roles (the service does not fall back to development identities on reload)"
            );
            Ok(crate::app::access(&s)?)
        });
        match loaded {
            Ok((access, _)) => {
                let roles = access.policy.role_count();
                state.set_access(access);
                tracing::info!(roles, "SIGHUP: access rules reloaded");
            }
            Err(e) => tracing::warn!(
                error = %e,
                "SIGHUP: configuration refused; the running access rules stay in force"
            ),
        }
    }
}

fn client_run(
    args: &ClientArgs,
    path: &'static str,
    body: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let client = crate::client::Client::new(&args.url, args.cacert.as_deref())?;
        let bearer = client.bearer(args.credentials()).await?;
        let (status, answer) = client.post(path, &bearer, &body).await?;
        say!("{answer}")?;
        Ok(if (200..300).contains(&status) {
            ExitCode::SUCCESS
        } else {
            eprintln!("tokenvault: {path} answered {status}");
            ExitCode::FAILURE
        })
    })
}

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let mix = crate::loadgen::parse_mix(&args.mix).ok_or_else(|| {
        anyhow::anyhow!(
            "--mix: expected op[=weight],… with ops tokenize, tokenize-batch, detokenize, detokenize-batch, healthz"
        )
    })?;
    anyhow::ensure!(args.connections >= 1, "--connections must be at least 1");
    runtime()?.block_on(async move {
        let c = &args.client;
        let bearer = crate::client::Client::new(&c.url, c.cacert.as_deref())?
            .bearer(c.credentials())
            .await?;
        let tls = crate::tls::client_config(c.cacert.as_deref())?;
        let report = crate::loadgen::run(
            &c.url,
            &bearer,
            tls,
            crate::loadgen::LoadSettings {
                mix,
                connections: args.connections,
                duration: std::time::Duration::from_secs(args.duration),
                rate: args.rate,
                batch: args.batch,
                prepare: args.prepare,
            },
        )
        .await?;
        say!("{report}")?;
        Ok(ExitCode::SUCCESS)
    })
}

fn tokenize(args: TokenizeArgs) -> anyhow::Result<ExitCode> {
    let mut value = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut value)?;
    let v = value.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!v.is_empty(), "give the value on stdin");
    let body = serde_json::json!({"value": v, "classification": args.classification});
    client_run(&args.client, "/tokenize", body)
}

fn detokenize(args: DetokenizeArgs) -> anyhow::Result<ExitCode> {
    let mut body = serde_json::json!({"token": args.token});
    if let Some(r) = &args.reason {
        body["reason"] = serde_json::Value::String(r.clone());
    }
    client_run(&args.client, "/detokenize", body)
}

fn print_banner(addr: SocketAddr, info: &crate::app::StartupInfo) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "tokenvault listening on https://{addr}");
    let _ = writeln!(e, "  data dir:     {}", info.data_dir.display());
    let _ = writeln!(
        e,
        "  certificate:  {}{}",
        info.cert.display(),
        if info.cert_generated {
            " (self-signed, just generated; pass it to curl --cacert)"
        } else {
            ""
        }
    );
    if let Some(c) = &info.dev_credentials {
        let _ = writeln!(
            e,
            "  credentials:  {} (development API keys: checkout, support, admin, log-shipper)",
            c.display()
        );
    }
    let _ = writeln!(e, "  store:        {}", info.store);
    let _ = writeln!(e, "  audit log:    {}", info.audit_log);
    if let Some((master_key, created)) = &info.master_key {
        let _ = writeln!(
            e,
            "  WARNING: the local key provider is for development and small single-node use only: \
             the master key sits on the same machine as the data. Keep production keys in AWS KMS."
        );
        let _ = writeln!(
            e,
            "  BACK UP {}{}: without it nothing in the vault can be decrypted.",
            master_key.display(),
            if *created { " (just created)" } else { "" }
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn redact(args: RedactArgs) -> anyhow::Result<ExitCode> {
    let settings = match &args.config {
        Some(c) => Settings::load(Some(c), std::env::vars(), &Overrides::default())?.redact,
        None => Default::default(),
    };
    let hash_key = match &args.hash_key {
        Some(path) => {
            let key = zeroize::Zeroizing::new(
                std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            );
            anyhow::ensure!(
                key.len() >= 32,
                "{}: a hash key holds at least 32 bytes",
                path.display()
            );
            let id = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &key);
            Some(HashKey::new(
                &format!("f{}", hex::encode(&id.as_ref()[..4])),
                &key,
            ))
        }
        None => None,
    };
    let redactor = Redactor::new(&settings.engine(), hash_key)?;
    let mut opts = redactor
        .options()
        .with_detectors(args.detectors.as_deref())?
        .with_actions(args.actions.as_deref())?;
    opts.report = args.report;
    opts.budget = args.budget_ms.map(std::time::Duration::from_millis);
    anyhow::ensure!(
        !opts.uses(Action::Tokenize) || opts.report,
        "the tokenize action needs the vault: use POST /redact"
    );
    anyhow::ensure!(
        !opts.uses(Action::Hash) || redactor.has_hash_key() || opts.report,
        "the hash action needs --hash-key FILE"
    );
    let format = match args.format {
        FormatArg::Text => Format::Text,
        FormatArg::Json => Format::Json,
        FormatArg::Ndjson => Format::Ndjson,
    };
    let mut session = redactor.session(&opts, None);
    let mut input = std::io::stdin().lock();
    let mut output = std::io::BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
    let mut out = Vec::with_capacity(256 * 1024);
    if format == Format::Json {
        let mut buf = Vec::new();
        input.read_to_end(&mut buf)?;
        session.body(format, &buf, &mut out)?;
        output.write_all(&out).map_err(stdout_error)?;
    } else {
        let mut splitter = LineSplitter::new(MAX_LINE);
        let mut take = |p: Piece<'_>, out: &mut Vec<u8>| -> Result<(), RedactError> {
            session.piece(format, p, out)
        };
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            splitter.push(&buf[..n], |p| take(p, &mut out))?;
            if !opts.report {
                output.write_all(&out).map_err(stdout_error)?;
            }
            out.clear();
        }
        splitter.finish(|p| take(p, &mut out))?;
        if !opts.report {
            output.write_all(&out).map_err(stdout_error)?;
        }
    }
    if opts.report {
        serde_json::to_writer(&mut output, &session.findings.report())
            .map_err(|e| stdout_error(e.into()))?;
        output.write_all(b"\n").map_err(stdout_error)?;
    }
    output.flush().map_err(stdout_error)?;
    if !session.findings.is_empty() {
        eprintln!("findings: {}", session.findings.header_value());
    }
    Ok(ExitCode::SUCCESS)
}

fn migrate(args: VaultArgs) -> anyhow::Result<ExitCode> {
    let settings = settings(&args)?;
    anyhow::ensure!(
        settings.store.kind == StoreKind::Dynamodb,
        "migrate is for store.kind = \"dynamodb\"; the SQLite store migrates itself at start-up"
    );
    let table = settings.store.table.clone().unwrap_or_default();
    runtime()?.block_on(async move {
        let aws = Clients::from_env().await.map_err(anyhow::Error::msg)?;
        let changes = crate::store::migrate::migrate(
            &aws.dynamodb,
            &table,
            settings.store.sse_kms_key.as_deref(),
        )
        .await?;
        if changes.is_empty() {
            say!("table {table} is up to date")?;
        }
        for c in changes {
            say!("{c}")?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn rewrap(args: RewrapArgs) -> anyhow::Result<ExitCode> {
    let settings = settings(&args.vault)?;
    anyhow::ensure!(
        settings.keys.kind == KeyKind::Kms,
        "rewrap moves keys between KMS keys: set keys.kind = \"kms\""
    );
    if let Some(c) = &args.classification {
        anyhow::ensure!(
            crate::vault::value::Classification::parse(c).is_some(),
            "--classification: expected pan or pii"
        );
    }
    runtime()?.block_on(async move {
        let aws = Clients::from_env().await.map_err(anyhow::Error::msg)?;
        let opened = crate::app::open_vault(
            &settings,
            Arc::new(SystemClock),
            Arc::new(crate::telemetry::Metrics::new()),
            false,
            Some(aws.clone()),
        )
        .await?;
        let kms = crate::crypto::kms::KmsKeyProvider::new(aws.kms.clone(), settings.keys.kms.clone());
        std::fs::create_dir_all(&settings.data_dir)?;
        let opts = crate::rewrap::RewrapOptions {
            to_key: args.to_key.clone(),
            from_key: args.from_key.clone(),
            classification: args.classification.clone(),
            dry_run: args.dry_run,
            limit: args.limit,
            checkpoint: settings.data_dir.join("rewrap.checkpoint"),
        };
        let bar = std::io::stderr().is_terminal();
        let summary = crate::rewrap::run(
            opened.store.as_ref(),
            &kms,
            &settings.environment,
            &opts,
            |done, total| {
                if bar {
                    eprint!("\r{}", progress_bar(done, total));
                }
            },
        )
        .await?;
        if bar {
            eprintln!();
        }
        let verb = if args.dry_run { "would re-wrap" } else { "re-wrapped" };
        say!(
            "{verb} {} key items under {}; {} already there; {} not selected (another key or classification); \
             {} changed by another writer meanwhile (rerun to pick them up); {} done by an earlier run",
            summary.rewrapped,
            summary.target,
            summary.already,
            summary.other_classification,
            summary.changed_meanwhile,
            summary.resumed_past
        )?;
        if !summary.complete {
            say!("stopped at --limit; run again to go on from the checkpoint")?;
        }
        Ok(if summary.changed_meanwhile > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// `[#####.....] 12/40`, for a terminal.
fn progress_bar(done: u64, total: u64) -> String {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH) as usize;
    format!(
        "rewrap [{}{}] {done}/{total}",
        "#".repeat(filled),
        ".".repeat(WIDTH as usize - filled)
    )
}

fn doctor(args: VaultArgs) -> anyhow::Result<ExitCode> {
    let settings = settings(&args)?;
    let needs_aws =
        settings.store.kind == StoreKind::Dynamodb || settings.keys.kind == KeyKind::Kms;
    let cert = match &settings.tls.cert {
        Some(c) => settings.resolve(c),
        None => settings.data_dir.join("tls").join("cert.pem"),
    };
    runtime()?.block_on(async move {
        let aws = if needs_aws {
            Some(Clients::from_env().await.map_err(anyhow::Error::msg)?)
        } else {
            None
        };
        let now = crate::clock::Clock::unix(&SystemClock);
        let checks = crate::doctor::run(&settings, aws.as_ref(), &cert, now).await;
        let mut failed = 0;
        for c in &checks {
            say!("{c}")?;
            if matches!(c.outcome, crate::doctor::Outcome::Fail(_)) {
                failed += 1;
            }
        }
        say!("{} checks, {failed} failed", checks.len())?;
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

fn audit_verify(file: PathBuf, args: VaultArgs) -> anyhow::Result<ExitCode> {
    let settings = settings(&args)?;
    runtime()?.block_on(async move {
        let key = crate::app::audit_key(&settings, None).await?;
        match crate::audit::verify(&file, &key) {
            Ok(report) => {
                say!(
                    "ok: {} lines, chain intact ({})",
                    report.lines,
                    file.display()
                )?;
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                say!("BROKEN: {e}")?;
                Ok(ExitCode::FAILURE)
            }
        }
    })
}
