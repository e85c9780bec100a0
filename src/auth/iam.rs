//! IAM login: a caller proves an AWS IAM identity by handing us a signed
//! `sts:GetCallerIdentity` request, which we check, forward to STS and read
//! the caller's ARN from.
//!
//! The request is rebuilt here from its parts and refused unless every rule
//! holds: the configured STS URL, the fixed body, a SigV4 credential scope
//! for `sts` in the configured region, our server id in a *signed*
//! `X-Tokenvault-Server-Id` header (so a login meant for another service
//! cannot be replayed at us), an `X-Amz-Date` within five minutes, and a
//! signature not seen before. Only allowlisted headers are forwarded, over
//! https unless configured for a local emulator, and no redirect is
//! followed. Refusal reasons go to the audit log, never to the caller.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use crate::config::IamSettings;

use super::Principal;

/// The only body we forward.
pub const BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
/// How far `X-Amz-Date` may be from our clock.
const DATE_WINDOW_SECONDS: i64 = 300;
/// How long a seen signature is remembered: past it, the date check
/// refuses the request anyway.
const REPLAY_SECONDS: i64 = 2 * DATE_WINDOW_SECONDS + 60;
/// Most signatures remembered at once (accepted ones, and those STS is
/// checking); beyond it logins are refused (fail closed) until old ones age
/// out. Refused signatures are forgotten as soon as STS refuses them.
const REPLAY_CAPACITY: usize = 100_000;
/// Headers forwarded to STS (lower case); anything else is dropped, and a
/// signed header outside this list (and `host`) is refused.
const FORWARDED: &[&str] = &[
    "authorization",
    "content-type",
    "x-amz-date",
    "x-amz-security-token",
    "x-tokenvault-server-id",
];
const SERVER_ID_HEADER: &str = "x-tokenvault-server-id";
/// Bounds on what a caller may send.
const MAX_HEADERS: usize = 16;
const MAX_HEADER_BYTES: usize = 8192;
/// How long STS has to answer.
const STS_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest STS answer we read.
const MAX_STS_ANSWER: usize = 64 * 1024;

/// `POST /auth/iam`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    /// Base64 of the body.
    pub body: String,
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// 401; the reason is for the audit log only.
    Refused(&'static str),
    /// STS could not be reached: 503.
    Unavailable(String),
}

/// STS error codes that say "later", not "no": answered 503, not 401.
/// STS throttles with HTTP 400 and `Throttling` in the body.
const STS_BUSY: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "InternalFailure",
];

/// Checks logins and asks STS who signed them.
pub struct IamLogin {
    settings: IamSettings,
    http: reqwest::Client,
    seen: Mutex<HashMap<String, i64>>,
    /// STS calls in flight (`max_concurrent_logins`): `/auth/iam` needs
    /// no credentials, and without a bound every request that passes the
    /// checks would become an STS call and an open connection.
    in_flight: tokio::sync::Semaphore,
}

