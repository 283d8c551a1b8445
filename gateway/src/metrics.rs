//! Every metric Sluice exports, declared once with its unit and description, and the Prometheus
//! recorder. Labels come only from config-bounded sets (endpoint, served model, model, version,
//! outcome, protocol, reason), never from request data.

use std::sync::OnceLock;

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS_TOTAL: &str = "sluice_requests_total";
pub const REQUEST_DURATION: &str = "sluice_request_duration_seconds";
pub const MODEL_REQUESTS_TOTAL: &str = "sluice_model_requests_total";
pub const MODEL_REQUEST_DURATION: &str = "sluice_model_request_duration_seconds";
pub const MODEL_QUEUE_DURATION: &str = "sluice_model_queue_duration_seconds";
pub const MODEL_COMPUTE_DURATION: &str = "sluice_model_compute_duration_seconds";
pub const MODEL_ROWS_TOTAL: &str = "sluice_model_inference_rows_total";
pub const MODEL_BATCH_ROWS: &str = "sluice_model_batch_rows";
pub const REJECTED_TOTAL: &str = "sluice_rejected_requests_total";
/// Inference requests holding a slot (`server.max_concurrent_requests`), HTTP and gRPC: what a
/// HorizontalPodAutoscaler scales on.
pub const REQUESTS_IN_FLIGHT: &str = "sluice_requests_in_flight";
pub const PRINCIPAL_REQUESTS_TOTAL: &str = "sluice_principal_requests_total";
pub const LABELS_TOTAL: &str = "sluice_labels_total";
pub const TLS_RELOADS_TOTAL: &str = "sluice_tls_reloads_total";
pub const SHADOW_MIRRORED_TOTAL: &str = "sluice_shadow_mirrored_total";
pub const SHADOW_DROPPED_TOTAL: &str = "sluice_shadow_dropped_total";
pub const SHADOW_COMPLETED_TOTAL: &str = "sluice_shadow_completed_total";
pub const SHADOW_FAILED_TOTAL: &str = "sluice_shadow_failed_total";
pub const CONFIG_CHANGES_TOTAL: &str = "sluice_config_changes_total";
pub const LOG_ROWS_WRITTEN_TOTAL: &str = "sluice_log_rows_written_total";
pub const LOG_ROWS_DROPPED_TOTAL: &str = "sluice_log_rows_dropped_total";
pub const LOG_FILES_TOTAL: &str = "sluice_log_files_total";
pub const LOG_BYTES_TOTAL: &str = "sluice_log_bytes_total";
pub const LOG_WRITE_ERRORS_TOTAL: &str = "sluice_log_write_errors_total";
pub const LOG_COMMITS_TOTAL: &str = "sluice_log_commits_total";
pub const LOG_COMMIT_RETRIES_TOTAL: &str = "sluice_log_commit_retries_total";
pub const LOG_COMMIT_DURATION: &str = "sluice_log_commit_duration_seconds";
pub const ANALYSIS_READS_TOTAL: &str = "sluice_analysis_reads_total";
pub const ANALYSIS_READ_DURATION: &str = "sluice_analysis_read_duration_seconds";
pub const MONITOR_REFRESHES_TOTAL: &str = "sluice_monitor_refreshes_total";
pub const MONITOR_REFRESH_DURATION: &str = "sluice_monitor_refresh_duration_seconds";
pub const MONITOR_ROWS_READ_TOTAL: &str = "sluice_monitor_rows_read_total";
/// Deprecated alias of the three below (one gauge, every kind under a `metric` label); removed in
/// 0.2.
pub const MONITOR_DRIFT: &str = "sluice_monitor_drift";
/// Test p-values (`test` = ks, chi_squared): small means drift.
pub const MONITOR_DRIFT_PVALUE: &str = "sluice_monitor_drift_pvalue";
/// Test statistics (`test` = ks, chi_squared).
pub const MONITOR_DRIFT_STATISTIC: &str = "sluice_monitor_drift_statistic";
/// Distances and divergences (`metric` = wasserstein_distance, population_stability_index,
/// js_distance, tv_distance, l_infinity_distance): large means drift.
pub const MONITOR_DRIFT_DISTANCE: &str = "sluice_monitor_drift_distance";
pub const MONITOR_ALERT_FIRING: &str = "sluice_monitor_alert_firing";
pub const MONITOR_NOTIFICATIONS_TOTAL: &str = "sluice_monitor_alert_notifications_total";
/// Deprecated alias (percent) of [`ROLLOUT_CANDIDATE_RATIO`]; removed in 0.2.
pub const ROLLOUT_CANDIDATE_PERCENT: &str = "sluice_rollout_candidate_traffic_percent";
pub const ROLLOUT_CANDIDATE_RATIO: &str = "sluice_rollout_candidate_traffic_ratio";
/// Requests a served model is handling (routed to it, not yet answered), by endpoint and served model.
pub const SERVED_MODEL_IN_FLIGHT: &str = "sluice_served_model_requests_in_flight";
/// Requests admitted to a model version's queue and not yet answered (waiting or running), by
/// model and version; the queue holds `queue_capacity`.
pub const MODEL_QUEUE_DEPTH: &str = "sluice_model_queue_depth";
pub const REGISTRY_ALIAS_VERSION: &str = "sluice_registry_alias_version";
pub const REGISTRY_SERVING_VERSION: &str = "sluice_registry_serving_version";
pub const REGISTRY_POLL_ERRORS_TOTAL: &str = "sluice_registry_poll_errors_total";
pub const ROLLOUT_EVENTS_TOTAL: &str = "sluice_rollout_events_total";
pub const ROLLOUT_NOTIFICATIONS_TOTAL: &str = "sluice_rollout_notifications_total";
pub const CONNECTIONS_REFUSED_TOTAL: &str = "sluice_connections_refused_total";
pub const ACCEPT_ERRORS_TOTAL: &str = "sluice_accept_errors_total";
pub const LOAD_SHED_TOTAL: &str = "sluice_load_shed_total";
pub const WORKER_PANICS_TOTAL: &str = "sluice_worker_panics_total";
pub const TABLE_FILES_SKIPPED_TOTAL: &str = "sluice_table_files_skipped_total";
pub const STATE_LOAD_FAILURES_TOTAL: &str = "sluice_state_load_failures_total";

