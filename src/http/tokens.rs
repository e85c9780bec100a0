//! `GET /tokens/{token}` (metadata) and `DELETE /tokens/{token}` (admin).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::audit::AuditEvent;
use crate::auth::policy::{Permission, Role};
use crate::vault::token::Token;

use super::AppState;
use super::error::{Problem, ProblemKind, current_request_id};
use super::extract::Caller;
use super::tokenize::rfc3339;

#[derive(Serialize)]
struct MetadataAnswer {
    token: String,
    classification: String,
    brand: Option<String>,
    last4: Option<String>,
    first6: Option<String>,
    created_at: Option<String>,
    expires_at: Option<String>,
    metadata: serde_json::Value,
}

fn parse(raw: &str) -> Result<Token, Problem> {
    Token::parse(raw).map_err(|e| Problem::new(ProblemKind::InvalidToken, e.to_string()))
}

pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(raw): Path<String>,
) -> Result<Response, Problem> {
    let token = parse(&raw)?;
    let access = state.access();
    if access
        .policy
        .grant(&caller, Permission::Metadata, None)
        .is_none()
    {
        let item = vec![(Some(token.into_string()), None)];
        return Err(state
            .deny(&caller, "metadata", item, "read token metadata")
            .await);
    }
    let r = state.vault.record(&token).await?;
    if access
        .policy
        .grant(&caller, Permission::Metadata, Some(&r.classification))
        .is_none()
    {
        let item = vec![(Some(r.token), Some(r.classification))];
        return Err(state
            .deny(&caller, "metadata", item, "read token metadata")
            .await);
    }
    let answer = MetadataAnswer {
        metadata: serde_json::from_str(&r.metadata).unwrap_or_default(),
        created_at: rfc3339(r.created_at),
        expires_at: r.expires_at.and_then(rfc3339),
        token: r.token,
        classification: r.classification,
        brand: r.brand,
        last4: r.last4,
        first6: r.first6,
    };
    Ok(axum::Json(answer).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(raw): Path<String>,
) -> Result<Response, Problem> {
    let token = parse(&raw)?;
    let access = state.access();
    let Some(admin) = access.policy.grant(&caller, Permission::Admin, None) else {
        let item = vec![(Some(token.into_string()), None)];
        return Err(state.deny(&caller, "delete", item, "delete tokens").await);
    };
    // Each event names the role that let the request go as far as it did.
    let audit = |role: &Role, decision, classification: Option<&str>, reason: Option<String>| {
        let event = AuditEvent {
            request_id: current_request_id(),
            principal: caller.to_string(),
            session: caller.session().map(str::to_owned),
            role: Some(role.name.clone()),
            action: "delete",
            token: Some(token.as_str().to_owned()),
            classification: classification.map(str::to_owned),
            decision,
            reason,
        };
        let log = &state.audit;
        async move {
            log.record(vec![event])
                .await
                .map_err(|e| Problem::unavailable(&e))
        }
    };
    let record = match state.vault.record(&token).await {
        Ok(r) => r,
        Err(e) => {
            audit(admin, "error", None, Some(e.to_string())).await?;
            return Err(e.into());
        }
    };
    // The record's classification decides, as for metadata: an admin role
    // limited to classifications deletes only tokens of those.
    let class = record.classification.as_str();
    let Some(role) = access.policy.grant(&caller, Permission::Admin, Some(class)) else {
        let item = vec![(Some(token.as_str().to_owned()), Some(class.to_owned()))];
        return Err(state.deny(&caller, "delete", item, "delete tokens").await);
    };
    // Audited before it happens: a delete that then fails leaves an allow
    // and an error in the log, never a record gone with no event.
    audit(role, "allow", Some(class), None).await?;
    if let Err(e) = state.vault.delete(&token).await {
        audit(role, "error", Some(class), Some(e.to_string())).await?;
        return Err(e.into());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
