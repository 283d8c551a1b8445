//! Names outside the schema that the gateway and its clients agree on: an HTTP header (also a
//! gRPC metadata key) and a response parameter of Sluice's, and the header of the V2 binary
//! tensor extension.

/// Header (HTTP) and metadata key (gRPC): on a request, pins it to a served model; on an answer,
/// names the served model that answered.
pub const SERVED_MODEL_HEADER: &str = "x-sluice-served-model";

/// The `ModelInferResponse` parameter that names the served model that answered.
pub const SERVED_MODEL_PARAM: &str = "sluice_served_model";

/// The V2 binary tensor extension's header: the length in bytes of a body's JSON part, which the
/// raw tensor bytes follow.
pub const INFERENCE_HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";
