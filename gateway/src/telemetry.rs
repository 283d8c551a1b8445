//! Logs and traces: the `tracing` subscriber of the process (text or JSON lines on stderr,
//! filtered by `SLUICE_LOG`), and, with `[telemetry] otlp_endpoint`, OpenTelemetry export of
//! every span over OTLP/gRPC with W3C trace-context propagation (`traceparent` in, out on
//! webhooks). A leaf: it knows the config types and nothing of the request path.
//!
//! Spans of one request: `request` (the HTTP stack's outermost layer, or the gRPC server's
//! trace function; the parent is the caller's `traceparent` when it sends one) -> `infer` (the
//! model call, entered again on the worker thread that runs it) -> `batch` (the worker's
//! session run; linked to every request in the batch). A shadow copy runs under its own
//! `shadow` span, linked to the request it copies.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryConfig};

/// Whether spans are exported: trace context is read and written only then.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The default filter when `SLUICE_LOG` is not set.
/// delta-rs and its kernel log their own internals (the kernel logs an expected "no files in log
/// segment" as an error whenever a table does not exist yet); their failures reach the log
/// through Sluice's own messages.
const DEFAULT_FILTER: &str = "info,ort=warn,deltalake_core=warn,buoyant_kernel=off,buoyant_kernel_engine=off";

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter for {endpoint}: {message}")]
    Exporter { endpoint: String, message: String },
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Keeps trace export running; [`Telemetry::shutdown`] flushes the spans still buffered.
#[derive(Debug, Default)]
#[must_use = "dropping it without shutdown loses the spans still buffered"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter (blocking; call it off the runtime's
    /// worker threads or from `spawn_blocking`).
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("sluice: trace export did not shut down cleanly: {e}");
        }
    }

    /// Whether spans are exported (and `traceparent` propagated).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

/// Logs only, text, for commands other than `serve` and before a config is read.
pub fn init_logs() {
    let _ = tracing_subscriber::registry().with(filter()).with(fmt_layer(LogFormat::Text)).try_init();
}

/// The subscriber of `sluice serve`. With an OTLP endpoint this must run inside a Tokio runtime
/// (the exporter's gRPC channel lives on it).
///
/// Without an endpoint the log filter is global, as for [`init_logs`]: a disabled callsite (the
/// `trace!`s of hyper and h2 on every request) is switched off once, not checked per call. Layers
/// are never added as `Option::None` (a `None` layer is interested in every callsite).
pub fn init(cfg: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let Some(endpoint) = &cfg.otlp_endpoint else {
        tracing_subscriber::registry()
            .with(filter())
            .with(fmt_layer(cfg.log_format))
            .try_init()
            .map_err(|_| TelemetryError::AlreadyInstalled)?;
        return Ok(Telemetry { provider: None });
    };
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|e| TelemetryError::Exporter { endpoint: endpoint.clone(), message: e.to_string() })?;
    let resource = opentelemetry_sdk::Resource::builder_empty().with_service_name(cfg.service_name.clone()).build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let tracer = provider.tracer("sluice");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Each output its own filter: logs as `SLUICE_LOG` says, traces every span of Sluice's
    // (the `infer` and `batch` spans are at debug level, off in logs by default).
    tracing_subscriber::registry()
        .with(fmt_layer(cfg.log_format).with_filter(filter()))
        .with(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(EnvFilter::new("sluice=debug")))
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    EXPORTING.store(true, std::sync::atomic::Ordering::Release);
    Ok(Telemetry { provider: Some(provider) })
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| DEFAULT_FILTER.into())
}

fn fmt_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let base = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => base.boxed(),
        LogFormat::Json => base.json().with_current_span(true).with_span_list(true).boxed(),
    }
}

/// Makes `span` a child of the caller's trace when `headers` carry a W3C `traceparent` (no
/// effect unless spans are exported).
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !EXPORTING.load(std::sync::atomic::Ordering::Acquire) {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(parent);
}

/// Adds the current span's W3C `traceparent` (and `tracestate`) to outgoing `headers` (no
/// effect unless spans are exported).
pub fn inject_current(headers: &mut http::HeaderMap) {
    if !EXPORTING.load(std::sync::atomic::Ordering::Acquire) {
        return;
    }
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}
