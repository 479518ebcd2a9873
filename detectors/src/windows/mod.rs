//! Feature windows: per tenant, per entity (host or device), per minute.
//!
//! Logs and findings are folded into tumbling event-time windows as batches
//! arrive; a window closes when the tenant's watermark (the newest event
//! time seen, minus the allowed lateness) passes its end, or when it has
//! had no new rows for `idle_close_ms` of processing time (so a tenant that
//! goes quiet still gets its windows scored). Rows for a window that has
//! already closed are late: counted and dropped.
//!
//! Features of a window (documented in docs/detectors.md#feature-windows):
//!
//! | feature | meaning |
//! | --- | --- |
//! | `events` | log records |
//! | `distinct_apps` | distinct programs (`app`) |
//! | `distinct_sources` | distinct `source_ip` values |
//! | `auth_failures` | messages that report a failed authentication |
//! | `error_ratio` | share of records with severity error or worse (0–3) |
//! | `bytes` | bytes received |
//! | `new_ports` | open ports a scan found on the entity for the first time |
//! | `parse_failures` | records that could not be parsed cleanly |
//!
//! Entities: a log's `host` (or `unknown`); a finding's `ip` (or its
//! `device_id`) — forwarders that name hosts by address join the two.
//! Distinct counts hash the values (64-bit): exact for any realistic
//! window, and no allocation per row.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::LazyLock;

use arrow::array::{
    Array, StringArray, TimestampMillisecondArray, UInt8Array, UInt16Array, UInt32Array,
};
use arrow::record_batch::RecordBatch;
use regex::Regex;
use schemas::{Envelope, RecordKind, TenantId};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Feature names, in the order of [`ClosedWindow::values`].
pub const FEATURES: [&str; 8] = [
    "events",
    "distinct_apps",
    "distinct_sources",
    "auth_failures",
    "error_ratio",
    "bytes",
    "new_ports",
    "parse_failures",
];
pub const N_FEATURES: usize = FEATURES.len();

/// Messages that report a failed authentication or authorization (sshd,
/// PAM, sudo, web servers, Windows-style "logon failure"); matched without
/// regard to case. Also used in SQL (`message ~* PATTERN`) by the API's
/// threat analysis, so both count the same events.
pub const AUTH_FAILURE_PATTERN: &str = "failed password|authentication fail|invalid user|failed login|login failed|logon failure|access denied|incorrect password|not in sudoers|unauthorized";

static AUTH_FAILURE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("(?i){AUTH_FAILURE_PATTERN}")).expect("constant regex"));

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    /// Window width.
    pub width_ms: i64,
    /// How long after a window's end (in event time) rows may still arrive.
    pub lateness_ms: i64,
    /// A window with no new rows for this long (processing time) closes.
    pub idle_close_ms: i64,
    /// Event times further than this beyond `received_at` are clamped to it
    /// (a client clock far in the future must not close everyone's windows).
    pub max_clock_skew_ms: i64,
    /// Open windows per tenant; rows that would open more are dropped.
    pub max_open_per_tenant: usize,
    /// Ports remembered per tenant for `new_ports`.
    pub max_known_ports_per_tenant: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            width_ms: 60_000,
            lateness_ms: 60_000,
            idle_close_ms: 180_000,
            max_clock_skew_ms: 300_000,
            max_open_per_tenant: 100_000,
            max_known_ports_per_tenant: 1_000_000,
        }
    }
}

/// A finished window.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedWindow {
    pub tenant: TenantId,
    pub entity: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub values: [f64; N_FEATURES],
}

/// Counters for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WindowStats {
    pub rows: u64,
    pub late_rows: u64,
    pub dropped_rows: u64,
    pub closed: u64,
}

#[derive(Debug, Default)]
struct Acc {
    events: u64,
    apps: HashSet<u64>,
    sources: HashSet<u64>,
    auth_failures: u64,
    errors: u64,
    bytes: u64,
    new_ports: u64,
    parse_failures: u64,
    /// Processing time of the last row.
    touched_ms: i64,
}

