//! The tower stack every HTTP listener serves through, and its gRPC counterpart, assembled in
//! one place. Everything cross-cutting lives here; handlers below only parse, call the core
//! and render. Outermost first:
//!
//! 0. **request id and span**: the client's `x-request-id` (capped, else 400) or a new one, as
//!    a [`RequestId`] extension for the handlers; a `request` tracing span around everything
//!    below; `x-request-id` on every answer, errors included.
//! 1. **catch panic**: a handler that panics answers 500 `{"error"}`; the connection, the
//!    listener and the process go on.
//! 2. **total timeout** (`server.total_timeout_ms`): a request not answered in time gets 504.
//! 3. **body limit** (`server.max_body_bytes`): a Content-Length over it is answered 413 at
//!    once, unread; a body without one stops being read past it (413 from the handler's read).
//! 4. **admission** (`server.max_concurrent_requests`, `server.max_buffered_body_bytes`,
//!    inference listeners only): every POST holds a slot and its body's bytes (its
//!    Content-Length; without one, `max_body_bytes`) until it is answered; with either used up
//!    it is answered 429 at once, before its body is read. Load is shed, never queued. Health,
//!    metadata and metrics (GETs) never wait. Parsing costs at most a measured multiple of the
//!    body (README, "What is bounded"), so this budget bounds the memory requests can take.
//! 5. **body deadline** (`server.body_read_timeout_ms`): the body must have arrived this long
//!    after the headers; reading past it fails and the request gets 408.
//!
//! 0a. **auth** ([`Guard`]): the route's need (`api::access`) and the caller's bearer token
//!    against the tokens in force: 401 (with `WWW-Authenticate: Bearer`) / 403, counted per
//!    principal. A refused caller still gets an id and a span, and costs no admission slot.
//!    On the inference port the principal's name replaces any client-set
//!    `x-sluice-requester`, so the table's `requester` column says who really called.
//!
//! Per connection (`super::listen`): the connection limit, the header read timeout, HTTP/2
//! stream limit and keep-alive pings. gRPC gets the same from [`grpc_builder`] (whole-call
//! timeout, stream limit, pings, a span per call), [`GrpcAdmit`] (admission) and the service's
//! message size limit (`server.max_body_bytes`, answered RESOURCE_EXHAUSTED).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use tracing::Instrument;

use crate::api::ApiError;
use crate::api::access::{self, Port};
use crate::api::http::BodyTimeout;
use crate::api::request_id::{self, REQUEST_ID_HEADER, RequestId};
use crate::config::ListenerLimits;
use crate::control::Control;
use crate::core::CoreError;

/// Slots for inference requests in progress, shared by the HTTP and gRPC listeners, and the
/// budget of HTTP request-body bytes being read and parsed at once.
#[derive(Debug, Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    limit: usize,
    /// In KiB (a semaphore counts in u32 permits).
    body_kib: Arc<Semaphore>,
    body_budget: usize,
    max_body: usize,
}

/// A request slot held: counted in `sluice_requests_in_flight` while held.
struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Slot {
    fn new(permit: OwnedSemaphorePermit) -> Slot {
        crate::metrics::in_flight(1.0);
        Slot(permit)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        crate::metrics::in_flight(-1.0);
    }
}

impl Admission {
    pub fn new(limits: &ListenerLimits, max_body_bytes: usize) -> Admission {
        let limit = limits.max_concurrent_requests.max(1);
        let body_budget = limits.max_buffered_body_bytes.max(max_body_bytes);
        Admission {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            body_kib: Arc::new(Semaphore::new(kib(body_budget) as usize)),
            body_budget,
            max_body: max_body_bytes,
        }
    }

    /// A slot, or the 429 / RESOURCE_EXHAUSTED answer when every one is taken.
    fn try_admit(&self, protocol: &'static str) -> Result<Slot, ApiError> {
        self.slots.clone().try_acquire_owned().map(Slot::new).map_err(|_| {
            crate::metrics::load_shed(protocol);
            ApiError::Core(CoreError::Overloaded(format!(
                "the server has {} requests in progress, its limit (server.max_concurrent_requests); retry later",
                self.limit
            )))
        })
    }

    /// Room for a body of `content_length` bytes (unknown: the largest allowed), or 429. A
    /// body larger than `max_body_bytes` reserves nothing: it is refused (413) unread.
    fn try_reserve_body(&self, content_length: Option<u64>) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        let bytes = match content_length {
            Some(n) if n > self.max_body as u64 => return Ok(None),
            Some(n) => n as usize,
            None => self.max_body,
        };
        self.body_kib.clone().try_acquire_many_owned(kib(bytes)).map(Some).map_err(|_| {
            crate::metrics::load_shed("http");
            ApiError::Core(CoreError::Overloaded(format!(
                "the server is reading {} bytes of request bodies at once, its limit \
                 (server.max_buffered_body_bytes); retry later",
                self.body_budget
            )))
        })
    }
}

