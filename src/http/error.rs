//! RFC 9457 problem details: the one way every error leaves the service.
//!
//! Each kind has a stable `type` URI, a title and a status. A 5xx says only
//! its kind and the request id; its cause goes to the log under the same
//! request id. No detail ever echoes a value from the request.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::vault::VaultError;

tokio::task_local! {
    /// The id of the request being served, set by the request-id layer so
    /// every problem can name it without threading it through handlers.
    pub static REQUEST_ID: String;
}

/// The current request's id, or `-` outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".into())
}

/// The kinds of problem the API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    InvalidRequest,
    InvalidValue,
    InvalidToken,
    InvalidMetadata,
    ReasonRequired,
    BatchTooLarge,
    UnsupportedFormat,
    UnsupportedClassification,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    IdempotencyInProgress,
    PayloadTooLarge,
    UnsupportedMediaType,
    IdempotencyKeyReused,
    RateLimited,
    Internal,
    Unavailable,
}

impl ProblemKind {
    /// Every kind, for the contract test against `openapi.yaml`.
    pub const ALL: [ProblemKind; 20] = {
        use ProblemKind::*;
        [
            InvalidRequest,
            InvalidValue,
            InvalidToken,
            InvalidMetadata,
            ReasonRequired,
            BatchTooLarge,
            UnsupportedFormat,
            UnsupportedClassification,
            Unauthenticated,
            Forbidden,
            NotFound,
            MethodNotAllowed,
            RequestTimeout,
            IdempotencyInProgress,
            PayloadTooLarge,
            UnsupportedMediaType,
            IdempotencyKeyReused,
            RateLimited,
            Internal,
            Unavailable,
        ]
    };

    pub fn slug(self) -> &'static str {
        use ProblemKind::*;
        match self {
            InvalidRequest => "invalid-request",
            InvalidValue => "invalid-value",
            InvalidToken => "invalid-token",
            InvalidMetadata => "invalid-metadata",
            ReasonRequired => "reason-required",
            BatchTooLarge => "batch-too-large",
            UnsupportedFormat => "unsupported-format",
            UnsupportedClassification => "unsupported-classification",
            Unauthenticated => "unauthenticated",
            Forbidden => "forbidden",
            NotFound => "not-found",
            MethodNotAllowed => "method-not-allowed",
            RequestTimeout => "request-timeout",
            IdempotencyInProgress => "idempotency-in-progress",
            PayloadTooLarge => "payload-too-large",
            UnsupportedMediaType => "unsupported-media-type",
            IdempotencyKeyReused => "idempotency-key-reused",
            RateLimited => "rate-limited",
            Internal => "internal",
            Unavailable => "unavailable",
        }
    }

    pub fn title(self) -> &'static str {
        use ProblemKind::*;
        match self {
            InvalidRequest => "The request is malformed",
            InvalidValue => "The value is not valid for its classification",
            InvalidToken => "The token is malformed",
            InvalidMetadata => "The metadata is not allowed",
            ReasonRequired => "A reason is required",
            BatchTooLarge => "The batch is too large",
            UnsupportedFormat => "The token format cannot be used here",
            UnsupportedClassification => "Unknown classification",
            Unauthenticated => "Authentication required",
            Forbidden => "Not permitted",
            NotFound => "Not found",
            MethodNotAllowed => "Method not allowed",
            RequestTimeout => "The request took too long",
            IdempotencyInProgress => "A request with this Idempotency-Key is in progress",
            PayloadTooLarge => "The body is too large",
            UnsupportedMediaType => "Unsupported content type",
            IdempotencyKeyReused => "The Idempotency-Key was used with another body",
            RateLimited => "Too many requests",
            Internal => "Internal error",
            Unavailable => "A dependency is unavailable",
        }
    }

    pub fn status(self) -> StatusCode {
        use ProblemKind::*;
        match self {
            InvalidRequest
            | InvalidValue
            | InvalidToken
            | InvalidMetadata
            | ReasonRequired
            | BatchTooLarge
            | UnsupportedFormat
            | UnsupportedClassification => StatusCode::BAD_REQUEST,
            Unauthenticated => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            IdempotencyInProgress => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The kind a bare status maps to (for errors raised below the
    /// handlers: unknown routes, body limits, timeouts).
    pub fn from_status(s: StatusCode) -> ProblemKind {
        use ProblemKind::*;
        match s.as_u16() {
            401 => Unauthenticated,
            403 => Forbidden,
            404 => NotFound,
            405 => MethodNotAllowed,
            408 => RequestTimeout,
            413 => PayloadTooLarge,
            415 => UnsupportedMediaType,
            429 => RateLimited,
            503 => Unavailable,
            400..=499 => InvalidRequest,
            _ => Internal,
        }
    }
}

/// A problem to answer with.
#[derive(Debug, Clone)]
pub struct Problem {
    pub kind: ProblemKind,
    /// Safe, caller-facing detail; dropped for 5xx.
    pub detail: Option<String>,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

/// The body of a problem. `request_id` is absent inside batch results.
#[derive(Debug, Serialize)]
pub struct ProblemBody {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: &'static str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Problem {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: Some(detail.into()),
            retry_after: None,
        }
    }

    pub fn bare(kind: ProblemKind) -> Self {
        Self {
            kind,
            detail: None,
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// A 503 for a dependency that is down, logged with its cause.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(request_id = %current_request_id(), error = %cause, "dependency unavailable");
        Problem::bare(ProblemKind::Unavailable).retry_after(5)
    }

    /// A 500, logged with its cause.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(request_id = %current_request_id(), error = %cause, "internal error");
        Problem::bare(ProblemKind::Internal)
    }

    pub fn body(&self, with_request_id: bool) -> ProblemBody {
        let status = self.kind.status();
        ProblemBody {
            type_: format!("urn:tokenvault:problem:{}", self.kind.slug()),
            title: self.kind.title(),
            status: status.as_u16(),
            detail: if status.is_server_error() {
                None
            } else {
                self.detail.clone()
            },
            request_id: with_request_id.then(current_request_id),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut res = (self.kind.status(), Json(self.body(true))).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.kind == ProblemKind::Unauthenticated {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

impl From<VaultError> for Problem {
    fn from(e: VaultError) -> Self {
        use ProblemKind::*;
        match &e {
            VaultError::InvalidValue(v) => Problem::new(InvalidValue, v.to_string()),
            VaultError::InvalidMetadata(m) => Problem::new(InvalidMetadata, m.to_string()),
            VaultError::UnsupportedFormat(m) => Problem::new(UnsupportedFormat, m.clone()),
            VaultError::InvalidTtl => Problem::new(InvalidRequest, e.to_string()),
            VaultError::NotFound => {
                Problem::new(NotFound, "no such token (unknown, deleted or expired)")
            }
            VaultError::Unavailable(_) => Problem::unavailable(&e),
            VaultError::Internal(_) => Problem::internal(&e),
        }
    }
}
