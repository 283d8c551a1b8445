//! The one home of heavy table reads: monitor refreshes, rollout judgements, A/B reports and the
//! dashboard's series and histograms all run on a dedicated runtime of [`THREADS`] threads
//! ([`run`]), so DataFusion never takes the serving runtime's worker threads; a caller on the
//! serving runtime only awaits a handle. Every DataFusion session these reads make ([`session`])
//! draws from a memory pool of `server.analysis_memory_bytes`, so a query over it fails with an
//! error that names the key instead of taking the process.
//!
//! [`classes`] bounds the label sets these reads build (top classes plus one `__other__`).

pub mod classes;

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

/// Threads of the analysis runtime: reads share them, serving never waits for them.
pub const THREADS: usize = 2;

/// `server.analysis_memory_bytes` when unset: 512 MiB.
pub const DEFAULT_MEMORY_BYTES: usize = 512 * 1024 * 1024;

static MEMORY_LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_MEMORY_BYTES);
static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();

/// Why an analysis could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("the analysis runtime could not start")]
    NoRuntime,
    #[error("the analysis panicked")]
    Panicked,
    #[error("the analysis was cancelled")]
    Cancelled,
}

/// Sets the memory limit of the sessions made from now on (`server.analysis_memory_bytes`).
pub fn set_memory_limit(bytes: usize) {
    MEMORY_LIMIT.store(bytes.max(1), Ordering::Relaxed);
}

/// The memory limit of a new session, bytes.
pub fn memory_limit() -> usize {
    MEMORY_LIMIT.load(Ordering::Relaxed)
}

/// The analysis runtime, started on first use.
pub fn handle() -> Result<tokio::runtime::Handle, AnalysisError> {
    let rt = RUNTIME.get_or_init(|| {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(THREADS)
            .thread_name("sluice-analysis")
            .enable_all()
            .build()
        {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::error!("cannot start the analysis runtime: {e}");
                None
            }
        }
    });
    rt.as_ref().map(|rt| rt.handle().clone()).ok_or(AnalysisError::NoRuntime)
}

/// Runs `fut`, the read named `read` (a fixed name: `experiment_report`, `rollout_judgement`,
/// ...), on the analysis runtime and waits for it; counted in `sluice_analysis_reads_total` and
/// timed. Dropping the returned future does not stop the read; it finishes (or fails) on the
/// analysis threads.
pub async fn run<F, T>(read: &'static str, fut: F) -> Result<T, AnalysisError>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let start = std::time::Instant::now();
    let out = handle()?
        .spawn(fut)
        .await
        .map_err(|e| if e.is_panic() { AnalysisError::Panicked } else { AnalysisError::Cancelled });
    let result = if out.is_ok() { "done" } else { "panicked" };
    metrics::counter!(crate::metrics::ANALYSIS_READS_TOTAL, "read" => read, "result" => result).increment(1);
    metrics::histogram!(crate::metrics::ANALYSIS_READ_DURATION, "read" => read).record(start.elapsed().as_secs_f64());
    out
}

/// A DataFusion session with `config` whose operators share one pool of [`memory_limit`] bytes.
pub fn session(config: SessionConfig) -> SessionContext {
    session_with_limit(config, memory_limit())
}

/// A session whose operators share one pool of `bytes`.
pub fn session_with_limit(config: SessionConfig, bytes: usize) -> SessionContext {
    // No spilling: a read over the limit fails rather than filling the disk.
    let builder = |bytes: usize| {
        RuntimeEnvBuilder::new()
            .with_memory_limit(bytes, 1.0)
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
    };
    match builder(bytes).build_arc() {
        Ok(rt) => SessionContext::new_with_config_rt(config, rt),
        Err(e) => {
            // Not expected (the builder only fails on a bad disk manager); refuse every query
            // rather than read without a limit.
            tracing::error!("cannot build an analysis session with a memory limit: {e}");
            let rt = builder(1).build_arc();
            match rt {
                Ok(rt) => SessionContext::new_with_config_rt(config, rt),
                Err(_) => SessionContext::new_with_config(config),
            }
        }
    }
}

/// `e` with a hint when it is the memory limit that stopped a query.
pub fn explain(e: impl std::fmt::Display) -> String {
    let msg = e.to_string();
    if msg.contains("Resources exhausted") {
        format!(
            "{msg} (the query needs more than server.analysis_memory_bytes = {}; narrow the window or raise the key)",
            memory_limit()
        )
    } else {
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_run_on_the_analysis_threads() {
        let name = run("test", async { std::thread::current().name().map(str::to_string) }).await.unwrap();
        assert_eq!(name.as_deref(), Some("sluice-analysis"));
        let caller = std::thread::current().name().map(str::to_string);
        assert_ne!(caller.as_deref(), Some("sluice-analysis"));
        // a panic in a read is an error for its caller, not a crash
        let r = run("test", async { panic!("boom") }).await;
        assert!(matches!(r, Err(AnalysisError::Panicked)), "{r:?}");
    }

    #[test]
    fn the_limit_is_the_server_key_analysis_memory_bytes() {
        let text = |extra: &str| {
            format!(
                r#"
                [server]
                {extra}
                [[endpoints]]
                name = "fraud"
                served_entities = [{{ name = "a", entity_name = "fraud_classifier", entity_version = "1" }}]
                "#
            )
        };
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let load = |t: &str| crate::config::Config::from_toml(t, "test.toml", &repo);
        assert_eq!(load(&text("")).unwrap().server.analysis_memory_bytes, DEFAULT_MEMORY_BYTES);
        assert_eq!(load(&text("analysis_memory_bytes = 2097152")).unwrap().server.analysis_memory_bytes, 2 << 20);
        let err = load(&text("analysis_memory_bytes = 0")).unwrap_err().to_string();
        assert!(err.contains("server.analysis_memory_bytes"), "{err}");
    }

    #[tokio::test]
    async fn a_query_over_the_memory_limit_fails_with_an_error() {
        use datafusion::arrow::array::{Int64Array, RecordBatch};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = std::sync::Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let values = Int64Array::from((0..2_000_000i64).collect::<Vec<_>>());
        let batch = RecordBatch::try_new(schema.clone(), vec![std::sync::Arc::new(values)]).unwrap();
        let table = || datafusion::datasource::MemTable::try_new(schema.clone(), vec![vec![batch.clone()]]).unwrap();
        let sql = "SELECT v % 1000000 AS k, count(*) FROM t GROUP BY 1";
        let small = session_with_limit(SessionConfig::new().with_target_partitions(1), 256 * 1024);
        small.register_table("t", std::sync::Arc::new(table())).unwrap();
        let err = small.sql(sql).await.unwrap().collect().await.unwrap_err();
        let msg = explain(&err);
        assert!(msg.contains("Resources exhausted") && msg.contains("server.analysis_memory_bytes"), "{msg}");
        // the same query fits a larger pool
        let large = session_with_limit(SessionConfig::new().with_target_partitions(1), 512 * 1024 * 1024);
        large.register_table("t", std::sync::Arc::new(table())).unwrap();
        let batches = large.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1_000_000);
    }
}
