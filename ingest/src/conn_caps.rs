//! Caps on a listener's open connections, from all clients and from one
//! address, with the gauge and refusal counter that show them.
//!
//! The HTTP listener (`http.max_connections`, `http.max_connections_per_ip`)
//! and the gRPC listeners (Flight SQL, OTLP/gRPC, which take the same
//! values, each counted on its own) admit a connection only while both
//! caps hold; an admitted connection keeps its [`Slot`] until it is
//! dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, IntGauge};

/// Open connections a listener takes at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    /// From all clients together.
    pub total: usize,
    /// From one address.
    pub per_ip: usize,
}

/// The cap a refused connection hit, as the refusal counters label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    MaxConnectionsPerIp,
}

impl Refusal {
    pub const ALL: [Refusal; 2] = [Refusal::MaxConnections, Refusal::MaxConnectionsPerIp];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerIp => "max_connections_per_ip",
        }
    }
}

/// How a listener's connections show in its metrics: the open ones, and
/// the refusals by cap (in [`Refusal::ALL`]'s order).
#[derive(Clone)]
pub struct ConnectionMetrics {
    pub open: IntGauge,
    pub refused: [IntCounter; 2],
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// A listener's open connections under its caps.
pub struct OpenConnections {
    caps: ConnectionCaps,
    counts: Mutex<Counts>,
    metrics: Option<ConnectionMetrics>,
}

impl OpenConnections {
    pub fn new(caps: ConnectionCaps, metrics: Option<ConnectionMetrics>) -> Arc<Self> {
        Arc::new(Self {
            caps,
            counts: Mutex::new(Counts::default()),
            metrics,
        })
    }

    /// A place for a connection from `ip`, or the cap that refuses it
    /// (counted).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let from_ip = c.by_ip.get(&ip).copied().unwrap_or(0);
        let refusal = if c.total >= self.caps.total {
            Some(Refusal::MaxConnections)
        } else if from_ip >= self.caps.per_ip {
            Some(Refusal::MaxConnectionsPerIp)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            if let Some(m) = &self.metrics {
                m.refused[refusal as usize].inc();
            }
            return Err(refusal);
        }
        c.total += 1;
        *c.by_ip.entry(ip).or_default() += 1;
        if let Some(m) = &self.metrics {
            m.open.inc();
        }
        Ok(Slot {
            open: self.clone(),
            ip,
        })
    }
}

/// A connection's place under its listener's caps, given back when dropped.
pub struct Slot {
    open: Arc<OpenConnections>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.open.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.by_ip.remove(&self.ip);
            }
        }
        if let Some(m) = &self.open.metrics {
            m.open.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_per_address_and_in_total_and_show_in_the_metrics() {
        let metrics = ConnectionMetrics {
            open: IntGauge::new("open", "open").unwrap(),
            refused: [
                IntCounter::new("total", "total").unwrap(),
                IntCounter::new("per_ip", "per ip").unwrap(),
            ],
        };
        let open = OpenConnections::new(
            ConnectionCaps {
                total: 3,
                per_ip: 2,
            },
            Some(metrics.clone()),
        );
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = open.admit(a).unwrap();
        let _a2 = open.admit(a).unwrap();
        assert_eq!(open.admit(a).err(), Some(Refusal::MaxConnectionsPerIp));
        let _b1 = open.admit(b).unwrap();
        assert_eq!(open.admit(b).err(), Some(Refusal::MaxConnections));
        assert_eq!(metrics.open.get(), 3);
        assert_eq!(metrics.refused[0].get(), 1);
        assert_eq!(metrics.refused[1].get(), 1);
        drop(a1);
        assert_eq!(metrics.open.get(), 2);
        let _b2 = open.admit(b).unwrap();
        let c = open.counts.lock().unwrap();
        assert_eq!(c.total, 3);
        assert_eq!(c.by_ip[&a], 1);
        assert_eq!(c.by_ip[&b], 2);
    }
}
