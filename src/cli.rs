//! The command line: `serve`, `redact`, `audit verify`.

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::clock::SystemClock;
use crate::config::{Overrides, Settings};
use crate::redact::{Findings, Format, Options, Redactor};

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
    /// Input format: text and ndjson stream line by line; json reads the
    /// whole input.
    #[arg(long, value_enum, default_value = "text")]
    format: FormatArg,
    /// Detectors to run, comma-separated (default: all on by default).
    #[arg(long)]
    detectors: Option<String>,
    /// Actions per detector, e.g. `pan:label,email:mask` (default: mask).
    #[arg(long)]
    actions: Option<String>,
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
    let opts = Options::default()
        .with_detectors(args.detectors.as_deref())?
        .with_actions(args.actions.as_deref())?;
    let format = match args.format {
        FormatArg::Text => Format::Text,
        FormatArg::Json => Format::Json,
        FormatArg::Ndjson => Format::Ndjson,
    };
    let redactor = Redactor::new();
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut output = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    let mut findings = Findings::default();
    let mut out = Vec::with_capacity(64 * 1024);
    match format {
        Format::Json => {
            let mut buf = Vec::new();
            input.read_to_end(&mut buf)?;
            redactor.redact_body(format, &buf, &opts, &mut out, &mut findings)?;
            output.write_all(&out)?;
        }
        Format::Text | Format::Ndjson => {
            let mut line = Vec::with_capacity(4096);
            loop {
                line.clear();
                if input.read_until(b'\n', &mut line)? == 0 {
                    break;
                }
                out.clear();
                redactor.redact_body(format, &line, &opts, &mut out, &mut findings)?;
                output.write_all(&out)?;
            }
        }
    }
    output.flush()?;
    if !findings.is_empty() {
        eprintln!("findings: {}", findings.header_value());
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
