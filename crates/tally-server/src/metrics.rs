//! Prometheus metrics: what ops watch on a billing service. Recorded with the `metrics`
//! facade; rendered at `GET /metrics`.

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
        handle
    })
}

/// A webhook was answered: its outcome (or refusal) and how long it took.
pub fn webhook(outcome: &'static str, took: Duration) {
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
    metrics::counter!("tally_credit_operations_total", "operation" => operation, "result" => result).increment(1);
}

/// A Stripe API call failed after its retries.
pub fn stripe_error() {
    metrics::counter!("tally_stripe_errors_total").increment(1);
}
