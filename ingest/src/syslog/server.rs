//! The syslog listeners.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use control::MetaStore;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use schemas::{LogRecord, ParseStatus, TenantId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::{Format, Protocol, SyslogConfig};
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
    /// TCP/TLS connections refused, by listener and reason (a cap,
    /// `tls_handshake`, `unmapped_certificate`).
    pub refused: IntCounterVec,
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
            refused: IntCounterVec::new(
                Opts::new(
                    "securenet_syslog_connections_refused_total",
                    "Syslog TCP/TLS connections refused, by reason: the cap they hit, a failed TLS handshake, a client certificate no rule maps",
                ),
                &["listener", "reason"],
            )?,
        };
        registry.register(Box::new(m.messages.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        registry.register(Box::new(m.udp_dropped.clone()))?;
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
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
    format: Format,
    /// Longest message, inflated (GELF); longest forward message (Fluent).
    max_frame: usize,
    /// Fluent forward's handshake key.
    fluent_key: Option<schemas::Secret>,
    zone: Tz,
    keep_raw: bool,
    resolver: TenantResolver,
    /// Tenants by client certificate subject (TLS with client_ca_path).
    subjects: crate::tls::SubjectRules<TenantId>,
    batcher: Batcher,
    metrics: SyslogMetrics,
    ingest: IngestMetrics,
}

impl SyslogServer {
    /// Validates the listener, loads its TLS material and checks that every
    /// tenant it names is an organization.
    pub async fn build(
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
            .chain(config.sources.iter().map(|s| &s.tenant))
            .chain(config.client_certificates.iter().map(|c| &c.tenant));
        for tenant in named {
            let exists = store
                .organization(tenant)
                .await
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
                Some(t) => Some(tls_acceptor(t).map_err(|e| {
                    Error::Config(format!("syslog listener {:?}: {e}", config.name))
                })?),
                None => None,
            };
        // Validated above.
        let subjects = config.subject_rules().map_err(Error::Config)?;
        let input = match (config.format, config.protocol) {
            (Format::Syslog, Protocol::Udp) => "syslog_udp",
            (Format::Syslog, Protocol::Tcp) => "syslog_tcp",
            (Format::Syslog, Protocol::Tls) => "syslog_tls",
            (Format::Gelf, Protocol::Udp) => "gelf_udp",
            (Format::Gelf, Protocol::Tcp) => "gelf_tcp",
            (Format::Gelf, Protocol::Tls) => "gelf_tls",
            // UDP is refused by validation.
            (Format::Fluent, Protocol::Tcp | Protocol::Udp) => "fluent_tcp",
            (Format::Fluent, Protocol::Tls) => "fluent_tls",
        };
        let processor = Arc::new(Processor {
            name: config.name.clone(),
            input,
            format: config.format,
            max_frame: config.max_frame_bytes,
            fluent_key: config.fluent_shared_key.clone(),
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
            subjects,
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
                        Limits::of(&self.config),
                        shutdown,
                    )),
                ))
            }
        }
    }
}

