//! `Idempotency-Key` on `/tokenize`: a retry with the same key and body
//! within a day gets the first answer, not a second token. Checkout
//! backends retry.
//!
//! A key is claimed before the work, holding a lease; the answer is kept
//! under it once given, or the key freed when there is none to keep (a
//! 503, a request gone before its answer), so the retry runs afresh.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use crate::auth::Principal;
use crate::clock::Clock;
use crate::store::{IdempotencyClaim, TokenStore};

use super::AppState;
use super::batch::json_response;
use super::error::{Problem, ProblemKind, current_request_id};

/// How long an answered key replays its answer.
const ANSWER_SECONDS: i64 = 24 * 3600;
/// How long a claimed key blocks a concurrent retry if its request dies;
/// no shorter than the longest request deadline `limits.request_timeout_ms`
/// allows (60 s).
const LEASE_SECONDS: i64 = 60;

/// A request's Idempotency-Key and body, as keyed digests: the body holds
/// a card, and a bare hash of it could be brute-forced.
pub struct Keyed {
    id: String,
    hash: String,
}

impl Keyed {
    /// The request's key, if it sent one: 1 to 255 visible ASCII
    /// characters, scoped to its caller.
    pub fn from_headers(
        state: &AppState,
        caller: &Principal,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Option<Keyed>, Problem> {
        let Some(v) = headers.get("idempotency-key") else {
            return Ok(None);
        };
        let key = v
            .to_str()
            .ok()
            .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                Problem::new(
                    ProblemKind::InvalidRequest,
                    "Idempotency-Key holds 1 to 255 visible ASCII characters",
                )
            })?;
        let fp = state.vault.fingerprints();
        Ok(Some(Keyed {
            id: crate::crypto::to_hex(&fp.mac(&[
                b"idempotency-key",
                caller.as_str().as_bytes(),
                key.as_bytes(),
            ])),
            hash: crate::crypto::to_hex(&fp.mac(&[b"idempotency-body", body])),
        }))
    }
}

/// The tokens a replayed answer hands out again, on the response's
/// extensions (never sent): the request that gets them is audited like
/// the first, so who was given which token stays in the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed(pub Vec<String>);

impl Replayed {
    /// The tokens of a kept answer: a single tokenization's `token`, or
    /// each of a batch's `results` that has one.
    fn of(response: &str) -> Replayed {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(response) else {
            return Replayed::default();
        };
        let token = |item: &serde_json::Value| item.get("token")?.as_str().map(str::to_owned);
        let tokens = match v.get("results").and_then(|r| r.as_array()) {
            Some(results) => results.iter().filter_map(token).collect(),
            None => token(&v).into_iter().collect(),
        };
        Replayed(tokens)
    }
}

/// A claimed Idempotency-Key, freed if it is dropped unsettled (the task
/// panicked): a key must not stay "in progress" until the lease ends (a
/// retry meets 409 till then). Freeing only deletes a claim this owner
/// still holds in progress, so one already settled is left alone.
pub struct Claim {
    store: Arc<dyn TokenStore>,
    clock: Arc<dyn Clock>,
    id: String,
    owner: String,
    armed: bool,
}

impl Claim {
    /// Claims the key for this request, or answers the request from what
    /// the key holds (`Err`): its recorded answer replayed, 409 while
    /// another request holds it, 422 when it came with another body.
    pub async fn take(state: &AppState, keyed: Keyed) -> Result<Claim, Result<Response, Problem>> {
        let now = state.clock.unix();
        let mut claim = Claim {
            store: state.vault.store().clone(),
            clock: state.clock.clone(),
            id: keyed.id,
            owner: uuid::Uuid::new_v4().to_string(),
            // A failed claim may still have been written (a timeout on
            // DynamoDB): freed too.
            armed: true,
        };
        let held = claim
            .store
            .claim_idempotency(
                &claim.id,
                &keyed.hash,
                &claim.owner,
                now,
                now + LEASE_SECONDS,
            )
            .await
            .map_err(|e| Err(Problem::from(crate::vault::VaultError::from(e))))?;
        if !matches!(held, IdempotencyClaim::Claimed) {
            claim.armed = false;
        }
        match held {
            IdempotencyClaim::Claimed => Ok(claim),
            IdempotencyClaim::Done {
                request_hash,
                status,
                response,
            } if request_hash == keyed.hash => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                let tokens = Replayed::of(&response);
                let mut res = json_response(status, response.into_bytes());
                res.headers_mut().insert(
                    "idempotent-replayed",
                    axum::http::HeaderValue::from_static("true"),
                );
                res.extensions_mut().insert(tokens);
                Err(Ok(res))
            }
            IdempotencyClaim::InProgress { request_hash } if request_hash == keyed.hash => {
                Err(Err(Problem::new(
                    ProblemKind::IdempotencyInProgress,
                    "a request with this Idempotency-Key is still running; retry shortly",
                )
                .retry_after(1)))
            }
            _ => Err(Err(Problem::new(
                ProblemKind::IdempotencyKeyReused,
                "this Idempotency-Key was used with a different body",
            ))),
        }
    }

    /// Keeps `response` as the key's answer for [`ANSWER_SECONDS`]. If it
    /// could not be written the claim comes back, for the caller to free
    /// once it is done: held, the key would answer 409 to a retry until
    /// its lease ends, and then run it afresh all the same. (Were the
    /// write to have landed after all, freeing it changes nothing: only
    /// a claim with no answer is freed.)
    pub async fn complete(mut self, status: u16, response: &str) -> Result<(), Claim> {
        let until = self.clock.unix() + ANSWER_SECONDS;
        match self
            .store
            .complete_idempotency(&self.id, &self.owner, status, response, until)
            .await
        {
            Ok(()) => {
                self.armed = false;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(request_id = %current_request_id(), error = %e, "could not record the idempotent answer; the key will be freed");
                Err(self)
            }
        }
    }

    /// Frees the key for a retry.
    pub async fn release(mut self) {
        // Disarmed only once done: cancelled part-way (the runtime
        // stopping), the drop frees it instead.
        if let Err(e) = self.store.release_idempotency(&self.id, &self.owner).await {
            tracing::warn!(request_id = %current_request_id(), error = %e, "could not free an Idempotency-Key; it stays claimed until its lease ends");
        }
        self.armed = false;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let id = std::mem::take(&mut self.id);
        let owner = std::mem::take(&mut self.owner);
        runtime.spawn(async move {
            if let Err(e) = store.release_idempotency(&id, &owner).await {
                tracing::warn!(error = %e, "could not free an Idempotency-Key; it stays claimed until its lease ends");
            }
        });
    }
}