impl Acc {
    fn values(&self) -> [f64; N_FEATURES] {
        let ratio = if self.events == 0 {
            0.0
        } else {
            self.errors as f64 / self.events as f64
        };
        [
            self.events as f64,
            self.apps.len() as f64,
            self.sources.len() as f64,
            self.auth_failures as f64,
            ratio,
            self.bytes as f64,
            self.new_ports as f64,
            self.parse_failures as f64,
        ]
    }
}

#[derive(Debug, Default)]
struct Entity {
    open: BTreeMap<i64, Acc>,
    /// Windows starting before this have closed.
    closed_until: i64,
}

#[derive(Debug, Default)]
struct Tenant {
    entities: HashMap<String, Entity>,
    open: usize,
    watermark: i64,
    known_ports: HashSet<(u64, u16)>,
}

/// The open windows of every tenant.
#[derive(Debug, Default)]
pub struct Windows {
    config: WindowConfig,
    tenants: HashMap<TenantId, Tenant>,
    stats: WindowStats,
}

fn hash(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Column(name.to_string()))
}

impl Windows {
    pub fn new(mut config: WindowConfig) -> Self {
        // A zero width would divide by zero; a second is the useful minimum.
        config.width_ms = config.width_ms.max(1000);
        Self {
            config,
            ..Default::default()
        }
    }

    pub fn stats(&self) -> WindowStats {
        self.stats
    }

    /// Open windows across tenants.
    pub fn open_windows(&self) -> usize {
        self.tenants.values().map(|t| t.open).sum()
    }

    /// Folds a batch in; `now_ms` is the processing time. Kinds other than
    /// logs and findings are ignored.
    pub fn observe(&mut self, envelope: &Envelope, now_ms: i64) -> Result<()> {
        match envelope.kind() {
            RecordKind::Logs => self.observe_logs(envelope, now_ms),
            RecordKind::Findings => self.observe_findings(envelope, now_ms),
            _ => Ok(()),
        }
    }

    fn observe_logs(&mut self, envelope: &Envelope, now_ms: i64) -> Result<()> {
        let b = envelope.batch();
        let ts = column::<TimestampMillisecondArray>(b, "ts")?;
        let received = column::<TimestampMillisecondArray>(b, "received_at")?;
        let host = column::<StringArray>(b, "host")?;
        let app = column::<StringArray>(b, "app")?;
        let source = column::<StringArray>(b, "source_ip")?;
        let severity = column::<UInt8Array>(b, "severity")?;
        let message = column::<StringArray>(b, "message")?;
        let bytes = column::<UInt32Array>(b, "bytes")?;
        let status = column::<StringArray>(b, "parse_status")?;
        let config = self.config.clone();
        let tenant = self.tenants.entry(envelope.tenant().clone()).or_default();
        for i in 0..b.num_rows() {
            self.stats.rows += 1;
            let t = ts
                .value(i)
                .min(received.value(i).saturating_add(config.max_clock_skew_ms));
            let entity = if host.is_valid(i) {
                host.value(i)
            } else {
                "unknown"
            };
            let Some(acc) = window(tenant, &config, &mut self.stats, entity, t, now_ms) else {
                continue;
            };
            acc.events += 1;
            if app.is_valid(i) {
                acc.apps.insert(hash(app.value(i)));
            }
            if source.is_valid(i) {
                acc.sources.insert(hash(source.value(i)));
            }
            if severity.is_valid(i) && severity.value(i) <= 3 {
                acc.errors += 1;
            }
            acc.bytes += u64::from(bytes.value(i));
            if status.value(i) != "ok" {
                acc.parse_failures += 1;
            }
            if AUTH_FAILURE.is_match(message.value(i)) {
                acc.auth_failures += 1;
            }
        }
        Ok(())
    }

