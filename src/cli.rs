//! The command line: `serve`, `redact`, `audit verify`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::clock::SystemClock;
use crate::config::{Overrides, Settings};
use crate::redact::format::RedactError;
use crate::redact::lines::{LineSplitter, Piece, TOO_LONG};
use crate::redact::{Action, Format, HashKey, Redactor};

/// Longest line the filter holds; a longer one is replaced by a marker.
const MAX_LINE: usize = 1 << 20;

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
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// Where the vault's settings come from.
#[derive(Debug, clap::Args)]
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
        Command::Audit {
            command: AuditCommand::Verify { file, vault },
        } => audit_verify(file, vault),
    };
    match result {
        Ok(code) => code,
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

fn serve(args: VaultArgs) -> anyhow::Result<ExitCode> {
    let settings = settings(&args)?;
    crate::telemetry::init_logging(std::io::stderr);
    crate::telemetry::install_panic_hook();
    runtime()?.block_on(async move {
        let app = crate::app::build(&settings, Arc::new(SystemClock)).await?;
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| anyhow::anyhow!("listen on {}: {e}", settings.listen))?;
        let addr = listener.local_addr()?;
        print_banner(addr, &app.info);
        tracing::info!(%addr, "serving");
        crate::app::serve(listener, app.tls, app.router, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
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
    let _ = writeln!(e, "  audit log:    {}", info.audit_log.display());
    let _ = writeln!(
        e,
        "  WARNING: the local key provider is for development and small single-node use only: \
         the master key sits on the same machine as the data. Keep production keys in AWS KMS."
    );
    let _ = writeln!(
        e,
        "  BACK UP {}{}: without it nothing in the vault can be decrypted.",
        info.master_key.display(),
        if info.master_key_created {
            " (just created)"
        } else {
            ""
        }
    );
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
        output.write_all(&out)?;
    } else {
        let mut splitter = LineSplitter::new(MAX_LINE);
        let mut take = |p: Piece<'_>, out: &mut Vec<u8>| -> Result<(), RedactError> {
            match p {
                Piece::Line(l) => session.line(format, l, out),
                Piece::TooLong { newline } => {
                    out.extend_from_slice(TOO_LONG);
                    if newline {
                        out.push(b'\n');
                    }
                    Ok(())
                }
            }
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
                output.write_all(&out)?;
            }
            out.clear();
        }
        splitter.finish(|p| take(p, &mut out))?;
        if !opts.report {
            output.write_all(&out)?;
        }
    }
    if opts.report {
        serde_json::to_writer(&mut output, &session.findings.report())?;
        output.write_all(b"\n")?;
    }
    output.flush()?;
    if !session.findings.is_empty() {
        eprintln!("findings: {}", session.findings.header_value());
    }
    Ok(ExitCode::SUCCESS)
}

fn audit_verify(file: PathBuf, args: VaultArgs) -> anyhow::Result<ExitCode> {
    let settings = settings(&args)?;
    runtime()?.block_on(async move {
        let key = crate::app::audit_key(&settings).await?;
        match crate::audit::verify(&file, &key) {
            Ok(report) => {
                println!(
                    "ok: {} lines, chain intact ({})",
                    report.lines,
                    file.display()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("BROKEN: {e}");
                Ok(ExitCode::FAILURE)
            }
        }
    })
}
