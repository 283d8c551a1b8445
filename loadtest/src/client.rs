//! Sends prepared requests over HTTP/1.1 (hyper, keep-alive pool) or gRPC (tonic, one HTTP/2
//! channel) and classifies each answer: success with the served model the server reported, or
//! an error kind (`http_<status>`, `grpc_<CODE>`, `transport`, `timeout`).

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sluice_wire::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use sluice_wire::{INFERENCE_HEADER_CONTENT_LENGTH, SERVED_MODEL_HEADER, SERVED_MODEL_PARAM, pb};
use tonic::transport::Channel;

use crate::encode::{HttpBody, Prepared};
use crate::error::Error;

/// The response header that carries the server's request id (Sluice, and most gateways).
const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest error detail kept as an example in the report.
const DETAIL_CHARS: usize = 200;

/// How one request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A success; `served` is the served model the server named, if it named one, and `id` the
    /// request id it answered with, if any.
    Ok { served: Option<String>, id: Option<String> },
    /// A failure: its kind (the report's error key) and a short detail.
    Failed { kind: String, detail: String },
}

impl Outcome {
    pub(crate) fn failed(kind: impl Into<String>, detail: impl Into<String>) -> Outcome {
        let detail: String = detail.into();
        Outcome::Failed { kind: kind.into(), detail: detail.chars().take(DETAIL_CHARS).collect() }
    }
}

/// An HTTP/1.1 client with a keep-alive pool (one connection per concurrent request), over TLS
/// for `https://` URLs.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    headers: HeaderMap,
}

impl HttpClient {
    /// A client that adds `headers` to every request and trusts `ca_cert` (PEM) besides the
    /// system's CAs.
    pub fn new(headers: HeaderMap, ca_cert: Option<&std::path::Path>) -> Result<HttpClient, Error> {
        let connector = sluice_wire::tls::https_connector(ca_cert).map_err(|e| Error::usage(e.to_string()))?;
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(connector);
        Ok(HttpClient { client, headers })
    }

    /// POSTs a body; 2xx is a success and reads `x-sluice-served-model`.
    pub async fn post(&self, uri: &Uri, body: &HttpBody) -> Outcome {
        let mut req = Request::new(Full::new(body.body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri.clone();
        let h = req.headers_mut();
        h.extend(self.headers.clone());
        h.insert(CONTENT_TYPE, HeaderValue::from_static(body.content_type));
        if let Some(n) = body.inference_header_len {
            h.insert(HeaderName::from_static(INFERENCE_HEADER_CONTENT_LENGTH), HeaderValue::from(n));
        }
        let resp = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => return Outcome::failed("transport", error_chain(&e)),
        };
        let status = resp.status();
        let served = resp.headers().get(SERVED_MODEL_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
        let id = resp.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Outcome::failed("transport", format!("reading the answer: {}", error_chain(&e))),
        };
        if status.is_success() {
            Outcome::Ok { served, id }
        } else {
            Outcome::failed(format!("http_{}", status.as_u16()), error_text(&bytes))
        }
    }

    /// GETs a JSON document (setup calls: metadata, admin); any failure is a connection error.
    pub async fn get_json(&self, url: &str, bearer: Option<&str>) -> Result<serde_json::Value, Error> {
        let uri: Uri = url.parse().map_err(|e| Error::usage(format!("bad URL {url}: {e}")))?;
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = uri;
        req.headers_mut().extend(self.headers.clone());
        if let Some(token) = bearer {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::usage("the admin token is not a valid header value"))?;
            req.headers_mut().insert(AUTHORIZATION, value);
        }
        let resp =
            self.client.request(req).await.map_err(|e| Error::connect(format!("GET {url}: {}", error_chain(&e))))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::connect(format!("GET {url}: {}", error_chain(&e))))?
            .to_bytes();
        if !status.is_success() {
            return Err(Error::connect(format!("GET {url}: HTTP {status}: {}", error_text(&bytes))));
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::connect(format!("GET {url}: the answer is not JSON: {e}")))
    }
}

/// The `error` member of a JSON error body, else the start of the body.
fn error_text(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(DETAIL_CHARS)]).into_owned())
}