fn tls_acceptor(
    tls: &super::StreamTlsConfig,
) -> std::result::Result<TlsAcceptor, crate::tls::TlsSetupError> {
    let clients = match &tls.client_ca_path {
        Some(ca) => Some(crate::tls::client_verifier(
            ca,
            tls.require_client_certificate,
        )?),
        None => None,
    };
    let mut config = crate::tls::Certificates::load(&tls.cert_path, &tls.key_path)?
        .server_config(&[], clients)?;
    // No TLS 1.3 session tickets: syslog senders write and never read, and a
    // client that closes with unread tickets in its receive buffer makes its
    // kernel send RST instead of FIN — which discards the messages still in
    // flight (seen with loggen under load). Resumption buys nothing for
    // long-lived log connections.
    config.send_tls13_tickets = 0;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Processor {
    /// The tenant a TLS connection's client certificate (verified by the
    /// handshake) maps to; none without a certificate or without rules.
    /// A certificate no rule claims is refused — it never falls back to the
    /// sources or the default tenant.
    fn certified<S>(
        &self,
        tls: &tokio_rustls::server::TlsStream<S>,
        peer: SocketAddr,
    ) -> std::result::Result<Option<TenantId>, &'static str> {
        let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
            return Ok(None);
        };
        if self.subjects.is_empty() {
            return Ok(None);
        }
        match self.subjects.lookup(cert) {
            Some(tenant) => Ok(Some(tenant)),
            None => {
                let subject = crate::tls::subject_of(cert);
                warn!(
                    listener = %self.name,
                    %peer,
                    subject = subject.as_deref().unwrap_or("(unparsable)"),
                    "client certificate maps to no tenant: connection refused"
                );
                Err("unmapped_certificate")
            }
        }
    }

    /// Parses frames from one sender and groups the records by tenant.
    async fn process(
        &self,
        frames: impl IntoIterator<Item = Frame>,
        peer: IpAddr,
        certified: Option<&TenantId>,
        groups: &mut HashMap<TenantId, Vec<LogRecord>>,
    ) {
        let ctx = ParseContext {
            bsd_zone: self.zone,
            received_ms: schemas::time::now_ms(),
            keep_raw: self.keep_raw,
            source_ip: Some(peer.to_string()),
            input: self.input,
        };
        // Counted per call, not per message: a label lookup per message
        // cost more than parsing a short one.
        let mut statuses = [0u64; 4];
        for frame in frames {
            let mut parsed = match self.format {
                Format::Syslog => parse(&frame.bytes, &ctx),
                Format::Gelf | Format::Fluent => {
                    crate::gelf::parse(&frame.bytes, &ctx, self.max_frame)
                }
            };
            if frame.truncated {
                parsed.record.parse_status = ParseStatus::Truncated;
                let raw = parsed
                    .record
                    .raw
                    .get_or_insert_with(|| frame.bytes.to_vec());
                if let Some(key) = &parsed.api_key {
                    super::parse::redact_key(raw, key);
                }
            }
            statuses[parsed.record.parse_status as usize] += 1;
            let resolved = if parsed.unreadable_key {
                // It carries a key we cannot read: never route it by source.
                Err(super::tenant::Rejection::BadKey)
            } else {
                self.resolver
                    .resolve(parsed.api_key.as_deref(), peer, certified)
                    .await
            };
            match resolved {
                Ok(tenant) => groups.entry(tenant).or_default().push(parsed.record),
                Err(reason) => self.count_rejected(reason.as_str(), 1),
            }
        }
        for status in [
            ParseStatus::Ok,
            ParseStatus::Truncated,
            ParseStatus::InvalidUtf8,
            ParseStatus::Error,
        ] {
            let n = statuses[status as usize];
            if n > 0 {
                self.metrics
                    .messages
                    .with_label_values(&[&self.name, status.as_str()])
                    .inc_by(n);
            }
        }
    }

    /// Counts messages refused for `reason` (`bad_key`, `gelf_incomplete`…).
    fn count_rejected(&self, reason: &str, n: u64) {
        self.metrics
            .rejected
            .with_label_values(&[&self.name, reason])
            .inc_by(n);
        self.ingest
            .records
            .with_label_values(&[self.input, "rejected"])
            .inc_by(n);
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
    let mut datagrams = Datagrams {
        max_frame,
        gelf: (processor.format == Format::Gelf).then(|| crate::gelf::Assembler::new(max_frame)),
    };
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => r,
        };
        match first {
            Ok((n, peer)) => {
                let frame = datagrams.frame(&buf[..n.min(buf.len())], peer.ip(), &processor);
                processor.process(frame, peer.ip(), None, &mut groups).await
            }
            Err(error) => {
                warn!(%error, listener = %processor.name, "udp receive failed");
                continue;
            }
        }
        // Drain what the kernel already holds before handing off.
        for _ in 1..UDP_BATCH {
            match socket.try_recv_from(&mut buf) {
                Ok((n, peer)) => {
                    let frame = datagrams.frame(&buf[..n.min(buf.len())], peer.ip(), &processor);
                    processor.process(frame, peer.ip(), None, &mut groups).await
                }
                Err(_) => break,
            }
        }
        processor.try_enqueue(&mut groups).await;
        datagrams.expire(&processor);
    }
    info!(listener = %processor.name, "udp syslog listener stopped");
}

