//! TLS for the listeners that serve it — the HTTP listener (ingest and the
//! API), with the same certificate the gRPC listeners (OTLP/gRPC, Flight
//! SQL), and syslog/GELF/Fluent listeners with `protocol = "tls"`:
//! certificate chain and key from PEM files, reloadable in place; client
//! certificates on the log stream listeners.
//!
//! Each listener's [`Certificates`] is the rustls certificate resolver of
//! its server configuration, so a reload ([`reload_all`], on SIGHUP) changes
//! what new handshakes get while every open connection keeps the session
//! it has — nothing is dropped, as with nginx's reload. A reload that fails
//! (a missing file, a key that does not match) keeps the certificate in use
//! and says why.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context, Poll};

use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::conn_caps::{OpenConnections, Slot};
use crate::first_bytes::FirstBytesWithin;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("reading certificate {}: {source}", path.display())]
    ReadCertificate {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("parsing certificate {}: {source}", path.display())]
    ParseCertificate {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("no certificate in {}", .0.display())]
    NoCertificate(PathBuf),
    #[error("reading private key {}: {source}", path.display())]
    ReadKey {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("certificate and key do not match: {0}")]
    Mismatch(rustls::Error),
    #[error("TLS protocol versions: {0}")]
    Versions(rustls::Error),
    #[error("reading client CA certificates {}: {source}", path.display())]
    ReadClientCa {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("client CA certificates {}: {why}", path.display())]
    ClientCa { path: PathBuf, why: String },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|source| TlsSetupError::ReadCertificate {
            path: cert.to_path_buf(),
            source,
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsSetupError::ParseCertificate {
            path: cert.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate(cert.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsSetupError::ReadKey {
        path: key.to_path_buf(),
        source,
    })?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(TlsSetupError::Mismatch)
}

/// A listener's certificate and key, and the files they come from.
#[derive(Debug)]
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

/// Every listener's certificates in this process, for [`reload_all`] (weak:
/// a listener that stopped is forgotten).
static LOADED: Mutex<Vec<Weak<Certificates>>> = Mutex::new(Vec::new());

impl Certificates {
    /// Loads the files now (an error here stops the listener from starting).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsSetupError> {
        let loaded = Arc::new(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(load(cert, key)?)),
        });
        let mut all = LOADED.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|c| c.strong_count() > 0);
        all.push(Arc::downgrade(&loaded));
        Ok(loaded)
    }

    /// Reads the files again; on failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsSetupError> {
        let fresh = Arc::new(load(&self.cert, &self.key)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// A server configuration presenting these certificates (ALPN as
    /// given: `h2` and `http/1.1` for HTTP, none for log streams), asking
    /// clients for certificates when a verifier is given.
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
        clients: Option<Arc<dyn ClientCertVerifier>>,
    ) -> Result<rustls::ServerConfig, TlsSetupError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsSetupError::Versions)?;
        let builder = match clients {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// Verifies client certificates against the CAs in `ca` (PEM). With
/// `required`, a client without a certificate fails the handshake;
/// otherwise it is served without one. The CA file is read once, at start.
pub fn client_verifier(
    ca: &Path,
    required: bool,
) -> Result<Arc<dyn ClientCertVerifier>, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|source| TlsSetupError::ReadClientCa {
            path: ca.to_path_buf(),
            source,
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsSetupError::ReadClientCa {
            path: ca.to_path_buf(),
            source,
        })?;
    let (added, ignored) = roots.add_parsable_certificates(certs);
    let bad = |why: String| TlsSetupError::ClientCa {
        path: ca.to_path_buf(),
        why,
    };
    if added == 0 {
        return Err(bad("no usable CA certificate".into()));
    }
    if ignored > 0 {
        return Err(bad(format!("{ignored} certificate(s) could not be parsed")));
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder.build().map_err(|e| bad(e.to_string()))
}

/// Maps a client certificate's subject to a tenant: rules are RFC 4514
/// names (`O=Acme,OU=Firewalls`) that match a certificate whose subject
/// has every attribute they name (values compared without regard to
/// ASCII case, as X.520's caseIgnoreMatch does for names); the rule naming
/// the most attributes wins, then the first configured.
#[derive(Debug, Clone)]
pub struct SubjectRules<T> {
    /// Each rule's attributes as `type=value` text, lowercased; most
    /// specific first.
    rules: Vec<(Vec<String>, T)>,
}

/// A certificate's subject in RFC 4514 form, for logs and errors.
pub fn subject_of(der: &[u8]) -> Option<String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    Some(cert.tbs_certificate.subject.to_string())
}

