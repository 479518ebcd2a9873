use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use schemas::TenantId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Udp,
    Tcp,
    Tls,
}

/// What a listener's messages are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// RFC 5424 / RFC 3164 syslog (RFC 6587 framing on streams).
    #[default]
    Syslog,
    /// GELF 1.1 JSON: chunked and zlib/gzip on UDP, NUL-delimited on
    /// TCP/TLS (crate::gelf).
    Gelf,
    /// Fluent forward protocol v1 on TCP/TLS (crate::fluent).
    Fluent,
}

/// One syslog listener (`[[ingest.syslog]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// Name in metrics and logs.
    pub name: String,
    /// `udp`, `tcp` or `tls`.
    pub protocol: Protocol,
    /// `syslog` (the default), `gelf` or `fluent`.
    #[serde(default)]
    pub format: Format,
    /// Fluent forward: the shared key of the HELO/PING/PONG handshake each
    /// connection must pass first (off when unset).
    #[serde(default)]
    pub fluent_shared_key: Option<schemas::Secret>,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Certificate and key (PEM) for `tls`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Tenant of messages no rule below claims. Without it, such messages
    /// are rejected (and counted).
    #[serde(default)]
    pub default_tenant: Option<TenantId>,
    /// Tenants by sender address, most specific network first.
    #[serde(default)]
    pub sources: Vec<SourceRule>,
    /// Longest message kept; longer ones are cut and marked `truncated`.
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    /// IANA zone (e.g. `Europe/Berlin`) of BSD timestamps, which carry none.
    #[serde(default = "default_zone")]
    pub bsd_timezone: String,
    /// Keep each message's exact bytes in `raw` even when it parsed.
    #[serde(default)]
    pub keep_raw: bool,
    /// TCP/TLS connections served at once. When full, a new connection
    /// takes the place of the connection idle longest (idle at least
    /// `evict_idle_after_secs`), or is refused if every one is busy.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// TCP/TLS connections from one address at most; more are refused.
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: usize,
    /// A connection that sent nothing for this long is closed (senders
    /// reconnect when they have logs); 0 keeps idle connections open until
    /// their place is needed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// When the listener is full, connections idle at least this long may
    /// be closed to admit a new sender.
    #[serde(default = "default_evict_idle_after")]
    pub evict_idle_after_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRule {
    /// Sender network, e.g. `10.1.0.0/16` or `192.0.2.7/32`.
    pub cidr: IpNet,
    pub tenant: TenantId,
}

fn default_max_frame() -> usize {
    64 * 1024
}

fn default_zone() -> String {
    "UTC".into()
}

fn default_max_connections() -> usize {
    1024
}

fn default_max_connections_per_source() -> usize {
    256
}

fn default_idle_timeout() -> u64 {
    3600
}

fn default_evict_idle_after() -> u64 {
    10
}

impl SyslogConfig {
    /// A listener with defaults for everything optional.
    pub fn new(name: &str, protocol: Protocol, listen: SocketAddr) -> Self {
        Self {
            name: name.into(),
            protocol,
            format: Format::Syslog,
            fluent_shared_key: None,
            listen,
            tls: None,
            default_tenant: None,
            sources: Vec::new(),
            max_frame_bytes: default_max_frame(),
            bsd_timezone: default_zone(),
            keep_raw: false,
            max_connections: default_max_connections(),
            max_connections_per_source: default_max_connections_per_source(),
            idle_timeout_secs: default_idle_timeout(),
            evict_idle_after_secs: default_evict_idle_after(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| {
            Err(Error::Config(format!(
                "syslog listener {:?}: {what}",
                self.name
            )))
        };
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return bad("name must be non-empty letters, digits, '-' or '_'".into());
        }
        if self.format == Format::Fluent && self.protocol == Protocol::Udp {
            return bad(
                "format fluent needs protocol tcp or tls (forward's UDP is only heartbeats)".into(),
            );
        }
        if self.fluent_shared_key.is_some() && self.format != Format::Fluent {
            return bad("fluent_shared_key is only for format fluent".into());
        }
        if self.protocol == Protocol::Tls && self.tls.is_none() {
            return bad("protocol tls needs tls.cert_path and tls.key_path".into());
        }
        if self.protocol != Protocol::Tls && self.tls.is_some() {
            return bad("tls settings given but protocol is not tls".into());
        }
        if self.bsd_timezone.parse::<chrono_tz::Tz>().is_err() {
            return bad(format!("unknown time zone {:?}", self.bsd_timezone));
        }
        if self.max_connections == 0 || self.max_connections_per_source == 0 {
            return bad("max_connections and max_connections_per_source must be at least 1".into());
        }
        if self.max_frame_bytes < 64 || self.max_frame_bytes > 16 << 20 {
            return bad(format!(
                "max_frame_bytes {} is outside 64..=16777216",
                self.max_frame_bytes
            ));
        }
        Ok(())
    }
}