/// Datagrams → frames: one each for syslog; GELF chunks are reassembled
/// first (a chunk yields nothing until its message is whole).
struct Datagrams {
    max_frame: usize,
    gelf: Option<crate::gelf::Assembler>,
}

impl Datagrams {
    fn frame(&mut self, datagram: &[u8], peer: IpAddr, processor: &Processor) -> Option<Frame> {
        let max = self.max_frame;
        let (bytes, size) = match &mut self.gelf {
            None => (
                bytes::Bytes::copy_from_slice(&datagram[..datagram.len().min(max)]),
                datagram.len(),
            ),
            Some(assembler) => match assembler.accept(peer, datagram, std::time::Instant::now()) {
                crate::gelf::Datagram::Complete(bytes) => {
                    let size = bytes.len();
                    (bytes.slice(..size.min(max)), size)
                }
                crate::gelf::Datagram::Partial => return None,
                crate::gelf::Datagram::Refused(reason) => {
                    processor.count_rejected(reason, 1);
                    return None;
                }
            },
        };
        Some(Frame {
            bytes,
            truncated: size > max,
        })
    }

    /// Counts GELF messages whose chunks did not all arrive in time.
    fn expire(&mut self, processor: &Processor) {
        if let Some(assembler) = &mut self.gelf {
            let expired = assembler.expire(std::time::Instant::now());
            if expired > 0 {
                processor.count_rejected("gelf_incomplete", expired as u64);
            }
        }
    }
}

/// The open TCP/TLS connections of one listener: who they are from, when
/// each last sent something, and how to close it.
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: HashMap<u64, Conn>,
}

struct Conn {
    ip: IpAddr,
    last_active: Arc<std::sync::atomic::AtomicU64>,
    close: CancellationToken,
}

