//! Single-or-batch requests: `value`/`values`, `token`/`tokens`.
//!
//! A batch answers 200 with `{"results": [...]}` in input order, each
//! result either the single answer or `{"problem": {...}}`; items are
//! independent. Only when every item failed on a dependency does the whole
//! batch answer 503, so a retry is signalled the usual way.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{Problem, ProblemKind};

/// The items of a request.
pub struct Items {
    pub values: Vec<String>,
    pub batch: bool,
}

impl Items {
    /// Exactly one of `one` (named `one_name`) and `many` must be given;
    /// `many` holds 1 to `limit` items.
    pub fn new(
        one: Option<String>,
        many: Option<Vec<String>>,
        one_name: &str,
        many_name: &str,
        limit: usize,
    ) -> Result<Items, Problem> {
        match (one, many) {
            (Some(v), None) => Ok(Items {
                values: vec![v],
                batch: false,
            }),
            (None, Some(vs)) if vs.is_empty() => Err(Problem::new(
                ProblemKind::InvalidRequest,
                format!("{many_name} must hold at least one item"),
            )),
            (None, Some(vs)) if vs.len() > limit => Err(Problem::new(
                ProblemKind::BatchTooLarge,
                format!("{many_name} holds at most {limit} items (limits.batch)"),
            )),
            (None, Some(vs)) => Ok(Items {
                values: vs,
                batch: true,
            }),
            _ => Err(Problem::new(
                ProblemKind::InvalidRequest,
                format!("send exactly one of {one_name} or {many_name}"),
            )),
        }
    }
}

/// A finished answer, kept as bytes so it can be stored for idempotent
/// replay.
pub enum Outcome {
    Json(StatusCode, Vec<u8>),
    Problem(Problem),
}

impl Outcome {
    /// Builds the answer from per-item results.
    pub fn collect<T: Serialize>(
        batch: bool,
        results: Vec<Result<(StatusCode, T), Problem>>,
    ) -> Outcome {
        if !batch {
            return match results.into_iter().next() {
                Some(Ok((status, body))) => {
                    Outcome::Json(status, serde_json::to_vec(&body).expect("serializable"))
                }
                Some(Err(p)) => Outcome::Problem(p),
                None => Outcome::Problem(Problem::bare(ProblemKind::Internal)),
            };
        }
        let all_unavailable = results
            .iter()
            .all(|r| matches!(r, Err(p) if p.kind == ProblemKind::Unavailable));
        if all_unavailable {
            return Outcome::Problem(Problem::bare(ProblemKind::Unavailable).retry_after(5));
        }
        let results: Vec<serde_json::Value> = results
            .into_iter()
            .map(|r| match r {
                Ok((_, body)) => serde_json::to_value(&body).expect("serializable"),
                Err(p) => serde_json::json!({ "problem": p.body(false) }),
            })
            .collect();
        let body = serde_json::json!({ "results": results });
        Outcome::Json(
            StatusCode::OK,
            serde_json::to_vec(&body).expect("serializable"),
        )
    }
}

/// A JSON answer from stored bytes.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        match self {
            Outcome::Json(status, body) => json_response(status, body),
            Outcome::Problem(p) => p.into_response(),
        }
    }
}