fn attributes(name: &x509_cert::name::Name) -> Vec<String> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .map(|atv| atv.to_string().to_ascii_lowercase())
        .collect()
}

impl<T: Clone> SubjectRules<T> {
    /// Parses each rule's subject; an error names the one that is not an
    /// RFC 4514 name.
    pub fn new(rules: impl IntoIterator<Item = (String, T)>) -> Result<Self, String> {
        let mut parsed = Vec::new();
        for (subject, target) in rules {
            let name: x509_cert::name::Name = subject
                .parse()
                .map_err(|e| format!("subject {subject:?} is not an RFC 4514 name: {e}"))?;
            let attrs = attributes(&name);
            if attrs.is_empty() {
                return Err(format!("subject {subject:?} names no attribute"));
            }
            parsed.push((attrs, target));
        }
        parsed.sort_by_key(|(attrs, _)| std::cmp::Reverse(attrs.len()));
        Ok(Self { rules: parsed })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The target of the certificate (DER) a client presented; None when
    /// no rule matches or it does not parse.
    pub fn lookup(&self, der: &[u8]) -> Option<T> {
        use x509_cert::der::Decode;
        let cert = x509_cert::Certificate::from_der(der).ok()?;
        let have = attributes(&cert.tbs_certificate.subject);
        self.rules
            .iter()
            .find(|(want, _)| want.iter().all(|w| have.contains(w)))
            .map(|(_, target)| target.clone())
    }
}

/// A connection of a gRPC listener (OTLP/gRPC, Flight SQL): plain TCP, or
/// TLS with the handshake done; either way its HTTP/2 preface must arrive
/// within [`HANDSHAKE_TIMEOUT`] ([`FirstBytesWithin`]), and it holds its
/// place under the listener's caps until it closes.
pub struct GrpcConn {
    io: GrpcIo,
    _slot: Slot,
}

enum GrpcIo {
    Plain(FirstBytesWithin<TcpStream>),
    Tls(Box<FirstBytesWithin<tokio_rustls::server::TlsStream<TcpStream>>>),
}

impl AsyncRead for GrpcConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            GrpcIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            GrpcIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            GrpcIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            GrpcIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            GrpcIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            GrpcIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            GrpcIo::Plain(s) => s.is_write_vectored(),
            GrpcIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            GrpcIo::Plain(s) => Pin::new(s).poll_flush(cx),
            GrpcIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            GrpcIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            GrpcIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for GrpcConn {
    /// The client's address.
    type ConnectInfo = Option<std::net::SocketAddr>;

    fn connect_info(&self) -> Self::ConnectInfo {
        match &self.io {
            GrpcIo::Plain(s) => s.get_ref().peer_addr().ok(),
            GrpcIo::Tls(s) => s.get_ref().get_ref().0.peer_addr().ok(),
        }
    }
}

/// How long a client may take to finish its TLS handshake, and then to send
/// the HTTP/2 preface.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// HTTP/2 keep-alive of every listener that speaks it (the HTTP listener's
/// HTTP/2 and the gRPC listeners): a ping after this long without frames
/// from the peer...
pub const H2_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// ...and the connection closed if the ping is not answered within this:
/// a peer that vanished without a FIN (a host that crashed, a NAT that
/// dropped the mapping) or a client that stopped reading gives its
/// connection slot back.
pub const H2_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The gRPC listeners' server, with the keep-alive above.
pub fn grpc_server() -> tonic::transport::Server {
    grpc_server_pinging(H2_KEEPALIVE_INTERVAL, H2_KEEPALIVE_TIMEOUT)
}

fn grpc_server_pinging(
    interval: std::time::Duration,
    timeout: std::time::Duration,
) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(interval))
        .http2_keepalive_timeout(Some(timeout))
}

