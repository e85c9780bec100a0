//! `POST /detokenize`: support tools read a card back, in full or masked,
//! as their role allows; every attempt is audited before the answer leaves.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::audit::AuditEvent;
use crate::auth::policy::Permission;
use crate::auth::rate::Refusal;
use crate::store::TokenRecord;
use crate::telemetry::DetokenizeLabels;
use crate::vault::token::{Token, TokenError};
use crate::vault::{Vault, VaultError};

use super::AppState;
use super::batch::{Items, Outcome};
use super::error::{Problem, ProblemKind, current_request_id};
use super::extract::{Caller, JsonBody};

/// Longest `reason`, in characters.
const MAX_REASON: usize = 512;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeBody {
    token: Option<String>,
    tokens: Option<Vec<String>>,
    reason: Option<String>,
}

#[derive(Serialize)]
pub struct DetokenizeAnswer {
    token: String,
    /// The revealed value itself, not a copy: wiped when the answer is
    /// dropped, once serialized.
    #[serde(serialize_with = "revealed")]
    value: Zeroizing<String>,
    masked: bool,
    classification: String,
}

fn revealed<S: serde::Serializer>(value: &Zeroizing<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value)
}

pub async fn handle(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<JsonBody<DetokenizeBody>, Problem>,
) -> Result<Response, Problem> {
    let access = state.access();
    let policy = &access.policy;
    // A caller with no right to detokenize is refused (and audited) before
    // its body is judged: a malformed request is an attempt too, even one
    // that is not JSON at all. Each token it names, up to a batch's worth,
    // gets its event; a body that names none, one event.
    if policy
        .grant(&caller, Permission::Detokenize, None)
        .is_none()
        && policy
            .grant(&caller, Permission::DetokenizeMasked, None)
            .is_none()
    {
        // Counted under a principal only when a role names it: any AWS
        // identity can log in, and a series per stranger would grow the
        // metrics without bound.
        let counted = match policy.role_of(&caller) {
            Some(_) => caller.as_str(),
            None => "unmatched",
        };
        state.count_detokenize(counted, "deny");
        let named = body.into_iter().flat_map(|b| {
            b.value
                .token
                .into_iter()
                .chain(b.value.tokens.into_iter().flatten())
        });
        let mut each: Vec<_> = named
            .take(state.limits.batch)
            .map(|t| (Token::parse(&t).ok().map(Token::into_string), None))
            .collect();
        if each.is_empty() {
            each.push((None, None));
        }
        return Err(state.deny(&caller, "detokenize", each, "detokenize").await);
    }
    let JsonBody { value: body, .. } = body?;
    let items = Items::new(
        body.token,
        body.tokens,
        "token",
        "tokens",
        state.limits.batch,
    )?;
    let reason = body.reason.filter(|r| !r.trim().is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON)
    {
        return Err(Problem::new(
            ProblemKind::InvalidRequest,
            format!("reason holds at most {MAX_REASON} characters"),
        ));
    }
    // The reason is free text that lands in the audit log: redact it first.
    let audited_reason = reason.as_ref().map(|r| state.redactor.redact_text(r));
    let each = || {
        items
            .values
            .iter()
            .map(|t| (Token::parse(t).ok().map(Token::into_string), None))
            .collect()
    };
    let per_minute = policy.detokenize_limit(&caller);
    if per_minute > 0
        && let Err(refusal) =
            state
                .limiter
                .take(caller.as_str(), per_minute, items.values.len() as u32)
    {
        state.count_detokenize(caller.as_str(), "deny");
        let problem = match refusal {
            Refusal::RetryAfter(wait) => Problem::new(
                ProblemKind::RateLimited,
                format!("at most {per_minute} detokenizations a minute for this caller"),
            )
            .retry_after(wait),
            Refusal::TooLarge => Problem::new(
                ProblemKind::BatchTooLarge,
                format!(
                    "this caller may detokenize at most {per_minute} tokens a minute: split the batch"
                ),
            ),
        };
        return Err(state
            .refuse(
                &caller,
                "detokenize",
                each(),
                "rate_limited",
                "rate limited",
                problem,
            )
            .await);
    }

    let mut unfinished = Unfinished {
        state: &state,
        caller: &caller,
        tokens: &items.values,
        request_id: current_request_id(),
        armed: true,
    };
    // Each token parsed once (its check characters are a SHA-256), then one
    // store round trip for the whole batch.
    let parsed: Vec<Result<Token, TokenError>> =
        items.values.iter().map(|t| Token::parse(t)).collect();
    let tokens: Vec<&Token> = parsed.iter().filter_map(|t| t.as_ref().ok()).collect();
    let records = state.vault.records(&tokens).await;
    let mut results = Vec::with_capacity(items.values.len());
    let mut events = Vec::with_capacity(items.values.len());
    for token in parsed {
        let mut event = AuditEvent {
            request_id: current_request_id(),
            principal: caller.to_string(),
            session: caller.session().map(str::to_owned),
            role: policy.role_of(&caller).map(|r| r.name.clone()),
            action: "detokenize",
            decision: "deny",
            ..Default::default()
        };
        let result = detokenize_one(
            &state,
            &caller,
            token,
            &records,
            reason.is_some(),
            &mut event,
        )
        .await;
        if event.decision == "allow" {
            event.reason = audited_reason.clone();
        }
        state.count_detokenize(
            caller.as_str(),
            if event.decision == "allow" {
                "allow"
            } else {
                "deny"
            },
        );
        events.push(event);
        results.push(result.map(|a| (StatusCode::OK, a)));
    }
    // The events are with the writer from the first poll of `record`, in
    // this same poll: nothing can cut the request off in between.
    unfinished.armed = false;
    if let Err(e) = state.audit.record(events).await {
        // Fail closed: no value leaves without its audit event on disk.
        return Err(Problem::unavailable(&e));
    }
    Ok(Outcome::collect(items.batch, results).into_response())
}

