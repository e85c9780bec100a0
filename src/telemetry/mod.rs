//! Logs and metrics.
//!
//! # Layout
//!
//! - `log`: JSON log lines on stderr (stdout belongs to `tokenvault
//!   redact`'s output).
//! - `gather`: the logging thread that writes them, a batch at a time.
//! - `writeback`: when stderr is a file, has the log reach the disk as it
//!   is written, not in bursts that hold up the vault's fsyncs.
//! - this file: Prometheus metrics, whose labels are routes, status codes,
//!   principals, operation names and detector types: never a value; and the
//!   per-request measure of time spent waiting on dependencies.

pub mod gather;
mod log;
pub mod writeback;

pub use log::{init_logging, init_stderr_logging, install_panic_hook};

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KmsLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabels {
    pub dependency: &'static str,
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyOpLabels {
    pub dependency: &'static str,
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetokenizeLabels {
    pub principal: String,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Every metric the service exports, registered once.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    /// Request time minus the time spent waiting on DynamoDB and the key
    /// provider: what the service itself costs.
    pub http_own: Family<RouteLabels, Histogram>,
    pub kms_requests: Family<KmsLabels, Counter>,
    /// Calls to DynamoDB and the key provider, by API operation name.
    pub dependency_requests: Family<DependencyLabels, Counter>,
    pub dependency_duration: Family<DependencyOpLabels, Histogram>,
    pub datakey_cache: Family<ResultLabels, Counter>,
    pub detokenize: Family<DetokenizeLabels, Counter>,
    pub denials: Family<ReasonLabels, Counter>,
    pub redact_bytes: Counter,
    pub redact_findings: Family<TypeLabels, Counter>,
    /// Audit events committed with their records (the SQLite outbox) and
    /// not yet copied into the audit log: set at each scrape. It grows
    /// when the audit log cannot be written, the alarm to raise before
    /// the outbox reaches its bound and tokenizations start failing.
    pub audit_outbox_backlog: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("tokenvault");
        let http_requests = Family::<HttpLabels, Counter>::default();
        r.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
        });
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_duration.clone(),
        );
        let http_own = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
                1.0,
            ])
        });
        r.register(
            "http_request_own_duration_seconds",
            "HTTP request latency minus the time spent waiting on DynamoDB and the key provider",
            http_own.clone(),
        );
        let dependency_requests = Family::<DependencyLabels, Counter>::default();
        r.register(
            "dependency_requests",
            "Calls to DynamoDB and the key provider by AWS operation name and outcome",
            dependency_requests.clone(),
        );
        let dependency_duration =
            Family::<DependencyOpLabels, Histogram>::new_with_constructor(|| {
                Histogram::new([
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 8.0,
                ])
            });
        r.register(
            "dependency_request_duration_seconds",
            "Latency of calls to DynamoDB and the key provider",
            dependency_duration.clone(),
        );
        let kms_requests = Family::<KmsLabels, Counter>::default();
        r.register(
            "kms_requests",
            "Key provider calls by AWS operation name and outcome",
            kms_requests.clone(),
        );
        let datakey_cache = Family::<ResultLabels, Counter>::default();
        r.register(
            "datakey_cache",
            "Data-key cache lookups by result",
            datakey_cache.clone(),
        );
        let detokenize = Family::<DetokenizeLabels, Counter>::default();
        r.register(
            "detokenize",
            "Detokenize decisions per principal (unmatched: callers no role names)",
            detokenize.clone(),
        );
        let denials = Family::<ReasonLabels, Counter>::default();
        r.register("denials", "Requests refused, by reason", denials.clone());
        let redact_bytes = Counter::default();
        r.register(
            "redact_bytes",
            "Bytes scanned by the redactor",
            redact_bytes.clone(),
        );
        let redact_findings = Family::<TypeLabels, Counter>::default();
        r.register(
            "redact_findings",
            "Redactor findings by detector type",
            redact_findings.clone(),
        );
        let audit_outbox_backlog = Gauge::default();
        r.register(
            "audit_outbox_backlog",
            "Audit events committed with their records but not yet copied into the audit log",
            audit_outbox_backlog.clone(),
        );
        Self {
            registry: Mutex::new(r),
            http_requests,
            http_duration,
            http_own,
            kms_requests,
            dependency_requests,
            dependency_duration,
            datakey_cache,
            detokenize,
            denials,
            redact_bytes,
            redact_findings,
            audit_outbox_backlog,
        }
    }

    /// Counts one key provider call (`provider`: `kms` or `local`) and
    /// its wait.
    pub fn kms(&self, provider: &'static str, operation: &'static str, ok: bool, took: Duration) {
        self.kms_requests
            .get_or_create(&KmsLabels {
                operation,
                outcome: outcome(ok),
            })
            .inc();
        self.dependency(provider, operation, ok, took);
    }

    /// Counts one call to a dependency, records its latency, and adds it to
    /// the current request's waiting time.
    pub fn dependency(
        &self,
        dependency: &'static str,
        operation: &'static str,
        ok: bool,
        took: Duration,
    ) {
        self.dependency_requests
            .get_or_create(&DependencyLabels {
                dependency,
                operation,
                outcome: outcome(ok),
            })
            .inc();
        self.dependency_duration
            .get_or_create(&DependencyOpLabels {
                dependency,
                operation,
            })
            .observe(took.as_secs_f64());
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let _ = WAITED.try_with(|w| w.fetch_add(nanos, Ordering::Relaxed));
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }
}

