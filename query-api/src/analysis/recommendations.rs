//! `GET /api/insights/recommendations`: rules over the organization's data,
//! each with its evidence.

use axum::Json;
use axum::extract::State;
use detectors::windows::AUTH_FAILURE_PATTERN;
use schemas::Severity;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::state::AppState;

use super::*;

/// Services that should not face a network without a reason.
const RISKY_PORTS: &[(i64, &str)] = &[
    (21, "FTP"),
    (23, "Telnet"),
    (445, "SMB"),
    (3389, "RDP"),
    (3306, "MySQL"),
    (5432, "PostgreSQL"),
    (6379, "Redis"),
    (9200, "Elasticsearch"),
    (27017, "MongoDB"),
];

/// `GET /api/insights/recommendations`
pub async fn recommendations(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>> {
    let tenant = &caller.tenant;
    let now = schemas::time::now_ms();
    let day = DAY_MS;
    let mut out: Vec<Value> = Vec::new();
    let mut push = |id: &str, priority: &str, title: String, action: &str, evidence: Value| {
        out.push(json!({"id": id, "priority": priority, "title": title, "action": action, "evidence": evidence}));
    };

    let vulns = query(
        &state,
        tenant,
        Bound::with(|q| format!(
            "SELECT title, severity, max(cve) AS cve, CAST(count(DISTINCT ip) AS BIGINT) AS hosts, \
             array_agg(DISTINCT concat(ip, ':', CAST(port AS VARCHAR))) AS targets FROM findings \
             WHERE {} AND severity IN ('critical', 'high') GROUP BY title, severity \
             ORDER BY CASE severity WHEN 'critical' THEN 0 ELSE 1 END, hosts DESC, title LIMIT 20",
            ts_between(q, now - 30 * day, now + day)
        )),
    )
    .await?;
    for v in vulns {
        let sev = v["severity"].as_str().unwrap_or("high");
        push(
            "patch-vulnerability",
            sev,
            format!(
                "Patch \"{}\" on {} host(s)",
                v["title"].as_str().unwrap_or(""),
                v["hosts"]
            ),
            "apply the vendor fix or mitigate, then rescan to confirm",
            json!({"severity": sev, "cve": v["cve"], "targets": v["targets"]}),
        );
    }
    let exposed = query(
        &state,
        tenant,
        Bound::with(|q| {
            let ports: Vec<String> = RISKY_PORTS.iter().map(|(p, _)| q.bind(*p)).collect();
            format!(
                "SELECT port, array_agg(DISTINCT ip) AS ips FROM findings WHERE {} AND port IN ({}) \
                 GROUP BY port ORDER BY port",
                ts_between(q, now - 30 * day, now + day),
                ports.join(", ")
            )
        }),
    )
    .await?;
    for e in exposed {
        let port = e["port"].as_i64().unwrap_or(0);
        let name = RISKY_PORTS
            .iter()
            .find(|(p, _)| *p == port)
            .map_or("service", |(_, n)| n);
        push(
            "close-risky-port",
            "high",
            format!("{name} (port {port}) is reachable"),
            "firewall the port or restrict it to a management network",
            json!({"port": port, "ips": e["ips"]}),
        );
    }
    let brute = query(
        &state,
        tenant,
        Bound::with(|q| {
            format!(
                "SELECT COALESCE(host, source_ip) AS e, CAST(count(*) AS BIGINT) AS n FROM logs \
             WHERE {} AND message ~* {} GROUP BY COALESCE(host, source_ip) HAVING count(*) >= 20 \
             ORDER BY n DESC LIMIT 10",
                ts_between(q, now - day, now + 60_000),
                q.bind(AUTH_FAILURE_PATTERN)
            )
        }),
    )
    .await?;
    for b in brute {
        push(
            "harden-authentication",
            "high",
            format!(
                "{} authentication failures on {} in 24 h",
                b["n"],
                b["e"].as_str().unwrap_or("")
            ),
            "enforce MFA or keys, rate-limit logins (fail2ban), and review the sources",
            json!({"entity": b["e"], "auth_failures_24h": b["n"]}),
        );
    }
    let anomalous = query(
        &state,
        tenant,
        Bound::with(|q| format!(
            "SELECT entity, CAST(count(*) AS BIGINT) AS n, max(score) AS s, max(anomaly_id) AS example \
             FROM anomalies WHERE CAST(window_start AS BIGINT) >= {} GROUP BY entity ORDER BY s DESC LIMIT 10",
            q.bind(now - 7 * day)
        )),
    )
    .await?;
    for a in anomalous {
        push(
            "investigate-anomalies",
            "medium",
            format!(
                "Investigate {} anomalous window(s) on {}",
                a["n"],
                a["entity"].as_str().unwrap_or("")
            ),
            "review the entity's logs around the windows (GET /api/anomalies?entity=…)",
            json!({"entity": a["entity"], "anomalies_7d": a["n"], "max_score": a["s"], "example_anomaly": a["example"]}),
        );
    }
    let quality = query(
        &state,
        tenant,
        Bound::with(|q| {
            format!(
                "SELECT CAST(count(*) AS BIGINT) AS total, \
             CAST(sum(CASE WHEN parse_status <> 'ok' THEN 1 ELSE 0 END) AS BIGINT) AS failed \
             FROM logs WHERE {}",
                ts_between(q, now - day, now + 60_000)
            )
        }),
    )
    .await?;
    if let Some(q) = quality.first() {
        let (total, failed) = (
            q["total"].as_i64().unwrap_or(0),
            q["failed"].as_i64().unwrap_or(0),
        );
        if total >= 100 && failed * 10 >= total {
            push(
                "fix-log-format",
                "low",
                format!("{failed} of {total} log lines in 24 h did not parse"),
                "check the forwarder's format (docs/forwarders.md): RFC 5424 or JSON parse best",
                json!({"log_lines_24h": total, "parse_failures_24h": failed}),
            );
        }
    }
    let org = state
        .store
        .organization(tenant)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("organization {tenant} no longer exists")))?;
    let devices = state.store.device_count(&org, now).await?;
    let scans = state.store.scans_in_month(&org, now).await?;
    for (what, used, max) in [
        ("devices", devices, org.limits.max_devices),
        ("scans this month", scans, org.limits.max_scans_per_month),
    ] {
        if max > 0 && used * 10 >= max * 8 {
            push(
                "plan-capacity",
                if used >= max { "medium" } else { "low" },
                format!("{used} of {max} {what} on the {} plan", org.plan),
                "upgrade the plan (POST /api/billing/upgrade) or expect overage",
                json!({"what": what, "used": used, "limit": max, "plan": org.plan}),
            );
        }
    }
    let last_scan = query(
        &state,
        tenant,
        Bound::new("SELECT CAST(max(ts) AS BIGINT) AS last FROM scans"),
    )
    .await?
    .first()
    .and_then(|r| r["last"].as_i64());
    if last_scan.is_none_or(|t| now - t > 30 * day) {
        push(
            "schedule-scans",
            "low",
            "No network scan in the last 30 days".into(),
            "schedule nmap scans and post them to /api/ingest/scans",
            json!({"last_scan": last_scan.map(iso)}),
        );
    }
    // Most urgent first; anything unknown ranks with `low`.
    out.sort_by_key(|r| {
        let priority = r["priority"].as_str().and_then(Severity::parse);
        std::cmp::Reverse(priority.map_or(Severity::Low, |p| p.max(Severity::Low)))
    });
    Ok(Json(json!({ "recommendations": out })))
}
