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
    /// Certificate and key (PEM) for `tls`, and the CA of client
    /// certificates.
    #[serde(default)]
    pub tls: Option<StreamTlsConfig>,
    /// Tenants by the subject of the client certificate a sender presented
    /// (needs `tls.client_ca_path`); the rule naming the most attributes
    /// wins. A verified certificate no rule claims is refused.
    #[serde(default)]
    pub client_certificates: Vec<CertificateRule>,
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

/// TLS of a log stream listener: the HTTP listener's certificate and key,
/// plus client certificates.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamTlsConfig {
    /// PEM certificate chain.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
    /// CA certificates (PEM) client certificates must chain to. Set, the
    /// listener asks every sender for a certificate.
    #[serde(default)]
    pub client_ca_path: Option<PathBuf>,
    /// Refuse senders without a valid client certificate at the handshake
    /// (otherwise they are served, their tenant found as without TLS).
    #[serde(default)]
    pub require_client_certificate: bool,
}

/// A client certificate subject and its tenant.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRule {
    /// RFC 4514 attributes the certificate's subject must all have, e.g.
    /// `O=Acme,OU=Firewalls` or `CN=fw01.acme.example,O=Acme`.
    pub subject: String,
    pub tenant: TenantId,
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
            client_certificates: Vec::new(),
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

    /// The client certificate rules, parsed.
    pub fn subject_rules(&self) -> std::result::Result<crate::tls::SubjectRules<TenantId>, String> {
        crate::tls::SubjectRules::new(
            self.client_certificates
                .iter()
                .map(|r| (r.subject.clone(), r.tenant.clone())),
        )
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
        let client_ca = self
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca_path.is_some());
        if !client_ca
            && (!self.client_certificates.is_empty()
                || self
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.require_client_certificate))
        {
            return bad(
                "client_certificates and tls.require_client_certificate need tls.client_ca_path"
                    .into(),
            );
        }
        if let Err(why) = self.subject_rules() {
            return bad(why);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_listener() -> SyslogConfig {
        let mut c = SyslogConfig::new("mtls", Protocol::Tls, "127.0.0.1:0".parse().unwrap());
        c.tls = Some(StreamTlsConfig {
            cert_path: "/etc/securenet/tls.crt".into(),
            key_path: "/etc/securenet/tls.key".into(),
            client_ca_path: None,
            require_client_certificate: false,
        });
        c
    }

    fn rule(subject: &str) -> CertificateRule {
        CertificateRule {
            subject: subject.into(),
            tenant: TenantId::new("acme").unwrap(),
        }
    }

    #[test]
    fn client_certificate_settings_need_a_client_ca_and_valid_subjects() {
        let mut c = tls_listener();
        c.client_certificates = vec![rule("O=Acme Inc")];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("need tls.client_ca_path"), "{err}");

        let mut c = tls_listener();
        c.tls.as_mut().unwrap().require_client_certificate = true;
        assert!(c.validate().is_err());

        let mut c = tls_listener();
        c.tls.as_mut().unwrap().client_ca_path = Some("/etc/securenet/ca.pem".into());
        c.client_certificates = vec![rule("O=Acme Inc"), rule("Acme")];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("\"Acme\""), "{err}");

        c.client_certificates = vec![rule("O=Acme Inc,OU=Firewalls")];
        c.validate().unwrap();
    }
}