/// Milliseconds since `epoch` (a monotonic clock for idle times).
fn since(epoch: std::time::Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// Connection limits of a TCP/TLS listener.
struct Limits {
    max: usize,
    per_source: usize,
    idle_timeout: Option<Duration>,
    evict_after: Duration,
}

impl Limits {
    fn of(config: &SyslogConfig) -> Self {
        Self {
            max: config.max_connections.max(1),
            per_source: config.max_connections_per_source.max(1),
            idle_timeout: (config.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(config.idle_timeout_secs)),
            evict_after: Duration::from_secs(config.evict_idle_after_secs),
        }
    }
}

/// Admits a connection from `ip`, closing the connection idle longest if
/// the listener is full; `Err(reason)` if it must be refused.
fn admit(
    conns: &std::sync::Mutex<Connections>,
    limits: &Limits,
    epoch: std::time::Instant,
    ip: IpAddr,
) -> std::result::Result<(u64, Arc<std::sync::atomic::AtomicU64>, CancellationToken), &'static str>
{
    use std::sync::atomic::Ordering;
    let mut c = conns.lock().unwrap_or_else(|p| p.into_inner());
    if c.open.values().filter(|x| x.ip == ip).count() >= limits.per_source {
        return Err("max_connections_per_source");
    }
    if c.open.len() >= limits.max {
        let now = since(epoch);
        let idlest = c
            .open
            .iter()
            .map(|(id, x)| {
                (
                    *id,
                    now.saturating_sub(x.last_active.load(Ordering::Relaxed)),
                )
            })
            .max_by_key(|(_, idle)| *idle);
        match idlest {
            Some((id, idle)) if idle >= limits.evict_after.as_millis() as u64 => {
                if let Some(evicted) = c.open.remove(&id) {
                    evicted.close.cancel();
                }
            }
            _ => return Err("max_connections"),
        }
    }
    let id = c.next_id;
    c.next_id += 1;
    let last_active = Arc::new(std::sync::atomic::AtomicU64::new(since(epoch)));
    let close = CancellationToken::new();
    c.open.insert(
        id,
        Conn {
            ip,
            last_active: last_active.clone(),
            close: close.clone(),
        },
    );
    Ok((id, last_active, close))
}

async fn serve_tcp(
    listener: TcpListener,
    processor: Arc<Processor>,
    tls: Option<TlsAcceptor>,
    max_frame: usize,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let conns = Arc::new(std::sync::Mutex::new(Connections::default()));
    let epoch = std::time::Instant::now();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                warn!(%error, listener = %processor.name, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer_ip = match peer.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer.ip()),
            v4 => v4,
        };
        let (id, last_active, close) = match admit(&conns, &limits, epoch, peer_ip) {
            Ok(admitted) => admitted,
            Err(reason) => {
                processor
                    .metrics
                    .refused
                    .with_label_values(&[&processor.name, reason])
                    .inc();
                debug!(%peer, reason, "syslog connection refused");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let processor = processor.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        let conns = conns.clone();
        let idle_timeout = limits.idle_timeout;
        connections.spawn(async move {
            let gauge = processor
                .metrics
                .connections
                .with_label_values(&[&processor.name]);
            gauge.inc();
            let activity = Activity {
                last_active,
                epoch,
                close,
                idle_timeout,
            };
            match tls {
                None => {
                    serve_connection(
                        stream, peer, None, &processor, max_frame, &shutdown, &activity,
                    )
                    .await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => match processor.certified(&tls_stream, peer) {
                            Ok(certified) => {
                                serve_connection(
                                    tls_stream,
                                    peer,
                                    certified.as_ref(),
                                    &processor,
                                    max_frame,
                                    &shutdown,
                                    &activity,
                                )
                                .await
                            }
                            Err(reason) => processor
                                .metrics
                                .refused
                                .with_label_values(&[&processor.name, reason])
                                .inc(),
                        },
                        Ok(Err(error)) => {
                            debug!(%error, %peer, "tls handshake failed");
                            processor
                                .metrics
                                .refused
                                .with_label_values(&[&processor.name, "tls_handshake"])
                                .inc();
                        }
                        Err(_) => debug!(%peer, "tls handshake timed out"),
                    }
                }
            }
            gauge.dec();
            conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .open
                .remove(&id);
        });
    }
    // Connections see the same cancellation and finish their buffers.
    while connections.join_next().await.is_some() {}
    info!(listener = %processor.name, "tcp syslog listener stopped");
}

/// A connection's activity clock and its way to be closed (evicted).
struct Activity {
    last_active: Arc<std::sync::atomic::AtomicU64>,
    epoch: std::time::Instant,
    close: CancellationToken,
    idle_timeout: Option<Duration>,
}

/// One accepted connection, served in its listener's format.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    certified: Option<&TenantId>,
    processor: &Processor,
    max_frame: usize,
    shutdown: &CancellationToken,
    activity: &Activity,
) {
    match processor.format {
        Format::Fluent => {
            serve_fluent(
                stream, peer, certified, processor, max_frame, shutdown, activity,
            )
            .await
        }
        Format::Syslog | Format::Gelf => {
            serve_stream(
                stream, peer, certified, processor, max_frame, shutdown, activity,
            )
            .await
        }
    }
}