const LATENCY_BUCKETS: &[f64] =
    &[0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

static HANDLE: OnceLock<Result<PrometheusHandle, InstallError>> = OnceLock::new();

/// The Prometheus recorder could not be built or installed (the exporter's message; kept as
/// text because the first failure is handed to every later caller, and the exporter's error
/// is not `Clone`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct InstallError(String);

/// Installs the Prometheus recorder (once per process) and returns its handle for `/metrics`.
pub fn install() -> Result<PrometheusHandle, InstallError> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(MODEL_BATCH_ROWS.into()), BATCH_BUCKETS))
                .map_err(|e| InstallError(e.to_string()))?
                .install_recorder()
                .map_err(|e| InstallError(e.to_string()))?;
            describe();
            // exported from the start (an autoscaler reads 0, not a missing series)
            gauge!(REQUESTS_IN_FLIGHT).set(0.0);
            for protocol in ["http", "grpc"] {
                counter!(LOAD_SHED_TOTAL, "protocol" => protocol).increment(0);
            }
            Ok(handle)
        })
        .clone()
}

fn describe() {
    describe_counter!(
        CONNECTIONS_REFUSED_TOTAL,
        Unit::Count,
        "Connections refused at accept or closed before sending anything, by listener and reason (max_connections, fd_exhausted, silent)."
    );
    describe_gauge!(
        REGISTRY_ALIAS_VERSION,
        "The model version an MLflow alias names in the registry, by endpoint, served model and alias (watch_aliases)."
    );
    describe_gauge!(
        REGISTRY_SERVING_VERSION,
        "The model version served for an MLflow alias entity, by endpoint, served model and alias: differs from \
         sluice_registry_alias_version while a rollout runs or after one was rolled back."
    );
    describe_counter!(
        REGISTRY_POLL_ERRORS_TOTAL,
        Unit::Count,
        "Reads of watched MLflow aliases that failed (registry unreachable or refusing)."
    );
    describe_counter!(ACCEPT_ERRORS_TOTAL, Unit::Count, "Errors accepting a connection, by listener and kind.");
    describe_counter!(TLS_RELOADS_TOTAL, Unit::Count, "Reloads of the TLS certificate, by outcome (ok, error).");
    describe_counter!(
        LABELS_TOTAL,
        Unit::Count,
        "Labels posted, by endpoint and outcome (accepted, unknown_id, rate_limited)."
    );
    describe_counter!(
        PRINCIPAL_REQUESTS_TOTAL,
        Unit::Count,
        "Requests by principal ([[auth.tokens]] name, admin, or anonymous) and outcome (allowed, denied)."
    );
    describe_counter!(
        LOAD_SHED_TOTAL,
        Unit::Count,
        "Requests answered 429 / RESOURCE_EXHAUSTED at once because server.max_concurrent_requests were in progress, by protocol."
    );
    describe_counter!(
        WORKER_PANICS_TOTAL,
        Unit::Count,
        "Model worker threads that panicked (their requests got 500s; the worker went on), by model and version."
    );
    describe_gauge!(
        ROLLOUT_CANDIDATE_RATIO,
        "Share of traffic (0-1) a rollout gives its candidate, by endpoint (0 after a rollback, 1 once promoted)."
    );
    describe_gauge!(
        ROLLOUT_CANDIDATE_PERCENT,
        Unit::Percent,
        "Deprecated: sluice_rollout_candidate_traffic_ratio * 100 (removed in 0.2)."
    );
    describe_gauge!(
        SERVED_MODEL_IN_FLIGHT,
        "Requests routed to a served model and not yet answered, by endpoint and served model."
    );
    describe_gauge!(
        MODEL_QUEUE_DEPTH,
        "Requests admitted to a model version's queue and not yet answered (waiting or running; at most queue_capacity), by model and version."
    );
    describe_counter!(
        ROLLOUT_EVENTS_TOTAL,
        Unit::Count,
        "Rollout events, by endpoint and event (started, step, paused, resumed, promoted, rolled_back, aborted)."
    );
    describe_counter!(
        ROLLOUT_NOTIFICATIONS_TOTAL,
        Unit::Count,
        "Rollout webhook deliveries, by endpoint and result (delivered, failed)."
    );
    describe_counter!(
        TABLE_FILES_SKIPPED_TOTAL,
        Unit::Count,
        "Parquet files of a table that readers skip, each counted once, by table and reason (unreadable, incompatible_schema, no_timestamp_statistics)."
    );
    describe_counter!(
        STATE_LOAD_FAILURES_TOTAL,
        Unit::Count,
        "State files (monitor, rollout) found torn or corrupt at load, by kind and outcome (previous: its previous version was used; lost: none was usable)."
    );
    describe_counter!(
        ANALYSIS_READS_TOTAL,
        Unit::Count,
        "Table reads run on the analysis threads, by read (experiment_report, rollout_judgement, \
         dashboard_series, dashboard_histogram) and result (done, panicked)."
    );
    describe_histogram!(
        ANALYSIS_READ_DURATION,
        Unit::Seconds,
        "Time a table read on the analysis threads took, by read."
    );
    describe_counter!(
        LOG_COMMITS_TOTAL,
        Unit::Count,
        "Delta commits of inference-table flushes, by table (one per flush)."
    );
    describe_counter!(
        LOG_COMMIT_RETRIES_TOTAL,
        Unit::Count,
        "Inference-table flushes tried again (object storage unreachable or failing, a commit race), by table."
    );
    describe_histogram!(
        LOG_COMMIT_DURATION,
        Unit::Seconds,
        "Time from the start of a flush's upload to its commit in the table's log, retries included, by table."
    );
    describe_counter!(MONITOR_REFRESHES_TOTAL, Unit::Count, "Monitor refreshes, by endpoint and result (ok, error).");
    describe_histogram!(MONITOR_REFRESH_DURATION, Unit::Seconds, "Time a monitor refresh took.");
    describe_counter!(MONITOR_ROWS_READ_TOTAL, Unit::Count, "Inference table rows read by monitor refreshes.");
    describe_gauge!(
        MONITOR_DRIFT_PVALUE,
        "Latest drift test p-value (small = drift) per endpoint, granularity, drift type, model id (:all = every primary model), column and test (ks, chi_squared)."
    );
    describe_gauge!(
        MONITOR_DRIFT_STATISTIC,
        "Latest drift test statistic per endpoint, granularity, drift type, model id, column and test (ks, chi_squared)."
    );
    describe_gauge!(
        MONITOR_DRIFT_DISTANCE,
        "Latest drift distance or divergence (large = drift) per endpoint, granularity, drift type, model id, column and metric (wasserstein_distance, population_stability_index, js_distance, tv_distance, l_infinity_distance)."
    );
    describe_gauge!(
        MONITOR_DRIFT,
        "Deprecated: the values of sluice_monitor_drift_pvalue, _statistic and _distance under one metric label (removed in 0.2)."
    );
    describe_gauge!(MONITOR_ALERT_FIRING, "1 while a monitor alert is firing, else 0.");
    describe_gauge!(
        REQUESTS_IN_FLIGHT,
        "Inference requests (HTTP and gRPC) in progress, out of server.max_concurrent_requests."
    );
    describe_counter!(
        MONITOR_NOTIFICATIONS_TOTAL,
        Unit::Count,
        "Alert webhook notifications, by endpoint, alert and result (delivered, failed)."
    );
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Endpoint requests (/predict), by endpoint, served model and outcome."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Endpoint request latency inside the gateway, by endpoint and served model."
    );
    describe_counter!(
        MODEL_REQUESTS_TOTAL,
        Unit::Count,
        "Requests that reached a model version (any protocol), by outcome."
    );
    describe_histogram!(MODEL_REQUEST_DURATION, Unit::Seconds, "Time from admission to answer for a model version.");
    describe_histogram!(MODEL_QUEUE_DURATION, Unit::Seconds, "Time a request waited for a worker.");
    describe_histogram!(
        MODEL_COMPUTE_DURATION,
        Unit::Seconds,
        "ONNX Runtime execution time of the batch a request was in."
    );
    describe_counter!(MODEL_ROWS_TOTAL, Unit::Count, "Rows (inferences) answered by a model version.");
    describe_histogram!(MODEL_BATCH_ROWS, Unit::Count, "Rows per model execution (dynamic batching).");
    describe_counter!(
        REJECTED_TOTAL,
        Unit::Count,
        "Requests rejected before reaching a model, by protocol and reason."
    );
}

