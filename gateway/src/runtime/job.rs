//! What travels from a [`super::ModelRunner`] to a worker: a job (one request, its reply
//! channel and its admission permit), a work item (the jobs a worker runs in one go), and the
//! answer. Shared by the batcher, which assembles work items, and the workers, which run them.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::RuntimeError;
use super::stats::PhaseTimes;
use crate::tensor::Tensor;

/// Output of one request.
#[derive(Debug)]
pub struct InferOutput {
    /// One tensor per schema output, in schema order.
    pub outputs: Vec<Tensor>,
    pub phases: PhaseTimes,
    /// Rows in the execution this request was part of.
    pub batch_rows: usize,
}

/// One request on its way to a worker.
pub(super) struct Job {
    pub inputs: Arc<Vec<Tensor>>,
    pub rows: usize,
    pub enqueued: Instant,
    /// Taken when the job is answered; a job dropped unanswered answers itself (see `Drop`).
    reply: Option<oneshot::Sender<Result<InferOutput, RuntimeError>>>,
    /// Held until the job is answered: bounds requests in flight per model.
    admission: Option<OwnedSemaphorePermit>,
    model: Arc<str>,
    /// The caller's span (current when the job is made): the worker's `batch` span is its
    /// child, or linked to it when batched behind another request.
    pub span: tracing::Span,
}

impl Job {
    /// A job for `inputs` (`rows` rows), holding its admission permit until it is answered.
    pub fn new(
        inputs: Arc<Vec<Tensor>>,
        rows: usize,
        reply: oneshot::Sender<Result<InferOutput, RuntimeError>>,
        admission: OwnedSemaphorePermit,
        model: Arc<str>,
    ) -> Job {
        Job {
            inputs,
            rows,
            enqueued: Instant::now(),
            reply: Some(reply),
            admission: Some(admission),
            model,
            span: tracing::Span::current(),
        }
    }

    /// Frees the job's queue slot, then replies: a client that sends its next request as soon
    /// as it has the answer finds the slot free.
    pub fn answer(mut self, result: Result<InferOutput, RuntimeError>) {
        self.reply_with(result);
    }

    fn reply_with(&mut self, result: Result<InferOutput, RuntimeError>) {
        drop(self.admission.take());
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result);
        }
    }
}

impl Drop for Job {
    /// A job dropped without an answer was held by a worker that panicked (or a batcher that
    /// stopped): its caller gets an error at once instead of waiting for its timeout.
    fn drop(&mut self) {
        if self.reply.is_some() {
            let model = self.model.to_string();
            self.reply_with(Err(RuntimeError::WorkerPanicked(model)));
        }
    }
}

/// What a worker runs in one go.
pub(super) struct WorkItem {
    pub jobs: Vec<Job>,
    /// Released when the worker is done: lets the batcher know a worker is free.
    pub _worker_slot: Option<OwnedSemaphorePermit>,
}

/// Sends `item` to a worker (from the batcher, or the idle fast path); when the workers are gone
/// its jobs are answered `Stopped`.
pub(super) fn submit(tx: &flume::Sender<WorkItem>, item: WorkItem) {
    if let Err(flume::SendError(item)) = tx.send(item) {
        for job in item.jobs {
            job.answer(Err(RuntimeError::Stopped("model".into())));
        }
    }
}
