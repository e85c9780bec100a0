//! `POST /redact`: log shippers send logs through before storing them.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::auth::policy::Permission;
use crate::redact::{Findings, Format, Options};
use crate::telemetry::TypeLabels;

use super::AppState;
use super::error::{Problem, ProblemKind};
use super::extract::Caller;

/// Per-request options.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactQuery {
    detectors: Option<String>,
    actions: Option<String>,
}

pub async fn handle(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<Query<RedactQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    if state
        .access()
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
            "query parameters are detectors and actions",
        )
    })?;
    let opts = Options::default()
        .with_detectors(q.detectors.as_deref())
        .and_then(|o| o.with_actions(q.actions.as_deref()))
        .map_err(|e| Problem::new(ProblemKind::InvalidRequest, e.0))?;
    let format = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Format::from_content_type)
        .ok_or_else(|| {
            Problem::new(
                ProblemKind::UnsupportedMediaType,
                "send text/plain, application/json or application/x-ndjson",
            )
        })?;
    let body = body.map_err(|r| match r.status().as_u16() {
        413 => Problem::new(
            ProblemKind::PayloadTooLarge,
            "the body is over limits.body_bytes",
        ),
        _ => Problem::new(ProblemKind::InvalidRequest, "the body could not be read"),
    })?;
    let redactor = state.redactor.clone();
    let len = body.len();
    let (out, findings) = tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(len + len / 8);
        let mut findings = Findings::default();
        redactor
            .redact_body(format, &body, &opts, &mut out, &mut findings)
            .map(|()| (out, findings))
    })
    .await
    .map_err(|e| Problem::internal(&e))?
    .map_err(|e| Problem::new(ProblemKind::InvalidRequest, e.to_string()))?;
    state.metrics.redact_bytes.inc_by(len as u64);
    for (kind, n) in findings.iter() {
        state
            .metrics
            .redact_findings
            .get_or_create(&TypeLabels { r#type: kind })
            .inc_by(n);
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