    fn observe_findings(&mut self, envelope: &Envelope, now_ms: i64) -> Result<()> {
        let b = envelope.batch();
        let ts = column::<TimestampMillisecondArray>(b, "ts")?;
        let received = column::<TimestampMillisecondArray>(b, "received_at")?;
        let ip = column::<StringArray>(b, "ip")?;
        let device = column::<StringArray>(b, "device_id")?;
        let port = column::<UInt16Array>(b, "port")?;
        let config = self.config.clone();
        let tenant = self.tenants.entry(envelope.tenant().clone()).or_default();
        for i in 0..b.num_rows() {
            let entity = if ip.is_valid(i) {
                ip.value(i)
            } else if device.is_valid(i) {
                device.value(i)
            } else {
                continue;
            };
            if !port.is_valid(i) {
                continue;
            }
            let key = (hash(entity), port.value(i));
            if tenant.known_ports.contains(&key)
                || tenant.known_ports.len() >= config.max_known_ports_per_tenant
            {
                continue;
            }
            tenant.known_ports.insert(key);
            let t = ts
                .value(i)
                .min(received.value(i).saturating_add(config.max_clock_skew_ms));
            if let Some(acc) = window(tenant, &config, &mut self.stats, entity, t, now_ms) {
                acc.new_ports += 1;
            }
        }
        Ok(())
    }

    /// Closes every window that is due at processing time `now_ms`.
    pub fn close_due(&mut self, now_ms: i64) -> Vec<ClosedWindow> {
        self.close(|watermark, config, acc, start| {
            start.saturating_add(config.width_ms + config.lateness_ms) <= watermark
                || now_ms - acc.touched_ms >= config.idle_close_ms
        })
    }

    /// Closes every open window (shutdown, tests).
    pub fn close_all(&mut self) -> Vec<ClosedWindow> {
        self.close(|_, _, _, _| true)
    }

    fn close(&mut self, due: impl Fn(i64, &WindowConfig, &Acc, i64) -> bool) -> Vec<ClosedWindow> {
        let mut out = Vec::new();
        for (tenant_id, tenant) in &mut self.tenants {
            let watermark = tenant.watermark;
            for (name, entity) in &mut tenant.entities {
                let starts: Vec<i64> = entity
                    .open
                    .iter()
                    .filter(|(start, acc)| due(watermark, &self.config, acc, **start))
                    .map(|(start, _)| *start)
                    .collect();
                for start in starts {
                    let Some(acc) = entity.open.remove(&start) else {
                        continue;
                    };
                    tenant.open -= 1;
                    let end = start.saturating_add(self.config.width_ms);
                    entity.closed_until = entity.closed_until.max(end);
                    out.push(ClosedWindow {
                        tenant: tenant_id.clone(),
                        entity: name.clone(),
                        start_ms: start,
                        end_ms: end,
                        values: acc.values(),
                    });
                }
            }
            tenant
                .entities
                .retain(|_, e| !e.open.is_empty() || e.closed_until > watermark - 86_400_000);
        }
        self.stats.closed += out.len() as u64;
        out.sort_by(|a, b| {
            (a.tenant.as_str(), a.start_ms, &a.entity).cmp(&(
                b.tenant.as_str(),
                b.start_ms,
                &b.entity,
            ))
        });
        out
    }
}

/// The open window of `entity` holding event time `t`, opened if needed;
/// `None` for late rows and when the tenant is at its open-window cap.
fn window<'a>(
    tenant: &'a mut Tenant,
    config: &WindowConfig,
    stats: &mut WindowStats,
    entity: &str,
    t: i64,
    now_ms: i64,
) -> Option<&'a mut Acc> {
    let start = t.div_euclid(config.width_ms) * config.width_ms;
    tenant.watermark = tenant.watermark.max(t);
    if !tenant.entities.contains_key(entity) {
        tenant
            .entities
            .insert(entity.to_string(), Entity::default());
    }
    let e = tenant.entities.get_mut(entity)?;
    if start < e.closed_until {
        stats.late_rows += 1;
        return None;
    }
    if !e.open.contains_key(&start) {
        if tenant.open >= config.max_open_per_tenant {
            stats.dropped_rows += 1;
            return None;
        }
        tenant.open += 1;
    }
    let acc = e.open.entry(start).or_default();
    acc.touched_ms = now_ms;
    Some(acc)
}

#[cfg(test)]
mod tests;
