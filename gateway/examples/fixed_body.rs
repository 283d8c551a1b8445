//! The ceiling of this machine's HTTP stack: a minimal hyper server (the same hyper, tokio
//! runtime and HTTP/1.1 keep-alive the gateway uses) that answers every request with a fixed
//! `/predict`-sized JSON body, without reading the model. Driven by `sluice-loadtest` like the
//! gateway, it shows how much of the gateway's throughput is the HTTP stack itself.
//!
//!     cargo run --release -p sluice --example fixed_body -- [addr] [ports-file]
//!
//! Default address 127.0.0.1:0; the bound port is printed (and written to `ports-file`).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

const BODY: &str = r#"{"predictions":[{"label":"legit","probabilities":{"legit":0.82,"fraud":0.18}}]}"#;

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // read the body, as the gateway must, then answer the same bytes every time
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY.as_bytes())));
    let h = resp.headers_mut();
    h.insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    h.insert("x-sluice-served-model", hyper::header::HeaderValue::from_static("fixed"));
    Ok(resp)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:0".into());
    let ports_file = args.get(2).cloned();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        let local = listener.local_addr()?;
        println!("fixed-body server on {local}");
        if let Some(f) = ports_file {
            std::fs::write(f, local.port().to_string())?;
        }
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(answer);
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}