/// Reads what the peer sent next into `buf`; false when the connection is
/// done (closed, failed, idle too long, evicted, shutting down).
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut bytes::BytesMut,
    peer: SocketAddr,
    shutdown: &CancellationToken,
    activity: &Activity,
) -> bool {
    // Far enough away to mean "never" when idle connections are kept.
    let idle = activity
        .idle_timeout
        .unwrap_or(Duration::from_secs(100 * 365 * 86_400));
    buf.reserve(64 * 1024);
    let read = tokio::select! {
        _ = shutdown.cancelled() => return false,
        _ = activity.close.cancelled() => {
            debug!(%peer, "idle connection closed to admit another sender");
            return false;
        }
        r = tokio::time::timeout(idle, stream.read_buf(buf)) => match r {
            Ok(r) => r,
            Err(_) => {
                debug!(%peer, "idle connection closed (idle_timeout_secs)");
                return false;
            }
        },
    };
    match read {
        Ok(0) => return false,
        Ok(_) => {}
        Err(error) => {
            debug!(%error, %peer, "connection read failed");
            return false;
        }
    }
    activity
        .last_active
        .store(since(activity.epoch), std::sync::atomic::Ordering::Relaxed);
    true
}

async fn serve_stream<S: AsyncRead + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    certified: Option<&TenantId>,
    processor: &Processor,
    max_frame: usize,
    shutdown: &CancellationToken,
    activity: &Activity,
) {
    let mut framer = match processor.format {
        Format::Gelf => Framer::nul_delimited(max_frame),
        Format::Syslog | Format::Fluent => Framer::new(max_frame),
    };
    let mut groups = HashMap::new();
    let mut frames = Vec::new();
    loop {
        if !read_more(&mut stream, framer.buffer(), peer, shutdown, activity).await {
            break;
        }
        while let Some(f) = framer.next_frame() {
            frames.push(f);
        }
        if frames.is_empty() {
            continue;
        }
        processor
            .process(frames.drain(..), peer.ip(), certified, &mut groups)
            .await;
        if processor.enqueue(&mut groups).await.is_err() {
            return;
        }
    }
    // What the sender sent before closing (or before shutdown) is kept.
    if let Some(f) = framer.finish() {
        processor
            .process([f], peer.ip(), certified, &mut groups)
            .await;
        let _ = processor.enqueue(&mut groups).await;
    }
}

/// What a forward message came to.
enum Forwarded {
    /// Stored (durable): acknowledge this chunk.
    Ack(String),
    /// Nothing to acknowledge (no chunk asked, or nothing could be stored
    /// now: the sender resends an unacknowledged chunk).
    Done,
    /// The pipeline is gone: close the connection.
    Stop,
}

/// A Fluent forward connection: the optional handshake, then forward
/// messages, each acknowledged once durable when it asks (crate::fluent).
async fn serve_fluent<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    certified: Option<&TenantId>,
    processor: &Processor,
    max_frame: usize,
    shutdown: &CancellationToken,
    activity: &Activity,
) {
    use crate::fluent;
    let hostname = format!("securenet-{}", processor.name);
    let nonce: Option<[u8; 16]> = processor.fluent_key.as_ref().map(|_| rand::random());
    if let Some(nonce) = &nonce
        && stream.write_all(&fluent::helo(nonce)).await.is_err()
    {
        return;
    }
    let mut authenticated = nonce.is_none();
    let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
    while read_more(&mut stream, &mut buf, peer, shutdown, activity).await {
        loop {
            let len = match fluent::value_len(&buf) {
                Ok(Some(len)) if len <= max_frame => len,
                Ok(Some(_)) => {
                    debug!(%peer, max_frame, "forward message over max_frame_bytes: closing");
                    processor.count_rejected("fluent_too_large", 1);
                    return;
                }
                Ok(None) => break,
                Err(why) => {
                    debug!(%peer, %why, "not MessagePack: closing the forward connection");
                    processor.count_rejected("fluent_malformed", 1);
                    return;
                }
            };
            let bytes = buf.split_to(len);
            if !authenticated {
                let (Some(nonce), Some(key)) = (&nonce, &processor.fluent_key) else {
                    return;
                };
                let Ok(ping) = rmpv::decode::read_value_with_max_depth(&mut &bytes[..], 16) else {
                    processor.count_rejected("fluent_malformed", 1);
                    return;
                };
                let (pong, ok) = fluent::answer_ping(&ping, nonce, key.expose(), &hostname);
                if stream.write_all(&pong).await.is_err() || !ok {
                    processor.count_rejected("fluent_bad_shared_key", 1);
                    return;
                }
                authenticated = true;
                continue;
            }
            match processor.forward(&bytes, peer.ip(), certified).await {
                Forwarded::Ack(chunk) => {
                    if stream.write_all(&fluent::ack(&chunk)).await.is_err() {
                        return;
                    }
                }
                Forwarded::Done => {}
                Forwarded::Stop => return,
            }
        }
        if buf.len() > max_frame {
            // A MessagePack stream cannot be resynchronised: close, and the
            // sender (which got no ack) resends after reconnecting.
            debug!(%peer, max_frame, "forward message over max_frame_bytes: closing");
            processor.count_rejected("fluent_too_large", 1);
            return;
        }
    }
}

