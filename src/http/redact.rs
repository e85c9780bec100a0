//! `POST /redact`: log shippers send logs through before storing them.
//!
//! A body with a known length within `limits.body_bytes` (and any JSON
//! body) is redacted whole and answered with a `Tokenvault-Findings`
//! header. A text or NDJSON body without a length, or a longer one (up to
//! `limits.redact_stream_bytes`), is streamed: read, redacted and sent line
//! by line with bounded memory, the findings as an HTTP trailer. An error
//! before the first output (within a second) is answered as a problem
//! (413, 503, ...); a later one aborts the response, so the client sees a
//! truncated body, never unredacted data. `?report=true` scans without changing and answers
//! counts and JSON paths.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::audit::{AuditEvent, AuditLog};
use crate::auth::Principal;
use crate::auth::policy::Permission;
use crate::redact::format::RedactError;
use crate::redact::{Action, ActionError, Findings, Format, Options, Tokenizer};
use crate::telemetry::TypeLabels;
use crate::vault::service::TokenizeOptions;
use crate::vault::token::TokenFormat;
use crate::vault::value::Classification;
use crate::vault::{Audit, Notes, Vault};

use super::AppState;
use super::error::{Problem, ProblemKind, REQUEST_ID, current_request_id};
use super::extract::{Caller, media_type};

/// Per-request options.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactQuery {
    detectors: Option<String>,
    actions: Option<String>,
    budget_ms: Option<u64>,
    report: Option<bool>,
}

pub async fn handle(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<Query<RedactQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let access = state.access();
    if access
        .policy
        .grant(&caller, Permission::Redact, None)
        .is_none()
    {
        return Err(state
            .deny(&caller, "redact", vec![(None, None)], "redact")
            .await);
    }
    let Query(q) = query.map_err(|_| {
        Problem::new(
            ProblemKind::InvalidRequest,
            "query parameters: detectors, actions, budget_ms, report",
        )
    })?;
    let mut opts = state
        .redactor
        .options()
        .with_detectors(q.detectors.as_deref())
        .and_then(|o| o.with_actions(q.actions.as_deref()))
        .map_err(|e| Problem::new(ProblemKind::InvalidRequest, e.0))?;
    opts.report = q.report.unwrap_or(false);
    if let Some(ms) = q.budget_ms {
        // A line's budget past the request's own deadline could never be
        // used up: the request would be answered 503 first.
        let most = state.limits.request_timeout_ms;
        if ms > most {
            return Err(Problem::new(
                ProblemKind::InvalidRequest,
                format!("budget_ms is at most {most} (limits.request_timeout_ms)"),
            ));
        }
        opts.budget = Some(Duration::from_millis(ms));
    }
    if opts.uses(Action::Tokenize)
        && !opts.report
        && access
            .policy
            .grant(&caller, Permission::Tokenize, Some("pan"))
            .is_none()
    {
        return Err(state
            .deny(
                &caller,
                "redact",
                vec![(None, Some("pan".into()))],
                "tokenize cards while redacting",
            )
            .await);
    }
    let format = media_type(&headers)
        .and_then(|m| Format::from_media_type(&m))
        .ok_or_else(|| {
            Problem::new(
                ProblemKind::UnsupportedMediaType,
                "send text/plain, application/json or application/x-ndjson",
            )
        })?;
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let small = length.is_some_and(|l| l <= state.limits.body_bytes as u64);
    let job = Job {
        state: state.clone(),
        caller,
        opts,
        format,
        request_id: current_request_id(),
        waits: crate::telemetry::waits(),
    };
    if format.is_line_based() && !small {
        if length.is_some_and(|l| l > state.limits.redact_stream_bytes) {
            return Err(Problem::new(
                ProblemKind::PayloadTooLarge,
                "the body is over limits.redact_stream_bytes",
            ));
        }
        return Ok(super::redact_stream::respond(job, body).await);
    }
    let bytes = axum::body::to_bytes(body, state.limits.body_bytes)
        .await
        .map_err(|_| {
            Problem::new(
                ProblemKind::PayloadTooLarge,
                "the body is over limits.body_bytes",
            )
        })?;
    let report = job.opts.report;
    // The blocking task runs to its end, audit included, even if this
    // request is dropped meanwhile (its deadline, a client gone).
    let (out, findings) = tokio::task::spawn_blocking(move || {
        // The request id is task-local: give it to this thread's logs too.
        REQUEST_ID.sync_scope(job.request_id.clone(), || job.whole(&bytes))
    })
    .await
    // A JoinError's text quotes the panic message: say only what happened.
    .map_err(|_| Problem::internal(&"redaction task failed"))??;
    if report {
        return Ok(axum::Json(findings.report()).into_response());
    }
    let mut res = out.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if !findings.is_empty()
        && let Ok(v) = HeaderValue::from_str(&findings.header_value())
    {
        h.insert("tokenvault-findings", v);
    }
    Ok(res)
}

/// One redaction request's work, run on a blocking thread.
pub struct Job {
    pub state: AppState,
    pub caller: Principal,
    pub opts: Options,
    pub format: Format,
    /// Captured on the request's task, whose task-local id the blocking
    /// thread does not have; it is set there again for the thread's logs.
    pub request_id: String,
    /// The request's wait counter, likewise: the tokenizations' store and
    /// key-provider calls count as the request's waits.
    pub waits: Option<Arc<AtomicU64>>,
}

