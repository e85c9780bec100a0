//! `GET /auth/iam` (what to sign) and `POST /auth/iam` (log in with a
//! signed `sts:GetCallerIdentity`, get a session token). Every login,
//! allowed or refused, is audited; a refusal tells the caller only that it
//! was refused.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::audit::AuditEvent;
use crate::auth::Principal;
use crate::auth::iam::{LoginError, LoginRequest};

use super::AppState;
use super::error::{Problem, ProblemKind, current_request_id};
use super::extract::JsonBody;

fn not_configured() -> Problem {
    Problem::new(
        ProblemKind::NotFound,
        "IAM login is not configured on this server ([auth.iam])",
    )
}

/// What a client signs: the server id, STS endpoint and region.
pub async fn describe(State(state): State<AppState>) -> Result<Response, Problem> {
    let iam = state.iam.as_ref().ok_or_else(not_configured)?;
    let s = iam.settings();
    Ok(Json(json!({
        "server_id": s.server_id,
        "sts_endpoint": s.sts_endpoint,
        "sts_region": s.sts_region,
    }))
    .into_response())
}

/// Checks the signed request, asks STS who signed it, answers a session.
pub async fn login(
    State(state): State<AppState>,
    body: JsonBody<LoginRequest>,
) -> Result<Response, Problem> {
    let iam = state.iam.as_ref().ok_or_else(not_configured)?;
    let now = state.clock.unix();
    let result = iam.login(&body.value, now).await;
    let (principal, decision, reason) = match &result {
        Ok(p) => (p.clone(), "allow", None),
        Err(LoginError::Refused(why)) => ("anonymous".to_owned(), "deny", Some(*why)),
        Err(LoginError::Unavailable(_)) => {
            ("anonymous".to_owned(), "error", Some("STS unavailable"))
        }
    };
    let event = AuditEvent {
        request_id: current_request_id(),
        principal: principal.clone(),
        action: "login",
        decision,
        reason: reason.map(str::to_owned),
        ..Default::default()
    };
    if let Err(e) = state.audit.record(vec![event]).await {
        return Err(Problem::unavailable(&e));
    }
    match result {
        Ok(p) => {
            let expires_at = now + iam.settings().session_ttl_seconds as i64;
            let token = state.sessions.issue(&Principal::new(p.clone()), expires_at);
            let expires = time::OffsetDateTime::from_unix_timestamp(expires_at)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
            Ok((
                StatusCode::OK,
                Json(json!({
                    "session_token": token,
                    "principal": p.strip_prefix("iam:").unwrap_or(&p),
                    "expires_at": expires,
                })),
            )
                .into_response())
        }
        Err(LoginError::Refused(_)) => {
            state
                .metrics
                .denials
                .get_or_create(&crate::telemetry::ReasonLabels {
                    reason: "login refused",
                })
                .inc();
            Err(Problem::new(
                ProblemKind::Unauthenticated,
                "the IAM login was refused",
            ))
        }
        Err(LoginError::Unavailable(e)) => Err(Problem::unavailable(&e)),
    }
}