fn outcome(ok: bool) -> &'static str {
    if ok { "ok" } else { "error" }
}

tokio::task_local! {
    /// Nanoseconds the current request has waited on dependencies. Futures
    /// a handler runs concurrently (a batch's items) share the task, so
    /// overlapping waits add up and can exceed the request's own time.
    /// Shared, so work the request hands to a task or thread of its own
    /// counts too ([`waits`], [`counting_waits`]).
    static WAITED: Arc<AtomicU64>;
}

/// Runs `f` (a request) and returns how long it waited on dependencies.
/// A combinator, not an `async fn`: an async wrapper keeps `f` twice (as
/// its argument and as the future it awaits), and a request's future is
/// copied whole each time it moves (4.4 KB with two such wrappers).
pub fn measure_waits<F: Future>(f: F) -> impl Future<Output = (F::Output, Duration)> {
    use futures_util::FutureExt;
    WAITED.scope(
        Arc::new(AtomicU64::new(0)),
        f.map(|out| {
            let waited = WAITED.with(|w| w.load(Ordering::Relaxed));
            (out, Duration::from_nanos(waited))
        }),
    )
}

/// The current request's wait counter, to hand with work it gives to a
/// task or thread of its own (a tokenization's task, a redaction's
/// blocking thread): `None` outside a request.
pub fn waits() -> Option<Arc<AtomicU64>> {
    WAITED.try_with(Arc::clone).ok()
}

/// Runs `f` with its dependency waits counted to `waits` (see [`waits`]).
pub fn counting_waits<F: Future>(
    waits: Option<Arc<AtomicU64>>,
    f: F,
) -> impl Future<Output = F::Output> {
    use futures_util::future::Either;
    match waits {
        Some(w) => Either::Left(WAITED.scope(w, f)),
        None => Either::Right(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dependency calls made by work a request hands to a task of its own
    /// (a tokenization's) or a blocking thread (a redaction's) count as
    /// the request's waits, as its own calls do.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waits_handed_to_a_task_or_a_thread_count_for_the_request() {
        let m = Arc::new(Metrics::new());
        let call =
            |m: &Metrics, ms| m.dependency("dynamodb", "PutItem", true, Duration::from_millis(ms));
        let (mine, waited) = measure_waits(async move {
            call(&m, 1);
            let (m2, m3) = (m.clone(), m.clone());
            let w = waits();
            tokio::spawn(counting_waits(w.clone(), async move { call(&m2, 10) }))
                .await
                .unwrap();
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                handle.block_on(counting_waits(w, async move { call(&m3, 100) }))
            })
            .await
            .unwrap();
            // Outside the request's counter: not counted.
            tokio::spawn(async move { call(&m, 1000) }).await.unwrap();
        })
        .await;
        let _: () = mine;
        assert_eq!(waited, Duration::from_millis(111));
        assert!(waits().is_none(), "no counter outside a request");
    }
}
