//! In-process and black-box integration tests: the real gateway on 127.0.0.1:0, real ONNX
//! Runtime, real HTTP and gRPC clients. One test binary so they share one build.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::type_complexity)]

mod admin;
mod auth;
mod blackbox;
mod common;
mod errors;
mod faults;
mod fleet;
mod grpc;
mod monitor;
mod onepath;
mod predict;
mod resilience;
mod rollout;
mod tables;
pub mod traffic;
mod v2_http;
