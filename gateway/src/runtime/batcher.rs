//! Dynamic batching: one task per batched model version assembles requests into executions.
//!
//! The task first waits for a request, then for a free worker, then takes every request already
//! queued (up to `max_batch_size` rows) and, if the batch is not full, waits up to
//! `max_queue_delay` for more. With a delay of zero this batches exactly the requests that piled
//! up while the workers were busy: larger batches under load. At low load (queue empty, a worker
//! free) the request path skips this task and hands the request to a worker itself, so batching
//! adds no task hop when there is nothing to batch.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use super::job::{Job, WorkItem, submit};

/// Dynamic batching settings of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchingOptions {
    /// Most rows in one execution. A single request larger than this runs alone.
    pub max_batch_size: usize,
    /// Longest the first request of a batch waits for others to join.
    pub max_queue_delay: Duration,
}

/// Runs until the request queue closes (every handle to the model dropped).
pub(super) async fn run(
    mut rx: mpsc::Receiver<Job>,
    work_tx: flume::Sender<WorkItem>,
    opts: BatchingOptions,
    free_workers: Arc<Semaphore>,
) {
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        let Ok(slot) = free_workers.clone().acquire_owned().await else {
            return;
        };
        let mut rows = first.rows;
        let deadline = tokio::time::Instant::from_std(first.enqueued) + opts.max_queue_delay;
        let mut jobs = vec![first];
        while rows < opts.max_batch_size {
            let next = match rx.try_recv() {
                Ok(j) => Some(j),
                Err(mpsc::error::TryRecvError::Empty) if !opts.max_queue_delay.is_zero() => {
                    tokio::time::timeout_at(deadline, rx.recv()).await.unwrap_or_default()
                }
                Err(_) => None,
            };
            let Some(job) = next else { break };
            if rows + job.rows > opts.max_batch_size || !same_row_shapes(&jobs[0], &job) {
                carry = Some(job);
                break;
            }
            rows += job.rows;
            jobs.push(job);
        }
        submit(&work_tx, WorkItem { jobs, _worker_slot: Some(slot) });
    }
}

/// Requests stack only when every input has the same shape apart from the first dimension.
fn same_row_shapes(a: &Job, b: &Job) -> bool {
    a.inputs.len() == b.inputs.len()
        && a.inputs.iter().zip(b.inputs.iter()).all(|(x, y)| x.shape.get(1..) == y.shape.get(1..))
}
