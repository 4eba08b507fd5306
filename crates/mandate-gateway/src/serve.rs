//! The gateway's listener (and `mandate serve`'s): HTTP/1.1 connections served by hyper, with
//! limits on header size, on how long a client may take to send its headers and on how many
//! connections are served at once, and a graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
pub use tokio_rustls::TlsAcceptor;

use crate::authority::Authority;
use crate::proxy::Gateway;

/// Wraps a tower service (an axum `Router`) for [`listen`].
pub use hyper_util::service::TowerToHyperService;

/// The most bytes of headers a client may send (larger: `431`).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// hyper's read buffer: room for the request line and headers, plus slack.
const READ_BUFFER: usize = 4 * MAX_HEADER_BYTES;

/// How long a client may take to send its request headers, by default.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections served at once, by default.
pub const MAX_CONNECTIONS: usize = 4096;

/// How long a graceful shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Limits on a listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a request's headers, from the moment the connection
    /// opens or its previous answer was sent (so an idle connection is closed after it too).
    pub header_timeout: Duration,
    /// Most connections served at once. While that many are open the listener accepts no
    /// more: new connections wait in the kernel's listen backlog until one closes.
    pub max_connections: usize,
    /// The most bytes of headers the service accepts (it answers `431` beyond); the
    /// connection's read buffer is four times this, so such requests reach it.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: HEADER_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_header_bytes: MAX_HEADER_BYTES,
        }
    }
}

impl Limits {
    /// The limits as configured (`None`: the default); zero is refused.
    pub fn new(
        header_timeout_secs: Option<u64>,
        max_connections: Option<usize>,
    ) -> Result<Limits, String> {
        if header_timeout_secs == Some(0) {
            return Err("`header_timeout_secs` must be at least 1".into());
        }
        if max_connections == Some(0) {
            return Err("`max_connections` must be at least 1".into());
        }
        Ok(Limits {
            header_timeout: header_timeout_secs.map_or(HEADER_TIMEOUT, Duration::from_secs),
            max_connections: max_connections.unwrap_or(MAX_CONNECTIONS),
            max_header_bytes: MAX_HEADER_BYTES,
        })
    }
}

/// Serves `gateway` on `listener` until `shutdown` completes, then lets requests in flight
/// finish (for at most [`SHUTDOWN_GRACE`]). The limits are the plan's
/// ([`crate::Plan::listener`]).
pub async fn serve<A: Authority>(
    gateway: Arc<Gateway<A>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) {
    let limits = gateway.plan().listener;
    let body_timeout = gateway.plan().body_timeout;
    listen(listener, limits, None, shutdown, "gateway", move |peer| {
        let gw = Arc::clone(&gateway);
        service_fn(move |req: Request<Incoming>| {
            let gw = Arc::clone(&gw);
            let req = req.map(|body| Deadline::new(body, body_timeout));
            async move { Ok::<_, Infallible>(gw.handle(req, Some(peer.ip())).await) }
        })
    })
    .await;
}

/// A request body that must arrive in full within a time limit (a slow body is cut: the
/// upstream, or whoever reads it, sees an error).
struct Deadline<B> {
    body: B,
    sleep: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    done: bool,
}

impl<B> Deadline<B> {
    fn new(body: B, limit: Duration) -> Deadline<B> {
        Deadline {
            body,
            sleep: Box::pin(tokio::time::sleep(limit)),
            limit,
            done: false,
        }
    }
}

impl<B> hyper::body::Body for Deadline<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.done = true;
                Poll::Ready(Some(Err(format!(
                    "the request body did not arrive within {} s",
                    this.limit.as_secs()
                )
                .into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The certificate chain a client presented in the TLS handshake, leaf first, already verified
/// by the listener's client-certificate verifier. [`listen`] puts it into the extensions of
/// every request on that connection; plain connections and TLS clients that sent none have
/// no such extension.
#[derive(Debug, Clone)]
pub struct ClientCertificates(pub Arc<[CertificateDer<'static>]>);

impl ClientCertificates {
    /// The end-entity certificate.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.0.first()
    }
}

/// A connection's service, adding the client's certificates to each request.
#[derive(Clone)]
struct WithClientCertificates<S> {
    inner: S,
    certs: Option<ClientCertificates>,
}

impl<S> hyper::service::Service<Request<Incoming>> for WithClientCertificates<S>
where
    S: hyper::service::Service<Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        // Never trust a value that came from anywhere but this connection's handshake.
        req.extensions_mut().remove::<ClientCertificates>();
        if let Some(certs) = &self.certs {
            req.extensions_mut().insert(certs.clone());
        }
        self.inner.call(req)
    }
}

/// Serves HTTP/1.1 on `listener` with `limits`: a service made by `make` for each connection
/// (given the peer's address), headers of at most [`MAX_HEADER_BYTES`] read within the header
/// timeout, at most `max_connections` connections at once. With `tls`, each connection is a
/// TLS connection first (its handshake bounded by the header timeout too), and a client's
/// verified certificates reach the service as [`ClientCertificates`]. Runs until `shutdown`
/// completes, then lets requests in flight finish (for at most [`SHUTDOWN_GRACE`]). `name` is
/// for logs.
pub async fn listen<S, B>(
    listener: TcpListener,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send,
    name: &'static str,
    make: impl Fn(SocketAddr) -> S,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        if permits.available_permits() == 0 {
            tracing::debug!(
                listener = name,
                max = limits.max_connections,
                "connection limit reached; new connections wait"
            );
        }
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(READ_BUFFER.max(limits.max_header_bytes.saturating_mul(4)));
        let service = make(peer);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            // The connection holds its place until it ends.
            let _permit = permit;
            let result = match tls {
                None => {
                    let service = WithClientCertificates {
                        inner: service,
                        certs: None,
                    };
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(tls) => {
                    let stream = match tokio::time::timeout(
                        limits.header_timeout,
                        tls.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let certs = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .filter(|c| !c.is_empty())
                        .map(|c| {
                            ClientCertificates(c.iter().map(|d| d.clone().into_owned()).collect())
                        });
                    let service = WithClientCertificates {
                        inner: service,
                        certs,
                    };
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(listener = name, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "shutdown: requests still in flight were cut"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// A body that never sends anything.
    struct Silent;

    impl hyper::body::Body for Silent {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_is_cut() {
        use http_body_util::BodyExt;
        let started = std::time::Instant::now();
        let mut body = Deadline::new(Silent, Duration::from_millis(100));
        let e = body.frame().await.unwrap().unwrap_err();
        assert_eq!(e.to_string(), "the request body did not arrive within 0 s");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(body.frame().await.is_none());
        // A body that is all there is comes through untouched.
        let mut whole = Deadline::new(
            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
            Duration::from_millis(100),
        );
        let data = whole.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&data[..], b"ok");
    }

    #[test]
    fn limits_default_and_refuse_zero() {
        assert_eq!(Limits::new(None, None).unwrap(), Limits::default());
        let l = Limits::new(Some(1), Some(8)).unwrap();
        assert_eq!(
            (l.header_timeout, l.max_connections),
            (Duration::from_secs(1), 8)
        );
        assert_eq!(
            Limits::new(Some(0), None).unwrap_err(),
            "`header_timeout_secs` must be at least 1"
        );
        assert_eq!(
            Limits::new(None, Some(0)).unwrap_err(),
            "`max_connections` must be at least 1"
        );
    }
}
