//! Scan reports and device inventory: a real `nmap -oX` scan of the test
//! server itself, the JSON report, plan limits, and bad input.

use serde_json::{Value, json};

use crate::support::{DEFAULT_KEY, Env, count, post, rows, run};

fn report(scan_id: &str, hosts: Value) -> String {
    json!({"scan_id": scan_id, "scanner": "openvas 22.4", "target": "10.0.0.0/24",
           "started": "2026-11-26T10:00:00Z", "finished": "2026-11-26T10:20:00Z",
           "status": "completed", "hosts": hosts})
    .to_string()
}

fn host(ip: &str) -> Value {
    json!({"ip": ip, "status": "up"})
}

#[tokio::test]
async fn a_real_nmap_scan_lands_in_scans_devices_and_findings_and_replays_are_idempotent() {
    let env = Env::new();
    let server = env.serve();
    let port = server.base.rsplit(':').next().unwrap().to_string();
    // A port nobody listens on: bind, read the number, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let xml = env.path().join("scan.xml");
    run(
        "nmap",
        &[
            "-sT",
            "-sV",
            "--version-light",
            "-Pn",
            "-p",
            &format!("{port},{closed}"),
            "-oX",
            xml.to_str().unwrap(),
            "127.0.0.1",
        ],
    );
    let body = format!("@{}", xml.display());

    let first = post(
        &server,
        "/api/ingest/scans",
        DEFAULT_KEY,
        "application/xml",
        &body,
    );
    assert_eq!(first.status, 201, "{}", first.body);
    let summary = first.json();
    assert_eq!(summary["new_scan"], true, "{summary}");
    assert_eq!(
        (
            &summary["hosts_up"],
            &summary["devices"],
            &summary["new_devices"],
            &summary["findings"]
        ),
        (&json!(1), &json!(1), &json!(1), &json!(1)),
        "one host up, one open port: {summary}"
    );

    let scans = rows(
        &server,
        DEFAULT_KEY,
        "SELECT scan_id, scanner, status, hosts_up, hosts_total, target FROM scans",
    )
    .await;
    assert_eq!(scans.len(), 1, "{scans:?}");
    assert_eq!(scans[0]["scan_id"], summary["scan_id"]);
    assert!(
        scans[0]["scanner"].as_str().unwrap().starts_with("nmap"),
        "{scans:?}"
    );
    assert_eq!(
        (&scans[0]["hosts_up"], &scans[0]["hosts_total"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(scans[0]["status"], "completed");

    let devices = rows(
        &server,
        DEFAULT_KEY,
        "SELECT device_id, ip, hostname, source FROM devices",
    )
    .await;
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(
        (&devices[0]["ip"], &devices[0]["source"]),
        (&json!("127.0.0.1"), &json!("nmap"))
    );

    let findings = rows(
        &server,
        DEFAULT_KEY,
        "SELECT f.port, f.protocol, f.service, f.severity, f.title, f.device_id, f.scan_id \
         FROM findings f",
    )
    .await;
    assert_eq!(
        findings.len(),
        1,
        "only the open port is a finding: {findings:?}"
    );
    let f = &findings[0];
    assert_eq!(f["port"].as_u64().unwrap().to_string(), port);
    assert_eq!(f["protocol"], "tcp");
    assert!(f["service"].is_string(), "{f}");
    assert_eq!(f["severity"], "info");
    assert_eq!(f["device_id"], devices[0]["device_id"]);
    assert_eq!(f["scan_id"], summary["scan_id"]);

    // The scanner's retry of the same report changes nothing.
    let again = post(
        &server,
        "/api/ingest/scans",
        DEFAULT_KEY,
        "application/xml",
        &body,
    );
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.json()["new_scan"], false);
    assert_eq!(again.json()["scans_this_month"], 1);
    for table in ["scans", "devices", "findings"] {
        assert_eq!(
            count(&server, DEFAULT_KEY, table).await,
            1,
            "{table} after replay"
        );
    }
}

#[tokio::test]
async fn the_json_report_carries_cves_and_devices_upsert_by_ip_and_mac() {
    let env = Env::new();
    let server = env.serve();
    let hosts = json!([
        {"ip": "10.0.0.5", "mac": "AA:BB:CC:00:11:22", "hostname": "web-01", "os": "Debian 12",
         "vendor": "Dell", "status": "up",
         "findings": [
            {"port": 22, "protocol": "tcp", "service": "ssh", "product": "OpenSSH 9.2",
             "cvss": 5.9, "title": "Terrapin prefix truncation", "cve": "CVE-2023-48795"},
            {"port": 443, "protocol": "tcp", "service": "https", "severity": "critical",
             "title": "Expired certificate"}]},
        {"ip": "10.0.0.6", "status": "down"}
    ]);
    let r = post(
        &server,
        "/api/ingest/scans",
        DEFAULT_KEY,
        "application/json",
        &report("weekly-48", hosts),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (&r.json()["devices"], &r.json()["findings"]),
        (&json!(1), &json!(2))
    );

    let findings = rows(
        &server,
        DEFAULT_KEY,
        "SELECT port, severity, cvss, cve, title FROM findings ORDER BY port",
    )
    .await;
    assert_eq!(findings[0]["cve"], "CVE-2023-48795");
    assert_eq!(findings[0]["severity"], "medium", "from CVSS 5.9");
    assert_eq!(
        (&findings[1]["severity"], &findings[1]["cve"]),
        (&json!("critical"), &Value::Null)
    );

    // The inventory sees the same machine by MAC (new IP, lower-case MAC):
    // one device, first_seen kept, last_seen advanced.
    let inv = json!({"devices": [{"ip": "10.0.0.50", "mac": "aa:bb:cc:00:11:22", "hostname": "web-01"},
                                 {"ip": "10.0.0.7", "hostname": "printer"}]});
    let r = post(
        &server,
        "/api/ingest/devices",
        DEFAULT_KEY,
        "application/json",
        &inv.to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (&r.json()["devices"], &r.json()["new_devices"]),
        (&json!(2), &json!(1))
    );
    let latest = rows(
        &server,
        DEFAULT_KEY,
        "SELECT device_id, count(*) AS sightings, min(first_seen) = max(first_seen) AS stable, \
         max(last_seen) > min(last_seen) AS advanced, max(ip) AS last_ip \
         FROM devices GROUP BY device_id ORDER BY sightings DESC",
    )
    .await;
    assert_eq!(latest.len(), 2, "{latest:?}");
    assert_eq!(
        (
            &latest[0]["sightings"],
            &latest[0]["stable"],
            &latest[0]["advanced"],
            &latest[0]["last_ip"]
        ),
        (&json!(2), &json!(true), &json!(true), &json!("10.0.0.50"))
    );
}

#[tokio::test]
async fn plan_limits_name_the_limit_the_count_and_the_plan() {
    let env = Env::new();
    let starter = env.org_on_plan("smallco", "starter", &[]);
    let overage = env.org_on_plan("bigspender", "starter", &["--allow-overage"]);
    let server = env.serve();

    // Devices: starter allows 5.
    let six: Vec<Value> = (1..=6)
        .map(|i| json!({"ip": format!("10.1.0.{i}")}))
        .collect();
    let r = post(
        &server,
        "/api/ingest/devices",
        &starter,
        "application/json",
        &json!(six).to_string(),
    );
    assert_eq!(r.status, 402, "{}", r.body);
    let msg = r.json()["error"]["message"]
        .as_str()
        .unwrap_or(&r.body)
        .to_string();
    for part in ["device limit", "starter", "5 devices", "has 0", "adds 6"] {
        assert!(msg.contains(part), "{part:?} missing from {msg}");
    }
    assert_eq!(
        count(&server, &starter, "devices").await,
        0,
        "nothing recorded"
    );
    let r = post(
        &server,
        "/api/ingest/devices",
        &starter,
        "application/json",
        &json!(six[..5]).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // A scan that finds a sixth machine is refused as a whole.
    let r = post(
        &server,
        "/api/ingest/scans",
        &starter,
        "application/json",
        &report("s-new-host", json!([host("10.1.0.99")])),
    );
    assert_eq!(r.status, 402, "{}", r.body);
    assert_eq!(count(&server, &starter, "scans").await, 0);

    // Scans: starter allows 25 per month; known hosts only.
    for i in 0..25 {
        let r = post(
            &server,
            "/api/ingest/scans",
            &starter,
            "application/json",
            &report(&format!("s-{i}"), json!([host("10.1.0.1")])),
        );
        assert_eq!(r.status, 201, "scan {i}: {}", r.body);
    }
    let r = post(
        &server,
        "/api/ingest/scans",
        &starter,
        "application/json",
        &report("s-25", json!([host("10.1.0.1")])),
    );
    assert_eq!(r.status, 402, "{}", r.body);
    let msg = r.body.clone();
    for part in ["scan limit", "starter", "25 scans per month", "has run 25"] {
        assert!(msg.contains(part), "{part:?} missing from {msg}");
    }
    // A replay of a scan already counted is not a new scan.
    let r = post(
        &server,
        "/api/ingest/scans",
        &starter,
        "application/json",
        &report("s-3", json!([host("10.1.0.1")])),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(count(&server, &starter, "scans").await, 25);

    // With overage allowed the same requests go through (and are billed).
    let r = post(
        &server,
        "/api/ingest/devices",
        &overage,
        "application/json",
        &json!(six).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(count(&server, &overage, "devices").await, 6);
}

#[tokio::test]
async fn bad_scan_input_gets_a_clear_error_and_records_nothing() {
    let env = Env::new();
    let server = env.serve();
    let cases: [(&str, &str, u16, &str); 6] = [
        (
            "application/xml",
            "<nmaprun><host><address addr=",
            400,
            "XML",
        ),
        ("application/xml", "<html>not nmap</html>", 400, "nmaprun"),
        (
            "application/json",
            r#"{"scan_id": "x", "hostz": []}"#,
            400,
            "hostz",
        ),
        (
            "application/json",
            r#"{"scan_id": "x", "hosts": [{"ip": "300.1.1.1"}]}"#,
            400,
            "300.1.1.1",
        ),
        ("text/plain", "hello", 415, "application/xml"),
        ("application/xml", "", 400, ""),
    ];
    for (media, body, status, needle) in cases {
        let r = post(&server, "/api/ingest/scans", DEFAULT_KEY, media, body);
        assert_eq!(r.status, status, "{media} {body:?}: {}", r.body);
        assert!(r.body.contains(needle), "{media} {body:?}: {}", r.body);
    }
    let r = post(
        &server,
        "/api/ingest/devices",
        DEFAULT_KEY,
        "application/json",
        r#"{"devices": [{"ip": "10.0.0.1", "colour": "red"}]}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("colour"), "{}", r.body);
    let r = post(
        &server,
        "/api/ingest/scans",
        "sn_0000000000000000_nope",
        "application/xml",
        "<nmaprun/>",
    );
    assert_eq!(r.status, 401, "{}", r.body);
    for table in ["scans", "devices", "findings"] {
        assert_eq!(count(&server, DEFAULT_KEY, table).await, 0, "{table}");
    }
}
