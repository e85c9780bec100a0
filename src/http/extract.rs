//! Extractors that answer with problems instead of axum's plain-text
//! rejections, and never echo a request's content.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;

use crate::audit::AuditEvent;
use crate::auth::session;
use crate::auth::{Connection, Principal};

use super::AppState;
use super::error::{Problem, ProblemKind, current_request_id};

/// Longest `Authorization` header we look at.
const MAX_AUTH_HEADER: usize = 1024;

/// The request's media type: its `Content-Type` without parameters, in
/// lower case (`Application/JSON; charset=utf-8` is `application/json`).
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(ct.split(';').next()?.trim().to_ascii_lowercase())
}

/// A JSON body: 413 over the limit, 400 when not JSON or of the wrong
/// shape. serde's messages can quote the offending value (a card), so only
/// the position is reported.
pub struct JsonBody<T> {
    pub value: T,
    /// The raw bytes, for idempotency hashing.
    pub raw: Bytes,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = media_type(req.headers())
            .is_some_and(|m| m == "application/json" || m.ends_with("+json"));
        if !is_json {
            return Err(Problem::new(
                ProblemKind::UnsupportedMediaType,
                "send the body as application/json",
            ));
        }
        let raw = Bytes::from_request(req, state)
            .await
            .map_err(|r| match r.status().as_u16() {
                413 => Problem::new(
                    ProblemKind::PayloadTooLarge,
                    "the body is over limits.body_bytes",
                ),
                _ => Problem::new(ProblemKind::InvalidRequest, "the body could not be read"),
            })?;
        let value = serde_json::from_slice(&raw).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Syntax => "the body is not valid JSON",
                serde_json::error::Category::Eof => "the body is truncated JSON",
                serde_json::error::Category::Io => "the body could not be read",
                serde_json::error::Category::Data => {
                    "a field has the wrong type, is unknown, or a required field is missing"
                }
            };
            Problem::new(
                ProblemKind::InvalidRequest,
                format!("{what} (line {}, column {})", e.line(), e.column()),
            )
        })?;
        Ok(JsonBody { value, raw })
    }
}

/// An authenticated caller. Refusals are audited (without the presented
/// credential) and answered 401.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION);
        let conn = parts.extensions.get::<Arc<Connection>>();
        let cert = conn.and_then(|c| c.cert.clone());
        let reason = match header {
            // No bearer: a verified client certificate is the caller.
            None => match cert {
                Some(p) => return Ok(Caller(p)),
                None => "missing credentials",
            },
            Some(h) if h.len() > MAX_AUTH_HEADER => "malformed credentials",
            Some(h) => match h.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
                None => "malformed credentials",
                Some(t) if t.trim().starts_with(session::PREFIX) => {
                    match state.sessions.check(t.trim(), state.clock.unix()) {
                        Some(p) => return Ok(Caller(p)),
                        None => "unknown or expired session",
                    }
                }
                Some(key) => {
                    let keys = &state.access().api_keys;
                    let found = match conn {
                        Some(c) => keys.authenticate_with(key.trim(), &c.key_memo),
                        None => keys.authenticate(key.trim()),
                    };
                    match found {
                        Some(p) => return Ok(Caller(p)),
                        None => "unknown credentials",
                    }
                }
            },
        };
        state
            .metrics
            .denials
            .get_or_create(&crate::telemetry::ReasonLabels {
                reason: "unauthenticated",
            })
            .inc();
        let event = AuditEvent {
            request_id: current_request_id(),
            principal: "anonymous".into(),
            action: "authenticate",
            decision: "deny",
            reason: Some(reason.into()),
            ..Default::default()
        };
        if let Err(e) = state.audit.record(vec![event]).await {
            return Err(Problem::unavailable(&e));
        }
        Err(Problem::new(
            ProblemKind::Unauthenticated,
            "send a valid API key or session token as Authorization: Bearer <credential>, or a client certificate",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(ct: &'static str) -> Option<String> {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
        media_type(&h)
    }

    #[test]
    fn the_media_type_drops_parameters_and_case() {
        assert_eq!(
            of("Text/Plain; charset=utf-8").as_deref(),
            Some("text/plain")
        );
        assert_eq!(
            of(" application/x-ndjson ").as_deref(),
            Some("application/x-ndjson")
        );
        assert_eq!(
            of("application/merge-patch+json;q=1").as_deref(),
            Some("application/merge-patch+json")
        );
        assert_eq!(media_type(&HeaderMap::new()), None);
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_bytes(b"text/\xff").unwrap(),
        );
        assert_eq!(media_type(&h), None);
    }
}
