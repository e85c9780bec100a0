//! The sweeper: a task beside the server that takes expired records and
//! idempotency entries off the embedded store's disk.
//!
//! An expired record already answers as absent; until it is deleted its
//! ciphertext stays in `vault.db`, and card data kept past its retention is
//! what PCI DSS asks a vault not to do. DynamoDB's TTL deletes there on its
//! own, so the store finds nothing to sweep.
//!
//! Each step audits the records it is about to delete (one `expire` event
//! each), then deletes them: as with a caller's delete, no record goes
//! without its event. A step that fails stops the sweep until the next
//! period; what it left is found again then.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::audit::{AuditEvent, AuditLog};
use crate::clock::Clock;
use crate::store::TokenStore;

/// Records (and idempotency entries) one step takes: the reads, the audit
/// group and the deletes stay short, so requests queued behind them on the
/// store's threads wait no longer than behind a batch tokenization.
const STEP: usize = 500;

/// Deletes in flight at once: they share the writer's group commits.
const DELETES_IN_FLIGHT: usize = 64;

/// When the first sweep comes, at the latest, after a start.
const FIRST_SWEEP: Duration = Duration::from_secs(10);

/// The principal the sweeper's events name.
const PRINCIPAL: &str = "system:expiry";

/// What the sweeper needs; `run` it beside the server.
pub struct Sweeper {
    pub store: Arc<dyn TokenStore>,
    pub audit: AuditLog,
    pub clock: Arc<dyn Clock>,
    /// Time between sweeps (`store.purge_interval_ms`).
    pub period: Duration,
}

/// What one sweep deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub records: usize,
    pub idempotency: usize,
}

impl Sweeper {
    /// Sweeps every `period`, until dropped. The first comes
    /// [`FIRST_SWEEP`] after the start (or one period, if shorter): not at
    /// once, since a start has other work, and not a whole period later,
    /// or a service restarted more often than that would never sweep.
    pub async fn run(self) {
        let first = tokio::time::Instant::now() + self.period.min(FIRST_SWEEP);
        let mut tick = tokio::time::interval_at(first, self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.sweep().await {
                Ok(s) if s != Swept::default() => {
                    tracing::info!(
                        records = s.records,
                        idempotency = s.idempotency,
                        "expired entries deleted"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "sweeping expired entries failed; retried next period")
                }
            }
        }
    }

    /// Steps until a step finds less than a full one of each.
    pub async fn sweep(&self) -> Result<Swept, String> {
        let mut swept = Swept::default();
        loop {
            let now = self.clock.unix();
            let records = self.step_records(now).await?;
            let idempotency = self
                .store
                .purge_idempotency(now, STEP)
                .await
                .map_err(|e| e.to_string())?;
            swept.records += records;
            swept.idempotency += idempotency;
            if records < STEP && idempotency < STEP {
                return Ok(swept);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Audits, then deletes, up to a step of expired records; how many it
    /// deleted.
    async fn step_records(&self, now: i64) -> Result<usize, String> {
        let expired = self
            .store
            .expired_tokens(now, STEP)
            .await
            .map_err(|e| e.to_string())?;
        if expired.is_empty() {
            return Ok(0);
        }
        let events = expired
            .iter()
            .map(|e| AuditEvent {
                request_id: "-".into(),
                principal: PRINCIPAL.into(),
                session: None,
                role: None,
                action: "expire",
                token: Some(e.token.clone()),
                classification: Some(e.classification.clone()),
                decision: "allow",
                reason: Some("expired".into()),
            })
            .collect();
        self.audit
            .record(events)
            .await
            .map_err(|e| format!("audit: {e}"))?;
        // Collected first: a closure inside the stream trips the compiler's
        // `Send` inference for the spawned task.
        let deletes: Vec<_> = expired
            .iter()
            .map(|e| self.store.delete_token(&e.token, e.slot))
            .collect();
        let results: Vec<_> = futures_util::stream::iter(deletes)
            .buffer_unordered(DELETES_IN_FLIGHT)
            .collect()
            .await;
        let mut deleted = 0;
        for r in results {
            // false: deleted meanwhile by a caller; not counted, so a step
            // that deletes nothing never loops.
            deleted += usize::from(r.map_err(|e| e.to_string())?);
        }
        Ok(deleted)
    }
}
