//! Single-or-batch requests: `value`/`values`, `token`/`tokens`.
//!
//! A batch answers 200 with `{"results": [...]}` in input order, each
//! result either the single answer or `{"problem": {...}}`; items are
//! independent. Only when every item failed on a dependency does the whole
//! batch answer 503, so a retry is signalled the usual way (`/tokenize`
//! adds its own case: nothing stored and some item met a fault).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{Problem, ProblemBody, ProblemKind};

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
        let results: Vec<BatchItem<T>> = results
            .into_iter()
            .map(|r| match r {
                Ok((_, body)) => BatchItem::Answer(body),
                Err(p) => BatchItem::Problem {
                    problem: p.body(false),
                },
            })
            .collect();
        Outcome::Json(
            StatusCode::OK,
            serde_json::to_vec(&BatchBody { results }).expect("serializable"),
        )
    }
}

/// A batch's answer, `{"results": [...]}`, serialized straight from the
/// items: going through `serde_json::Value` built a map of owned strings
/// per item, about 4,000 instructions a card at 1,000-card batches.
#[derive(Serialize)]
struct BatchBody<T> {
    results: Vec<BatchItem<T>>,
}

/// One item of a batch: its answer, or `{"problem": ...}`.
#[derive(Serialize)]
#[serde(untagged)]
enum BatchItem<T> {
    Answer(T),
    Problem { problem: ProblemBody },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Answer {
        token: &'static str,
        last4: Option<&'static str>,
        created: bool,
    }

    /// The direct form writes the bytes the `serde_json::Value` form did
    /// (its maps keep insertion order), so stored idempotent answers and
    /// clients see no change.
    #[test]
    fn a_batch_answer_is_written_as_through_json_values() {
        let results = || {
            vec![
                Ok((
                    StatusCode::CREATED,
                    Answer {
                        token: "tok_a",
                        last4: Some("1111"),
                        created: true,
                    },
                )),
                Err(Problem::new(ProblemKind::InvalidValue, "not a card")),
                Ok((
                    StatusCode::OK,
                    Answer {
                        token: "tok_b",
                        last4: None,
                        created: false,
                    },
                )),
            ]
        };
        let Outcome::Json(status, got) = Outcome::collect(true, results()) else {
            panic!("a batch with answers is answered");
        };
        assert_eq!(status, StatusCode::OK);
        let values: Vec<serde_json::Value> = results()
            .into_iter()
            .map(|r| match r {
                Ok((_, body)) => serde_json::to_value(&body).unwrap(),
                Err(p) => serde_json::json!({ "problem": p.body(false) }),
            })
            .collect();
        let want = serde_json::to_vec(&serde_json::json!({ "results": values })).unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            String::from_utf8(want).unwrap()
        );
    }
}
