//! `sluice-wire`: the KServe V2 / Open Inference Protocol as both ends of Sluice speak it.
//!
//! [`pb`] is the gRPC code generated from `proto/inference.proto` (server for the gateway, client
//! for the load tester, both for their tests); [`DataType`] is the table of V2 tensor datatypes
//! (names, Triton config names, element sizes) that the HTTP and gRPC encodings share; the
//! constants name the headers and parameters both ends read outside the schema; [`tls`] is the
//! client side of TLS (whom to trust, an HTTPS connector) both use. The crate
//! holds no behaviour of either program: what a datatype means for a tensor lives with the
//! tensors.

mod datatype;
mod names;
pub mod tls;

pub use datatype::DataType;
pub use names::{INFERENCE_HEADER_CONTENT_LENGTH, SERVED_MODEL_HEADER, SERVED_MODEL_PARAM};

/// Code generated from `proto/inference.proto` (package `inference`).
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("inference");
}
