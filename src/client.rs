//! The command-line client: `tokenvault tokenize|detokenize --url URL`.
//!
//! With `--api-key` it sends the key as a bearer. Without, it logs in with
//! the ambient AWS credentials (the aws-config default chain): it asks the
//! server what to sign (`GET /auth/iam`), signs `sts:GetCallerIdentity`
//! with SigV4 for that endpoint and region, including the server's id in a
//! signed header, and trades it for a session token (`POST /auth/iam`).
//! The signed request goes to the vault, never to STS: the vault forwards
//! it, so the credentials never leave this process.

use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::iam::BODY;

/// How long one call to the vault may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// How the client proves who it is.
pub enum Credentials {
    ApiKey(String),
    /// The ambient AWS credentials, through IAM login, signed only for the
    /// server id and STS endpoint it expects (see [`IamTrust`]).
    Iam(IamTrust),
}

/// What an IAM login may be signed for. The server says what to sign, but
/// a server the user reached by mistake (or a hostile one) could name
/// another vault's id and relay the signed login there; so the client signs
/// only for the server id it expects (`--server-id`, else the host of
/// `--url`) and for an AWS STS endpoint over https (or exactly the one given
/// with `--sts-endpoint`).
#[derive(Debug, Clone, Default)]
pub struct IamTrust {
    pub server_id: Option<String>,
    pub sts_endpoint: Option<String>,
}

/// Whether `url` is an AWS STS endpoint over https.
fn is_aws_sts(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("https://") else {
        return false;
    };
    let host = rest.split(['/', ':']).next().unwrap_or("");
    (host.starts_with("sts.") || host.starts_with("sts-fips."))
        && (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn"))
}

/// The host of an https URL.
fn host_of(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    (!host.is_empty()).then_some(host)
}

/// What the server says to sign.
#[derive(Deserialize)]
struct SignWhat {
    server_id: String,
    sts_endpoint: String,
    sts_region: String,
}

/// The body of `POST /auth/iam`: `sts:GetCallerIdentity` for
/// `sts_endpoint` signed with SigV4 (service `sts`, `sts_region`) at `at`
/// by `creds`, with `X-Tokenvault-Server-Id: server_id` among the signed
/// headers (`None`: no such header, for tests of the refusal).
pub fn sign_login(
    server_id: Option<&str>,
    sts_endpoint: &str,
    sts_region: &str,
    creds: aws_credential_types::Credentials,
    at: SystemTime,
) -> anyhow::Result<Value> {
    let identity = creds.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(sts_region)
        .name("sts")
        .time(at)
        .settings(SigningSettings::default())
        .build()?
        .into();
    let mut to_sign = vec![(
        "content-type",
        "application/x-www-form-urlencoded; charset=utf-8",
    )];
    if let Some(id) = server_id {
        to_sign.push(("x-tokenvault-server-id", id));
    }
    let signable = SignableRequest::new(
        "POST",
        sts_endpoint,
        to_sign.iter().copied(),
        SignableBody::Bytes(BODY.as_bytes()),
    )?;
    let (instructions, _) = sign(signable, &params)?.into_parts();
    let mut headers = serde_json::Map::new();
    for (k, v) in to_sign {
        headers.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    for (k, v) in instructions.headers() {
        headers.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok(json!({
        "method": "POST",
        "url": sts_endpoint,
        "headers": headers,
        "body": base64::engine::general_purpose::STANDARD.encode(BODY),
    }))
}

/// A vault connection.
pub struct Client {
    url: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for `url` trusting the system roots and `cacert`.
    pub fn new(url: &str, cacert: Option<&Path>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            url.starts_with("https://"),
            "--url must be https:// (credentials never travel in clear text)"
        );
        let tls = crate::tls::client_config(cacert)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// The bearer to send: the API key, or a fresh IAM session.
    pub async fn bearer(&self, creds: Credentials) -> anyhow::Result<String> {
        match creds {
            Credentials::ApiKey(k) => Ok(k),
            Credentials::Iam(trust) => self.login(&trust).await,
        }
    }

    async fn login(&self, trust: &IamTrust) -> anyhow::Result<String> {
        let res = self
            .http
            .get(format!("{}/auth/iam", self.url))
            .send()
            .await?;
        anyhow::ensure!(
            res.status().is_success(),
            "GET /auth/iam: {} (is IAM login configured on the server?)",
            res.status()
        );
        let what: SignWhat = res.json().await?;
        let expected_id = match &trust.server_id {
            Some(id) => id.as_str(),
            None => host_of(&self.url).unwrap_or_default(),
        };
        anyhow::ensure!(
            what.server_id == expected_id,
            "the server asks to sign for server id {:?}, not {expected_id:?}: refusing (pass --server-id if that is right)",
            what.server_id
        );
        let sts_ok = match &trust.sts_endpoint {
            Some(e) => what.sts_endpoint == *e,
            None => is_aws_sts(&what.sts_endpoint),
        };
        anyhow::ensure!(
            sts_ok,
            "the server asks to sign for {:?}, not an AWS STS endpoint over https: refusing (pass --sts-endpoint if that is right)",
            what.sts_endpoint
        );
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let provider = sdk
            .credentials_provider()
            .ok_or_else(|| anyhow::anyhow!("no AWS credentials found"))?;
        let creds = provider
            .provide_credentials()
            .await
            .map_err(|e| anyhow::anyhow!("AWS credentials: {e}"))?;
        let body = sign_login(
            Some(&what.server_id),
            &what.sts_endpoint,
            &what.sts_region,
            creds,
            SystemTime::now(),
        )?;
        let res = self
            .http
            .post(format!("{}/auth/iam", self.url))
            .json(&body)
            .send()
            .await?;
        let status = res.status();
        let answer: Value = res.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "IAM login refused: {status} {answer}");
        answer["session_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("IAM login answered no session token"))
    }

    /// POSTs `body` to `path` with `bearer`; the status and the JSON answer.
    pub async fn post(
        &self,
        path: &str,
        bearer: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let res = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(bearer)
            .json(body)
            .send()
            .await?;
        let status = res.status().as_u16();
        let answer = res.json().await.unwrap_or(Value::Null);
        Ok((status, answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aws_sts_over_https_is_trusted_by_default() {
        assert!(is_aws_sts("https://sts.amazonaws.com"));
        assert!(is_aws_sts("https://sts.eu-west-1.amazonaws.com/"));
        assert!(is_aws_sts("https://sts.cn-north-1.amazonaws.com.cn"));
        assert!(!is_aws_sts("http://sts.amazonaws.com"));
        assert!(!is_aws_sts("https://sts.amazonaws.com.evil.example"));
        assert!(!is_aws_sts("https://evil.example/sts.amazonaws.com"));
        assert_eq!(
            host_of("https://vault.internal:8443/x"),
            Some("vault.internal")
        );
    }
}
