//! Prometheus metrics: what ops watch on a billing service. Recorded with the `metrics`
//! facade; rendered at `GET /metrics`. Every series is registered at zero when the
//! recorder is installed, so that a fresh server lists them all (dashboards and alerts
//! see a series before its first event, and a rate over it counts that event).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::ApiError;

/// The process-wide recorder (installed once, however many apps a process starts).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (an embedding app); then ours
        // renders nothing, which is better than failing to start.
        let _ = metrics::set_global_recorder(recorder);
        register();
        handle
    })
}

/// The outcomes a webhook answer is counted under: the stored ones, and the two ways a
/// delivery is not stored.
const WEBHOOK_OUTCOMES: [&str; 7] =
    ["applied", "duplicate", "ignored", "unmatched", "failed", "unavailable", "refused"];
/// The credit operations of the host app's routes.
const CREDIT_OPERATIONS: [&str; 4] = ["spend", "reserve", "commit", "release"];
/// How a credit operation can end (see [`credits`]).
const CREDIT_RESULTS: [&str; 5] = ["ok", "insufficient", "invalid", "refused", "error"];

/// Describes every metric tally emits and registers each series at zero (`increment(0)`
/// and an empty histogram, so nothing already counted changes).
fn register() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("tally_webhooks_total", "Stripe webhook deliveries answered, by outcome");
    describe_histogram!("tally_webhook_seconds", Unit::Seconds, "Time to answer a Stripe webhook delivery");
    describe_counter!("tally_credit_operations_total", "Host-app credit operations, by operation and result");
    describe_counter!("tally_stripe_errors_total", "Stripe API calls that failed after their retries");
    describe_counter!("tally_connections_refused_total", "Connections answered 503 because every slot was busy");
    describe_counter!("tally_connections_shed_total", "Idle connections closed to make room for new ones");
    describe_gauge!("tally_connections_open", "Open client connections");
    for outcome in WEBHOOK_OUTCOMES {
        metrics::counter!("tally_webhooks_total", "outcome" => outcome).increment(0);
    }
    let _ = metrics::histogram!("tally_webhook_seconds");
    for operation in CREDIT_OPERATIONS {
        for result in CREDIT_RESULTS {
            metrics::counter!("tally_credit_operations_total", "operation" => operation, "result" => result)
                .increment(0);
        }
    }
    metrics::counter!("tally_stripe_errors_total").increment(0);
    metrics::counter!("tally_connections_refused_total").increment(0);
    metrics::counter!("tally_connections_shed_total").increment(0);
    metrics::gauge!("tally_connections_open").increment(0.0);
    tally_store::register_metrics();
}

/// A webhook was answered: its outcome (or refusal) and how long it took.
pub fn webhook(outcome: &'static str, took: Duration) {
    debug_assert!(WEBHOOK_OUTCOMES.contains(&outcome), "{outcome} is registered");
    metrics::counter!("tally_webhooks_total", "outcome" => outcome).increment(1);
    metrics::histogram!("tally_webhook_seconds").record(took.as_secs_f64());
}

/// A credit operation (spend, reserve, commit, release) and how it ended.
pub fn credits<T>(operation: &'static str, answer: &Result<T, ApiError>) {
    let result = match answer {
        Ok(_) => "ok",
        Err(ApiError::InsufficientCredits { .. }) => "insufficient",
        Err(ApiError::BadRequest { .. }) => "invalid",
        Err(ApiError::Conflict(_) | ApiError::Settled(_) | ApiError::NotFound(_)) => "refused",
        Err(_) => "error",
    };
    debug_assert!(CREDIT_OPERATIONS.contains(&operation), "{operation} is registered");
    metrics::counter!("tally_credit_operations_total", "operation" => operation, "result" => result).increment(1);
}

/// A Stripe API call failed after its retries.
pub fn stripe_error() {
    metrics::counter!("tally_stripe_errors_total").increment(1);
}