/// An error and its sources, joined by ": " (hyper's top-level messages alone say little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// A KServe V2 gRPC client over one HTTP/2 channel.
#[derive(Debug, Clone)]
pub struct GrpcClient {
    client: GrpcInferenceServiceClient<Channel>,
    headers: HeaderMap,
}

impl GrpcClient {
    /// Connects to `url` (`http://host:port`, or `https://` over TLS trusting the system's CAs
    /// and `ca_cert`); `headers` become request metadata.
    pub async fn connect(
        url: &str,
        headers: HeaderMap,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<GrpcClient, Error> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| Error::usage(format!("bad gRPC URL {url}: {e}")))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10));
        if url.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
            if let Some(path) = ca_cert {
                let pem = std::fs::read(path)
                    .map_err(|e| Error::usage(format!("cannot read CA file {}: {e}", path.display())))?;
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| Error::usage(format!("TLS for {url}: {e}")))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Error::connect(format!("cannot connect to gRPC server {url}: {}", error_chain(&e))))?;
        let client = GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(GrpcClient { client, headers })
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        *req.metadata_mut() = tonic::metadata::MetadataMap::from_headers(self.headers.clone());
        req
    }

    /// ModelInfer; the served model comes from the `sluice_served_model` response parameter, else
    /// from `x-sluice-served-model` response metadata.
    pub async fn infer(&self, msg: pb::ModelInferRequest) -> Outcome {
        let mut client = self.client.clone();
        match client.model_infer(self.request(msg)).await {
            Ok(resp) => {
                let from_meta =
                    resp.metadata().get(SERVED_MODEL_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
                let from_param =
                    resp.get_ref().parameters.get(SERVED_MODEL_PARAM).and_then(|p| match &p.parameter_choice {
                        Some(pb::infer_parameter::ParameterChoice::StringParam(s)) => Some(s.clone()),
                        _ => None,
                    });
                let id = Some(resp.get_ref().id.clone()).filter(|id| !id.is_empty());
                Outcome::Ok { served: from_param.or(from_meta), id }
            }
            Err(status) => {
                // A status with a source was made by the client from a transport failure; one the
                // server sent has none.
                if std::error::Error::source(&status).is_some() {
                    Outcome::failed("transport", format!("{}: {}", status.message(), error_chain(&status)))
                } else {
                    Outcome::failed(format!("grpc_{}", code_name(status.code())), status.message())
                }
            }
        }
    }

    /// ModelMetadata: the inputs as (name, datatype, shape).
    pub async fn metadata(&self, model: &str, version: Option<&str>) -> Result<Vec<(String, String, Vec<i64>)>, Error> {
        let mut client = self.client.clone();
        let msg =
            pb::ModelMetadataRequest { name: model.to_string(), version: version.unwrap_or_default().to_string() };
        let resp = client.model_metadata(self.request(msg)).await.map_err(|s| {
            Error::connect(format!("gRPC ModelMetadata for '{model}': {} {}", code_name(s.code()), s.message()))
        })?;
        Ok(resp.into_inner().inputs.into_iter().map(|t| (t.name, t.datatype, t.shape)).collect())
    }
}

/// The canonical name of a gRPC status code (`RESOURCE_EXHAUSTED`, ...).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Where requests go.
#[derive(Debug, Clone)]
pub enum Sender {
    Http { client: Box<HttpClient>, uri: Uri },
    Grpc { client: GrpcClient },
}

impl Sender {
    /// Sends one request, giving up after `timeout`.
    pub async fn send(&self, prepared: Prepared, timeout: Duration) -> Outcome {
        let fut = async {
            match (self, prepared) {
                (Sender::Http { client, uri }, Prepared::Http(body)) => client.post(uri, &body).await,
                (Sender::Grpc { client }, Prepared::Grpc(msg)) => client.infer(msg).await,
                _ => Outcome::failed("client_error", "request prepared for another transport"),
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::failed("timeout", format!("no answer within {}", humantime::format_duration(timeout))),
        }
    }

    /// Whether this sender speaks gRPC.
    pub fn is_grpc(&self) -> bool {
        matches!(self, Sender::Grpc { .. })
    }
}
