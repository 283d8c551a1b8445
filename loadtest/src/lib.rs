//! `sluice-loadtest`: a load generator for Sluice and any KServe V2 / MLflow `/predict` server.
//!
//! Layers, top down: [`app`] runs one test (settings -> payload -> load -> report); [`runner`]
//! is the closed/open-loop engine; [`client`] sends over HTTP or gRPC; [`encode`] and
//! [`payload`] (and [`baseline`]) build request bodies; [`recorder`], [`split`], [`slo`] and [`report`] turn the
//! answers into results. See `loadtest/README.md`.

pub mod app;
pub mod baseline;
pub mod cli;
pub mod client;
pub mod encode;
pub mod error;
pub mod payload;
pub mod progress;
pub mod recorder;
pub mod report;
pub mod request_log;
pub mod runner;
pub mod scenario;
pub mod schema;
pub mod settings;
pub mod slo;
pub mod split;