impl IamLogin {
    pub fn new(settings: IamSettings, tls: rustls::ClientConfig) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(STS_TIMEOUT)
            .https_only(!settings.allow_insecure_sts)
            .build()
            .map_err(|e| format!("STS client: {e}"))?;
        Ok(Self {
            in_flight: tokio::sync::Semaphore::new(settings.max_concurrent_logins),
            settings,
            http,
            seen: Mutex::new(HashMap::new()),
        })
    }

    pub fn settings(&self) -> &IamSettings {
        &self.settings
    }

    /// The principal (`iam:ARN`) a valid login proves.
    pub async fn login(&self, req: &LoginRequest, now: i64) -> Result<Principal, LoginError> {
        let (headers, signature) = self.check(req, now)?;
        let result = match self.in_flight.try_acquire() {
            Ok(_permit) => self.ask_sts(&headers).await,
            Err(_) => Err(LoginError::Unavailable(
                "too many logins in flight (auth.iam.max_concurrent_logins)".into(),
            )),
        };
        // A signature keeps its replay slot only if STS accepted it: junk
        // logins cannot fill the cache and lock real ones out.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if result.is_ok() {
            seen.insert(signature, now + REPLAY_SECONDS);
        } else {
            seen.remove(&signature);
        }
        result
    }

    async fn ask_sts(&self, headers: &BTreeMap<String, String>) -> Result<Principal, LoginError> {
        let mut call = self
            .http
            .post(&self.settings.sts_endpoint)
            .body(BODY.to_owned());
        for (k, v) in headers {
            if FORWARDED.contains(&k.as_str()) {
                call = call.header(k.as_str(), v.as_str());
            }
        }
        let mut res = call
            .send()
            .await
            .map_err(|e| LoginError::Unavailable(format!("STS: {}", without_url(e))))?;
        let status = res.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(LoginError::Unavailable(format!("STS answered {status}")));
        }
        // Read at most MAX_STS_ANSWER bytes, chunked answers included.
        let mut body = Vec::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| LoginError::Unavailable(format!("STS: {}", without_url(e))))?
        {
            if body.len() + chunk.len() > MAX_STS_ANSWER {
                return Err(LoginError::Unavailable("STS answer too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            let code = xml_value(&text, "Code").unwrap_or_default();
            if STS_BUSY.contains(&code) {
                return Err(LoginError::Unavailable(format!(
                    "STS answered {status} {code}"
                )));
            }
            return Err(LoginError::Refused("STS refused the signature"));
        }
        let arn = xml_value(&text, "Arn").ok_or(LoginError::Refused("no ARN in the STS answer"))?;
        principal_of(arn).ok_or(LoginError::Refused("unsupported ARN"))
    }

    /// Every rule but STS's own signature check; returns the headers by
    /// lower-case name and the signature, which holds a replay slot (as in
    /// flight) until [`IamLogin::login`] settles it.
    fn check(
        &self,
        req: &LoginRequest,
        now: i64,
    ) -> Result<(BTreeMap<String, String>, String), LoginError> {
        let refuse = |why| Err(LoginError::Refused(why));
        if req.method != "POST" {
            return refuse("method is not POST");
        }
        if req.url != self.settings.sts_endpoint {
            return refuse("url is not the configured STS endpoint");
        }
        if B64.decode(req.body.as_bytes()).ok().as_deref() != Some(BODY.as_bytes()) {
            return refuse("body is not GetCallerIdentity");
        }
        if req.headers.len() > MAX_HEADERS
            || req
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
                > MAX_HEADER_BYTES
        {
            return refuse("too many or too large headers");
        }
        let mut headers = BTreeMap::new();
        for (k, v) in &req.headers {
            if headers.insert(k.to_ascii_lowercase(), v.clone()).is_some() {
                return refuse("a header appears twice");
            }
        }
        let auth = headers
            .get("authorization")
            .ok_or(LoginError::Refused("no Authorization header"))?;
        let sig =
            parse_authorization(auth).ok_or(LoginError::Refused("malformed Authorization"))?;
        let scope: Vec<&str> = sig.credential.split('/').collect();
        let [_, day, region, service, "aws4_request"] = scope[..] else {
            return refuse("malformed credential scope");
        };
        if service != "sts" || region != self.settings.sts_region {
            return refuse("credential scope is not sts in the configured region");
        }
        for h in &sig.signed_headers {
            if *h != "host" && !FORWARDED.contains(h) {
                return refuse("a signed header is not allowed");
            }
        }
        if !sig.signed_headers.contains(&SERVER_ID_HEADER) {
            return refuse("server id header not signed");
        }
        if headers.get(SERVER_ID_HEADER).map(String::as_str) != Some(&self.settings.server_id) {
            return refuse("server id header missing or another server's");
        }
        if !sig.signed_headers.contains(&"x-amz-date") {
            return refuse("date not signed");
        }
        let date = headers
            .get("x-amz-date")
            .ok_or(LoginError::Refused("no X-Amz-Date"))?;
        let signed_at = parse_amz_date(date).ok_or(LoginError::Refused("malformed X-Amz-Date"))?;
        if !date.starts_with(day) {
            return refuse("credential scope date differs from X-Amz-Date");
        }
        if (now - signed_at).abs() > DATE_WINDOW_SECONDS {
            return refuse("stale or future X-Amz-Date");
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get(sig.signature).is_some_and(|&exp| exp > now) {
            return refuse("replayed signature");
        }
        if seen.len() >= REPLAY_CAPACITY {
            seen.retain(|_, exp| *exp > now);
            if seen.len() >= REPLAY_CAPACITY {
                return refuse("too many logins in flight");
            }
        }
        // In flight: a second copy arriving before STS answers is refused.
        let signature = sig.signature.to_owned();
        seen.insert(signature.clone(), now + REPLAY_SECONDS);
        drop(seen);
        Ok((headers, signature))
    }
}

/// A reqwest error without the URL (ours, but kept out of messages).
fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

struct SigV4<'a> {
    credential: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

/// `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
fn parse_authorization(v: &str) -> Option<SigV4<'_>> {
    let rest = v.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, val) = part.trim().split_once('=')?;
        let slot = match k {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return None,
        };
        // Once each: the header goes to STS as sent, and a second copy
        // that STS ignores must not be what the server-id and replay
        // checks read.
        if slot.replace(val).is_some() {
            return None;
        }
    }
    // Lower-case hex, as SigV4 writes it: one signature, one replay key.
    let signature = signature?;
    if signature.len() != 64
        || !signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    Some(SigV4 {
        credential: credential?,
        signed_headers: signed?.split(';').collect(),
        signature,
    })
}

