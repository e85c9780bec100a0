//! The HTTP API: one module per endpoint, over shared state.
//!
//! - [`error`]: RFC 9457 problems, the only error shape.
//! - [`extract`]: the JSON body and caller extractors.
//! - [`tokenize`], [`detokenize`], [`tokens`], [`redact`]: the vault API.
//! - [`idempotency`]: `/tokenize`'s Idempotency-Key: claims and kept
//!   answers.
//! - [`auth_iam`]: IAM login, trading a signed `sts:GetCallerIdentity` for
//!   a session token.
//! - [`health`], [`metrics`]: probes and Prometheus.
//!
//! Requests pass `observe` (request id, metrics, one log line naming the
//! route template, never the raw path or query; inside it, the
//! [`deadline`]), then the handler. Every
//! error, including those raised below the handlers (unknown route, body
//! limit, timeout), leaves as problem+json.

pub mod auth_iam;
pub mod batch;
pub mod deadline;
pub mod detokenize;
pub mod error;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod metrics;
pub mod redact;
pub mod redact_stream;
pub mod tokenize;
pub mod tokens;

use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::FutureExt;

use crate::audit::{AuditEvent, AuditLog};
use crate::auth::Principal;
use crate::auth::api_key::ApiKeys;
use crate::auth::iam::IamLogin;
use crate::auth::policy::Policy;
use crate::auth::rate::RateLimiter;
use crate::auth::session::Sessions;
use crate::clock::Clock;
use crate::config::Limits;
use crate::crypto::Keyring;
use crate::redact::Redactor;
use crate::telemetry::{HttpLabels, Metrics, ReasonLabels, RouteLabels};
use crate::vault::Vault;

use error::{Problem, ProblemKind, REQUEST_ID, current_request_id};

/// Who may call, and what they may do; behind a lock so a reload (SIGHUP)
/// swaps it whole.
pub struct Access {
    pub api_keys: ApiKeys,
    pub policy: Policy,
}

/// What handlers share: one `Arc`, so the clones axum makes for every
/// request (router, middleware, handler) cost one atomic count each. As a
/// struct of a dozen `Arc`s, cloning and dropping them (and the boxed
/// services holding them) was about 2.5% of the server's `perf` samples
/// under tokenize load.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The services and settings behind [`AppState`].
pub struct Shared {
    pub vault: Arc<Vault>,
    pub keyring: Arc<Keyring>,
    pub redactor: Arc<Redactor>,
    pub audit: AuditLog,
    pub metrics: Arc<Metrics>,
    pub access: Arc<RwLock<Arc<Access>>>,
    pub limits: Limits,
    pub metrics_bearer: Option<[u8; 32]>,
    pub limiter: Arc<RateLimiter>,
    /// Mints and checks the session tokens of IAM logins.
    pub sessions: Arc<Sessions>,
    /// IAM login, when `[auth.iam]` is configured.
    pub iam: Option<Arc<IamLogin>>,
    pub clock: Arc<dyn Clock>,
}

