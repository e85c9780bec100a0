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

/// The store and the key provider answer.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    state
        .vault
        .store()
        .ping()
        .await
        .map_err(|e| Problem::unavailable(&e))?;
    state
        .keyring
        .provider()
        .check()
        .await
        .map_err(|e| Problem::unavailable(&e))?;
    Ok(Json(json!({"status": "ready"})))
}