impl Job {
    /// Redacts a whole body and records the audit events of the cards it
    /// tokenized (before a failure too: they are stored either way);
    /// returns output and findings, or the problem.
    fn whole(&self, input: &[u8]) -> Result<(Vec<u8>, Findings), Problem> {
        let tokenizer = self.tokenizer();
        let mut session = self
            .state
            .redactor
            .session(&self.opts, Some(&tokenizer as &dyn Tokenizer));
        let mut out = Vec::with_capacity(input.len() + input.len() / 8);
        let result = session
            .body(self.format, input, &mut out)
            .map_err(|e| redact_problem(&e))
            .map(|()| {
                self.count(input.len(), &session.findings);
                (out, session.findings)
            });
        tokenizer.settle()?;
        result
    }

    /// The vault adapter for the `tokenize` action.
    pub fn tokenizer(&self) -> VaultTokenizer {
        VaultTokenizer {
            vault: self.state.vault.clone(),
            audit: self.state.audit.clone(),
            handle: tokio::runtime::Handle::current(),
            caller: self.caller.clone(),
            role: self
                .state
                .access()
                .policy
                .grant(&self.caller, Permission::Tokenize, Some("pan"))
                .map(|r| r.name.clone()),
            events: Mutex::new(Unaudited::default()),
            request_id: self.request_id.clone(),
            waits: self.waits.clone(),
        }
    }

    pub fn count(&self, bytes: usize, findings: &Findings) {
        let m = &self.state.metrics;
        m.redact_bytes.inc_by(bytes as u64);
        for (kind, n) in findings.iter() {
            m.redact_findings
                .get_or_create(&TypeLabels { r#type: kind })
                .inc_by(n);
        }
    }
}

/// The answer to a failed redaction, whole or streamed.
pub fn redact_problem(e: &RedactError) -> Problem {
    match e {
        RedactError::Json { .. } => Problem::new(ProblemKind::InvalidRequest, e.to_string()),
        RedactError::Action(a) => action_problem(a),
    }
}

pub fn action_problem(e: &ActionError) -> Problem {
    match e {
        ActionError::Tokenize(_) => Problem::unavailable(e),
        _ => Problem::internal(e),
    }
}

/// Cards to deterministic vault tokens (one card, one token across logs),
/// each call recorded for the audit log: a card stored for the first time
/// with its record, through the outbox when there is one; the others
/// gathered here and recorded by [`VaultTokenizer::settle`].
pub struct VaultTokenizer {
    vault: Arc<Vault>,
    audit: AuditLog,
    handle: tokio::runtime::Handle,
    caller: Principal,
    role: Option<String>,
    events: Mutex<Unaudited>,
    request_id: String,
    waits: Option<Arc<AtomicU64>>,
}

/// Tokenizations whose events are still to be recorded: those that found
/// their card's token stored already. A record a tokenization stores has
/// its event committed with it, or written before it (the vault's
/// herald), so none is ever taken back: its token is the card's, and
/// another request may hold it already.
#[derive(Default)]
struct Unaudited {
    events: Vec<AuditEvent>,
}

impl VaultTokenizer {
    /// Records the events of the tokenizations since the last call; if
    /// the audit log fails, the problem is a 503. Called on a blocking
    /// thread.
    pub fn settle(&self) -> Result<(), Problem> {
        let pending = std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()));
        self.handle.block_on(pending.settle(&self.audit))
    }
}

impl Drop for VaultTokenizer {
    /// A redaction that ends without settling (a panic in the engine
    /// unwinds past every `settle`) still has its tokenizations audited:
    /// on the runtime, since this thread may be unwinding.
    fn drop(&mut self) {
        let pending = std::mem::take(self.events.get_mut().unwrap_or_else(|p| p.into_inner()));
        if pending.events.is_empty() {
            return;
        }
        let audit = self.audit.clone();
        tracing::warn!(request_id = %self.request_id, events = pending.events.len(), "a redaction ended before its tokenizations were audited; auditing them now");
        self.handle.spawn(async move {
            let _ = pending.settle(&audit).await;
        });
    }
}

impl Unaudited {
    /// Records the events; answers 503 if the audit log fails.
    async fn settle(self, audit: &AuditLog) -> Result<(), Problem> {
        if self.events.is_empty() {
            return Ok(());
        }
        audit
            .record(self.events)
            .await
            .map_err(|e| Problem::unavailable(&e))
    }
}

impl Tokenizer for VaultTokenizer {
    fn tokenize_card(&self, digits: &str) -> Result<String, ActionError> {
        let opts = TokenizeOptions {
            classification: Classification::Pan,
            format: TokenFormat::Random,
            deterministic: true,
            ttl_seconds: None,
            metadata: Default::default(),
        };
        let event = AuditEvent {
            request_id: self.request_id.clone(),
            principal: self.caller.to_string(),
            session: self.caller.session().map(str::to_owned),
            role: self.role.clone(),
            action: "tokenize",
            token: None,
            classification: Some("pan".into()),
            decision: "allow",
            reason: Some("redact".into()),
        };
        let notes = self.audit.note_maker(&event);
        let herald = self.audit.herald(&event);
        let audit = Audit {
            notes: self.audit.has_outbox().then_some(&notes as &dyn Notes),
            herald: Some(&herald),
        };
        let t = self
            .handle
            .block_on(crate::telemetry::counting_waits(
                self.waits.clone(),
                self.vault.tokenize_noted(digits, &opts, audit),
            ))
            .map_err(|e| ActionError::Tokenize(e.to_string()))?;
        // The herald writes a new record's event first, or the store
        // commits it with the record: what is left found its token stored.
        debug_assert!(t.audited || !t.created, "a redaction's record unaudited");
        if !t.audited {
            let mut pending = self.events.lock().unwrap_or_else(|p| p.into_inner());
            pending.events.push(AuditEvent {
                token: Some(t.token.clone()),
                ..event
            });
        }
        Ok(t.token)
    }
}
