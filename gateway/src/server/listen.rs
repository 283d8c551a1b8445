//! Accepting connections: the per-listener connection limit, an accept loop that survives
//! running out of file descriptors, and serving each HTTP connection with its header read
//! timeout and HTTP/2 limits (the connection-level part of the stack in `super::stack`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::ListenerLimits;

/// Accepts connections on one listener, each holding one of `max_connections` slots.
pub struct Acceptor {
    listener: TcpListener,
    name: &'static str,
    slots: Arc<Semaphore>,
    /// What a refused connection is told before it is closed (HTTP listeners).
    refusal: Option<Vec<u8>>,
    /// A descriptor held in reserve: when accept fails for want of descriptors, closing it
    /// lets the waiting connection be accepted and refused instead of left in the backlog.
    spare: Option<std::fs::File>,
}

/// A connection and the slot it holds until it closes.
pub struct Slotted {
    stream: Io,
    _slot: OwnedSemaphorePermit,
}

/// A connection's bytes: plain TCP, or TLS over it.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
    }
}

impl Slotted {
    /// The TLS handshake of a plain connection, within `limit`; counted and `None` on failure.
    async fn handshake(self, tls: &TlsAcceptor, limit: Duration, name: &'static str) -> Option<Slotted> {
        let Slotted { stream: Io::Plain(tcp), _slot } = self else { return Some(self) };
        match tokio::time::timeout(limit, tls.accept(tcp)).await {
            Ok(Ok(s)) => Some(Slotted { stream: Io::Tls(Box::new(s)), _slot }),
            Ok(Err(e)) => {
                crate::metrics::connection_refused(name, "tls_handshake");
                tracing::debug!(listener = name, "TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                crate::metrics::connection_refused(name, "tls_handshake");
                None
            }
        }
    }
}

impl Acceptor {
    pub fn new(listener: TcpListener, name: &'static str, max_connections: usize, http: bool) -> Acceptor {
        let refusal = http.then(|| {
            let body = crate::api::error::error_body(&format!(
                "the server has {max_connections} open connections on this port, its limit (server.max_connections); retry later"
            ));
            let mut r = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\nretry-after: 1\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(&body);
            r
        });
        Acceptor {
            listener,
            name,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            refusal,
            spare: std::fs::File::open("/dev/null").ok(),
        }
    }

    /// The next connection that gets a slot. Connections over the limit are refused here;
    /// accept errors are counted and never end the loop.
    pub async fn next(&mut self) -> Slotted {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => match self.slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let _ = stream.set_nodelay(true);
                        return Slotted { stream: Io::Plain(stream), _slot: slot };
                    }
                    Err(_) => self.refuse(stream, "max_connections"),
                },
                Err(e) if is_out_of_descriptors(&e) => {
                    crate::metrics::accept_error(self.name, "fd_exhausted");
                    tracing::warn!(listener = self.name, "out of file descriptors: refusing connections ({e})");
                    self.spare = None;
                    if let Ok(Ok((stream, _))) =
                        tokio::time::timeout(Duration::from_millis(10), self.listener.accept()).await
                    {
                        self.refuse(stream, "fd_exhausted");
                    }
                    self.spare = std::fs::File::open("/dev/null").ok();
                    if self.spare.is_none() {
                        // Nothing freed yet: do not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                Err(e) => {
                    // A connection that failed before it was accepted (reset, aborted): its
                    // own problem, not the listener's.
                    crate::metrics::accept_error(self.name, "connection");
                    tracing::debug!(listener = self.name, "accept: {e}");
                }
            }
        }
    }

    fn refuse(&self, stream: TcpStream, reason: &'static str) {
        crate::metrics::connection_refused(self.name, reason);
        if let Some(r) = &self.refusal {
            // A fresh socket's send buffer takes this at once; nothing waits on a slow peer.
            let _ = stream.try_write(r);
        }
    }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (24): the process's limit; ENFILE (23): the system's.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Raises the soft limit on open files to the hard limit, so the connection limit, not the
/// descriptor limit, is what refuses clients.
pub fn raise_descriptor_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!("open file limit: {n}"),
        Err(e) => tracing::warn!("cannot raise the open file limit: {e}"),
    }
}

/// Serves `router` on `acceptor` until `token` is cancelled, then lets open connections finish
/// their requests (graceful shutdown) and returns.
pub async fn serve_http(
    mut acceptor: Acceptor,
    router: Router,
    limits: ListenerLimits,
    token: CancellationToken,
    tls: Option<TlsAcceptor>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(Some(limits.keepalive_interval))
        .keep_alive_timeout(limits.keepalive_interval);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let conn = tokio::select! {
            _ = token.cancelled() => break,
            conn = acceptor.next() => conn,
        };
        let (builder, router, token, tls) = (builder.clone(), router.clone(), token.clone(), tls.clone());
        let name = acceptor.name;
        let first_bytes = limits.header_read_timeout;
        // Counted by `graceful` from here: shutdown waits for this task too.
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // A connection that sends nothing at all is closed after the header read timeout
            // too: hyper's header timer starts only once the first bytes name the protocol.
            // (`peek`, not `readable`: readiness can be reported before any byte is there.)
            let mut first = [0u8; 1];
            let spoke = tokio::select! {
                r = tokio::time::timeout(first_bytes, conn.stream.tcp().peek(&mut first)) => matches!(r, Ok(Ok(n)) if n > 0),
                _ = token.cancelled() => false,
            };
            if !spoke {
                crate::metrics::connection_refused(name, "silent");
                return;
            }
            // the handshake within the same header read timeout
            let conn = match &tls {
                Some(tls) => match conn.handshake(tls, first_bytes, name).await {
                    Some(c) => c,
                    None => return,
                },
                None => conn,
            };
            let service = TowerToHyperService::new(router);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(conn), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(listener = name, "connection ended: {e}");
            }
        });
    }
    drop(acceptor);
    graceful.shutdown().await;
}

/// The accepted connections of `acceptor` as the stream tonic serves. With `tls`, each
/// connection's handshake runs on its own task (within `handshake_limit`; a slow client holds up
/// no other) and the stream yields the connections whose handshake succeeded; the accept loop
/// stops when `token` is cancelled.
pub fn incoming(
    acceptor: Acceptor,
    tls: Option<TlsAcceptor>,
    handshake_limit: Duration,
    token: CancellationToken,
) -> std::pin::Pin<Box<dyn futures::Stream<Item = io::Result<Slotted>> + Send>> {
    let Some(tls) = tls else {
        return Box::pin(futures::stream::unfold(acceptor, |mut a| async move {
            let conn = a.next().await;
            Some((Ok(conn), a))
        }));
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Slotted>(64);
    tokio::spawn(async move {
        let mut acceptor = acceptor;
        loop {
            let conn = tokio::select! {
                _ = token.cancelled() => return,
                conn = acceptor.next() => conn,
            };
            let (tls, tx, name) = (tls.clone(), tx.clone(), acceptor.name);
            tokio::spawn(async move {
                if let Some(c) = conn.handshake(&tls, handshake_limit, name).await {
                    let _ = tx.send(c).await;
                }
            });
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (Ok(c), rx)) }))
}

macro_rules! io {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.stream {
            Io::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Io::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Slotted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        io!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        io!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        io!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        io!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        io!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for Slotted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.tcp().connect_info()
    }
}
