//! The compliance report (business plan and up) through the public
//! interface: its JSON figures against the API routes that show the same
//! numbers, its HTML (escaped, branded, locked down by CSP) and its PDF
//! read back with pypdf and rendered with PDFium.

use chrono::Utc;
use serde_json::{Value, json};

use crate::support::{Env, download, get, post, post_json, read_pdf, send, unique};

fn scan(scan_id: &str, hosts: Value) -> String {
    let now = Utc::now().to_rfc3339();
    json!({"scan_id": scan_id, "scanner": "openvas 22.4", "target": "10.1.0.0/24",
           "started": now, "finished": now, "status": "completed", "hosts": hosts})
    .to_string()
}

#[tokio::test]
async fn the_compliance_report_shows_the_api_s_numbers_as_html_pdf_and_json() {
    let env = Env::new()
        .set("SECURENET_API__NOTIFY__POLL_MS", "100")
        .set("SECURENET_API__NOTIFY__ALLOW_PRIVATE_TARGETS", "true");
    let admin = env.org_on_plan("auditco", "enterprise", &[]);
    let small = env.org_on_plan("tinyco", "starter", &[]);
    let server = env.serve();
    let month = Utc::now().format("%Y-%m").to_string();

    // Not in the plan: the same 402 as every gated feature.
    let r = get(&server, "/api/reports/compliance", &small);
    assert_eq!(r.status, 402, "{}", r.body);
    let refusal = r.json();
    assert_eq!(refusal["code"], "feature_not_in_plan");
    assert_eq!(refusal["feature"], "compliance_reports");
    assert_eq!(refusal["required_plan"], "business");

    let brand = json!({"name": "Acme Shield", "primary_color": "#0A1B2C",
                       "logo_url": "https://cdn.acme.test/logo.png"});
    let r = send(
        &server,
        "PUT",
        "/api/orgs/current/branding",
        &admin,
        Some(("application/json", &brand.to_string())),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // A webhook channel (the test receiver) for critical notifications.
    let receiver = std::env::var("SECURENET_TEST_RECEIVER_HTTP")
        .expect("SECURENET_TEST_RECEIVER_HTTP is unset: run ./scripts/test.sh");
    let r = post_json(
        &server,
        "/api/notifications/channels",
        &admin,
        &json!({"kind": "webhook", "target": format!("{receiver}/{}/report", unique()),
                "min_severity": "critical"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    // Two scans: web-01 first with three findings, then again with one —
    // its latest findings are the second scan's. A hostile host name.
    let first = json!([
        {"ip": "10.1.0.5", "hostname": "web-01", "status": "up", "findings": [
            {"port": 22, "protocol": "tcp", "cvss": 9.8, "title": "old sshd"},
            {"port": 80, "protocol": "tcp", "severity": "high", "title": "http"},
            {"port": 443, "protocol": "tcp", "severity": "low", "title": "tls"}]},
        {"ip": "10.1.0.6", "hostname": "<script>alert(1)</script>", "status": "up", "findings": [
            {"port": 3389, "protocol": "tcp", "severity": "critical", "title": "rdp"}]}
    ]);
    let r = post(
        &server,
        "/api/ingest/scans",
        &admin,
        "application/json",
        &scan("s-1", first),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = json!([
        {"ip": "10.1.0.5", "hostname": "web-01", "status": "up", "findings": [
            {"port": 443, "protocol": "tcp", "severity": "medium", "title": "tls"}]}
    ]);
    let r = post(
        &server,
        "/api/ingest/scans",
        &admin,
        "application/json",
        &scan("s-2", second),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // An audited change.
    let r = post_json(
        &server,
        "/api/orgs/current/api-keys",
        &admin,
        &json!({"name": "auditor", "role": "viewer"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    // The findings' notifications: the critical ones delivered to the
    // webhook, the others skipped (below its threshold).
    let mut deliveries = Vec::new();
    for _ in 0..100 {
        deliveries =
            get(&server, "/api/notifications/deliveries?limit=500", &admin).json()["deliveries"]
                .as_array()
                .unwrap()
                .clone();
        if deliveries.len() >= 3 && deliveries.iter().all(|d| d["status"] != "pending") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let of = |status: &str| deliveries.iter().filter(|d| d["status"] == status).count();
    assert_eq!(
        of("delivered"),
        2,
        "old sshd and rdp are critical: {deliveries:?}"
    );
    let r = get(
        &server,
        &format!("/api/reports/compliance?month={month}&format=json"),
        &admin,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let report = r.json();
    assert_eq!(
        report["deliveries"],
        json!([{"channel_kind": "webhook", "status": "delivered", "count": of("delivered")},
               {"channel_kind": "webhook", "status": "skipped", "count": of("skipped")}]),
        "{report}"
    );
    assert_eq!(report["organization"], "auditco");
    assert_eq!(report["month"], month.as_str());

    // The same numbers as the API.
    let scans = get(&server, "/api/scans?limit=500", &admin).json();
    assert_eq!(
        report["scans_run"],
        scans["scans"].as_array().unwrap().len() as u64,
        "{scans}"
    );
    assert_eq!(report["scans_run"], 2);
    assert_eq!(report["devices_total"], 2, "{report}");
    let by_device = |ip: &str| {
        report["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["ip"] == ip)
            .unwrap_or_else(|| panic!("{ip} in {report}"))
            .clone()
    };
    assert_eq!(
        by_device("10.1.0.5")["findings"],
        json!({"medium": 1}),
        "{report}"
    );
    assert_eq!(
        by_device("10.1.0.6")["findings"],
        json!({"critical": 1}),
        "{report}"
    );
    assert_eq!(
        report["findings_by_severity"],
        json!({"critical": 1, "high": 0, "medium": 1, "low": 0, "info": 0})
    );
    let usage = get(
        &server,
        &format!("/api/billing/usage?month={month}"),
        &admin,
    )
    .json();
    assert_eq!(
        report["usage"]["scans"], usage["totals"]["scans"],
        "{usage}"
    );
    let audit = get(&server, "/api/audit-log?limit=500", &admin).json();
    let in_log = audit["entries"].as_array().unwrap().len() as u64;
    assert_eq!(report["audit_entries"], in_log, "{audit}");
    assert!(
        report["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["route"] == "/api/orgs/current/api-keys" && a["method"] == "POST"),
        "{report}"
    );
    assert_eq!(report["retention_days"], 365);
    let retention = report["retention"].as_array().unwrap();
    assert_eq!(retention.len(), 4, "{report}");
    assert!(
        retention.iter().all(|t| t["within_policy"] == true),
        "{report}"
    );
    let detections = get(&server, "/api/detections", &admin).json();
    assert_eq!(
        report["detections_total"],
        detections["detections"].as_array().unwrap().len() as u64
    );

    // HTML: branded, every value escaped, scripts refused by its CSP.
    let r = get(
        &server,
        &format!("/api/reports/compliance?month={month}"),
        &admin,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.headers["content-type"].starts_with("text/html"),
        "{:?}",
        r.headers
    );
    assert!(r.headers["content-security-policy"].contains("default-src 'none'"));
    assert!(r.body.contains("Acme Shield"));
    assert!(r.body.contains("#0A1B2C"));
    assert!(r.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!r.body.contains("<script>"), "{}", r.body);

    // PDF: the same report, read back and rendered.
    let pdf = env.path().join("compliance.pdf");
    let (status, media) = download(
        &server,
        &format!("/api/reports/compliance?month={month}&format=pdf"),
        &admin,
        &pdf,
    );
    assert_eq!((status, media.as_str()), (200, "application/pdf"));
    let read = read_pdf(&pdf);
    let text: String = read["text"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    for expected in [
        format!("Compliance report {month}"),
        "Acme Shield".into(),
        "10.1.0.5".into(),
        "web-01".into(),
        "Retention in force: 365 days".into(),
        "/api/orgs/current/api-keys".into(),
    ] {
        assert!(text.contains(&expected), "{expected:?} not in {text}");
    }
    assert_eq!(read["render"]["band_rgb"], "#0A1B2C", "{read}");
    assert!(
        read["render"]["dark_fraction"].as_f64().unwrap() > 0.001,
        "{read}"
    );

    // Bad input: a future month, an unknown format, a viewer.
    let r = get(&server, "/api/reports/compliance?month=2999-01", &admin);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = get(&server, "/api/reports/compliance?format=docx", &admin);
    assert_eq!(r.status, 400, "{}", r.body);
    let viewer = post_json(
        &server,
        "/api/orgs/current/api-keys",
        &admin,
        &json!({"name": "v", "role": "viewer"}),
    )
    .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(get(&server, "/api/reports/compliance", &viewer).status, 403);
    server.stop();
}
