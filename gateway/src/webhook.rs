//! JSON webhooks (monitor alerts, rollout events): one POST, retried with backoff, under a
//! `webhook` span whose W3C `traceparent` goes with it when traces are exported.

use std::time::Duration;

use tracing::Instrument;

use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

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
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
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
