//! JSON webhooks (monitor alerts, rollout events): one POST, retried with backoff, under a
//! `webhook` span whose W3C `traceparent` goes with it when traces are exported. `https://` URLs
//! are reached over TLS trusting the system's CAs and `server.webhook_ca_file`.

use std::path::Path;
use std::sync::RwLock;
use std::time::Duration;

use tracing::Instrument;

use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Whether `url` can be a webhook: `http://` or `https://`, with a host.
pub fn valid_url(url: &str) -> bool {
    url.parse::<hyper::Uri>().is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
}

type WebhookClient = Client<HttpsConnector<HttpConnector>, Full<bytes::Bytes>>;

/// The client of every webhook: set by [`configure`] at start; the system's CAs until then.
static CLIENT: RwLock<Option<WebhookClient>> = RwLock::new(None);

/// Trust `ca_file` (PEM) besides the system's CAs for `https://` webhooks.
pub fn configure(ca_file: Option<&Path>) -> Result<(), sluice_wire::tls::ClientTlsError> {
    let client = Client::builder(TokioExecutor::new()).build(sluice_wire::tls::https_connector(ca_file)?);
    *CLIENT.write().unwrap_or_else(|e| e.into_inner()) = Some(client);
    Ok(())
}

fn client() -> Option<WebhookClient> {
    if let Some(c) = CLIENT.read().unwrap_or_else(|e| e.into_inner()).clone() {
        return Some(c);
    }
    match configure(None) {
        Ok(()) => CLIENT.read().unwrap_or_else(|e| e.into_inner()).clone(),
        Err(e) => {
            tracing::warn!("webhooks cannot be sent: {e}");
            None
        }
    }
}

/// Posts `body` (JSON) to `url`: up to 4 attempts (0.5 s, 1 s, 2 s apart), each with a 5 s
/// timeout. Returns whether it was delivered (a 2xx answer). `what` names the sender in logs
/// and in the `user-agent` (`sluice-<what>`).
pub async fn post_json(url: &str, body: Vec<u8>, what: &str) -> bool {
    let span = tracing::info_span!("webhook", what, url = %url);
    post(url, body, what).instrument(span).await
}

async fn post(url: &str, body: Vec<u8>, what: &str) -> bool {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        tracing::warn!(%url, "{what} webhook URL is not valid");
        return false;
    };
    let Some(client) = client() else { return false };
    let body = bytes::Bytes::from(body);
    let mut delay = Duration::from_millis(500);
    for attempt in 0..4 {
        if attempt > 0 {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        let mut req = match hyper::Request::post(uri.clone())
            .header("content-type", "application/json")
            .header("user-agent", format!("sluice-{what}"))
            .body(Full::new(body.clone()))
        {
            Ok(r) => r,
            Err(_) => return false,
        };
        crate::telemetry::inject_current(req.headers_mut());
        match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => return true,
            Ok(Ok(resp)) => tracing::warn!(status = %resp.status(), "{what} webhook refused"),
            Ok(Err(e)) => tracing::warn!("{what} webhook failed: {e}"),
            Err(_) => tracing::warn!("{what} webhook timed out"),
        }
    }
    false
}