/// The connections of a gRPC listener, for tonic's `serve_with_incoming`:
/// accepted here while `open`'s caps hold (a connection over one is closed
/// at once: HTTP/2 has nothing to answer before the client's preface, so
/// there is no `503` to send), and with `tls` each handshake done in a task
/// of its own (a client that stalls its handshake holds up no one else); a
/// failed handshake is dropped. The accept loop ends with the server.
pub fn grpc_incoming(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    open: Arc<OpenConnections>,
) -> impl futures::Stream<Item = std::io::Result<GrpcConn>> + Send + 'static {
    incoming_within(listener, tls, open, HANDSHAKE_TIMEOUT)
}

fn incoming_within(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    open: Arc<OpenConnections>,
    within: std::time::Duration,
) -> impl futures::Stream<Item = std::io::Result<GrpcConn>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<GrpcConn>>(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(%error, "gRPC accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let slot = match open.admit(peer.ip()) {
                Ok(slot) => slot,
                Err(refusal) => {
                    let reason = refusal.as_str();
                    tracing::debug!(%peer, reason, "gRPC connection over a cap closed");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let Some(acceptor) = tls.clone() else {
                let conn = GrpcConn {
                    io: GrpcIo::Plain(FirstBytesWithin::new(tcp, within)),
                    _slot: slot,
                };
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(within, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let conn = GrpcConn {
                            io: GrpcIo::Tls(Box::new(FirstBytesWithin::new(stream, within))),
                            _slot: slot,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, %peer, "gRPC TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "gRPC TLS handshake timed out"),
                }
            });
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

/// Reloads every listener's certificates (SIGHUP): each certificate file
/// with what became of it.
pub fn reload_all() -> Vec<(PathBuf, Result<(), TlsSetupError>)> {
    let all: Vec<Arc<Certificates>> = LOADED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    all.iter().map(|c| (c.cert.clone(), c.reload())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grpc_connections_over_a_cap_are_closed_and_their_places_come_back() {
        use futures::StreamExt;
        use tokio::io::AsyncReadExt;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = OpenConnections::new(
            crate::conn_caps::ConnectionCaps {
                total: 3,
                per_ip: 2,
            },
            None,
        );
        let within = std::time::Duration::from_secs(60);
        let mut incoming = Box::pin(incoming_within(listener, None, open, within));
        let _a = TcpStream::connect(addr).await.unwrap();
        let first = incoming.next().await.unwrap().unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let _second = incoming.next().await.unwrap().unwrap();
        // A third from the same address: closed at once, never handed over.
        let mut over = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(std::time::Duration::from_secs(2), over.read(&mut buf))
            .await
            .expect("the connection over the cap was left open");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // One closes: the next connection gets its place.
        drop(first);
        let mut next = TcpStream::connect(addr).await.unwrap();
        let handed = tokio::time::timeout(std::time::Duration::from_secs(2), incoming.next())
            .await
            .expect("no place came back");
        let _kept = handed.unwrap().unwrap();
        let still_open =
            tokio::time::timeout(std::time::Duration::from_millis(200), next.read(&mut buf)).await;
        assert!(still_open.is_err(), "the admitted connection was closed");
    }

    #[tokio::test]
    async fn grpc_connections_must_send_the_preface_in_time() {
        use futures::StreamExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let within = std::time::Duration::from_millis(200);
        let open = OpenConnections::new(
            crate::conn_caps::ConnectionCaps {
                total: 100,
                per_ip: 100,
            },
            None,
        );
        let mut incoming = Box::pin(incoming_within(listener, None, open, within));
        // Silent: the server's read of the preface fails at the deadline.
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut conn = incoming.next().await.unwrap().unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 24];
        let err = conn.read_exact(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // The preface in time: read whole, and the connection then waits
        // for frames as long as the client likes.
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(crate::first_bytes::H2_PREFACE)
            .await
            .unwrap();
        let mut conn = incoming.next().await.unwrap().unwrap();
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, crate::first_bytes::H2_PREFACE);
        tokio::time::sleep(within * 2).await;
        client.write_all(b"frame").await.unwrap();
        let mut frame = [0u8; 5];
        conn.read_exact(&mut frame).await.unwrap();
        assert_eq!(&frame, b"frame");
    }

    /// Reads HTTP/2 frames (type, flags, payload) from `conn` until EOF or
    /// an error.
    async fn frames(conn: &mut TcpStream) -> Vec<(u8, u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let mut frames = Vec::new();
        let mut head = [0u8; 9];
        while conn.read_exact(&mut head).await.is_ok() {
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            if conn.read_exact(&mut payload).await.is_err() {
                break;
            }
            frames.push((head[3], head[4], payload));
        }
        frames
    }

    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    const ACK: u8 = 0x1;

    #[tokio::test]
    async fn grpc_peers_that_stop_answering_pings_are_closed_and_others_kept() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gauge = prometheus::IntGauge::new("open", "open").unwrap();
        let metrics = crate::conn_caps::ConnectionMetrics {
            open: gauge.clone(),
            refused: [
                prometheus::IntCounter::new("a", "a").unwrap(),
                prometheus::IntCounter::new("b", "b").unwrap(),
            ],
        };
        let open = OpenConnections::new(
            crate::conn_caps::ConnectionCaps {
                total: 10,
                per_ip: 10,
            },
            Some(metrics),
        );
        // A short interval; a timeout a busy test machine can answer in.
        let (interval, timeout) = (
            std::time::Duration::from_millis(300),
            std::time::Duration::from_secs(2),
        );
        let incoming = incoming_within(listener, None, open, HANDSHAKE_TIMEOUT);
        tokio::spawn(
            grpc_server_pinging(interval, timeout)
                .add_routes(tonic::service::Routes::default())
                .serve_with_incoming(incoming),
        );
        // An empty SETTINGS frame after the preface: a client's opening.
        let hello: Vec<u8> = [
            &crate::first_bytes::H2_PREFACE[..],
            &[0, 0, 0, 0x4, 0, 0, 0, 0, 0],
        ]
        .concat();

        // A peer that never answers: pinged, then closed, its slot freed.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        silent.write_all(&hello).await.unwrap();
        let started = std::time::Instant::now();
        let seen = tokio::time::timeout(std::time::Duration::from_secs(10), frames(&mut silent))
            .await
            .expect("a peer that answers no ping was not closed");
        let took = started.elapsed();
        assert!(
            seen.iter().any(|(t, f, _)| *t == PING && f & ACK == 0),
            "closed without being pinged: {seen:?}"
        );
        assert!(seen.iter().any(|(t, _, _)| *t == GOAWAY), "{seen:?}");
        assert!(took >= interval, "closed after {took:?}");

        // A peer that answers every ping stays, pinged again and again.
        let mut answering = TcpStream::connect(addr).await.unwrap();
        answering.write_all(&hello).await.unwrap();
        let until = std::time::Instant::now() + interval * 8;
        let mut pings = 0;
        let mut head = [0u8; 9];
        while std::time::Instant::now() < until {
            let left = until - std::time::Instant::now();
            let Ok(read) = tokio::time::timeout(left, answering.read_exact(&mut head)).await else {
                break;
            };
            read.expect("a peer that answers pings was closed");
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            answering.read_exact(&mut payload).await.unwrap();
            assert_ne!(head[3], GOAWAY, "a peer that answers pings was sent GOAWAY");
            if head[3] == PING && head[4] & ACK == 0 {
                pings += 1;
                let mut pong = vec![0, 0, 8, PING, ACK, 0, 0, 0, 0];
                pong.extend_from_slice(&payload);
                answering.write_all(&pong).await.unwrap();
            }
        }
        assert!(pings >= 2, "pinged {pings} times in eight intervals");
        assert_eq!(gauge.get(), 1, "the silent peer's slot was not given back");
    }

    /// `C=DE, O=Acme Inc, OU=Firewalls, CN=fw01.acme.example` (openssl
    /// req, self-signed P-256).
    const FW01: &str = "-----BEGIN CERTIFICATE-----
MIIB9zCCAZ2gAwIBAgIUWtzbjFKr98FYL8Zv7lW6HV+1kGowCgYIKoZIzj0EAwIw
UDELMAkGA1UEBhMCREUxETAPBgNVBAoMCEFjbWUgSW5jMRIwEAYDVQQLDAlGaXJl
d2FsbHMxGjAYBgNVBAMMEWZ3MDEuYWNtZS5leGFtcGxlMCAXDTI2MTIwNDE1MTA1
MFoYDzIxMjYxMTEwMTUxMDUwWjBQMQswCQYDVQQGEwJERTERMA8GA1UECgwIQWNt
ZSBJbmMxEjAQBgNVBAsMCUZpcmV3YWxsczEaMBgGA1UEAwwRZncwMS5hY21lLmV4
YW1wbGUwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASialWVQFaznXPoXGOHmn+p
Y4z6jXZTAS9FrZ7oWAQBUnDNJaTECMqPaoSCOtoXdinnGhTsv+v7tfAIuWwhuhkX
o1MwUTAdBgNVHQ4EFgQU0ZRYsjnxY2iyp83DucNXEfivgaUwHwYDVR0jBBgwFoAU
0ZRYsjnxY2iyp83DucNXEfivgaUwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQD
AgNIADBFAiA7Kri6YPxkBWGaMjlI61QBUqPbSikYk/VkkkeI/j+TuAIhAOi5Jw/D
KaxIlaXf1efAOdpsLTjuy5wyWuGL3dPIyrQ4
-----END CERTIFICATE-----";

    fn fw01() -> Vec<u8> {
        CertificateDer::from_pem_slice(FW01.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn subject_rules_match_every_named_attribute_most_specific_first() {
        let rules = SubjectRules::new([
            ("O=Acme Inc".to_string(), "acme"),
            ("OU=Firewalls,O=Acme Inc".to_string(), "acme-fw"),
            ("O=Globex".to_string(), "globex"),
        ])
        .unwrap();
        assert_eq!(rules.lookup(&fw01()), Some("acme-fw"));
        // Values compare without regard to case; every attribute must match.
        let rules = SubjectRules::new([
            ("CN=FW01.ACME.EXAMPLE,O=Other".to_string(), "other"),
            ("CN=FW01.ACME.EXAMPLE".to_string(), "by-cn"),
        ])
        .unwrap();
        assert_eq!(rules.lookup(&fw01()), Some("by-cn"));
        let rules = SubjectRules::new([("O=Globex".to_string(), "globex")]).unwrap();
        assert_eq!(rules.lookup(&fw01()), None);
        assert_eq!(rules.lookup(b"not a certificate"), None);
        assert_eq!(
            subject_of(&fw01()).as_deref(),
            Some("CN=fw01.acme.example,OU=Firewalls,O=Acme Inc,C=DE")
        );
    }

    #[test]
    fn a_subject_that_is_not_a_name_is_refused_with_its_text() {
        for bad in ["CN", "", "XX=1"] {
            let err = SubjectRules::new([(bad.to_string(), ())]).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn missing_files_are_named() {
        let err = Certificates::load(Path::new("/nonexistent/cert.pem"), Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}
