//! Cumulative per-model-version counters in Triton's statistics shape (`/v2/models/{m}/stats`,
//! gRPC ModelStatistics). Written by the request path and the workers, read on demand.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count and a cumulative duration in nanoseconds.
#[derive(Debug, Default)]
pub struct Duration2 {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Duration2 {
    pub fn record(&self, d: Duration) {
        self.count.fetch_add(1, Relaxed);
        self.ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    /// (count, ns)
    pub fn get(&self) -> (u64, u64) {
        (self.count.load(Relaxed), self.ns.load(Relaxed))
    }
}

/// Time spent in each phase of one execution (or of one request's share of it).
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseTimes {
    pub queue: Duration,
    pub compute_input: Duration,
    pub compute_infer: Duration,
    pub compute_output: Duration,
}

/// Per-batch-size execution statistics.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchSizeStats {
    pub count: u64,
    pub compute_input_ns: u64,
    pub compute_infer_ns: u64,
    pub compute_output_ns: u64,
}

/// Counters for one served model version.
#[derive(Debug, Default)]
pub struct ModelStats {
    pub success: Duration2,
    pub fail: Duration2,
    pub queue: Duration2,
    pub compute_input: Duration2,
    pub compute_infer: Duration2,
    pub compute_output: Duration2,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    /// Rows run and the time their executions took in `Session::run` (each execution counted
    /// once, unlike `compute_infer`, which charges every request of a batch the whole batch).
    executed_rows: AtomicU64,
    executed_infer_ns: AtomicU64,
    last_inference_ms: AtomicU64,
    batches: Mutex<BTreeMap<u64, BatchSizeStats>>,
}

impl ModelStats {
    /// A request finished successfully: `rows` inferences, `total` end to end.
    pub fn record_success(&self, rows: usize, total: Duration, phases: &PhaseTimes) {
        self.success.record(total);
        self.queue.record(phases.queue);
        self.compute_input.record(phases.compute_input);
        self.compute_infer.record(phases.compute_infer);
        self.compute_output.record(phases.compute_output);
        self.inference_count.fetch_add(rows as u64, Relaxed);
        self.touch();
    }

    /// A request failed after it reached the model.
    pub fn record_failure(&self, total: Duration) {
        self.fail.record(total);
        self.touch();
    }

    /// One model execution over `batch_rows` rows.
    pub fn record_execution(&self, batch_rows: usize, phases: &PhaseTimes) {
        self.execution_count.fetch_add(1, Relaxed);
        self.executed_rows.fetch_add(batch_rows as u64, Relaxed);
        self.executed_infer_ns.fetch_add(phases.compute_infer.as_nanos() as u64, Relaxed);
        if let Ok(mut b) = self.batches.lock() {
            let e = b.entry(batch_rows as u64).or_default();
            e.count += 1;
            e.compute_input_ns += phases.compute_input.as_nanos() as u64;
            e.compute_infer_ns += phases.compute_infer.as_nanos() as u64;
            e.compute_output_ns += phases.compute_output.as_nanos() as u64;
        }
    }

    fn touch(&self) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        self.last_inference_ms.store(now, Relaxed);
    }

    pub fn inference_count(&self) -> u64 {
        self.inference_count.load(Relaxed)
    }

    pub fn execution_count(&self) -> u64 {
        self.execution_count.load(Relaxed)
    }

    /// Mean `Session::run` time per row over every execution so far (`None` before the first).
    /// Batched rows cost less each than a lone row, so after batching this is below a one-row
    /// run's time.
    pub fn mean_infer_per_row(&self) -> Option<Duration> {
        let rows = self.executed_rows.load(Relaxed);
        (rows > 0).then(|| Duration::from_nanos(self.executed_infer_ns.load(Relaxed) / rows))
    }

    pub fn last_inference_ms(&self) -> u64 {
        self.last_inference_ms.load(Relaxed)
    }

    /// Per-batch-size statistics, smallest batch first.
    pub fn batch_stats(&self) -> Vec<(u64, BatchSizeStats)> {
        self.batches.lock().map(|b| b.iter().map(|(k, v)| (*k, *v)).collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of 64 one-row requests that ran for 640 us: each request's `compute_infer` is
    /// the whole batch (Triton's statistics), the time per row is 10 us.
    #[test]
    fn time_per_row_counts_each_execution_once() {
        let s = ModelStats::default();
        assert_eq!(s.mean_infer_per_row(), None);
        let batch = PhaseTimes { compute_infer: Duration::from_micros(640), ..PhaseTimes::default() };
        s.record_execution(64, &batch);
        for _ in 0..64 {
            s.record_success(1, Duration::from_micros(700), &batch);
        }
        assert_eq!(s.compute_infer.get(), (64, 64 * 640_000));
        assert_eq!(s.mean_infer_per_row(), Some(Duration::from_micros(10)));
        let lone = PhaseTimes { compute_infer: Duration::from_micros(30), ..PhaseTimes::default() };
        s.record_execution(1, &lone);
        assert_eq!(s.mean_infer_per_row(), Some(Duration::from_nanos(670_000 / 65)));
    }
}
