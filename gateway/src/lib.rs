//! Sluice: a model-serving gateway and traffic router for ONNX models.
//!
//! Layers, top to bottom: [`api`] (HTTP, gRPC) -> [`core`] (request path, endpoints) ->
//! [`registry`] (model repository) -> [`runtime`] (ONNX Runtime workers and batching).
//! [`config`] is validated before any of them starts; [`metrics`] is a leaf used by all.
//! [`cli`] is the `sluice` command line, on top of everything (the binary only calls it).

pub mod analysis;
pub mod api;
pub mod budget;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod core;
pub mod durable;
pub mod experiment;
#[cfg(test)]
mod fuzz;
pub mod inference_log;
pub mod limits;
pub mod metrics;
pub mod monitor;
pub mod registry;
pub mod rollout;
pub mod runtime;
pub mod server;
pub mod telemetry;
pub mod tensor;
pub mod traffic_stats;
pub mod webhook;
