//! `GET /tokens/{token}` (metadata) and `DELETE /tokens/{token}` (admin).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::audit::AuditEvent;
use crate::auth::policy::Permission;
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
    let Some(role) = access.policy.grant(&caller, Permission::Admin, None) else {
        let item = vec![(Some(token.into_string()), None)];
        return Err(state.deny(&caller, "delete", item, "delete tokens").await);
    };
    let result = state.vault.delete(&token).await;
    let event = AuditEvent {
        request_id: current_request_id(),
        principal: caller.to_string(),
        role: Some(role.name.clone()),
        action: "delete",
        token: Some(token.into_string()),
        decision: if result.is_ok() { "allow" } else { "error" },
        reason: result.as_ref().err().map(|e| e.to_string()),
        ..Default::default()
    };
    state
        .audit
        .record(vec![event])
        .await
        .map_err(|e| Problem::unavailable(&e))?;
    result?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