impl Shared {
    /// The access rules in force for this request.
    pub fn access(&self) -> Arc<Access> {
        self.access
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts new access rules in force for every later request.
    pub fn set_access(&self, access: Access) {
        *self.access.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(access);
    }

    /// Audits a refusal (one event per item) and returns the 403 to send,
    /// or a 503 if the audit log cannot take the events.
    pub async fn deny(
        &self,
        caller: &Principal,
        action: &'static str,
        items: Vec<(Option<String>, Option<String>)>,
        reason: &str,
    ) -> Problem {
        let problem = Problem::new(ProblemKind::Forbidden, format!("{caller} may not {reason}"));
        self.refuse(caller, action, items, "forbidden", reason, problem)
            .await
    }

    /// Audits a refusal of any kind (`label` counts it in
    /// `tokenvault_denials_total`) and returns `problem`, or a 503 if the
    /// audit log cannot take the events: nothing is answered unaudited.
    pub async fn refuse(
        &self,
        caller: &Principal,
        action: &'static str,
        items: Vec<(Option<String>, Option<String>)>,
        label: &'static str,
        reason: &str,
        problem: Problem,
    ) -> Problem {
        self.metrics
            .denials
            .get_or_create(&ReasonLabels { reason: label })
            .inc();
        let role = self.access().policy.role_of(caller).map(|r| r.name.clone());
        let events = items
            .into_iter()
            .map(|(token, classification)| AuditEvent {
                request_id: current_request_id(),
                principal: caller.to_string(),
                session: caller.session().map(str::to_owned),
                role: role.clone(),
                action,
                token,
                classification,
                decision: "deny",
                reason: Some(reason.to_owned()),
            })
            .collect();
        if let Err(e) = self.audit.record(events).await {
            return Problem::unavailable(&e);
        }
        problem
    }
}

/// The router with every route and layer.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/tokenize", post(tokenize::handle))
        .route("/detokenize", post(detokenize::handle))
        .route("/tokens/{token}", get(tokens::get).delete(tokens::delete))
        .route("/redact", post(redact::handle))
        .route("/auth/iam", get(auth_iam::describe).post(auth_iam::login))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::handle))
        .fallback(|| async { Problem::new(ProblemKind::NotFound, "no such route") })
        .layer(DefaultBodyLimit::max(state.limits.body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A new request id: a version-4-shaped UUID whose first half is drawn
/// once per process and whose second half is the count of requests put
/// through a keyed permutation. Ids must be unique, not secret; a random
/// UUID per request cost a `getrandom` system call each (about 1% of the
/// server's CPU under load). The permutation keeps the count, and so the
/// service's request volume, out of the ids clients see.
fn next_request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PROCESS: OnceLock<(u64, std::hash::RandomState)> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let (high, keys) = PROCESS.get_or_init(|| {
        let high = uuid::Uuid::new_v4().as_u64_pair().0;
        (high, std::hash::RandomState::new())
    });
    let low = permute62(keys, COUNT.fetch_add(1, Ordering::Relaxed));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&high.to_be_bytes());
    bytes[8..].copy_from_slice(&low.to_be_bytes());
    // Sets the version and variant bits; the variant's are the top two
    // bits of `low`, which a 62-bit permutation leaves clear.
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// A keyed permutation of the numbers below 2^62 (larger ones are taken
/// modulo 2^62): a four-round Feistel network over two 31-bit halves,
/// with the process's SipHash keys as its round function. One to one, so
/// ids stay unique; without the keys, a run of ids does not show how many
/// requests lie between them.
fn permute62(keys: &std::hash::RandomState, n: u64) -> u64 {
    use std::hash::BuildHasher;
    const HALF: u64 = (1 << 31) - 1;
    let (mut left, mut right) = ((n >> 31) & HALF, n & HALF);
    for round in 0u8..4 {
        let f = keys.hash_one((round, right)) & HALF;
        (left, right) = (right, left ^ f);
    }
    (left << 31) | right
}

/// Request id, problem shaping, metrics and the access log line.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = next_request_id();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    if !matches!(route.as_str(), "/healthz" | "/readyz") {
        crate::memory::note_request();
    }
    let method = req.method().clone();
    let limit = std::time::Duration::from_millis(state.limits.request_timeout_ms);
    let start = Instant::now();
    // Combinators, not an async block: see `measure_waits`.
    let run = deadline::within(limit, req, |req| next.run(req)).map(as_problem);
    let (mut res, waited) =
        crate::telemetry::measure_waits(REQUEST_ID.scope(id.clone(), run)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    let elapsed = start.elapsed();
    let status = res.status().as_u16();
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route: route.clone(),
            status: status.to_string(),
        })
        .inc();
    state
        .metrics
        .http_duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    state
        .metrics
        .http_own
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed.saturating_sub(waited).as_secs_f64());
    // As `&str`, not `%`: a string field is written straight into the
    // line, a `Display` one through the formatting machinery.
    tracing::info!(
        request_id = id.as_str(),
        method = method.as_str(),
        route = route.as_str(),
        status,
        duration_us = elapsed.as_micros() as u64,
        waited_us = waited.as_micros() as u64,
        "request"
    );
    res
}

/// Turns an error response that is not already a problem into one.
fn as_problem(res: Response) -> Response {
    let status = res.status();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if status.as_u16() < 400 || is_problem {
        return res;
    }
    Problem::bare(ProblemKind::from_status(status)).into_response()
}

#[cfg(test)]
mod tests {
    use super::next_request_id;

    #[test]
    fn the_permutation_is_one_to_one_and_hides_the_count() {
        let keys = std::hash::RandomState::new();
        let out: Vec<u64> = (0..100_000).map(|n| super::permute62(&keys, n)).collect();
        let distinct: std::collections::HashSet<_> = out.iter().collect();
        assert_eq!(distinct.len(), out.len());
        assert!(out.iter().all(|&v| v < 1 << 62));
        let in_order = out.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert!(in_order < 10, "{in_order} consecutive outputs in a row");
    }

    #[test]
    fn request_ids_are_distinct_version_4_uuids() {
        let ids: Vec<uuid::Uuid> = (0..1000)
            .map(|_| uuid::Uuid::parse_str(&next_request_id()).expect("a UUID"))
            .collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids {
            assert_eq!(id.get_version_num(), 4);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
    }
}
