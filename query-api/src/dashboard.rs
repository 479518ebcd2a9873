//! Metrics for people: `/api/metrics/system`, `/organization`, `/security`
//! and `/dashboard` (everything a dashboard needs in one call).
//!
//! Security score and threat level are simple, documented rules, so a
//! customer can see why their number moved:
//!
//! - open vulnerabilities are the distinct `(ip, port, protocol, title)`
//!   findings of the last 30 days, each at its highest severity;
//! - score = 100 − 15·critical − 8·high − 3·medium − 1·low − 2·anomalies in
//!   the last 24 h, clamped to 0..=100;
//! - threat level: `critical` with any critical vulnerability or critical
//!   anomaly in 24 h; `high` with a high one or 3+ anomalies in 24 h;
//!   `medium` with a medium one or any anomaly in 24 h; else `low`.

use std::sync::Mutex;

use axum::Json;
use axum::extract::State;
use schemas::Severity;
use serde_json::{Value, json};
use sysinfo::{Disks, ProcessesToUpdate, System};

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::listing::to_json_rows;
use crate::state::AppState;

/// The process's view of its host; refreshed on each call (CPU usage is
/// the average since the previous call).
pub struct SystemProbe {
    system: Mutex<System>,
    started: std::time::Instant,
}

impl Default for SystemProbe {
    fn default() -> Self {
        Self {
            system: Mutex::new(System::new()),
            started: std::time::Instant::now(),
        }
    }
}

/// Established TCP connections on the host (Linux `/proc/net/tcp{,6}`;
/// `None` elsewhere).
fn tcp_established() -> Option<u64> {
    let mut n = 0;
    let mut found = false;
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            found = true;
            // Column 4 is the state; 01 = ESTABLISHED.
            n += text
                .lines()
                .skip(1)
                .filter(|l| l.split_whitespace().nth(3) == Some("01"))
                .count() as u64;
        }
    }
    found.then_some(n)
}

/// `GET /api/metrics/system`
pub async fn system(State(state): State<AppState>, Caller(_): Caller) -> Result<Json<Value>> {
    let probe = state.system.clone();
    let data_dir = state.data_dir.clone();
    let v = tokio::task::spawn_blocking(move || {
        let pid = sysinfo::get_current_pid().ok();
        let mut sys = probe.system.lock().unwrap_or_else(|p| p.into_inner());
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        if let Some(pid) = pid {
            sys.refresh_processes(ProcessesToUpdate::Some(&[pid]), true);
        }
        let process = pid.and_then(|p| sys.process(p));
        let disks = Disks::new_with_refreshed_list();
        // The disk holding the data directory: the longest matching mount.
        let disk = disks
            .list()
            .iter()
            .filter(|d| data_dir.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len());
        let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).ok();
        json!({
            "cpu": {
                "cores": sys.cpus().len(),
                "host_usage_percent": sys.global_cpu_usage(),
                "process_usage_percent": process.map(|p| p.cpu_usage()),
                "load_average": {
                    "one": System::load_average().one,
                    "five": System::load_average().five,
                    "fifteen": System::load_average().fifteen,
                },
            },
            "memory": {
                "host_total_bytes": sys.total_memory(),
                "host_used_bytes": sys.used_memory(),
                "process_resident_bytes": process.map(|p| p.memory()),
            },
            "disk": disk.map(|d| json!({
                "mount_point": d.mount_point(),
                "total_bytes": d.total_space(),
                "available_bytes": d.available_space(),
            })),
            "connections": {
                "tcp_established_host": tcp_established(),
                "open_file_descriptors": fds,
            },
            "uptime_secs": probe.started.elapsed().as_secs(),
        })
    })
    .await
    .map_err(|e| ApiError::Internal(format!("system probe: {e}")))?;
    Ok(Json(v))
}

async fn scalar(state: &AppState, tenant: &schemas::TenantId, sql: &str) -> Result<i64> {
    let rows = to_json_rows(&state.sql.execute(tenant, sql).await?.batches)?;
    Ok(rows
        .first()
        .and_then(|r| r.as_object())
        .and_then(|o| o.values().next())
        .and_then(Value::as_i64)
        .unwrap_or(0))
}

/// What the security view is computed from.
pub struct Security {
    pub vulnerabilities: serde_json::Map<String, Value>,
    pub anomalies_24h: i64,
    pub critical_anomalies_24h: i64,
}

