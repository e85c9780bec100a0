//! `POST /tokenize`: checkout backends trade card numbers for tokens.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::audit::AuditEvent;
use crate::auth::policy::Permission;
use crate::clock::{self, Fraction};
use crate::vault::service::{TokenizeOptions, Tokenized};
use crate::vault::token::TokenFormat;
use crate::vault::value::Classification;
use crate::vault::{Audit, Notes};

use super::AppState;
use super::batch::{Items, Outcome};
use super::error::{Problem, ProblemKind, REQUEST_ID, current_request_id};
use super::extract::{Caller, JsonBody};
use super::idempotency::{Claim, Keyed, Replayed};

/// The request: `value` or `values`, and options shared by every item.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeBody {
    value: Option<String>,
    values: Option<Vec<String>>,
    format: Option<TokenFormat>,
    deterministic: Option<bool>,
    classification: Option<String>,
    ttl_seconds: Option<i64>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// One item's answer.
#[derive(Serialize)]
pub struct TokenizeAnswer {
    token: String,
    last4: Option<String>,
    brand: Option<String>,
    classification: String,
    created: bool,
    expires_at: Option<String>,
}

impl From<Tokenized> for TokenizeAnswer {
    fn from(t: Tokenized) -> Self {
        Self {
            token: t.token,
            last4: t.last4,
            brand: t.brand,
            classification: t.classification,
            created: t.created,
            expires_at: t.expires_at.and_then(rfc3339),
        }
    }
}

/// Unix seconds as RFC 3339.
pub fn rfc3339(unix: i64) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp(unix).ok()?;
    clock::rfc3339(t, Fraction::Trimmed).map(|s| s.as_str().to_owned())
}

pub async fn handle(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: Result<JsonBody<TokenizeBody>, Problem>,
) -> Result<Response, Problem> {
    // A caller with no right to tokenize anything is refused (and audited)
    // before its body is judged: a malformed request is an attempt too,
    // even one that is not JSON at all.
    let access = state.access();
    if access
        .policy
        .grant(&caller, Permission::Tokenize, None)
        .is_none()
    {
        let (values, class) = match &body {
            Ok(JsonBody { value: b, .. }) => (
                b.value.iter().count() + b.values.as_ref().map_or(0, Vec::len),
                Classification::parse(b.classification.as_deref().unwrap_or("pan"))
                    .map(|c| c.as_str().to_owned()),
            ),
            Err(_) => (0, None),
        };
        let each = vec![(None, class); values.clamp(1, state.limits.batch)];
        return Err(state.deny(&caller, "tokenize", each, "tokenize").await);
    }
    let JsonBody { value: body, raw } = body?;
    let class_name = body.classification.as_deref().unwrap_or("pan");
    let classification = Classification::parse(class_name).ok_or_else(|| {
        Problem::new(
            ProblemKind::UnsupportedClassification,
            "classification must be pan or pii",
        )
    })?;
    let items = Items::new(
        body.value,
        body.values,
        "value",
        "values",
        state.limits.batch,
    )?;
    let Some(role) =
        access
            .policy
            .grant(&caller, Permission::Tokenize, Some(classification.as_str()))
    else {
        let each = vec![(None, Some(classification.as_str().to_owned())); items.values.len()];
        return Err(state.deny(&caller, "tokenize", each, "tokenize").await);
    };
    let role = role.name.clone();

    let keyed = Keyed::from_headers(&state, &caller, &headers, &raw)?;

    let defaults = state.vault.defaults();
    let opts = TokenizeOptions {
        classification,
        format: body.format.unwrap_or(defaults.format),
        deterministic: body.deterministic.unwrap_or(defaults.deterministic),
        ttl_seconds: body.ttl_seconds.or(Some(defaults.default_ttl_seconds)),
        metadata: body.metadata,
    };
    // The event of a value stored: committed with its record when the
    // store has an outbox, so one fsync makes both durable.
    let allowed = AuditEvent {
        request_id: current_request_id(),
        principal: caller.to_string(),
        session: caller.session().map(str::to_owned),
        role: Some(role.clone()),
        action: "tokenize",
        token: None,
        classification: Some(classification.as_str().to_owned()),
        decision: "allow",
        reason: None,
    };
    // Claiming the Idempotency-Key, storing, auditing and settling the key
    // run as a task of their own, which this request only waits on: a
    // request dropped part-way (its deadline, a client gone) must not
    // leave a stored value without its event, nor its key "in progress"
    // for the lease's minute, nor a write of its own still on its way once
    // the task has cleaned up after it. Every request, since whether a
    // record's event rides with it is known only after the store answers
    // (the embedded store stops taking notes past its outbox's bound).
    let (answer, answered) = tokio::sync::oneshot::channel();
    let work = Work {
        state: state.clone(),
        values: items.values,
        batch: items.batch,
        opts,
        allowed,
    };
    let waits = crate::telemetry::waits();
    tokio::spawn(REQUEST_ID.scope(
        current_request_id(),
        crate::telemetry::counting_waits(waits, work.run(keyed, answer)),
    ));
    // Closed without an answer: the task panicked.
    answered
        .await
        .unwrap_or_else(|_| Err(Problem::internal(&"tokenize task failed")))
}

