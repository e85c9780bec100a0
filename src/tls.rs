//! TLS: rustls (aws-lc-rs), TLS 1.2 and 1.3 only, and the self-signed
//! development certificate of the embedded default.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// TLS set-up failures; name the file, never key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Paths of the dev certificate and key in `dir`, created for `localhost`
/// and `127.0.0.1` when absent; true when created.
pub fn ensure_dev_cert(dir: &Path) -> Result<(PathBuf, PathBuf, bool), TlsError> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key, false));
    }
    let file_err = |path: &Path, e: &dyn std::fmt::Display| TlsError::File {
        path: path.to_owned(),
        why: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, &e))?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(|e| TlsError::Config(e.to_string()))?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "tokenvault development certificate",
    );
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    let key_pair = rcgen::KeyPair::generate().map_err(|e| TlsError::Config(e.to_string()))?;
    let c = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let write = |path: &Path, data: &str, mode: u32| -> Result<(), TlsError> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(|e| file_err(path, &e))?;
        f.write_all(data.as_bytes())
            .map_err(|e| file_err(path, &e))?;
        f.sync_all().map_err(|e| file_err(path, &e))
    };
    write(&key, &key_pair.serialize_pem(), 0o600)?;
    write(&cert, &c.pem(), 0o644)?;
    Ok((cert, key, true))
}

/// A server configuration from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::File {
            path: cert.to_owned(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: cert.to_owned(),
            why: "no certificate in the file".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
        path: key.to_owned(),
        why: format!("no usable private key ({})", short(&e)),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The kind of a PEM error, without its content.
fn short(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::NoItemsFound => "none found",
        E::Io(_) => "cannot read",
        _ => "malformed PEM",
    }
}

/// When the first certificate in a PEM file stops being valid (Unix
/// seconds), for `doctor`.
pub fn not_after(cert: &Path) -> Result<i64, String> {
    let pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let der = CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| format!("{}: no certificate in the file", cert.display()))?
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    Ok(parsed.validity().not_after.timestamp())
}
