//! The syslog listeners.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use chrono_tz::Tz;
use control::MetaStore;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use schemas::{LogRecord, ParseStatus, TenantId};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::{Protocol, SyslogConfig};
use super::framing::{Frame, Framer};
use super::parse::{ParseContext, parse};
use super::tenant::TenantResolver;
use crate::batcher::Batcher;
use crate::error::{Error, Result};
use crate::metrics::IngestMetrics;

/// Datagrams read before handing a group to the batcher.
const UDP_BATCH: usize = 1024;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Syslog metrics (`securenet_syslog_*`), labelled by listener name.
#[derive(Clone)]
pub struct SyslogMetrics {
    /// Messages read, by listener and parse status (ok, error, invalid_utf8, truncated).
    pub messages: IntCounterVec,
    /// Messages refused, by listener and reason (unknown_sender, bad_key).
    pub rejected: IntCounterVec,
    /// UDP messages dropped because the pipeline was full.
    pub udp_dropped: IntCounterVec,
    /// Open TCP/TLS connections.
    pub connections: IntGaugeVec,
}

impl SyslogMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            messages: IntCounterVec::new(
                Opts::new(
                    "securenet_syslog_messages_total",
                    "Syslog messages read, by parse status",
                ),
                &["listener", "status"],
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "securenet_syslog_rejected_total",
                    "Syslog messages refused, by reason",
                ),
                &["listener", "reason"],
            )?,
            udp_dropped: IntCounterVec::new(
                Opts::new(
                    "securenet_syslog_udp_dropped_total",
                    "UDP syslog messages dropped because the pipeline was full",
                ),
                &["listener"],
            )?,
            connections: IntGaugeVec::new(
                Opts::new(
                    "securenet_syslog_connections",
                    "Open syslog TCP/TLS connections",
                ),
                &["listener"],
            )?,
        };
        registry.register(Box::new(m.messages.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        registry.register(Box::new(m.udp_dropped.clone()))?;
        registry.register(Box::new(m.connections.clone()))?;
        Ok(m)
    }
}

/// A configured, not yet bound listener.
pub struct SyslogServer {
    config: SyslogConfig,
    processor: Arc<Processor>,
    tls: Option<TlsAcceptor>,
}

/// Turns frames into per-tenant records; shared by a listener's connections.
struct Processor {
    name: String,
    input: &'static str,
    zone: Tz,
    keep_raw: bool,
    resolver: TenantResolver,
    batcher: Batcher,
    metrics: SyslogMetrics,
    ingest: IngestMetrics,
}

