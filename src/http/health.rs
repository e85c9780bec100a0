//! Probes for load balancers and orchestrators; no credentials.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::error::Problem;

/// The process serves.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The store answers and the current data key is at hand (cached, or
/// loadable from the store and the key provider).
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    state
        .vault
        .store()
        .ping()
        .await
        .map_err(|e| Problem::unavailable(&e))?;
    state
        .keyring
        .ready()
        .await
        .map_err(|e| Problem::unavailable(&e))?;
    Ok(Json(json!({"status": "ready"})))
}
