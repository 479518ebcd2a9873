//! The JSON scan report and device inventory formats (docs/api.md).
//!
//! Scan report (`POST /api/ingest/scans`, `application/json`):
//!
//! ```json
//! {"scan_id": "weekly-2026-11-26", "scanner": "openvas 22.4", "target": "10.0.0.0/24",
//!  "started": "2026-11-26T10:00:00Z", "finished": "2026-11-26T10:20:00Z", "status": "completed",
//!  "hosts": [{"ip": "10.0.0.5", "mac": "aa:bb:cc:00:11:22", "hostname": "web-01", "os": "Debian 12",
//!             "vendor": "Dell", "status": "up",
//!             "findings": [{"port": 22, "protocol": "tcp", "service": "ssh", "product": "OpenSSH 9.2",
//!                           "severity": "high", "cvss": 7.5, "title": "Weak MACs", "cve": "CVE-2023-48795"}]}]}
//! ```
//!
//! Device inventory (`POST /api/ingest/devices`): `{"devices": [{"ip", "mac",
//! "hostname", "os", "vendor"}]}` or the bare array. Unknown fields are
//! errors, so a typo is reported rather than silently dropped.

use chrono::DateTime;
use control::DeviceObservation;
use serde::Deserialize;
use serde_json::Value;