/// An attempt cut off before its own events were handed to the audit log
/// (its deadline passed while the store or the key provider was slow, its
/// client left): when the request's future is dropped, one `error` event
/// per token named is handed over instead, so every attempt is audited. A
/// value opened was never sent.
struct Unfinished<'a> {
    state: &'a AppState,
    caller: &'a crate::auth::Principal,
    tokens: &'a [String],
    request_id: String,
    armed: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let role = (self.state.access().policy)
            .role_of(self.caller)
            .map(|r| r.name.clone());
        let events = self
            .tokens
            .iter()
            .map(|t| AuditEvent {
                request_id: self.request_id.clone(),
                principal: self.caller.to_string(),
                session: self.caller.session().map(str::to_owned),
                role: role.clone(),
                action: "detokenize",
                token: Token::parse(t).ok().map(Token::into_string),
                decision: "error",
                reason: Some("the request ended before its answer".into()),
                ..Default::default()
            })
            .collect();
        self.state.audit.record_detached(events);
    }
}

/// One token, as parsed: look up, decide full or masked, reveal. Fills in
/// the audit event as it learns.
async fn detokenize_one(
    state: &AppState,
    caller: &crate::auth::Principal,
    token: Result<Token, TokenError>,
    records: &Result<HashMap<String, TokenRecord>, VaultError>,
    has_reason: bool,
    event: &mut AuditEvent,
) -> Result<DetokenizeAnswer, Problem> {
    let token = token.map_err(|e| {
        event.reason = Some("invalid token".into());
        Problem::new(ProblemKind::InvalidToken, e.to_string())
    })?;
    event.token = Some(token.as_str().to_owned());
    let found = match records {
        Ok(m) => m.get(token.as_str()).cloned().ok_or(VaultError::NotFound),
        Err(VaultError::Unavailable(m)) => Err(VaultError::Unavailable(m.clone())),
        Err(e) => Err(VaultError::Internal(e.to_string())),
    };
    let record = found.map_err(|e| {
        event.reason = Some(
            match e {
                VaultError::NotFound => "not found",
                VaultError::Unavailable(_) => "unavailable",
                _ => "error",
            }
            .into(),
        );
        event.decision = "error";
        Problem::from(e)
    })?;
    event.classification = Some(record.classification.clone());
    let access = state.access();
    let class = Some(record.classification.as_str());
    if let Some(role) = access.policy.grant(caller, Permission::Detokenize, class) {
        event.role = Some(role.name.clone());
        if role.require_reason && !has_reason {
            event.reason = Some("reason required".into());
            return Err(Problem::new(
                ProblemKind::ReasonRequired,
                format!("role {} requires a reason for the full value", role.name),
            ));
        }
        let value = state.vault.reveal(&record).await.map_err(|e| {
            event.decision = "error";
            Problem::from(e)
        })?;
        event.decision = "allow";
        return Ok(DetokenizeAnswer {
            token: record.token.clone(),
            value,
            masked: false,
            classification: record.classification.clone(),
        });
    }
    if let Some(role) = access
        .policy
        .grant(caller, Permission::DetokenizeMasked, class)
    {
        event.role = Some(role.name.clone());
        event.decision = "allow";
        event.action = "detokenize:masked";
        return Ok(DetokenizeAnswer {
            token: record.token.clone(),
            value: Zeroizing::new(Vault::masked(&record)),
            masked: true,
            classification: record.classification.clone(),
        });
    }
    event.reason = Some(format!("no role may detokenize {}", record.classification));
    Err(Problem::new(
        ProblemKind::Forbidden,
        format!("{caller} may not detokenize {}", record.classification),
    ))
}

impl AppState {
    fn count_detokenize(&self, principal: &str, decision: &'static str) {
        self.metrics
            .detokenize
            .get_or_create(&DetokenizeLabels {
                principal: principal.to_owned(),
                decision,
            })
            .inc();
    }
}