/// Pre-registered handles for one model version (no label lookups on the hot path).
#[derive(Debug, Clone)]
pub struct ModelMetrics {
    pub success: Counter,
    pub rows: Counter,
    pub duration: Histogram,
    pub queue: Histogram,
    pub compute: Histogram,
    pub batch_rows: Histogram,
    /// Set when `/metrics` is rendered (see [`render`]).
    pub queue_depth: Gauge,
    model: String,
    version: String,
}

impl ModelMetrics {
    pub fn new(model: &str, version: &str) -> ModelMetrics {
        let labels = [("model", model.to_string()), ("version", version.to_string())];
        ModelMetrics {
            success: counter!(
                MODEL_REQUESTS_TOTAL,
                &[("model", model.to_string()), ("version", version.to_string()), ("outcome", "success".to_string())]
            ),
            rows: counter!(MODEL_ROWS_TOTAL, &labels),
            duration: histogram!(MODEL_REQUEST_DURATION, &labels),
            queue: histogram!(MODEL_QUEUE_DURATION, &labels),
            compute: histogram!(MODEL_COMPUTE_DURATION, &labels),
            batch_rows: histogram!(MODEL_BATCH_ROWS, &labels),
            queue_depth: gauge!(MODEL_QUEUE_DEPTH, &labels),
            model: model.to_string(),
            version: version.to_string(),
        }
    }

