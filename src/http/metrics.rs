//! `GET /metrics`: Prometheus (OpenMetrics text).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::auth::api_key::matches_digest;

use super::AppState;
use super::error::{Problem, ProblemKind};

pub async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    if let Some(want) = &state.metrics_bearer {
        let ok = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|k| matches_digest(k.trim(), want));
        if !ok {
            return Err(Problem::new(
                ProblemKind::Unauthenticated,
                "send the metrics bearer configured in metrics.bearer_digest",
            ));
        }
    }
    if let Some(backlog) = state.vault.store().outbox_backlog() {
        let backlog = i64::try_from(backlog).unwrap_or(i64::MAX);
        state.metrics.audit_outbox_backlog.set(backlog);
    }
    let mut res = state.metrics.encode().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(res)
}
