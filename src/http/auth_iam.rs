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

fn anonymous() -> Principal {
    Principal::new("anonymous".into())
}

/// What a session name is recorded as when it could hold a card number.
/// STS allows no parentheses in one, so it cannot be a real name.
pub const WITHHELD_SESSION: &str = "(withheld)";

/// `p` with its session name withheld if it could hold a card number:
/// whoever assumed the role chose the name, and it is written into every
/// audit event of the session. Letters end a run of digits; STS's other
/// allowed characters (`_+=,.@-`) may sit between groups, as in
/// `4111-1111-1111-1111`. A run of 13 or more digits with any stretch of
/// 13 to 19 passing the Luhn check is withheld: the rest of the role stays
/// accountable, and an instance's or task's id rarely holds such a run.
fn withhold_card_session(p: Principal) -> Principal {
    let Some(name) = p.session() else { return p };
    let could_hold_card = name
        .split(|c: char| c.is_ascii_alphabetic())
        .map(|piece| {
            piece
                .bytes()
                .filter(u8::is_ascii_digit)
                .collect::<Vec<u8>>()
        })
        .any(|d| (13..=19).any(|len| d.windows(len).any(crate::vault::pan::luhn_valid)));
    if could_hold_card {
        Principal::with_session(p.as_str().to_owned(), Some(WITHHELD_SESSION.into()))
    } else {
        p
    }
}

/// Records a login's event: who, for an allowed one, and why not.
async fn audit_login(
    state: &AppState,
    principal: &Principal,
    decision: &'static str,
    reason: Option<&str>,
) -> Result<(), Problem> {
    let event = AuditEvent {
        request_id: current_request_id(),
        principal: principal.to_string(),
        session: principal.session().map(str::to_owned),
        action: "login",
        decision,
        reason: reason.map(str::to_owned),
        ..Default::default()
    };
    state
        .audit
        .record(vec![event])
        .await
        .map_err(|e| Problem::unavailable(&e))
}

/// Checks the signed request, asks STS who signed it, answers a session.
pub async fn login(
    State(state): State<AppState>,
    body: Result<JsonBody<LoginRequest>, Problem>,
) -> Result<Response, Problem> {
    let iam = state.iam.as_ref().ok_or_else(not_configured)?;
    // A body that is not a login request at all (not JSON, too large, a
    // field missing) is a refused login too, and audited as one.
    let body = match body {
        Ok(body) => body,
        Err(problem) => {
            audit_login(
                &state,
                &anonymous(),
                "deny",
                Some("malformed login request"),
            )
            .await?;
            return Err(problem);
        }
    };
    let now = state.clock.unix();
    let result = iam.login(&body.value, now).await.map(withhold_card_session);
    let (principal, decision, reason) = match &result {
        Ok(p) => (p.clone(), "allow", None),
        Err(LoginError::Refused(why)) => (anonymous(), "deny", Some(*why)),
        Err(LoginError::Unavailable(_)) => (anonymous(), "error", Some("STS unavailable")),
    };
    audit_login(&state, &principal, decision, reason).await?;
    match result {
        Ok(p) => {
            let expires_at = now + iam.settings().session_ttl_seconds as i64;
            let token = state.sessions.issue(&p, expires_at);
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
                    "principal": p.as_str().strip_prefix("iam:").unwrap_or(p.as_str()),
                    "session": p.session(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Names that could hold a card (its digits between letters, whatever
    /// of STS's other characters join them) are withheld; instance ids,
    /// e-mail addresses and short numbers are kept.
    #[test]
    fn session_names_that_could_hold_a_card_are_withheld() {
        let session = |name: &str| {
            let p = Principal::with_session("iam:arn:aws:iam::1:role/r".into(), Some(name.into()));
            withhold_card_session(p).session().map(str::to_owned)
        };
        for kept in [
            "alice@example.com",
            "i-0123456789abcdef0",
            "1234567890123",
            "emp-00412.2026-12-02",
            "a5105105105105b100",
        ] {
            assert_eq!(session(kept).as_deref(), Some(kept));
        }
        for withheld in [
            "5105105105105100",
            "4111-1111-1111-1111",
            "x378282246310005",
            "ops.4111.1111.1111.1111@corp",
            "id=45_5105105105105100_9",
        ] {
            assert_eq!(
                session(withheld).as_deref(),
                Some(WITHHELD_SESSION),
                "{withheld}"
            );
        }
        let user = withhold_card_session(Principal::new("iam:arn:aws:iam::1:user/u".into()));
        assert_eq!(user.session(), None);
    }
}
