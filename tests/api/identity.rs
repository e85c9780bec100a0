//! Client certificates (mTLS) and certificate hot reload, with a test CA
//! made here: a certificate from the CA maps to its role, one from another
//! CA is refused, none with `required` fails the handshake, and a renewed
//! server certificate is served without a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
    SerialNumber,
};
use reqwest::Client;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokenvault::config::{ClientAuth, RoleSettings};

use crate::helpers::{CARDS, TestApp, captured_logs, spawn_app_with};

/// A certificate authority for the tests.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf (PEM certificate, PEM key) with `sans`, for a server or a client.
    fn leaf(&self, sans: Vec<SanType>, client: bool, serial: u64) -> (String, String) {
        let mut p = CertificateParams::default();
        p.subject_alt_names = sans;
        p.serial_number = Some(SerialNumber::from(serial));
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn server_leaf(&self, serial: u64) -> (String, String) {
        self.leaf(
            vec![SanType::DnsName("localhost".try_into().unwrap())],
            false,
            serial,
        )
    }
}

fn uri(u: &str) -> SanType {
    SanType::URI(u.try_into().unwrap())
}

/// A client trusting `ca`, presenting `identity` when given.
fn client(ca: &Ca, identity: Option<&(String, String)>) -> Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut tls = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Writes a file by rename, as a deploy tool would, so a reader never sees
/// half of it.
fn put(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A service with a certificate from `ca` and client certificates checked
/// against `ca` as `mode` says; role `checkout` for the SPIFFE id and role
/// `worker` for a DNS name.
async fn spawn_mtls(ca: &Ca, mode: ClientAuth) -> TestApp {
    let (cert, key) = ca.server_leaf(1);
    let ca_pem = ca.cert.pem();
    spawn_app_with(|s| {
        let dir = s.data_dir.join("certs");
        std::fs::create_dir_all(&dir).unwrap();
        put(&dir.join("cert.pem"), &cert);
        put(&dir.join("key.pem"), &key);
        put(&dir.join("ca.pem"), &ca_pem);
        s.tls.cert = Some(dir.join("cert.pem"));
        s.tls.key = Some(dir.join("key.pem"));
        s.tls.client_ca = Some(dir.join("ca.pem"));
        s.tls.client_auth = mode;
        s.tls.reload_seconds = 1;
        s.roles = vec![
            RoleSettings {
                name: "checkout".into(),
                principals: vec!["cert:spiffe://shop/checkout".into()],
                permissions: vec!["tokenize".into()],
                classifications: None,
                require_reason: false,
                detokenize_per_minute: 0,
            },
            RoleSettings {
                name: "worker".into(),
                principals: vec!["cert:dns:*.shop.internal".into()],
                permissions: vec!["tokenize".into(), "detokenize".into()],
                classifications: None,
                require_reason: false,
                detokenize_per_minute: 0,
            },
        ];
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_maps_to_its_role_and_a_stranger_is_refused() {
    let ca = Ca::new("test CA");
    let app = spawn_mtls(&ca, ClientAuth::Required).await;
    let tokenize = |c: Client| {
        let url = format!("{}/tokenize", app.url);
        async move { c.post(url).json(&json!({"value": CARDS[0].1})).send().await }
    };

    let checkout = ca.leaf(vec![uri("spiffe://shop/checkout")], true, 10);
    let res = tokenize(client(&ca, Some(&checkout))).await.unwrap();
    assert_eq!(res.status(), 201);
    let token = res.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // checkout may not detokenize: the certificate's role decides.
    let res = client(&ca, Some(&checkout))
        .post(format!("{}/detokenize", app.url))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    let worker = ca.leaf(
        vec![SanType::DnsName("batch.shop.internal".try_into().unwrap())],
        true,
        11,
    );
    let res = client(&ca, Some(&worker))
        .post(format!("{}/detokenize", app.url))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // A certificate from another CA, and none at all: no handshake.
    let other = Ca::new("other CA");
    let stranger = other.leaf(vec![uri("spiffe://shop/checkout")], true, 12);
    assert!(tokenize(client(&ca, Some(&stranger))).await.is_err());
    assert!(tokenize(client(&ca, None)).await.is_err());

    // A principal no role names: 403, deny by default.
    let unknown = ca.leaf(vec![uri("spiffe://shop/unknown")], true, 13);
    let res = tokenize(client(&ca, Some(&unknown))).await.unwrap();
    assert_eq!(res.status(), 403);
    let audit = app.audit_text().await;
    assert!(audit.contains("\"principal\":\"cert:spiffe://shop/checkout\""));
    assert!(audit.contains("\"principal\":\"cert:dns:batch.shop.internal\""));
    app.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_optional_client_auth_no_certificate_is_unauthenticated() {
    let ca = Ca::new("test CA");
    let app = spawn_mtls(&ca, ClientAuth::Optional).await;
    let res = client(&ca, None)
        .post(format!("{}/tokenize", app.url))
        .json(&json!({"value": CARDS[0].1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let checkout = ca.leaf(vec![uri("spiffe://shop/checkout")], true, 10);
    let res = client(&ca, Some(&checkout))
        .post(format!("{}/tokenize", app.url))
        .json(&json!({"value": CARDS[0].1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

/// The serial of the certificate a fresh handshake gets.
async fn served_serial(addr: &str, ca: &Ca) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.raw_serial().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_bad_one_is_refused() {
    let ca = Ca::new("test CA");
    let app = spawn_mtls(&ca, ClientAuth::Off).await;
    let addr = app.url.trim_start_matches("https://").to_owned();
    let dir = app.settings.tls.cert.clone().unwrap();
    let dir = dir.parent().unwrap();
    assert_eq!(served_serial(&addr, &ca).await, [1]);

    let (cert, key) = ca.server_leaf(2);
    put(&dir.join("key.pem"), &key);
    put(&dir.join("cert.pem"), &cert);
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_serial(&addr, &ca).await != [2] {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken certificate file: refused, the current one kept, said so.
    put(
        &dir.join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !captured_logs().contains("new certificate refused") {
        assert!(Instant::now() < deadline, "no log line for the refusal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served_serial(&addr, &ca).await, [2]);
}