/// `20261128T183000Z` → Unix seconds.
fn parse_amz_date(s: &str) -> Option<i64> {
    let f = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(s, f)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

/// The text of the first `<tag>…</tag>`.
fn xml_value<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(xml[start..end].trim())
}

/// The principal of a caller ARN: an assumed role maps to its role
/// (`arn:P:sts::A:assumed-role/R/S` → `iam:arn:P:iam::A:role/R`, the
/// partition kept; STS does not report a role's path) under the session
/// `S`; an IAM user stays as it is, with no session. A name outside what
/// IAM and STS allow ([`is_name`]) is refused: each is bound for the audit
/// log, so nothing else may ride in on it.
pub fn principal_of(arn: &str) -> Option<Principal> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ["arn", partition, service, "", account, resource] = parts[..] else {
        return None;
    };
    if partition.is_empty() || account.is_empty() || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match service {
        "sts" => {
            let mut r = resource.split('/');
            match (r.next(), r.next(), r.next(), r.next()) {
                (Some("assumed-role"), Some(role), Some(session), None)
                    if is_name(role, 1) && is_name(session, 2) =>
                {
                    Some(Principal::with_session(
                        format!("iam:arn:{partition}:iam::{account}:role/{role}"),
                        Some(session.to_owned()),
                    ))
                }
                _ => None,
            }
        }
        "iam"
            if resource
                .strip_prefix("user/")
                .is_some_and(|path| path.split('/').all(|part| is_name(part, 1))) =>
        {
            Some(Principal::new(format!("iam:{arn}")))
        }
        _ => None,
    }
}

/// What IAM accepts as a role's or user's name (at least one character)
/// or STS as a `RoleSessionName` (at least two): up to 64 of
/// `A-Za-z0-9_+=,.@-`. A user's path is held to the same, each part.
fn is_name(s: &str, min: usize) -> bool {
    (min..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assumed_roles_map_to_their_role_keeping_the_partition_and_session() {
        let p = principal_of("arn:aws:sts::123456789012:assumed-role/support-eu/alice@example.com")
            .unwrap();
        assert_eq!(p.as_str(), "iam:arn:aws:iam::123456789012:role/support-eu");
        assert_eq!(p.session(), Some("alice@example.com"));
        let p = principal_of("arn:aws-cn:sts::123456789012:assumed-role/r/s1").unwrap();
        assert_eq!(p.as_str(), "iam:arn:aws-cn:iam::123456789012:role/r");
        let p = principal_of("arn:aws:iam::123456789012:user/bob").unwrap();
        assert_eq!(p.as_str(), "iam:arn:aws:iam::123456789012:user/bob");
        let p = principal_of("arn:aws:iam::1:user/ops/team-a/bob").unwrap();
        assert_eq!(p.as_str(), "iam:arn:aws:iam::1:user/ops/team-a/bob");
        assert_eq!(p.session(), None);
        let long = format!("arn:aws:sts::1:assumed-role/r/{}", "a".repeat(65));
        for bad in [
            "arn:aws:sts::123456789012:federated-user/x",
            "arn:aws:sts::12x:assumed-role/r/s1",
            "arn:aws:iam::123456789012:role/r",
            "arn:aws:sts::1:assumed-role/r/a",
            "arn:aws:sts::1:assumed-role/r/a b",
            "arn:aws:sts::1:assumed-role/r/a\"b",
            "arn:aws:sts::1:assumed-role/r/s1/extra",
            "arn:aws:sts::1:assumed-role/r\"x/s1",
            "arn:aws:iam::1:user/",
            "arn:aws:iam::1:user/a//b",
            "arn:aws:iam::1:user/pa\\th/b",
            &long,
            "nope",
        ] {
            assert!(principal_of(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn authorization_headers_parse_strictly() {
        let sig = "a".repeat(64);
        let v = format!(
            "AWS4-HMAC-SHA256 Credential=AKID/20261128/eu-west-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"
        );
        let p = parse_authorization(&v).unwrap();
        assert_eq!(p.signed_headers, ["host", "x-amz-date"]);
        assert!(parse_authorization(&v.replace("Signature", "Sig")).is_none());
        assert!(parse_authorization("Bearer x").is_none());
        // A repeated parameter, or a signature in upper case, is refused.
        for extra in [
            format!(", Signature={}", "b".repeat(64)),
            ", SignedHeaders=host;x-amz-date;x-tokenvault-server-id".to_owned(),
            ", Credential=AKID/20261128/eu-west-1/sts/aws4_request".to_owned(),
        ] {
            assert!(
                parse_authorization(&format!("{v}{extra}")).is_none(),
                "{extra}"
            );
        }
        assert!(parse_authorization(&v.replace(&sig, &"A".repeat(64))).is_none());
        assert_eq!(parse_amz_date("19700101T000100Z"), Some(60));
    }
}
