//! Scan reports and device inventories.
//!
//! - `nmap.rs`: nmap XML (`nmap -oX`) → [`ScanReport`].
//! - `report.rs`: the documented JSON report and device inventory formats.
//! - `publish.rs`: a report → `scans`, `devices` and `findings` envelopes,
//!   after the tenant's plan limits admitted it.
//!
//! Both formats produce the same [`ScanReport`], so everything after
//! parsing is shared.

pub mod nmap;
pub mod publish;
pub mod report;

/// A parsed scan, whatever its format. Serialized only to hash its
/// content (a scan id belongs to one report).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ScanReport {
    /// Given by the report, or derived from its content (so that posting the
    /// same report twice is one scan).
    pub scan_id: Option<String>,
    pub scanner: String,
    pub target: Option<String>,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub status: String,
    pub hosts_total: Option<u32>,
    pub hosts: Vec<Host>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Host {
    pub up: bool,
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub vendor: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Finding {
    pub port: Option<u16>,
    pub protocol: Option<String>,
    pub service: Option<String>,
    pub product: Option<String>,
    /// info, low, medium, high, critical
    pub severity: String,
    pub cvss: Option<f32>,
    pub title: String,
    pub cve: Option<String>,
}

/// CVE ids in free text (nmap script output such as `vulners`), each with
/// the CVSS score that follows it on the same line, if any.
pub fn cves_in(text: &str) -> Vec<(String, Option<f32>)> {
    let mut out: Vec<(String, Option<f32>)> = Vec::new();
    for line in text.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        for (i, token) in tokens.iter().enumerate() {
            let token = token.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-'));
            let Some(rest) = token.strip_prefix("CVE-") else {
                continue;
            };
            let mut parts = rest.splitn(2, '-');
            let (Some(year), Some(num)) = (parts.next(), parts.next()) else {
                continue;
            };
            if year.len() != 4
                || !year.bytes().all(|b| b.is_ascii_digit())
                || num.len() < 4
                || !num.bytes().all(|b| b.is_ascii_digit())
            {
                continue;
            }
            let cvss = tokens
                .get(i + 1)
                .and_then(|t| t.parse::<f32>().ok())
                .filter(|s| (0.0..=10.0).contains(s));
            if !out.iter().any(|(c, _)| c == token) {
                out.push((token.to_string(), cvss));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cves_with_scores() {
        let out = "\n  cpe:/a:openbsd:openssh:7.4: \n    \tCVE-2023-38408\t9.8\thttps://vulners.com/cve/CVE-2023-38408\n    \tCVE-2020-15778 6.8 https://x\n  see CVE-2019-0001.";
        assert_eq!(
            cves_in(out),
            [
                ("CVE-2023-38408".to_string(), Some(9.8)),
                ("CVE-2020-15778".to_string(), Some(6.8)),
                ("CVE-2019-0001".to_string(), None)
            ]
        );
        assert!(cves_in("CVE-20x-1 CVE-2020-1").is_empty());
    }
}
