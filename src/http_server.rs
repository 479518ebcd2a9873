//! The HTTP listener every role serves on (`http.listen`), hardened
//! against clients that connect and do nothing.
//!
//! `axum::serve` has no header or idle timeouts and no connection cap: a
//! client that sends half a request header held its connection for as long
//! as it liked (766 s in the attack run, and shutdown waited for it), and a
//! few thousand idle connections used up the process's file descriptors so
//! health checks and ingest timed out. Here:
//!
//! - **Header read timeout** (`http.header_read_timeout_ms`): a request's
//!   head must arrive within it, and since hyper 1.6 the same timer runs
//!   while a keep-alive connection waits for its next request — so it is
//!   also the idle timeout. hyper's timer starts only once hyper-util has
//!   read the first bytes to tell HTTP/1 from HTTP/2, which it waits for
//!   without a limit: a client that connected and sent nothing held its
//!   slot until it went away. [`ingest::first_bytes::FirstBytesWithin`]
//!   gives those first bytes the same timeout.
//! - **Body read timeout** (`http.body_read_timeout_ms`): a body must
//!   arrive within it once the head is in (slow uploads get 408).
//! - **Connection caps**: at most `http.max_connections` open connections
//!   (kept below the file-descriptor limit, which is raised to its hard
//!   maximum at start) and `http.max_connections_per_ip` from one address.
//!   A connection over a cap gets an immediate `503` with `Retry-After`
//!   and is closed, so clients see a clear refusal instead of a hang.
//! - **Half-close**: a client that sends its request and closes its side
//!   still has the request served (its records stored); only the answer
//!   is lost.
//! - **TLS** (`http.tls`): the handshake runs in the connection's task
//!   (a slow handshake never holds the accept loop) within the header read
//!   timeout; certificates come from [`ingest::tls`] and are reloaded on
//!   SIGHUP.
//! - **Bounded shutdown**: in-flight requests get `http.shutdown_grace_ms`
//!   to finish, then connections are dropped.
//!
//! The peer address is given to handlers as [`axum::extract::ConnectInfo`]
//! (sign-in throttling per address uses it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use ingest::conn_caps::{ConnectionCaps, ConnectionMetrics, OpenConnections, Refusal};
use ingest::first_bytes::FirstBytesWithin;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// `[http]`: the listener shared by ingest and the query API.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on. The default only accepts local connections;
    /// use 0.0.0.0:8080 to serve other machines.
    pub listen: SocketAddr,
    /// Open connections at most, all clients together (also capped at
    /// three quarters of the file-descriptor limit).
    pub max_connections: usize,
    /// Open connections at most from one IP address.
    pub max_connections_per_ip: usize,
    /// A request head must arrive within this long; also how long an idle
    /// keep-alive connection is kept.
    pub header_read_timeout_ms: u64,
    /// A request body must arrive within this long once its head is in.
    pub body_read_timeout_ms: u64,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
    /// HTTPS: certificate chain and key (PEM). The files are read again on
    /// SIGHUP; open connections keep their sessions.
    pub tls: Option<ingest::syslog::TlsConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_connections: 8_192,
            max_connections_per_ip: 512,
            header_read_timeout_ms: 30_000,
            body_read_timeout_ms: 120_000,
            shutdown_grace_ms: 30_000,
            tls: None,
        }
    }
}

impl HttpConfig {
    pub fn validate(&self) -> Result<(), schemas::InvalidSetting> {
        use schemas::InvalidSetting;
        if self.max_connections == 0 {
            return Err(InvalidSetting::new(
                "http.max_connections",
                "must be at least 1",
            ));
        }
        if self.max_connections_per_ip == 0 {
            return Err(InvalidSetting::new(
                "http.max_connections_per_ip",
                "must be at least 1",
            ));
        }
        if self.header_read_timeout_ms < 100 {
            return Err(InvalidSetting::new(
                "http.header_read_timeout_ms",
                "must be at least 100",
            ));
        }
        if self.body_read_timeout_ms < 100 {
            return Err(InvalidSetting::new(
                "http.body_read_timeout_ms",
                "must be at least 100",
            ));
        }
        Ok(())
    }
}

/// Raises the soft file-descriptor limit to the hard one and returns the
/// connection cap that leaves a quarter of it for files, sockets to
/// services and syslog.
pub fn effective_max_connections(configured: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "could not read the file-descriptor limit");
            return configured;
        }
    };
    let cap = usize::try_from(limit / 4 * 3).unwrap_or(usize::MAX).max(16);
    if cap < configured {
        info!(
            configured,
            cap,
            fd_limit = limit,
            "http.max_connections lowered to fit the file-descriptor limit"
        );
    }
    configured.min(cap)
}

#[derive(Clone)]
pub struct HttpMetrics {
    open: IntGauge,
    refused: IntCounterVec,
}