use super::{Finding, Host, ScanReport};
use schemas::Severity;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonReport {
    scan_id: Option<String>,
    scanner: Option<String>,
    target: Option<String>,
    started: Option<Value>,
    finished: Option<Value>,
    status: Option<String>,
    #[serde(default)]
    hosts: Vec<JsonHost>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonHost {
    ip: Option<String>,
    mac: Option<String>,
    hostname: Option<String>,
    os: Option<String>,
    vendor: Option<String>,
    status: Option<String>,
    #[serde(default)]
    findings: Vec<JsonFinding>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFinding {
    port: Option<u16>,
    protocol: Option<String>,
    service: Option<String>,
    product: Option<String>,
    severity: Option<String>,
    cvss: Option<f32>,
    title: String,
    cve: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonDevice {
    ip: Option<String>,
    mac: Option<String>,
    hostname: Option<String>,
    os: Option<String>,
    vendor: Option<String>,
}

/// RFC 3339 text or epoch seconds.
fn time(field: &str, v: Option<Value>) -> Result<Option<i64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(&s)
            .map(|t| Some(t.timestamp_millis()))
            .map_err(|e| format!("{field}: {s:?} is not an RFC 3339 timestamp ({e})")),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(|s| Some((s * 1000.0) as i64))
            .ok_or_else(|| format!("{field}: {n} is not epoch seconds")),
        Some(other) => Err(format!(
            "{field}: expected an RFC 3339 string or epoch seconds, found {other}"
        )),
    }
}

pub fn parse_report(body: &[u8]) -> Result<ScanReport, String> {
    let r: JsonReport =
        serde_json::from_slice(body).map_err(|e| format!("invalid scan report: {e}"))?;
    let mut hosts = Vec::with_capacity(r.hosts.len());
    for (i, h) in r.hosts.into_iter().enumerate() {
        if h.ip.is_none() && h.mac.is_none() {
            return Err(format!("hosts[{i}]: a host needs an ip or a mac"));
        }
        let up = match h.status.as_deref() {
            None | Some("up") => true,
            Some("down") => false,
            Some(other) => return Err(format!("hosts[{i}].status: {other:?} is not up or down")),
        };
        let mut findings = Vec::with_capacity(h.findings.len());
        for (j, f) in h.findings.into_iter().enumerate() {
            if let Some(cvss) = f.cvss
                && !(0.0..=10.0).contains(&cvss)
            {
                return Err(format!(
                    "hosts[{i}].findings[{j}].cvss: {cvss} is outside 0..10"
                ));
            }
            let severity = match f.severity {
                Some(s) => match Severity::parse_loose(&s) {
                    Some(known) => known,
                    None => {
                        return Err(format!(
                            "hosts[{i}].findings[{j}].severity: {s:?} is not one of {}",
                            Severity::list(&Severity::ALL)
                        ));
                    }
                },
                None => f.cvss.map_or(Severity::Info, Severity::from_cvss),
            }
            .as_str()
            .to_string();
            findings.push(Finding {
                port: f.port,
                protocol: f.protocol,
                service: f.service,
                product: f.product,
                severity,
                cvss: f.cvss,
                title: f.title,
                cve: f.cve,
            });
        }
        hosts.push(Host {
            up,
            ip: h.ip,
            mac: h.mac,
            vendor: h.vendor,
            hostname: h.hostname,
            os: h.os,
            findings,
        });
    }
    Ok(ScanReport {
        scan_id: r.scan_id.filter(|s| !s.trim().is_empty()),
        scanner: r.scanner.unwrap_or_else(|| "unknown".into()),
        target: r.target,
        started_ms: time("started", r.started)?,
        finished_ms: time("finished", r.finished)?,
        status: r.status.unwrap_or_else(|| "completed".into()),
        hosts_total: None,
        hosts,
    })
}

pub fn parse_inventory(body: &[u8]) -> Result<Vec<DeviceObservation>, String> {
    // Both shapes are decoded explicitly (not as an untagged enum) so a
    // typo is reported by name instead of "did not match any variant".
    const SHAPE: &str = r#"(expected {"devices": [{"ip": ..., "mac": ...}]} or the bare array)"#;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("invalid device inventory: {e} {SHAPE}"))?;
    let list = match value {
        Value::Array(_) => value,
        Value::Object(mut o) if o.len() == 1 && o.contains_key("devices") => {
            o.remove("devices").unwrap_or_default()
        }
        _ => return Err(format!("invalid device inventory {SHAPE}")),
    };
    let devices: Vec<JsonDevice> =
        serde_json::from_value(list).map_err(|e| format!("invalid device inventory: {e}"))?;
    devices
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            if d.ip.is_none() && d.mac.is_none() {
                return Err(format!("devices[{i}]: a device needs an ip or a mac"));
            }
            Ok(DeviceObservation {
                ip: d.ip,
                mac: d.mac,
                hostname: d.hostname,
                os: d.os,
                vendor: d.vendor,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_with_defaults_and_derived_severity() {
        let r = parse_report(br#"{"scanner": "openvas", "started": 1795687200, "hosts": [{"ip": "10.0.0.5", "findings": [{"title": "x", "cvss": 9.1}, {"title": "y", "severity": "LOW"}]}]}"#).unwrap();
        assert_eq!(r.started_ms, Some(1_795_687_200_000));
        assert_eq!(r.status, "completed");
        assert!(r.hosts[0].up);
        assert_eq!(r.hosts[0].findings[0].severity, "critical");
        assert_eq!(r.hosts[0].findings[1].severity, "low");
    }

    #[test]
    fn errors_name_the_place() {
        let cases: [(&[u8], &str); 5] = [
            (br#"{"hosts": [{"hostname": "x"}]}"#, "hosts[0]: a host needs an ip or a mac"),
            (br#"{"hosts": [{"ip": "1.2.3.4", "findings": [{"title": "t", "severity": "urgent"}]}]}"#, "hosts[0].findings[0].severity"),
            (br#"{"hosts": [{"ip": "1.2.3.4", "findings": [{"title": "t", "cvss": 11}]}]}"#, "outside 0..10"),
            (br#"{"hosts": [], "colour": "red"}"#, "unknown field `colour`"),
            (br#"{"started": "yesterday"}"#, "started: \"yesterday\""),
        ];
        for (body, want) in cases {
            let err = parse_report(body).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn inventory_wrapped_or_bare() {
        assert_eq!(
            parse_inventory(br#"{"devices": [{"ip": "10.0.0.1"}]}"#)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            parse_inventory(br#"[{"mac": "aa:bb:cc:dd:ee:ff"}, {"ip": "10.0.0.2"}]"#)
                .unwrap()
                .len(),
            2
        );
        assert!(
            parse_inventory(br#"[{"hostname": "x"}]"#)
                .unwrap_err()
                .contains("devices[0]")
        );
    }
}
