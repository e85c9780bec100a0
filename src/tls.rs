//! TLS: rustls (aws-lc-rs), TLS 1.2 and 1.3 only; the self-signed
//! development certificate of the embedded default; a certificate that
//! reloads when its files change; client certificates (mTLS) and the
//! principal they prove.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use x509_parser::extensions::GeneralName;

use crate::config::ClientAuth;

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

/// The server's certificate and key, swappable while serving: new
/// handshakes take whatever [`ReloadingCert::reload_if_changed`] last
/// loaded, so a renewed certificate needs no restart.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of the pair last loaded (or refused).
    stamp: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Loads the pair; fails when either file is unusable.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let stamp = (modified(cert), modified(key));
        let loaded = certified_key(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(loaded)),
            stamp: Mutex::new(stamp),
        })
    }

    /// Re-reads the pair when either file changed. A pair that does not
    /// load (half-written, mismatched, malformed) is refused and the one in
    /// use kept; it is tried again when the files change again. Returns
    /// whether a new certificate is now in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = (modified(&self.cert), modified(&self.key));
        {
            let mut stamp = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if *stamp == now {
                return Ok(false);
            }
            *stamp = now;
        }
        let loaded = certified_key(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(true)
    }

    /// Checks the files every `period` until dropped, logging each reload
    /// and each refusal. Spawn it beside the server.
    pub async fn watch(self: Arc<Self>, period: Duration) {
        loop {
            tokio::time::sleep(period).await;
            match self.reload_if_changed() {
                Ok(true) => tracing::info!(cert = %self.cert.display(), "certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "new certificate refused; still serving the previous one"
                ),
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// A certificate chain and its key from PEM files, checked to match.
fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::File {
            path: cert.to_owned(),
            why: format!("unreadable certificate ({})", short(&e)),
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
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|_| TlsError::File {
            path: key.to_owned(),
            why: "unsupported private key".into(),
        })?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|_| TlsError::File {
        path: cert.to_owned(),
        why: "the certificate does not match the private key".into(),
    })?;
    Ok(ck)
}

/// A server configuration serving `cert`, asking for client certificates
/// as `client_auth` says, verified against the CA bundle `client_ca`.
pub fn server_config(
    cert: Arc<ReloadingCert>,
    client_auth: ClientAuth,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (client_auth, client_ca) {
        (ClientAuth::Off, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(TlsError::Config(
                "tls.client_auth needs tls.client_ca (the CA bundle client certificates chain to)"
                    .into(),
            ));
        }
        (mode, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            add_ca_bundle(&mut roots, ca)?;
            if roots.is_empty() {
                return Err(TlsError::File {
                    path: ca.to_owned(),
                    why: "no CA certificate in the file".into(),
                });
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if mode == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?,
            )
        }
    };
    let mut cfg = builder.with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The principal a verified client certificate proves: `cert:<SAN URI>`
/// (a SPIFFE id) when it has a URI name, else `cert:dns:<SAN DNS name>`.
/// A URI of scheme `dns` is passed over: as `cert:dns:<name>` it would be
/// the principal of a certificate for that DNS name.
pub fn client_principal(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let names = &san.value.general_names;
    let uri = names.iter().find_map(|n| match n {
        GeneralName::URI(u) if !u.get(..4).is_some_and(|s| s.eq_ignore_ascii_case("dns:")) => {
            Some(format!("cert:{u}"))
        }
        _ => None,
    });
    uri.or_else(|| {
        names.iter().find_map(|n| match n {
            GeneralName::DNSName(d) => Some(format!("cert:dns:{d}")),
            _ => None,
        })
    })
}

/// A client configuration trusting the system's roots (and `extra_ca`,
/// when given), for calls to STS and for the command-line client.
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for c in native.certs {
        let _ = roots.add(c);
    }
    if let Some(ca) = extra_ca {
        add_ca_bundle(&mut roots, ca)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Adds every certificate of a PEM bundle to `roots`.
fn add_ca_bundle(roots: &mut RootCertStore, ca: &Path) -> Result<(), TlsError> {
    let cas = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::File {
            path: ca.to_owned(),
            why: format!("unreadable CA bundle ({})", short(&e)),
        })?;
    for c in cas {
        roots.add(c).map_err(|e| TlsError::File {
            path: ca.to_owned(),
            why: format!("bad CA certificate: {e}"),
        })?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::client_principal;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn cert(sans: Vec<SanType>) -> rustls::pki_types::CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn a_uri_of_scheme_dns_is_no_principal() {
        let uri = |u: &str| SanType::URI(u.try_into().unwrap());
        let dns = |d: &str| SanType::DnsName(d.try_into().unwrap());
        let spiffe = cert(vec![uri("spiffe://shop/checkout"), dns("a.shop")]);
        assert_eq!(
            client_principal(&spiffe).as_deref(),
            Some("cert:spiffe://shop/checkout")
        );
        let posing = cert(vec![uri("dns:checkout.shop"), dns("other.shop")]);
        assert_eq!(
            client_principal(&posing).as_deref(),
            Some("cert:dns:other.shop")
        );
        assert_eq!(
            client_principal(&cert(vec![uri("DNS:checkout.shop")])),
            None
        );
    }
}