impl SyslogServer {
    /// Validates the listener, loads its TLS material and checks that every
    /// tenant it names is an organization.
    pub fn build(
        config: SyslogConfig,
        store: Arc<MetaStore>,
        batcher: Batcher,
        metrics: SyslogMetrics,
        ingest: IngestMetrics,
    ) -> Result<Self> {
        config.validate()?;
        let named = config
            .default_tenant
            .iter()
            .chain(config.sources.iter().map(|s| &s.tenant));
        for tenant in named {
            let exists = store
                .organization(tenant)
                .map_err(|e| Error::Config(format!("syslog listener {:?}: {e}", config.name)))?
                .is_some();
            if !exists {
                return Err(Error::Config(format!(
                    "syslog listener {:?}: tenant {tenant} is not an organization (create it with `securenet orgs create`)",
                    config.name
                )));
            }
        }
        let tls =
            match &config.tls {
                Some(t) => Some(tls_acceptor(&t.cert_path, &t.key_path).map_err(|e| {
                    Error::Config(format!("syslog listener {:?}: {e}", config.name))
                })?),
                None => None,
            };
        let input = match config.protocol {
            Protocol::Udp => "syslog_udp",
            Protocol::Tcp => "syslog_tcp",
            Protocol::Tls => "syslog_tls",
        };
        let processor = Arc::new(Processor {
            name: config.name.clone(),
            input,
            // Validated above.
            zone: config.bsd_timezone.parse().unwrap_or(Tz::UTC),
            keep_raw: config.keep_raw,
            resolver: TenantResolver::new(
                config.default_tenant.clone(),
                config
                    .sources
                    .iter()
                    .map(|s| (s.cidr, s.tenant.clone()))
                    .collect(),
                store,
            ),
            batcher,
            metrics,
            ingest,
        });
        Ok(Self {
            config,
            processor,
            tls,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Binds the socket; returns the bound address and the future that
    /// serves until `shutdown` is cancelled.
    pub async fn bind(
        self,
        shutdown: CancellationToken,
    ) -> Result<(SocketAddr, impl Future<Output = ()> + Send + 'static)> {
        let bind_err = |e: std::io::Error| {
            Error::Config(format!(
                "syslog listener {:?}: binding {}: {e}",
                self.config.name, self.config.listen
            ))
        };
        match self.config.protocol {
            Protocol::Udp => {
                let socket = UdpSocket::bind(self.config.listen)
                    .await
                    .map_err(bind_err)?;
                let addr = socket.local_addr().map_err(bind_err)?;
                let max = self.config.max_frame_bytes;
                Ok((
                    addr,
                    futures::future::Either::Left(serve_udp(socket, self.processor, max, shutdown)),
                ))
            }
            Protocol::Tcp | Protocol::Tls => {
                let listener = TcpListener::bind(self.config.listen)
                    .await
                    .map_err(bind_err)?;
                let addr = listener.local_addr().map_err(bind_err)?;
                Ok((
                    addr,
                    futures::future::Either::Right(serve_tcp(
                        listener,
                        self.processor,
                        self.tls,
                        self.config.max_frame_bytes,
                        self.config.max_connections,
                        shutdown,
                    )),
                ))
            }
        }
    }
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::result::Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("reading certificate {}: {e}", cert.display()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("parsing certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("reading private key {}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("certificate and key do not match: {e}"))?;
    let mut config = config;
    // No TLS 1.3 session tickets: syslog senders write and never read, and a
    // client that closes with unread tickets in its receive buffer makes its
    // kernel send RST instead of FIN — which discards the messages still in
    // flight (seen with loggen under load). Resumption buys nothing for
    // long-lived log connections.
    config.send_tls13_tickets = 0;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Processor {
    /// Parses frames from one sender and groups the records by tenant.
    fn process(
        &self,
        frames: impl IntoIterator<Item = Frame>,
        peer: IpAddr,
        groups: &mut HashMap<TenantId, Vec<LogRecord>>,
    ) {
        let ctx = ParseContext {
            bsd_zone: self.zone,
            received_ms: Utc::now().timestamp_millis(),
            keep_raw: self.keep_raw,
            source_ip: Some(peer.to_string()),
            input: self.input,
        };
        for frame in frames {
            let mut parsed = parse(&frame.bytes, &ctx);
            if frame.truncated {
                parsed.record.parse_status = ParseStatus::Truncated;
                parsed
                    .record
                    .raw
                    .get_or_insert_with(|| frame.bytes.to_vec());
            }
            self.metrics
                .messages
                .with_label_values(&[&self.name, parsed.record.parse_status.as_str()])
                .inc();
            match self.resolver.resolve(parsed.api_key.as_deref(), peer) {
                Ok(tenant) => groups.entry(tenant).or_default().push(parsed.record),
                Err(reason) => {
                    self.metrics
                        .rejected
                        .with_label_values(&[&self.name, reason.as_str()])
                        .inc();
                    self.ingest
                        .records
                        .with_label_values(&[self.input, "rejected"])
                        .inc();
                }
            }
        }
    }

    /// Hands groups to the batcher, waiting for budget (TCP backpressure).
    async fn enqueue(&self, groups: &mut HashMap<TenantId, Vec<LogRecord>>) -> Result<()> {
        for (tenant, records) in groups.drain() {
            let n = records.len() as u64;
            self.batcher.enqueue(tenant, records).await?;
            self.ingest
                .records
                .with_label_values(&[self.input, "accepted"])
                .inc_by(n);
        }
        Ok(())
    }

    /// Hands groups to the batcher without waiting; what does not fit is
    /// dropped and counted (UDP cannot push back).
    async fn try_enqueue(&self, groups: &mut HashMap<TenantId, Vec<LogRecord>>) {
        for (tenant, records) in groups.drain() {
            let n = records.len() as u64;
            match self.batcher.try_enqueue(tenant, records).await {
                Ok(()) => self
                    .ingest
                    .records
                    .with_label_values(&[self.input, "accepted"])
                    .inc_by(n),
                Err(_) => {
                    self.metrics
                        .udp_dropped
                        .with_label_values(&[&self.name])
                        .inc_by(n);
                    self.ingest
                        .records
                        .with_label_values(&[self.input, "dropped"])
                        .inc_by(n);
                }
            }
        }
    }
}

async fn serve_udp(
    socket: UdpSocket,
    processor: Arc<Processor>,
    max_frame: usize,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; 65_536];
    let mut groups = HashMap::new();
    let frame = |buf: &[u8], n: usize| {
        let n = n.min(buf.len());
        Frame {
            truncated: n > max_frame,
            bytes: bytes::Bytes::copy_from_slice(&buf[..n.min(max_frame)]),
        }
    };
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => r,
        };
        match first {
            Ok((n, peer)) => processor.process([frame(&buf, n)], peer.ip(), &mut groups),
            Err(error) => {
                warn!(%error, listener = %processor.name, "udp receive failed");
                continue;
            }
        }
        // Drain what the kernel already holds before handing off.
        for _ in 1..UDP_BATCH {
            match socket.try_recv_from(&mut buf) {
                Ok((n, peer)) => processor.process([frame(&buf, n)], peer.ip(), &mut groups),
                Err(_) => break,
            }
        }
        processor.try_enqueue(&mut groups).await;
    }
    info!(listener = %processor.name, "udp syslog listener stopped");
}

async fn serve_tcp(
    listener: TcpListener,
    processor: Arc<Processor>,
    tls: Option<TlsAcceptor>,
    max_frame: usize,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                warn!(%error, listener = %processor.name, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let processor = processor.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let gauge = processor
                .metrics
                .connections
                .with_label_values(&[&processor.name]);
            gauge.inc();
            match tls {
                None => serve_stream(stream, peer, &processor, max_frame, &shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            serve_stream(tls_stream, peer, &processor, max_frame, &shutdown).await
                        }
                        Ok(Err(error)) => debug!(%error, %peer, "tls handshake failed"),
                        Err(_) => debug!(%peer, "tls handshake timed out"),
                    }
                }
            }
            gauge.dec();
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    // Connections see the same cancellation and finish their buffers.
    while connections.join_next().await.is_some() {}
    info!(listener = %processor.name, "tcp syslog listener stopped");
}

async fn serve_stream<S: AsyncRead + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    processor: &Processor,
    max_frame: usize,
    shutdown: &CancellationToken,
) {
    let mut framer = Framer::new(max_frame);
    let mut groups = HashMap::new();
    let mut frames = Vec::new();
    loop {
        framer.buffer().reserve(64 * 1024);
        let read = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = stream.read_buf(framer.buffer()) => r,
        };
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                debug!(%error, %peer, "syslog connection read failed");
                break;
            }
        }
        while let Some(f) = framer.next_frame() {
            frames.push(f);
        }
        if frames.is_empty() {
            continue;
        }
        processor.process(frames.drain(..), peer.ip(), &mut groups);
        if processor.enqueue(&mut groups).await.is_err() {
            return;
        }
    }
    // What the sender sent before closing (or before shutdown) is kept.
    if let Some(f) = framer.finish() {
        processor.process([f], peer.ip(), &mut groups);
        let _ = processor.enqueue(&mut groups).await;
    }
}