    /// Counts a failed request; `outcome` is an error kind name.
    pub fn failure(&self, outcome: &'static str) {
        counter!(MODEL_REQUESTS_TOTAL, "model" => self.model.clone(), "version" => self.version.clone(), "outcome" => outcome).increment(1);
    }
}

/// Pre-registered handles for one served model of an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointMetrics {
    pub success: Counter,
    pub duration: Histogram,
    in_flight: Gauge,
    endpoint: String,
    served_model: String,
}

impl EndpointMetrics {
    pub fn new(endpoint: &str, served_model: &str) -> EndpointMetrics {
        let labels = [("endpoint", endpoint.to_string()), ("served_model", served_model.to_string())];
        EndpointMetrics {
            success: counter!(
                REQUESTS_TOTAL,
                &[
                    ("endpoint", endpoint.to_string()),
                    ("served_model", served_model.to_string()),
                    ("outcome", "success".to_string())
                ]
            ),
            duration: histogram!(REQUEST_DURATION, &labels),
            in_flight: gauge!(SERVED_MODEL_IN_FLIGHT, &labels),
            endpoint: endpoint.to_string(),
            served_model: served_model.to_string(),
        }
    }

    /// Counts a request in flight on this served model until the guard is dropped (answered,
    /// failed or abandoned).
    pub fn enter(&self) -> InFlight {
        self.in_flight.increment(1.0);
        InFlight(self.in_flight.clone())
    }

