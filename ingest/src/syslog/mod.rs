//! Syslog receivers: UDP, TCP and TCP+TLS (and GELF on the same listeners,
//! `format = "gelf"`: crate::gelf).
//!
//! - `config.rs`: one `[[ingest.syslog]]` entry per listener.
//! - `framing.rs`: RFC 6587 framing for streams (octet counting or newline).
//! - `parse.rs`: RFC 5424 / RFC 3164 → `LogRecord`, lossless.
//! - `tenant.rs`: which organization a message belongs to.
//! - `server.rs`: the listeners themselves.
//!
//! Nothing a listener reads is dropped without a metric saying so:
//! unparseable messages are stored with `parse_status = error`; messages of
//! unknown senders (when the listener rejects them) and UDP datagrams that
//! find the pipeline full are counted; a full pipeline pauses TCP reads.

mod config;
#[cfg(test)]
mod corpus;
pub mod framing;
pub mod parse;
mod server;
mod tenant;

#[cfg(test)]
mod proptests;

pub use config::{
    CertificateRule, Format, Protocol, SourceRule, StreamTlsConfig, SyslogConfig, TlsConfig,
};
pub use server::{SyslogMetrics, SyslogServer};
pub use tenant::TenantResolver;
