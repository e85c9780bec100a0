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

/// Whether `text` could hold a card number. Letters end a run of digits;
/// any other characters split a run into groups (`4111-1111-…`,
/// `4111.1111.…`). A run could when a stretch of its whole groups, 12 to
/// 19 digits, is what the vault would take as a card (Luhn and a known
/// issuer, as the redactor judges): digits glued to more digits are no
/// card to the redactor either, and a 19-digit clock reading
/// (`aws-go-sdk-<nanoseconds>`) is not withheld for a card-shaped stretch
/// inside it. A stretch that is exactly `except` (the account id, already
/// in every line as part of the principal) is passed over.
fn could_hold_card(text: &str, except: &str) -> bool {
    text.split(|c: char| c.is_ascii_alphabetic()).any(|run| {
        let groups: Vec<&str> = run
            .split(|c: char| !c.is_ascii_digit())
            .filter(|g| !g.is_empty())
            .collect();
        (0..groups.len()).any(|from| {
            let mut digits = String::new();
            groups[from..].iter().any(|g| {
                digits.push_str(g);
                (12..=19).contains(&digits.len())
                    && digits != except
                    && crate::vault::pan::Pan::check_digits(digits.as_bytes()).is_ok()
            })
        })
    })
}

/// A login's principal, held to what the audit log may hold. The caller's
/// own account chooses its role and user names and its session names, and
/// each is written into every event of the session:
/// - a role or user name (or path) that could hold a card number is
///   refused, since policy matches on it;
/// - a session name that could is recorded as [`WITHHELD_SESSION`]: the
///   role stays accountable, and a name made of an instance's or task's id
///   is not refused for a chance run of digits.
///
/// The account id (twelve digits of its own) is not looked at.
fn held_to_the_log(p: Principal) -> Result<Principal, LoginError> {
    // `iam:arn:P:iam::ACCOUNT:role/R` or `…:user/PATH/NAME`.
    let parts: Vec<&str> = p.as_str().splitn(7, ':').collect();
    let [_, _, _, _, _, account, resource] = parts[..] else {
        return Err(LoginError::Refused("unsupported ARN"));
    };
    if could_hold_card(resource, account) {
        return Err(LoginError::Refused(
            "a role or user name that could hold a card number",
        ));
    }
    match p.session() {
        Some(name) if could_hold_card(name, account) => Ok(Principal::with_session(
            p.as_str().to_owned(),
            Some(WITHHELD_SESSION.into()),
        )),
        _ => Ok(p),
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
    let result = iam.login(&body.value, now).await.and_then(held_to_the_log);
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
    /// e-mail addresses, millisecond times and short numbers are kept. A
    /// role or user name that could is refused; the account id is not
    /// looked at.
    #[test]
    fn names_that_could_hold_a_card_are_withheld_or_refused() {
        let role = "iam:arn:aws:iam::500000000009:role/r";
        let session = |name: &str| {
            let p = Principal::with_session(role.into(), Some(name.into()));
            held_to_the_log(p).unwrap().session().map(str::to_owned)
        };
        for kept in [
            "alice@example.com",
            "i-0123456789abcdef0",
            "1234567890123",
            "aws-sdk-java-1764681234567",
            "aws-go-sdk-1764681234567890000",
            "a5105105105105b100",
            "51051051051051001",
            "ci-500000000009",
        ] {
            assert_eq!(session(kept).as_deref(), Some(kept));
        }
        for withheld in [
            "5105105105105100",
            "500000000017",
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
        let user = held_to_the_log(Principal::new("iam:arn:aws:iam::1:user/ops/u".into()));
        assert_eq!(user.unwrap().session(), None);
        // A role named after its account (CDK's, say) is not refused for it.
        let cdk =
            "iam:arn:aws:iam::500000000009:role/cdk-hnb659fds-deploy-role-500000000009-us-east-1";
        assert!(held_to_the_log(Principal::new(cdk.into())).is_ok());
        for refused in [
            "iam:arn:aws:iam::1:role/5105105105105100",
            "iam:arn:aws:iam::1:user/4111-1111/1111-1111/u",
            "iam:arn:aws:iam::500000000009:role/r-500000000017",
        ] {
            assert!(
                held_to_the_log(Principal::new(refused.into())).is_err(),
                "{refused}"
            );
        }
    }
}