    pub fn failure(&self, outcome: &'static str) {
        counter!(REQUESTS_TOTAL, "endpoint" => self.endpoint.clone(), "served_model" => self.served_model.clone(), "outcome" => outcome).increment(1);
    }
}

/// Counts a request rejected before it reached a model.
/// A reload of the TLS certificate: `ok` or `error` (the previous one stays).
pub fn tls_reload(outcome: &'static str) {
    counter!(TLS_RELOADS_TOTAL, "outcome" => outcome).increment(1);
}

pub fn connection_refused(listener: &'static str, reason: &'static str) {
    counter!(CONNECTIONS_REFUSED_TOTAL, "listener" => listener, "reason" => reason).increment(1);
}

pub fn accept_error(listener: &'static str, kind: &'static str) {
    counter!(ACCEPT_ERRORS_TOTAL, "listener" => listener, "kind" => kind).increment(1);
}

pub fn load_shed(protocol: &'static str) {
    counter!(LOAD_SHED_TOTAL, "protocol" => protocol).increment(1);
}

pub fn worker_panic(model: &str, version: u64) {
    counter!(WORKER_PANICS_TOTAL, "model" => model.to_string(), "version" => version.to_string()).increment(1);
}

/// A request of a principal (`[[auth.tokens]]` name, `admin`, or `anonymous` for a missing or
/// invalid token), `allowed` or `denied`.
pub fn principal_request(principal: &str, outcome: &'static str) {
    principal_counter(principal, outcome).increment(1);
}

/// Labels posted to an endpoint: `accepted`, `unknown_id` (refused: an id the table did not
/// log), `rate_limited` (refused: the principal's label rate).
pub fn labels(endpoint: &str, outcome: &'static str, n: usize) {
    if n > 0 {
        counter!(LABELS_TOTAL, "endpoint" => endpoint.to_string(), "outcome" => outcome).increment(n as u64);
    }
}

