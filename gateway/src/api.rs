//! Transports: HTTP (MLflow `/predict`, KServe V2 REST, metrics), gRPC (KServe V2), and the
//! admin port ([`admin`]: the admin API, the dashboard, metrics and health).
//! Handlers are thin: extract, call one [`crate::core::Gateway`] function, map the result.

pub mod access;
pub mod admin;
pub mod error;
pub mod grpc;
pub mod http;
pub mod meta;
pub mod mlflow;
pub mod openapi;
pub mod rate;
pub mod request_id;
pub mod serving_endpoints;
pub mod v2;

pub use error::ApiError;
