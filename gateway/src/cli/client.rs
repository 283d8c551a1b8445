//! The HTTP client of a running gateway's admin API (`--admin-url`, `--token`): one request, its
//! JSON answer, and a non-2xx answer turned into the server's `error` text.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::CliError;

/// A client of the admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl AdminClient {
    /// `base`: e.g. `http://127.0.0.1:8002`, or `https://` trusting the system's CAs and
    /// `ca_cert`.
    pub fn new(base: &str, token: Option<String>, ca_cert: Option<&std::path::Path>) -> Result<AdminClient, CliError> {
        let connector = sluice_wire::tls::https_connector(ca_cert).map_err(|e| CliError::Tls(e.to_string()))?;
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Sends a request; a non-2xx answer is an error carrying the server's `error` text.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let mut req = hyper::Request::builder().method(method.clone()).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        // Every state-changing call says JSON, body or not: the admin API refuses one that does
        // not (a cross-site form cannot send it).
        if body.is_some() || method != Method::GET {
            req = req.header("content-type", "application/json");
        }
        let payload = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let req = req.body(Full::new(payload)).map_err(|source| CliError::Request { url: url.clone(), source })?;
        let resp = self.client.request(req).await.map_err(|e| {
            let mut detail = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                detail.push_str(": ");
                detail.push_str(&c.to_string());
                cause = c.source();
            }
            CliError::Unreachable { base: self.base.clone(), detail }
        })?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value: Value =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        if status.is_success() {
            Ok(value)
        } else {
            let msg = value.get("error").and_then(Value::as_str).unwrap_or("no error text");
            Err(CliError::Status { status: status.as_u16(), message: msg.to_string() })
        }
    }
}

/// Percent-encodes a query parameter value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