/// The counter of [`principal_request`], to keep and increment without a lookup.
pub fn principal_counter(principal: &str, outcome: &'static str) -> Counter {
    counter!(PRINCIPAL_REQUESTS_TOTAL, "principal" => principal.to_string(), "outcome" => outcome)
}

pub fn rejected(protocol: &'static str, reason: &'static str) {
    counter!(REJECTED_TOTAL, "protocol" => protocol, "reason" => reason).increment(1);
}

/// Pre-registered handles for one shadow of an endpoint.
#[derive(Debug, Clone)]
pub struct ShadowMetrics {
    pub mirrored: Counter,
    pub dropped_full: Counter,
    pub dropped_bytes_full: Counter,
    pub dropped_closed: Counter,
    pub completed: Counter,
    pub failed: Counter,
}

impl ShadowMetrics {
    pub fn new(endpoint: &str, served_model: &str) -> ShadowMetrics {
        let l = |extra: Option<&'static str>| {
            let mut v = vec![("endpoint", endpoint.to_string()), ("served_model", served_model.to_string())];
            if let Some(r) = extra {
                v.push(("reason", r.to_string()));
            }
            v
        };
        ShadowMetrics {
            mirrored: counter!(SHADOW_MIRRORED_TOTAL, &l(None)),
            dropped_full: counter!(SHADOW_DROPPED_TOTAL, &l(Some("queue_full"))),
            dropped_bytes_full: counter!(SHADOW_DROPPED_TOTAL, &l(Some("queue_bytes_full"))),
            dropped_closed: counter!(SHADOW_DROPPED_TOTAL, &l(Some("closed"))),
            completed: counter!(SHADOW_COMPLETED_TOTAL, &l(None)),
            failed: counter!(SHADOW_FAILED_TOTAL, &l(None)),
        }
    }
}

/// Counts a state file that could not be loaded; `outcome` is `previous` or `lost`.
pub fn state_load_failure(kind: &'static str, outcome: &'static str) {
    counter!(STATE_LOAD_FAILURES_TOTAL, "kind" => kind, "outcome" => outcome).increment(1);
}

/// Counts a table file that readers skip.
pub fn table_file_skipped(table: &str, reason: &'static str) {
    counter!(TABLE_FILES_SKIPPED_TOTAL, "table" => table.to_string(), "reason" => reason).increment(1);
}

/// A request in flight on a served model (see [`EndpointMetrics::enter`]).
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The rollout gauges of an endpoint: the candidate's share as a ratio, and the deprecated
/// percent alias.
pub fn rollout_candidate_share(endpoint: &str, percent: u32) {
    gauge!(ROLLOUT_CANDIDATE_RATIO, "endpoint" => endpoint.to_string()).set(f64::from(percent) / 100.0);
    gauge!(ROLLOUT_CANDIDATE_PERCENT, "endpoint" => endpoint.to_string()).set(f64::from(percent));
}

/// The Prometheus text of every metric, with the gauges read at scrape time (each model
/// version's queue depth) brought up to date first.
pub fn render(handle: &PrometheusHandle, registry: &crate::registry::Registry) -> String {
    for m in registry.iter() {
        m.metrics.queue_depth.set(m.runner.queue_depth() as f64);
    }
    handle.render()
}

/// Adds `delta` to the inference requests in flight (twice per request: the handle is looked up
/// in the registry once, not per call).
pub fn in_flight(delta: f64) {
    static GAUGE: OnceLock<metrics::Gauge> = OnceLock::new();
    GAUGE.get_or_init(|| gauge!(REQUESTS_IN_FLIGHT)).increment(delta);
}

/// Counts a config change attempt.
pub fn config_change(source: &'static str, outcome: &'static str) {
    counter!(CONFIG_CHANGES_TOTAL, "source" => source, "outcome" => outcome).increment(1);
}
