//! Sluice: a model-serving gateway and traffic router for ONNX models.
//!
//! # Layer map
//! Imports point down this list (never up, never in a cycle); a leaf imports only other leaves
//! (and `telemetry` the config types it reads).
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | command line | [`cli`] | the `sluice` binary's subcommands; reads the admin API through its wire format |
//! | process | [`server`] | builds everything from a validated config, the listeners and their tower [`server::stack`], shutdown |
//! | transports | [`api`] | HTTP (`/predict`, V2 REST), gRPC, admin routes: parse into one [`core::Request`], render the answer; [`api::error`] is the one status mapping |
//! | control plane | [`control`], [`rollout`], [`experiment`] | live config edits and history; rollouts (through a narrow traffic trait) and A/B reports (on plain data) |
//! | request path | [`core`] | resolve, route, mirror, run, render; the per-request record (metrics, traffic buckets, table row) |
//! | models | [`registry`] -> [`runtime`] | the model repository; ONNX Runtime sessions on owned worker threads, batching |
//! | logging and monitoring | [`inference_log`], [`monitor`], [`analysis`] | inference tables (fed through handles), drift and quality monitors, the shared read runtime |
//! | config | [`config`] | raw -> validated before any port is bound |
//! | leaves | [`tensor`], [`metrics`], [`telemetry`], [`limits`], [`budget`], [`durable`], [`clock`], [`traffic_stats`], [`webhook`] | tensors and their JSON forms; metric names; logs and traces; request caps; byte budgets; atomic files; the rollout clock; dashboard buckets; outgoing webhooks |
//!
//! Shared with the load tool, in their own crates: `sluice-wire` (the V2 protobuf build, the
//! datatype table) and `sluice-stats` (every statistic, checked against scipy).

pub mod analysis;
pub mod api;
pub mod auth;
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
pub mod table_writer;
pub mod telemetry;
pub mod tensor;
pub mod traffic_stats;
pub mod webhook;