/// Bytes in whole KiB, rounded up, as semaphore permits.
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// Wraps `router` in the stack described at the top of this module. `admission` is `None` on
/// the admin listener, whose requests never compete with inference for slots.
pub fn http_stack(
    router: Router,
    limits: &ListenerLimits,
    max_body_bytes: usize,
    admission: Option<Admission>,
    guard: Guard,
) -> Router {
    let router = router.layer(middleware::from_fn_with_state(limits.body_read_timeout, body_deadline));
    let router = match admission {
        Some(a) => router.layer(middleware::from_fn_with_state(a, admit)),
        None => router,
    };
    router
        .layer(middleware::from_fn_with_state(max_body_bytes, body_limit))
        .layer(middleware::from_fn_with_state(limits.total_timeout, total_timeout))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn_with_state(guard, authenticate))
        // errors of Databricks' API (`/api/2.0/...`) in its shape, auth refusals included
        .layer(middleware::from_fn(crate::api::serving_endpoints::databricks_errors))
        .layer(middleware::from_fn(request_id_and_span))
}

/// The auth layer's view: the tokens in force (a reload rotates them) and the snapshot that
/// says which V2 names are endpoints, for requests on `port`.
#[derive(Debug, Clone)]
pub struct Guard {
    pub control: Arc<Control>,
    pub port: Port,
}

