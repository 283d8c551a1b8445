//! The model runtime: ONNX Runtime sessions owned by worker threads, fed by per-model batching
//! queues. Everything above this layer talks to a [`ModelRunner`] and never to `ort` directly.

mod batcher;
mod job;
pub mod library;
pub mod schema;
pub mod stats;
mod worker;

use std::time::Duration;

pub use batcher::BatchingOptions;
pub use job::InferOutput;
pub use schema::{ModelSchema, SchemaError, TensorSpec};
pub use stats::ModelStats;
pub use worker::{ExecutionOptions, ModelRunner, Provider, RunnerOptions};

/// Errors of the runtime layer.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The ONNX Runtime shared library could not be loaded.
    #[error("{0}")]
    Library(String),
    /// A model file could not be turned into a session.
    #[error("model {model} version {version}: {message}")]
    Load { model: String, version: u64, message: String },
    /// The model's queue is full.
    #[error("model {model} is overloaded: {capacity} requests already queued")]
    Overloaded { model: String, capacity: usize },
    /// ONNX Runtime failed while running the model.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The workers stopped (shutdown in progress).
    #[error("model {0} is shutting down")]
    Stopped(String),
    /// The request waited longer than allowed.
    #[error("inference did not finish within {0:?}")]
    Timeout(Duration),
    /// The worker holding the request panicked; the request was not run to the end.
    #[error("model {0}: the worker running this request failed; the request was not completed")]
    WorkerPanicked(String),
}
