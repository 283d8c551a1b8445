//! Shadow mirroring: copies of an endpoint's requests go to its shadow models through a bounded
//! queue, off the request path. The queue is bounded in copies and in bytes (each copy's
//! estimated heap size, held until its shadow run ends). A full queue drops the copy and counts
//! it (`queue_full` or `queue_bytes_full`); a shadow failure is
//! counted and logged, never returned. Shadow answers are never sent to the client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::capture::CaptureContext;
use super::served::ServedModel;
use crate::budget::{ByteBudget, Reserved};
use crate::metrics::ShadowMetrics;
use crate::tensor::Tensor;

/// Shadow executions in flight per endpoint.
const SHADOW_CONCURRENCY: usize = 32;

struct ShadowJob {
    inputs: Arc<Vec<Tensor>>,
    target: usize,
    capture: Option<CaptureContext>,
    /// The span of the request it copies (the shadow's span links to it).
    origin: tracing::Span,
    /// This copy's bytes of the queue's budget, given back when the job ends.
    _held: Reserved,
}

#[derive(Debug)]
struct Target {
    served: Arc<ServedModel>,
    percent: u32,
    metrics: ShadowMetrics,
}

/// One endpoint's shadow queue and the task that drains it.
#[derive(Debug)]
pub struct ShadowQueue {
    tx: mpsc::Sender<ShadowJob>,
    budget: Arc<ByteBudget>,
    targets: Arc<Vec<Target>>,
    gate: Arc<ArcSwapOption<Semaphore>>,
    last_drop_warning: AtomicU64,
    endpoint: String,
}

impl std::fmt::Debug for ShadowJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowJob").field("target", &self.target).finish_non_exhaustive()
    }
}

impl ShadowQueue {
    /// Starts the drain task; it ends once the queue is dropped and emptied.
    pub fn start(
        endpoint: &str,
        shadows: Vec<(Arc<ServedModel>, u32)>,
        capacity: usize,
        max_bytes: usize,
        tasks: &TaskTracker,
    ) -> ShadowQueue {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let targets: Arc<Vec<Target>> = Arc::new(
            shadows
                .into_iter()
                .map(|(served, percent)| Target {
                    metrics: ShadowMetrics::new(endpoint, &served.name),
                    served,
                    percent,
                })
                .collect(),
        );
        let gate = Arc::new(ArcSwapOption::empty());
        tasks.spawn(drain(rx, targets.clone(), gate.clone(), tasks.clone(), endpoint.to_string()));
        ShadowQueue {
            tx,
            budget: ByteBudget::new(max_bytes.max(1)),
            targets,
            gate,
            last_drop_warning: AtomicU64::new(0),
            endpoint: endpoint.to_string(),
        }
    }

    /// Mirrors a request to each shadow whose mirror percentage the draw `u(i)` falls under.
    /// Never waits: a copy that does not fit (in copies or in bytes) is dropped.
    pub fn mirror(&self, inputs: &Arc<Vec<Tensor>>, mut draw: impl FnMut() -> f64, capture: Option<&CaptureContext>) {
        let mut bytes = None;
        for (i, t) in self.targets.iter().enumerate() {
            if t.percent == 0 || draw() * 100.0 >= f64::from(t.percent) {
                continue;
            }
            let bytes = *bytes.get_or_insert_with(|| job_bytes(inputs, capture));
            let Some(held) = self.budget.try_reserve(bytes) else {
                t.metrics.dropped_bytes_full.increment(1);
                self.warn_drop(&t.served.name);
                continue;
            };
            let job = ShadowJob {
                inputs: inputs.clone(),
                target: i,
                capture: capture.cloned(),
                origin: tracing::Span::current(),
                _held: held,
            };
            match self.tx.try_send(job) {
                Ok(()) => t.metrics.mirrored.increment(1),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    t.metrics.dropped_full.increment(1);
                    self.warn_drop(&t.served.name);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => t.metrics.dropped_closed.increment(1),
            }
        }
    }

    /// Bytes that mirrored copies hold now (queued or running).
    pub fn queued_bytes(&self) -> usize {
        self.budget.used()
    }

    /// At most one warning per second per endpoint.
    fn warn_drop(&self, served: &str) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let last = self.last_drop_warning.load(Ordering::Relaxed);
        if now > last
            && self.last_drop_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(endpoint = %self.endpoint, shadow = served, "shadow queue full: mirrored requests are being dropped (sluice_shadow_dropped_total)");
        }
    }

    /// Test hook: while a gate is set, the drain task takes a permit from it before each shadow
    /// run, so a test can hold shadows back (a "slow shadow") and release them at will.
    #[doc(hidden)]
    pub fn set_gate(&self, gate: Option<Arc<Semaphore>>) {
        self.gate.store(gate);
    }
}

/// Estimated heap bytes of one mirrored copy: its inputs and what its capture carries.
fn job_bytes(inputs: &[Tensor], capture: Option<&CaptureContext>) -> usize {
    let s = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    let capture = capture.map_or(0, |c| c.request_id.len() + s(&c.client_request_id) + s(&c.requester));
    std::mem::size_of::<ShadowJob>() + crate::budget::tensors_bytes(inputs) + capture
}

async fn drain(
    mut rx: mpsc::Receiver<ShadowJob>,
    targets: Arc<Vec<Target>>,
    gate: Arc<ArcSwapOption<Semaphore>>,
    tasks: TaskTracker,
    endpoint: String,
) {
    let inflight = Arc::new(Semaphore::new(SHADOW_CONCURRENCY));
    while let Some(job) = rx.recv().await {
        if let Some(g) = gate.load_full()
            && let Ok(p) = g.acquire().await
        {
            p.forget();
        }
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            return;
        };
        let targets = targets.clone();
        let endpoint = endpoint.clone();
        let span = tracing::debug_span!(parent: None, "shadow", endpoint = %endpoint, shadow = %targets[job.target].served.name);
        span.follows_from(&job.origin);
        tasks.spawn(async move {
            let target = &targets[job.target];
            let start = Instant::now();
            let ran = super::run_model(&target.served.model, job.inputs.clone()).await;
            let outcome = match &ran {
                Ok(_) if job.capture.is_none() => {
                    target.metrics.completed.increment(1);
                    None
                }
                Ok(r) => {
                    target.metrics.completed.increment(1);
                    Some((r.phases, r.batch_rows))
                }
                Err(e) => {
                    target.metrics.failed.increment(1);
                    tracing::debug!(endpoint = %endpoint, shadow = %target.served.name, "shadow request failed: {e}");
                    None
                }
            };
            if let Some(c) = &job.capture {
                let mut o = match ran {
                    Ok(r) => target.served.outcome(start, Ok(()), Some(job.inputs.clone()), Some(Arc::new(r.outputs))),
                    Err(e) => target.served.outcome(start, Err(&e), Some(job.inputs.clone()), None),
                };
                o.phases = outcome;
                o.is_shadow = true;
                c.table.log(c.record(o)).await;
            }
            drop(permit);
        }.instrument(span));
    }
}