/// A tokenization's work, done by a task of its own.
struct Work {
    state: AppState,
    values: Vec<String>,
    batch: bool,
    opts: TokenizeOptions,
    allowed: AuditEvent,
}

impl Work {
    /// What the Idempotency-Key answered instead of a claim, audited as
    /// the tokenization attempt it is. A replay hands the first answer's
    /// tokens out again, to this request's caller (of a role, maybe another
    /// session than the first's): one `allow` event per token, reason
    /// `idempotent replay`, or one `error` event when the answer held none.
    /// A 409 (the first request still running) or a 422 (the key used with
    /// another body) is a `deny` event per value, a fault (the store down)
    /// an `error` one, with the problem's type as the reason. A 503 if the
    /// log cannot take them.
    async fn audit_keyed_answer(
        &self,
        mut answered: Result<Response, Problem>,
    ) -> Result<Response, Problem> {
        let event = |token: Option<String>, decision: &'static str, reason: &str| AuditEvent {
            token,
            decision,
            reason: Some(reason.to_owned()),
            ..self.allowed.clone()
        };
        let events = match &mut answered {
            Ok(res) => match res.extensions_mut().remove::<Replayed>() {
                None => return answered,
                Some(Replayed(tokens)) if tokens.is_empty() => {
                    vec![event(None, "error", "idempotent replay")]
                }
                Some(Replayed(tokens)) => tokens
                    .into_iter()
                    .map(|t| event(Some(t), "allow", "idempotent replay"))
                    .collect(),
            },
            Err(problem) => {
                let decision = if problem.kind.status().is_server_error() {
                    "error"
                } else {
                    "deny"
                };
                let each = self.values.len().clamp(1, self.state.limits.batch);
                vec![event(None, decision, problem.kind.slug()); each]
            }
        };
        match self.state.audit.record(events).await {
            Ok(()) => answered,
            Err(e) => Err(Problem::unavailable(&e)),
        }
    }

    /// Claims the key, if any, stores and audits the values, records the
    /// answer under the key (or frees the key when there is none to keep)
    /// and hands the answer over. A request gone before its answer
    /// (answered 503 at its deadline, or its client left) leaves nothing:
    /// nobody holds its tokens, so the records made are withdrawn, and
    /// only then is its key freed, so a retry runs afresh. Only the
    /// records of an answer kept under its key (or whose write was tried,
    /// and may have landed) stay, for the retry to be given, and
    /// deterministic records, whose tokens others may hold.
    async fn run(
        self,
        keyed: Option<Keyed>,
        answer: tokio::sync::oneshot::Sender<Result<Response, Problem>>,
    ) {
        let mut claim = match keyed {
            None => None,
            Some(keyed) => match Claim::take(&self.state, keyed).await {
                Ok(claim) => Some(claim),
                Err(answered) => {
                    let answered = self.audit_keyed_answer(answered).await;
                    let _ = answer.send(answered);
                    return;
                }
            },
        };
        let free = |claim: Option<Claim>| async move {
            if let Some(claim) = claim {
                claim.release().await;
            }
        };
        if answer.is_closed() {
            return free(claim).await;
        }
        let Work {
            state,
            values,
            batch,
            opts,
            allowed,
        } = self;
        let deterministic = opts.deterministic;
        let results = match store_and_audit(state.clone(), values, opts, allowed.clone()).await {
            Ok(results) => results,
            Err(problem) => {
                free(claim).await;
                let _ = answer.send(Err(problem));
                return;
            }
        };
        // What a request gone before its answer takes back. Not a
        // deterministic record: its token is the card's, a request for the
        // same card may have been answered with it already (withdrawn, that
        // token would resolve to nothing), and its event is written.
        let created: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|(_, a)| a.created && !deterministic)
            .map(|(_, a)| a.token.clone())
            .collect();
        if answer.is_closed() {
            withdraw_unanswered(&state, &allowed, &created).await;
            return free(claim).await;
        }
        // A batch that stored nothing, and not for the caller's fault
        // alone (the key provider down, an invalid card beside the valid
        // ones), is to be retried whole: answered 503 and its key freed,
        // not a 200 of problems kept under its key and replayed.
        let none_stored = results.iter().all(Result::is_err)
            && results
                .iter()
                .any(|r| matches!(r, Err(p) if p.kind.status().is_server_error()));
        let outcome = if batch && none_stored {
            Outcome::Problem(Problem::bare(ProblemKind::Unavailable).retry_after(5))
        } else {
            Outcome::collect(batch, results)
        };
        // Whether the answer may be kept under the key: written, or a
        // write that failed yet may have landed (a timeout).
        let may_be_kept = match (&outcome, claim.take()) {
            (Outcome::Json(status, body), Some(c)) if status.is_success() => {
                if let Err(c) = c
                    .complete(status.as_u16(), &String::from_utf8_lossy(body))
                    .await
                {
                    claim = Some(c);
                }
                true
            }
            (_, c) => {
                claim = c;
                false
            }
        };
        // The request may have gone since the check above (the answer's
        // JSON, the key's write): then its records go too, unless its
        // answer may be kept under its key (a retry would be replayed
        // tokens that resolve to nothing; the records stay, audited).
        if answer.send(Ok(outcome.into_response())).is_err() && !may_be_kept {
            withdraw_unanswered(&state, &allowed, &created).await;
        }
        free(claim).await;
    }
}