impl Processor {
    /// One forward message: its events to records, grouped by tenant and
    /// stored — durably before answering when the sender asked for an ack.
    async fn forward(
        &self,
        message: &[u8],
        peer: IpAddr,
        certified: Option<&TenantId>,
    ) -> Forwarded {
        use crate::fluent;
        let events = match fluent::decode(message, self.max_frame) {
            Ok(events) => events,
            Err(why) => {
                debug!(%peer, %why, "not a forward message");
                self.count_rejected("fluent_malformed", 1);
                return Forwarded::Done;
            }
        };
        if !events.errors.is_empty() {
            self.count_rejected("fluent_invalid_record", events.errors.len() as u64);
        }
        let received = schemas::time::now_ms();
        let mut groups: HashMap<TenantId, Vec<LogRecord>> = HashMap::new();
        let extra = [("fluent_tag", events.tag.as_str())];
        for fluent::Entry { ms, mut record } in events.entries {
            let key = match record.key.take() {
                Some(Ok(key)) => Some(key),
                Some(Err(())) => {
                    self.count_rejected("bad_key", 1);
                    continue;
                }
                None => None,
            };
            let tenant = match self.resolver.resolve(key.as_deref(), peer, certified).await {
                Ok(tenant) => tenant,
                Err(reason) => {
                    self.count_rejected(reason.as_str(), 1);
                    continue;
                }
            };
            let entries = record.entries();
            let size = record.text.len();
            match crate::json::map_entries(&entries, size, &tenant, received, self.input, &extra) {
                Ok(mut r) => {
                    r.ts_ms = ms;
                    if r.app.is_none() {
                        r.app = Some(events.tag.clone());
                    }
                    if r.source_ip.is_none() {
                        r.source_ip = Some(peer.to_string());
                    }
                    groups.entry(tenant).or_default().push(r);
                }
                Err(_) => self.count_rejected("fluent_invalid_record", 1),
            }
        }
        let stored: u64 = groups.values().map(|g| g.len() as u64).sum();
        self.metrics
            .messages
            .with_label_values(&[&self.name, "ok"])
            .inc_by(stored);
        let Some(chunk) = events.chunk else {
            return match self.enqueue(&mut groups).await {
                Ok(()) => Forwarded::Done,
                Err(_) => Forwarded::Stop,
            };
        };
        for (tenant, records) in groups {
            let n = records.len() as u64;
            if let Err(error) = self.batcher.submit(tenant, records).await {
                debug!(%error, %peer, "forward chunk not stored: no ack");
                return Forwarded::Done;
            }
            self.ingest
                .records
                .with_label_values(&[self.input, "accepted"])
                .inc_by(n);
        }
        Forwarded::Ack(chunk)
    }
}
