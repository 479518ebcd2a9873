//! Insights over real ingested data through HTTP: the log template summary
//! (top and new templates; text; an OpenAI-compatible model narrating it,
//! and failing without taking the summary down), threat analysis per
//! entity with its reasons, and recommendations with their evidence.

use std::sync::{Arc, Mutex};

use chrono::{Duration, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::support::{Env, Server, curl, ingest, post_json, wait_count};

fn at(minutes_ago: i64) -> String {
    (Utc::now() - Duration::minutes(minutes_ago)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A fake OpenAI-compatible endpoint: answers `content`, keeps the requests.
async fn fake_llm(content: &'static str) -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(body);
                axum::Json(
                    json!({"choices": [{"message": {"role": "assistant", "content": content}}]}),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

async fn load(server: &Server, key: &str) {
    let mut lines = String::new();
    // The preceding hour: routine logins only.
    for i in 0..10 {
        lines += &json!({"ts": at(100 - i), "host": "web1", "message": format!("Accepted publickey for deploy from 10.0.0.{i} port 22 ssh2")}).to_string();
        lines.push('\n');
    }
    // The last hour: more logins, a brute force, and a new kind of message.
    for i in 0..10 {
        lines += &json!({"ts": at(50 - i), "host": "web1", "message": format!("Accepted publickey for deploy from 10.0.0.{i} port 22 ssh2")}).to_string();
        lines.push('\n');
    }
    for i in 0..30 {
        lines += &json!({"ts": at(40), "host": "web1", "message": format!("Failed password for root from 203.0.113.{} port {} ssh2", i % 7, 40000 + i)}).to_string();
        lines.push('\n');
    }
    for i in 0..3 {
        lines += &json!({"ts": at(30), "host": "db1", "message": format!("kernel: postgres[{}]: segfault at 0 ip 00007f3a sp 00007ffd error 4", 900 + i)}).to_string();
        lines.push('\n');
    }
    let (status, body) = ingest(server, key, lines).await;
    assert_eq!(status, 200, "{body}");
    wait_count(server, key, "logs", 53).await;
    // A scan: web1 with a critical finding and RDP open.
    let report = json!({"scan_id": "s-analysis", "scanner": "nmap 7.93", "status": "completed", "hosts": [
        {"ip": "10.2.0.1", "hostname": "web1", "status": "up", "findings": [
            {"port": 443, "protocol": "tcp", "service": "https", "title": "OpenSSL RCE", "cvss": 9.8, "cve": "CVE-2099-0001"},
            {"port": 3389, "protocol": "tcp", "service": "ms-wbt-server", "title": "RDP open", "severity": "medium"}]}]});
    let r = curl(&[
        &server.url("/api/ingest/scans"),
        "-H",
        &format!("Authorization: Bearer {key}"),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &report.to_string(),
    ]);
    assert_eq!(r.status, 201, "{}", r.body);
    wait_count(server, key, "findings", 2).await;
}

// Multi-threaded: the fake model answers while the test blocks on curl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_threat_analysis_and_recommendations_explain_the_data() {
    let (llm_url, llm_seen) = fake_llm("Brute force against web1; a new segfault on db1.").await;
    let env = Env::new()
        .set("SECURENET_API__LLM__URL", &llm_url)
        .set("SECURENET_API__LLM__MODEL", "local-test-model")
        .set("SECURENET_API__LLM__API_KEY", "llm-key");
    let acme = env.org_with_key("acme");
    let server = env.serve();
    load(&server, &acme).await;

    let range = json!({"since": at(60), "until": at(0)});
    let r = post_json(&server, "/api/insights/summary", &acme, &range);
    assert_eq!(r.status, 200, "{}", r.body);
    let s = r.json();
    assert_eq!(s["messages"], 43, "{s}");
    let top = &s["top_templates"][0];
    assert_eq!(top["count"], 30, "{s}");
    assert_eq!(
        top["template"],
        "Failed password for root from <IP> port <NUM> ssh2"
    );
    let new: Vec<&str> = s["new_templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["template"].as_str().unwrap())
        .collect();
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(new.iter().any(|t| t.contains("segfault")), "{new:?}");
    assert!(
        !new.iter().any(|t| t.contains("Accepted")),
        "seen in the preceding hour: {new:?}"
    );
    assert!(
        s["summary"]
            .as_str()
            .unwrap()
            .contains("43 messages in 3 templates"),
        "{s}"
    );
    // The model narrates from the facts; the facts stay.
    assert_eq!(
        s["narrative"],
        "Brute force against web1; a new segfault on db1."
    );
    assert_eq!(s["narrative_model"], "local-test-model");
    let asked = llm_seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(asked["model"], "local-test-model");
    assert!(
        asked["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("Failed password"),
        "{asked}"
    );
    // Text.
    let text = post_json(
        &server,
        "/api/insights/summary",
        &acme,
        &json!({"since": at(60), "until": at(0), "format": "text"}),
    );
    assert!(
        text.headers["content-type"].starts_with("text/plain"),
        "{:?}",
        text.headers
    );
    assert!(
        text.body.contains("Top templates:") && text.body.contains("Narrative (local-test-model)"),
        "{}",
        text.body
    );
    for bad in [
        json!({"since": at(0), "until": at(60)}),
        json!({"top": 0}),
        json!({"format": "xml"}),
        json!({"since": "yesterday"}),
    ] {
        assert_eq!(
            post_json(&server, "/api/insights/summary", &acme, &bad).status,
            400,
            "{bad}"
        );
    }
    // Another organization's summary has none of acme's logs.
    let other = post_json(
        &server,
        "/api/insights/summary",
        crate::support::DEFAULT_KEY,
        &range,
    )
    .json();
    assert_eq!(other["messages"], 0, "{other}");

    // Threat analysis: web1 = 1 critical finding (20) + 1 medium (3) + 30 auth failures (6).
    let t = post_json(
        &server,
        "/api/insights/threat-analysis",
        &acme,
        &json!({"entity": "web1"}),
    )
    .json();
    let web1 = &t["entities"][0];
    assert_eq!(web1["entity"], "web1", "{t}");
    assert_eq!(web1["auth_failures"], 30);
    assert_eq!(web1["findings"]["critical"], 1);
    assert_eq!(web1["risk_score"], 29, "{web1}");
    assert_eq!(web1["risk_level"], "medium");
    assert_eq!(web1["reasons"].as_array().unwrap().len(), 3, "{web1}");
    let all = post_json(&server, "/api/insights/threat-analysis", &acme, &json!({})).json();
    assert!(
        all["entities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["entity"] == "10.2.0.1"),
        "{all}"
    );

    // Recommendations with evidence.
    let recs = curl(&[
        &server.url("/api/insights/recommendations"),
        "-H",
        &format!("Authorization: Bearer {acme}"),
    ])
    .json();
    let ids: Vec<&str> = recs["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    for want in [
        "patch-vulnerability",
        "close-risky-port",
        "harden-authentication",
    ] {
        assert!(ids.contains(&want), "{want} missing: {recs}");
    }
    assert_eq!(recs["recommendations"][0]["priority"], "critical", "{recs}");
    assert_eq!(
        recs["recommendations"][0]["evidence"]["cve"],
        "CVE-2099-0001"
    );
    let brute = recs["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "harden-authentication")
        .unwrap();
    assert_eq!(
        brute["evidence"],
        json!({"entity": "web1", "auth_failures_24h": 30})
    );
}

#[tokio::test]
async fn a_failing_model_leaves_the_built_in_summary() {
    // Nothing listens on port 9 (discard) here: the model is unreachable.
    let env = Env::new()
        .set("SECURENET_API__LLM__URL", "http://127.0.0.1:9/v1")
        .set("SECURENET_API__LLM__MODEL", "absent")
        .set("SECURENET_API__LLM__TIMEOUT_MS", "2000");
    let acme = env.org_with_key("acme");
    let server = env.serve();
    let (status, _) = ingest(
        &server,
        &acme,
        format!("{}\n", json!({"ts": at(5), "message": "hello world"})),
    )
    .await;
    assert_eq!(status, 200);
    wait_count(&server, &acme, "logs", 1).await;
    let r = post_json(&server, "/api/insights/summary", &acme, &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let s = r.json();
    assert_eq!(s["messages"], 1);
    assert!(s["summary"].as_str().unwrap().contains("1 messages"), "{s}");
    assert!(s.get("narrative").is_none(), "{s}");
    assert!(s["narrative_error"].is_string(), "{s}");
}