async fn authenticate(State(guard): State<Guard>, mut req: Request, next: Next) -> Response {
    let access = guard.control.access();
    if !access.any_token() {
        // no token configured at all: every route is open (what `authorize` would decide)
        req.extensions_mut().insert(access::Caller(None));
        return next.run(req).await;
    }
    let need =
        access::http_need(guard.port, req.method(), req.uri().path(), &guard.control.gateway().snapshot(), &access);
    match access::authorize(&access, &need, access::bearer(req.headers())) {
        Ok(caller) => {
            if let Some(p) = &caller.0
                && guard.port == Port::Inference
            {
                name_requester(req.headers_mut(), &p.name);
            }
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => {
            let e = ApiError::from(e);
            crate::metrics::rejected(if guard.port == Port::Admin { "admin" } else { "http" }, e.kind());
            let unauthenticated = matches!(e, ApiError::Unauthorized(_));
            let mut response = e.into_response();
            if unauthenticated {
                response
                    .headers_mut()
                    .insert(axum::http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}

/// The principal, not the client, names the requester (`x-sluice-requester`).
fn name_requester(headers: &mut http::HeaderMap, principal: &str) {
    if let Ok(v) = http::HeaderValue::from_str(principal) {
        headers.insert(crate::api::meta::REQUESTER_HEADER, v);
    }
}

async fn request_id_and_span(mut req: Request, next: Next) -> Response {
    let (id, refused) = match request_id::from_headers(req.headers()) {
        Ok(id) => (id, None),
        Err(e) => (request_id::generate(), Some(ApiError::from(e))),
    };
    // Debug level, like every per-request span: exported always, in logs only on request. At
    // info, the log layer formats its fields on every request (0.8x /predict throughput at
    // concurrency 1, BENCHMARKS.md).
    let span = tracing::debug_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        status = tracing::field::Empty,
    );
    crate::telemetry::continue_trace(&span, req.headers());
    let mut response = match refused {
        Some(e) => {
            crate::metrics::rejected("http", e.kind());
            span.in_scope(|| e.into_response())
        }
        None => {
            req.extensions_mut().insert(RequestId(id.clone()));
            next.run(req).instrument(span.clone()).await
        }
    };
    span.record("status", u64::from(response.status().as_u16()));
    if !response.headers().contains_key(REQUEST_ID_HEADER)
        && let Ok(v) = http::HeaderValue::from_str(&id)
    {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

async fn admit(State(admission): State<Admission>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let content_length = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let admitted = admission
        .try_admit("http")
        .and_then(|slot| admission.try_reserve_body(content_length).map(|body| (slot, body)));
    match admitted {
        Ok(held) => {
            let response = next.run(req).await;
            drop(held);
            response
        }
        Err(e) => {
            crate::metrics::rejected("http", e.kind());
            e.into_response()
        }
    }
}

async fn total_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            let e = ApiError::Core(CoreError::Timeout(format!(
                "the request was not answered within {} ms (server.total_timeout_ms)",
                limit.as_millis()
            )));
            crate::metrics::rejected("http", e.kind());
            e.into_response()
        }
    }
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked; answered 500");
    crate::metrics::rejected("http", "internal");
    ApiError::Core(CoreError::Internal("internal error while handling the request".into())).into_response()
}

async fn body_limit(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let content_length = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if content_length.is_some_and(|n| n > limit as u64) {
        let e = ApiError::PayloadTooLarge(limit);
        crate::metrics::rejected("http", e.kind());
        return e.into_response();
    }
    let (parts, body) = req.into_parts();
    let body = Body::new(http_body_util::Limited::new(body, limit));
    next.run(Request::from_parts(parts, body)).await
}

async fn body_deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let body = Body::new(DeadlineBody { inner: body, deadline: Box::pin(tokio::time::sleep(limit)), limit });
    next.run(Request::from_parts(parts, body)).await
}

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(self.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The gRPC server's share of the stack: whole-call timeout, stream limit, keep-alive pings.
pub fn grpc_builder(limits: &ListenerLimits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .timeout(limits.total_timeout)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_interval))
        .tcp_nodelay(true)
        .trace_fn(|req| {
            let span = tracing::debug_span!("request", path = %req.uri().path(), transport = "grpc");
            crate::telemetry::continue_trace(&span, req.headers());
            span
        })
}

/// Admission for gRPC: `ModelInfer` calls hold a slot of the shared [`Admission`] until they
/// are answered; with none free the answer is RESOURCE_EXHAUSTED before the message is decoded.
#[derive(Debug, Clone)]
pub struct GrpcAdmit<S> {
    inner: S,
    admission: Admission,
    control: Arc<Control>,
}

impl<S> GrpcAdmit<S> {
    pub fn new(inner: S, admission: Admission, control: Arc<Control>) -> GrpcAdmit<S> {
        GrpcAdmit { inner, admission, control }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for GrpcAdmit<S> {
    const NAME: &'static str = S::NAME;
}

/// tonic answers a message over `max_decoding_message_size` (`server.max_body_bytes`) with
/// OUT_OF_RANGE; the gateway's answer is that of [`ApiError::PayloadTooLarge`] (as over HTTP,
/// 413), whose code `api::error` chooses. No service of the gateway answers OUT_OF_RANGE
/// itself, so the code alone says which answer this is.
fn too_large_is_resource_exhausted(mut response: GrpcResponse) -> GrpcResponse {
    let out_of_range = (tonic::Code::OutOfRange as i32).to_string();
    if response.headers().get("grpc-status").is_some_and(|v| v.as_bytes() == out_of_range.as_bytes()) {
        let too_large = ApiError::PayloadTooLarge(0);
        let code = (too_large.codes().1 as i32).to_string();
        if let Ok(v) = http::HeaderValue::from_str(&code) {
            response.headers_mut().insert("grpc-status", v);
        }
        crate::metrics::rejected("grpc", too_large.kind());
    }
    response
}

type GrpcRequest = http::Request<tonic::body::Body>;
type GrpcResponse = http::Response<tonic::body::Body>;

impl<S> tower::Service<GrpcRequest> for GrpcAdmit<S>
where
    S: tower::Service<GrpcRequest, Response = GrpcResponse> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = GrpcResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<GrpcResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: GrpcRequest) -> Self::Future {
        // auth first (as over HTTP): a valid token here, ModelInfer's scope once its model
        // name is decoded (`api::grpc`)
        let access = self.control.access();
        match access::authorize(&access, &access::grpc_need(req.uri().path()), access::bearer(req.headers())) {
            Ok(caller) => {
                if let Some(p) = &caller.0 {
                    name_requester(req.headers_mut(), &p.name);
                }
                req.extensions_mut().insert(caller);
            }
            Err(e) => {
                let e = ApiError::from(e);
                crate::metrics::rejected("grpc", e.kind());
                return Box::pin(std::future::ready(Ok(tonic::Status::from(e).into_http())));
            }
        }
        if !req.uri().path().ends_with("/ModelInfer") {
            let call = self.inner.call(req);
            return Box::pin(async move { call.await.map(too_large_is_resource_exhausted) });
        }
        match self.admission.try_admit("grpc") {
            Ok(slot) => {
                let call = self.inner.call(req);
                Box::pin(async move {
                    let response = call.await;
                    drop(slot);
                    response.map(too_large_is_resource_exhausted)
                })
            }
            Err(e) => {
                crate::metrics::rejected("grpc", e.kind());
                Box::pin(std::future::ready(Ok(tonic::Status::from(e).into_http())))
            }
        }
    }
}