impl HttpMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let open = IntGauge::new("securenet_http_connections", "Open HTTP connections")?;
        let refused = IntCounterVec::new(
            Opts::new(
                "securenet_http_connections_refused_total",
                "HTTP connections refused at accept, by the cap they hit",
            ),
            &["reason"],
        )?;
        for reason in Refusal::ALL {
            refused.with_label_values(&[reason.as_str()]);
        }
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        Ok(Self { open, refused })
    }

    fn connections(&self) -> ConnectionMetrics {
        ConnectionMetrics {
            open: self.open.clone(),
            refused: Refusal::ALL.map(|r| self.refused.with_label_values(&[r.as_str()])),
        }
    }
}

const REFUSAL: &str =
    "{\"error\":\"the server is at its connection limit; retry shortly\",\"code\":\"overloaded\"}";

/// Serves `app` on `listener` until `shutdown` resolves, then gives
/// in-flight requests `limits.shutdown_grace_ms` to finish. `caps` are the
/// connection caps as the caller settled them (`http.max_connections`
/// after [`effective_max_connections`], `http.max_connections_per_ip`),
/// the same the gRPC listeners take.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpConfig,
    caps: ConnectionCaps,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: HttpMetrics,
    shutdown: impl Future<Output = ()> + Send,
) {
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        Duration::from_millis(limits.body_read_timeout_ms),
    ));
    let mut builder = Builder::new(TokioExecutor::new());
    // Half-closed connections are served to the end: fire-and-forget
    // senders (pygelf's HTTP handler, `curl` piped into `head`) send a whole
    // request and close, and without this hyper dropped the request — and
    // the records it was storing — at the EOF.
    builder
        .http1()
        .timer(TokioTimer::new())
        .half_close(true)
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(ingest::tls::H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(ingest::tls::H2_KEEPALIVE_TIMEOUT)
        .max_concurrent_streams(64);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = OpenConnections::new(caps, Some(metrics.connections()));
    let mut refusals = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        while refusals.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = match open.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                debug!(%peer, reason = refusal.as_str(), "connection refused");
                refusals.spawn(refuse(stream));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |req: hyper::Request<Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let service = TowerToHyperService::new(service);
        let first_bytes = Duration::from_millis(limits.header_read_timeout_ms);
        let Some(acceptor) = tls.clone() else {
            let stream = FirstBytesWithin::new(stream, first_bytes);
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    debug!(%peer, %error, "connection ended with an error");
                }
                drop(admitted);
            });
            continue;
        };
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let handshake = Duration::from_millis(limits.header_read_timeout_ms);
        tokio::spawn(async move {
            match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let stream = FirstBytesWithin::new(stream, first_bytes);
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    if let Err(error) = watcher.watch(connection).await {
                        debug!(%peer, %error, "connection ended with an error");
                    }
                }
                Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
            drop(admitted);
        });
    }
    drop(listener);
    let grace = Duration::from_millis(limits.shutdown_grace_ms);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            grace_ms = limits.shutdown_grace_ms,
            "connections still open after the shutdown grace period; closing them"
        );
    }
}

/// Answers `503` at once and closes: a clear refusal costs one write.
async fn refuse(mut stream: TcpStream) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{REFUSAL}",
        REFUSAL.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::AsyncReadExt;

    async fn start(limits: HttpConfig) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/hi",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let metrics = HttpMetrics::new(&Registry::new()).unwrap();
        let caps = ConnectionCaps {
            total: limits.max_connections,
            per_ip: limits.max_connections_per_ip,
        };
        tokio::spawn(serve(
            listener,
            app,
            limits,
            caps,
            None,
            metrics,
            async move {
                let _ = rx.await;
            },
        ));
        (addr, tx)
    }

    async fn get_hi(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /hi HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn half_sent_headers_are_dropped_after_the_header_timeout() {
        let (addr, _stop) = start(HttpConfig {
            header_read_timeout_ms: 300,
            ..Default::default()
        })
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /hi HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the server kept the half-sent request open");
        // An idle keep-alive connection is closed the same way.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /hi HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the idle keep-alive connection stayed open");
        assert!(String::from_utf8_lossy(&buf).contains("127.0.0.1"));
    }

    #[tokio::test]
    async fn connections_that_send_nothing_are_closed_after_the_header_timeout() {
        let (addr, _stop) = start(HttpConfig {
            header_read_timeout_ms: 300,
            ..Default::default()
        })
        .await;
        let mut buf = Vec::new();
        // Not one byte; then half of the HTTP/2 preface, which is still
        // "not yet known" to the protocol detection.
        for sent in [&b""[..], &ingest::first_bytes::H2_PREFACE[..10]] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(sent).await.unwrap();
            let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
            assert!(read.is_ok(), "held open after sending {sent:?}");
        }
        // A client that sends its request in pieces, the first within the
        // timeout, is served.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GE").await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(b"T /hi HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }

    #[tokio::test]
    async fn connections_over_the_cap_get_a_clear_503_and_others_still_work_after() {
        let (addr, _stop) = start(HttpConfig {
            max_connections: 4,
            max_connections_per_ip: 2,
            header_read_timeout_ms: 60_000,
            ..Default::default()
        })
        .await;
        let mut idle = Vec::new();
        for _ in 0..2 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = get_hi(addr).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains("retry-after: 1"), "{refused}");
        drop(idle);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ok = get_hi(addr).await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    }
}