pub async fn security_facts(state: &AppState, tenant: &schemas::TenantId) -> Result<Security> {
    let rows = to_json_rows(
        &state
            .sql
            .execute(
                tenant,
                "SELECT severity, CAST(count(*) AS BIGINT) AS n FROM ( \
                   SELECT ip, port, protocol, title, \
                     max(CASE severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2 \
                                      WHEN 'low' THEN 1 ELSE 0 END) AS rank \
                   FROM findings WHERE ts >= now() - INTERVAL '30 days' \
                   GROUP BY ip, port, protocol, title) v \
                 JOIN (VALUES (4, 'critical'), (3, 'high'), (2, 'medium'), (1, 'low'), (0, 'info')) \
                   AS s(rank, severity) ON v.rank = s.rank \
                 GROUP BY severity",
            )
            .await?
            .batches,
    )?;
    let mut vulnerabilities = serde_json::Map::new();
    for s in Severity::ALL.iter().rev().map(|s| s.as_str()) {
        let n = rows
            .iter()
            .find(|r| r["severity"] == s)
            .and_then(|r| r["n"].as_i64())
            .unwrap_or(0);
        vulnerabilities.insert(s.into(), json!(n));
    }
    let recent = "window_start >= now() - INTERVAL '24 hours'";
    Ok(Security {
        vulnerabilities,
        anomalies_24h: scalar(state, tenant, &format!("SELECT CAST(count(*) AS BIGINT) FROM anomalies WHERE {recent}")).await?,
        critical_anomalies_24h: scalar(
            state,
            tenant,
            &format!("SELECT CAST(count(*) AS BIGINT) FROM anomalies WHERE {recent} AND severity = 'critical'"),
        )
        .await?,
    })
}

impl Security {
    fn count(&self, s: &str) -> i64 {
        self.vulnerabilities
            .get(s)
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }

    pub fn score(&self) -> i64 {
        let penalty = 15 * self.count("critical")
            + 8 * self.count("high")
            + 3 * self.count("medium")
            + self.count("low")
            + 2 * self.anomalies_24h;
        (100 - penalty).clamp(0, 100)
    }

    pub fn threat_level(&self) -> &'static str {
        if self.count("critical") > 0 || self.critical_anomalies_24h > 0 {
            "critical"
        } else if self.count("high") > 0 || self.anomalies_24h >= 3 {
            "high"
        } else if self.count("medium") > 0 || self.anomalies_24h > 0 {
            "medium"
        } else {
            "low"
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "vulnerabilities": self.vulnerabilities,
            "open_vulnerabilities": self.vulnerabilities.values().filter_map(Value::as_i64).sum::<i64>(),
            "anomalies_24h": self.anomalies_24h,
            "security_score": self.score(),
            "threat_level": self.threat_level(),
            "window": { "vulnerabilities": "30 days", "anomalies": "24 hours" },
        })
    }
}

/// `GET /api/metrics/security`
pub async fn security(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>> {
    Ok(Json(
        security_facts(&state, &caller.tenant).await?.to_json(),
    ))
}

async fn organization_json(
    state: &AppState,
    caller: &control::Principal,
    security: &Security,
) -> Result<Value> {
    let org = state.caller_org(caller).await?;
    let now = schemas::time::now_ms();
    let anomalies_30d = scalar(
        state,
        &caller.tenant,
        "SELECT CAST(count(*) AS BIGINT) FROM anomalies WHERE window_start >= now() - INTERVAL '30 days'",
    )
    .await?;
    Ok(json!({
        "organization": org.id,
        "plan": org.plan,
        "devices": { "tracked": state.store.device_count(&org, now).await?, "max": org.limits.max_devices },
        "scans": { "this_month": state.store.scans_in_month(&org, now).await?, "max": org.limits.max_scans_per_month },
        "anomalies": { "last_24h": security.anomalies_24h, "last_30d": anomalies_30d },
        "notifications_unread": state.store.unread_notifications(&org.id).await?,
        "security_score": security.score(),
        "threat_level": security.threat_level(),
    }))
}

/// `GET /api/metrics/organization`
pub async fn organization(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>> {
    let security = security_facts(&state, &caller.tenant).await?;
    Ok(Json(organization_json(&state, &caller, &security).await?))
}

/// `GET /api/metrics/dashboard`
pub async fn dashboard(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>> {
    // One set of security queries serves both views.
    let facts = security_facts(&state, &caller.tenant).await?;
    let organization = organization_json(&state, &caller, &facts).await?;
    let security = facts.to_json();
    let recent = to_json_rows(
        &state
            .sql
            .execute(
                &caller.tenant,
                "SELECT anomaly_id, entity, CAST(window_start AS BIGINT) AS window_start_ms, score, severity \
                 FROM anomalies ORDER BY window_start DESC, anomaly_id DESC LIMIT 5",
            )
            .await?
            .batches,
    )?;
    let events_24h = scalar(
        &state,
        &caller.tenant,
        "SELECT CAST(count(*) AS BIGINT) FROM logs WHERE ts >= now() - INTERVAL '24 hours'",
    )
    .await?;
    let month = crate::usage::recorded(
        &state.sql,
        &caller.tenant,
        control::invoice::month_start(schemas::time::now_ms()),
    )
    .await?;
    Ok(Json(json!({
        "organization": organization,
        "security": security,
        "recent_anomalies": recent,
        "log_events_24h": events_24h,
        "usage_this_month": month.totals,
    })))
}
