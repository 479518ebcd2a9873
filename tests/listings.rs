//! Listings and dashboards through HTTP: `/api/logs|devices|scans|findings`
//! page with cursors without skipping or repeating rows (ties included),
//! filter, and refuse bad parameters; `/api/metrics/system|organization|
//! security|dashboard` report what was ingested.

use serde_json::{Value, json};

use crate::support::{Env, Server, curl, get, ingest, wait_count};

/// Every page of `path` (which has a `?`), following `next_cursor`.
fn all_pages(server: &Server, path: &str, key: &str, field: &str) -> (Vec<Value>, usize) {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_string(),
        };
        let r = get(server, &url, key);
        assert_eq!(r.status, 200, "{url}: {}", r.body);
        let v = r.json();
        out.extend(v[field].as_array().unwrap().iter().cloned());
        pages += 1;
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (out, pages),
        }
        assert!(pages < 100, "runaway pagination");
    }
}

#[tokio::test]
async fn listings_page_through_ties_filter_and_stay_in_the_tenant() {
    let env = Env::new();
    let acme = env.org_with_key("acme");
    let server = env.serve();
    // 7 logs with one timestamp (one batch: all tie on (ts, batch)) and 3 later ones.
    let tied: String = (0..7)
        .map(|i| json!({"ts": "2026-11-20T10:00:00Z", "host": if i % 2 == 0 { "web1" } else { "db1" }, "message": format!("tied event {i}")}).to_string() + "\n")
        .collect();
    let (status, body) = ingest(&server, &acme, tied).await;
    assert_eq!(status, 200, "{body}");
    let later: String = (0..3)
        .map(|i| json!({"ts": format!("2026-11-20T11:00:0{i}Z"), "host": "web1", "message": format!("later event {i}")}).to_string() + "\n")
        .collect();
    let (status, body) = ingest(&server, &acme, later).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = ingest(
        &server,
        crate::support::DEFAULT_KEY,
        "{\"message\": \"default tenant only\"}\n",
    )
    .await;
    assert_eq!(status, 200);
    wait_count(&server, &acme, "logs", 10).await;

    let (rows, pages) = all_pages(&server, "/api/logs?limit=3", &acme, "logs");
    let messages: Vec<&str> = rows
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(pages, 4, "{messages:?}");
    assert_eq!(
        &messages[..3],
        ["later event 2", "later event 1", "later event 0"]
    );
    let mut tied: Vec<&str> = messages[3..].to_vec();
    tied.sort();
    tied.dedup();
    assert_eq!(tied.len(), 7, "every tied row exactly once: {messages:?}");
    assert!(!messages.contains(&"default tenant only"));

    let (web, _) = all_pages(&server, "/api/logs?limit=2&host=web1", &acme, "logs");
    assert_eq!(web.len(), 7);
    assert!(web.iter().all(|r| r["host"] == "web1"));
    let (hits, _) = all_pages(&server, "/api/logs?q=event%203", &acme, "logs");
    assert_eq!(hits.len(), 1);
    let (window, _) = all_pages(
        &server,
        "/api/logs?since=2026-11-20T10:30:00Z&until=2026-11-20T11:00:02Z",
        &acme,
        "logs",
    );
    assert_eq!(window.len(), 2);

    for bad in [
        "/api/logs?limit=0",
        "/api/logs?limit=501",
        "/api/logs?hots=web1",
        "/api/logs?cursor=not-a-cursor",
        "/api/logs?since=yesterday",
        "/api/findings?port=http",
        "/api/scans?q=x",
    ] {
        let r = get(&server, bad, &acme);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    // Quotes in filters are data, not SQL.
    let r = get(&server, "/api/logs?host=x%27%20OR%20%271%27%3D%271", &acme);
    assert_eq!(
        (r.status, r.json()["logs"].as_array().map(Vec::len)),
        (200, Some(0))
    );

    // A scan: devices, the scan, findings (one critical by CVSS).
    let report = json!({"scan_id": "s-list", "scanner": "nmap 7.93", "status": "completed", "hosts": [
        {"ip": "10.1.0.1", "hostname": "web1", "status": "up", "findings": [
            {"port": 22, "protocol": "tcp", "service": "ssh", "title": "ssh open", "severity": "low"},
            {"port": 443, "protocol": "tcp", "service": "https", "title": "OpenSSL RCE", "cvss": 9.8, "cve": "CVE-2099-0001"}]},
        {"ip": "10.1.0.2", "status": "up", "findings": [
            {"port": 80, "protocol": "tcp", "service": "http", "title": "http open", "cvss": 5.3}]}]});
    let r = curl(&[
        &server.url("/api/ingest/scans"),
        "-H",
        &format!("Authorization: Bearer {acme}"),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &report.to_string(),
    ]);
    assert_eq!(r.status, 201, "{}", r.body);
    wait_count(&server, &acme, "findings", 3).await;
    let (findings, _) = all_pages(&server, "/api/findings?limit=1", &acme, "findings");
    assert_eq!(findings.len(), 3);
    let critical = get(&server, "/api/findings?severity=critical", &acme).json();
    assert_eq!(
        critical["findings"][0]["cve"], "CVE-2099-0001",
        "{critical}"
    );
    assert_eq!(
        get(&server, "/api/findings?port=80", &acme).json()["findings"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        get(&server, "/api/scans", &acme).json()["scans"][0]["scan_id"],
        "s-list"
    );
    let devices = get(&server, "/api/devices?ip=10.1.0.1", &acme).json();
    assert_eq!(devices["devices"][0]["hostname"], "web1", "{devices}");
    // Another tenant sees none of it.
    for path in ["/api/findings", "/api/scans", "/api/devices", "/api/logs"] {
        let r = get(&server, path, crate::support::DEFAULT_KEY);
        assert!(
            !r.body.contains("10.1.0.1") && !r.body.contains("tied event"),
            "{path}: {}",
            r.body
        );
    }

    // Security: 1 critical, 1 medium, 1 low open → 100 − 15 − 3 − 1 = 81, critical.
    let sec = get(&server, "/api/metrics/security", &acme).json();
    assert_eq!(sec["vulnerabilities"]["critical"], 1, "{sec}");
    assert_eq!(sec["vulnerabilities"]["medium"], 1);
    assert_eq!(sec["vulnerabilities"]["low"], 1);
    assert_eq!(sec["security_score"], 81);
    assert_eq!(sec["threat_level"], "critical");
    let org = get(&server, "/api/metrics/organization", &acme).json();
    assert_eq!(org["devices"]["tracked"], 2, "{org}");
    assert_eq!(org["scans"]["this_month"], 1);
    assert_eq!(org["security_score"], 81);
    let dash = get(&server, "/api/metrics/dashboard", &acme).json();
    assert_eq!(dash["security"]["threat_level"], "critical", "{dash}");
    assert_eq!(dash["organization"]["plan"], "business");
    let clean = get(
        &server,
        "/api/metrics/security",
        crate::support::DEFAULT_KEY,
    )
    .json();
    assert_eq!(
        (
            clean["security_score"].as_i64(),
            clean["threat_level"].as_str()
        ),
        (Some(100), Some("low"))
    );

    let sys = get(&server, "/api/metrics/system", &acme).json();
    assert!(sys["cpu"]["cores"].as_u64().unwrap() >= 1, "{sys}");
    assert!(
        sys["memory"]["process_resident_bytes"].as_u64().unwrap() > 1 << 20,
        "{sys}"
    );
    assert!(sys["disk"]["total_bytes"].as_u64().unwrap() > 0, "{sys}");
    assert!(
        sys["connections"]["open_file_descriptors"]
            .as_u64()
            .unwrap()
            > 0,
        "{sys}"
    );
}