/// Stores `values` and has their events recorded: with their records where
/// the store has an outbox, else after them (a deterministic record's
/// before it, see [`crate::vault::Herald`]). An event that cannot be
/// recorded fails the request (503), and the random records it would have
/// covered are withdrawn: a value is never kept unaudited.
async fn store_and_audit(
    state: AppState,
    values: Vec<String>,
    opts: TokenizeOptions,
    allowed: AuditEvent,
) -> Result<Vec<Result<(StatusCode, TokenizeAnswer), Problem>>, Problem> {
    let notes = state.audit.note_maker(&allowed);
    let herald = state.audit.herald(&allowed);
    let audit = Audit {
        notes: state.audit.has_outbox().then_some(&notes as &dyn Notes),
        herald: Some(&herald),
    };
    let answers = state.vault.tokenize_many(&values, &opts, audit).await;
    let mut results = Vec::with_capacity(values.len());
    let mut events = Vec::new();
    let mut unaudited = Vec::new();
    for r in answers {
        // Recorded here unless its note was committed with its record.
        let unrecorded = match &r {
            Ok(t) if t.audited => None,
            Ok(t) => {
                // The herald writes a deterministic record's event first.
                debug_assert!(
                    !(t.created && opts.deterministic),
                    "a deterministic record unaudited"
                );
                if t.created {
                    unaudited.push(t.token.clone());
                }
                Some(Some(t.token.clone()))
            }
            Err(_) => Some(None),
        };
        let result = r.map_err(Problem::from).map(|t| {
            let status = if t.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, TokenizeAnswer::from(t))
        });
        if let Some(token) = unrecorded {
            events.push(match &result {
                Ok(_) => AuditEvent {
                    token,
                    ..allowed.clone()
                },
                Err(p) => AuditEvent {
                    decision: "error",
                    reason: Some(p.kind.slug().to_owned()),
                    ..allowed.clone()
                },
            });
        }
        results.push(result);
    }
    if let Err(e) = state.audit.record(events).await {
        if let Err(w) = state.vault.withdraw(&unaudited).await {
            tracing::error!(request_id = %current_request_id(), error = %w, records = unaudited.len(), "could not withdraw records whose audit events failed");
        }
        return Err(Problem::unavailable(&e));
    }
    Ok(results)
}

/// Withdraws the records a tokenization created for a request that was
/// gone before its answer: each gets a `withdraw` event first (a record's
/// deletion is audited, as a caller's is), then is deleted. If the events
/// cannot be written the records stay, audited as created.
async fn withdraw_unanswered(state: &AppState, allowed: &AuditEvent, created: &[String]) {
    if created.is_empty() {
        return;
    }
    let events = created
        .iter()
        .map(|t| AuditEvent {
            action: "withdraw",
            token: Some(t.clone()),
            reason: Some("the request ended before its answer".into()),
            ..allowed.clone()
        })
        .collect();
    if let Err(e) = state.audit.record(events).await {
        tracing::warn!(request_id = %current_request_id(), error = %e, records = created.len(), "could not audit the withdrawal of an unanswered tokenization; its records stay");
        return;
    }
    if let Err(e) = state.vault.withdraw(created).await {
        tracing::error!(request_id = %current_request_id(), error = %e, records = created.len(), "could not withdraw the records of an unanswered tokenization");
    }
}
