//! Streaming detection through the real binary: generated logs (with
//! injected, known anomalies) over HTTP → feature windows → a per-tenant
//! model trained on its own once there is enough history → `anomalies`
//! records (SQL), model versions in the lake and the registry, and
//! notifications in the metadata store.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{DEFAULT_KEY, Env, ingest, rows};

/// Generates `rows` normal events (+ `anomalies` bursts) for `default`
/// starting at `start`; returns the NDJSON lines and the manifest.
fn generate(
    env: &Env,
    seed: u64,
    rows: usize,
    anomalies: usize,
    start: &str,
    secs: u64,
) -> (Vec<String>, Value) {
    let out = env.path().join(format!("gen-{seed}"));
    let manifest = env.path().join(format!("gen-{seed}.json"));
    env.cli(&[
        "gen",
        "--tenants",
        "default",
        "--rows",
        &rows.to_string(),
        "--anomalies",
        &anomalies.to_string(),
        "--seed",
        &seed.to_string(),
        "--start",
        start,
        "--duration-secs",
        &secs.to_string(),
        "--out-dir",
        out.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    let lines = std::fs::read_to_string(out.join("default.ndjson"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let manifest = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    (lines, manifest)
}

async fn send(server: &crate::support::Server, lines: &[String]) {
    for chunk in lines.chunks(2000) {
        let (status, answer) = ingest(server, DEFAULT_KEY, chunk.join("\n") + "\n").await;
        assert_eq!(status, 200, "{answer}");
    }
}

fn model_files(env: &Env) -> Vec<String> {
    env.lake_file_names("models/tenant_id=default/window-iforest")
}

#[tokio::test]
async fn a_tenant_model_trains_itself_and_reports_the_injected_anomalies() {
    let env = Env::new()
        .set("SECURENET_PIPELINE__DETECTION__TICK_MS", "100")
        .set("SECURENET_PIPELINE__MAINTENANCE__ENABLED", "false");
    let server = env.serve();
    // Four quiet hours: the cold start trains version 1 on them.
    let (history, _) = generate(&env, 1, 24_000, 0, "2026-11-26T00:00:00Z", 4 * 3600);
    send(&server, &history).await;
    let until = Instant::now() + Duration::from_secs(60);
    while model_files(&env).is_empty() {
        assert!(Instant::now() < until, "no model was trained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(model_files(&env)[0], "v000001.json");

    // The next hour, with four known bursts.
    let (live, manifest) = generate(&env, 2, 6_000, 4, "2026-11-26T04:00:00Z", 3600);
    send(&server, &live).await;
    // Stopping closes every open window and stores what it yields.
    server.stop();
    let server = env.serve();
    let found = rows(
        &server,
        DEFAULT_KEY,
        "SELECT entity, to_unixtime(window_start) AS start, score, threshold, severity, \
         model_version, explanation FROM anomalies ORDER BY start, entity",
    )
    .await;
    let flagged: BTreeSet<(String, i64)> = found
        .iter()
        .map(|r| {
            (
                r["entity"].as_str().unwrap().to_string(),
                r["start"].as_i64().unwrap(),
            )
        })
        .collect();
    let injected: BTreeSet<(String, i64)> = manifest["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let minute = chrono::DateTime::parse_from_rfc3339(a["minute"].as_str().unwrap())
                .unwrap()
                .timestamp();
            (a["host"].as_str().unwrap().to_string(), minute)
        })
        .collect();
    let caught = injected.intersection(&flagged).count();
    let false_alarms = flagged.difference(&injected).count();
    // 6 hosts × 60 minutes = 360 windows were scored in the live hour.
    assert_eq!(
        caught,
        injected.len(),
        "recall: flagged {flagged:?}, injected {injected:?}"
    );
    assert!(
        false_alarms <= 3,
        "{false_alarms} false alarms: {flagged:?} vs {injected:?}"
    );
    // Versions: the cold start, then retraining on a doubling schedule as
    // the history grows (200, 400, 800, 1,600 windows).
    let versions = model_files(&env);
    let expected: Vec<String> = (1..=versions.len())
        .map(|v| format!("v{v:06}.json"))
        .collect();
    assert_eq!(versions, expected);
    assert!(versions.len() >= 3, "{versions:?}");
    for r in &found {
        assert!(r["score"].as_f64().unwrap() > r["threshold"].as_f64().unwrap());
        let v = r["model_version"].as_u64().unwrap() as usize;
        assert!((1..=versions.len()).contains(&v));
        let explanation: Value = serde_json::from_str(r["explanation"].as_str().unwrap()).unwrap();
        let total: f64 = explanation
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((total - 1.0).abs() < 0.01, "{explanation}");
    }

    // The registry: the newest version serves, older ones are archived,
    // one training session each; every anomaly notified once.
    let store = env.metadata_store().await;
    let tenant = schemas::TenantId::new("default").unwrap();
    let models = store.list_models(&tenant).await.unwrap();
    assert_eq!(models.len(), versions.len());
    assert_eq!(models[0].version as usize, versions.len());
    assert_eq!(models[0].status, control::models::ModelStatus::Ready);
    assert!(
        models[1..]
            .iter()
            .all(|m| m.status == control::models::ModelStatus::Archived)
    );
    assert_eq!(models[0].features.len(), 8);
    let sessions = store.list_training_sessions(&tenant).await.unwrap();
    assert_eq!(sessions.len(), versions.len());
    assert!(sessions.iter().all(|s| s.rows >= 200));
    let notes = store
        .list_notifications(&tenant, false, None, 1000)
        .await
        .unwrap();
    assert_eq!(notes.len(), found.len());
    assert!(
        notes
            .iter()
            .all(|n| n.kind == "anomaly" && n.title.starts_with("Unusual "))
    );

    // The streaming model answers predictions through the registry API:
    // features in FEATURES order (events, distinct_apps, distinct_sources,
    // auth_failures, error_ratio, bytes, new_ports, parse_failures).
    let body = serde_json::json!({"rows": [
        [400, 3, 2, 380, 0.0, 40000, 0, 0],
        [16, 4, 4, 0, 0.05, 5000, 0, 0]
    ]});
    let r = crate::support::client()
        .post(server.url("/api/insights/models/window-iforest/predict"))
        .bearer_auth(DEFAULT_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["version"].as_u64().unwrap() as usize, versions.len());
    assert_eq!(p["predictions"][0]["label"], "anomaly", "{p}");
    assert_eq!(p["predictions"][1]["label"], "normal", "{p}");
    let top = p["predictions"][0]["explanation"]
        .as_object()
        .unwrap()
        .iter()
        .max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
        .map(|(k, _)| k.clone())
        .unwrap();
    assert!(
        ["auth_failures", "events", "bytes"].contains(&top.as_str()),
        "{p}"
    );

    // Listings: anomalies newest first with cursor pages and filters;
    // notifications with unread counts and mark-as-read; nothing for
    // another organization.
    let get = |path: &str, key: &str| {
        crate::support::curl(&[
            &server.url(path),
            "-H",
            &format!("Authorization: Bearer {key}"),
        ])
    };
    let first = get("/api/anomalies?limit=2", DEFAULT_KEY);
    assert_eq!(first.status, 200, "{}", first.body);
    let first = first.json();
    let page: Vec<Value> = first["anomalies"].as_array().unwrap().clone();
    assert_eq!(page.len(), 2.min(found.len()));
    assert!(page[0]["window_start_ms"].as_i64() >= page[1]["window_start_ms"].as_i64());
    assert!(page[0]["explanation"].is_object() && page[0]["features"].is_object());
    let mut seen: Vec<String> = page
        .iter()
        .map(|a| a["anomaly_id"].as_str().unwrap().to_string())
        .collect();
    let mut cursor = first["next_cursor"].as_str().map(String::from);
    while let Some(c) = cursor {
        let next = get(&format!("/api/anomalies?limit=2&cursor={c}"), DEFAULT_KEY).json();
        seen.extend(
            next["anomalies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["anomaly_id"].as_str().unwrap().to_string()),
        );
        cursor = next["next_cursor"].as_str().map(String::from);
    }
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        (seen.len(), distinct.len()),
        (found.len(), found.len()),
        "every anomaly once"
    );
    let severities: BTreeSet<String> = found
        .iter()
        .map(|r| r["severity"].as_str().unwrap().to_string())
        .collect();
    let one = severities.iter().next().unwrap();
    let filtered = get(
        &format!("/api/anomalies?severity={one}&limit=500"),
        DEFAULT_KEY,
    )
    .json();
    let expected = found
        .iter()
        .filter(|r| r["severity"] == one.as_str())
        .count();
    assert_eq!(filtered["anomalies"].as_array().unwrap().len(), expected);
    let burst = &found[0]["entity"];
    let by_entity = get(
        &format!("/api/anomalies?entity={}", burst.as_str().unwrap()),
        DEFAULT_KEY,
    )
    .json();
    assert!(
        by_entity["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["entity"] == *burst)
    );
    assert_eq!(
        get("/api/anomalies?severity=urgent", DEFAULT_KEY).status,
        400
    );
    assert_eq!(get("/api/anomalies?cursor=1.x'--", DEFAULT_KEY).status, 400);
    assert_eq!(
        get("/api/anomalies?since=yesterday", DEFAULT_KEY).status,
        400
    );
    let window = get(
        "/api/anomalies?since=2026-11-26T04:00:00Z&until=2026-11-26T05:00:00Z&limit=500",
        DEFAULT_KEY,
    )
    .json();
    // 2026-11-26T04:00:00Z = 1795665600 s.
    let in_hour = found
        .iter()
        .filter(|r| (1_795_665_600..1_795_669_200).contains(&r["start"].as_i64().unwrap()))
        .count();
    assert_eq!(window["anomalies"].as_array().unwrap().len(), in_hour);
    assert!(in_hour >= caught);

    let notes = get("/api/notifications?limit=500", DEFAULT_KEY).json();
    assert_eq!(
        notes["notifications"].as_array().unwrap().len(),
        found.len()
    );
    assert_eq!(notes["unread"], found.len());
    let id = notes["notifications"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let read = crate::support::curl(&[
        "-X",
        "POST",
        &server.url(&format!("/api/notifications/{id}/read")),
        "-H",
        &format!("Authorization: Bearer {DEFAULT_KEY}"),
    ]);
    assert_eq!(read.status, 204, "{}", read.body);
    let unread = get("/api/notifications?unread=true&limit=500", DEFAULT_KEY).json();
    assert_eq!(
        unread["notifications"].as_array().unwrap().len(),
        found.len() - 1
    );
    assert_eq!(unread["unread"], found.len() - 1);
    let other = env.org_with_key("globex");
    assert_eq!(
        get("/api/anomalies", &other).json()["anomalies"],
        serde_json::json!([])
    );
    assert_eq!(
        get("/api/notifications", &other).json()["notifications"],
        serde_json::json!([])
    );
    let steal = crate::support::curl(&[
        "-X",
        "POST",
        &server.url(&format!("/api/notifications/{id}/read")),
        "-H",
        &format!("Authorization: Bearer {other}"),
    ]);
    assert_eq!(steal.status, 404);

    // The restarted server restored the newest version from the lake:
    // another quiet hour (360 windows, more than a cold start needs, fewer
    // than the next retraining) is scored by it and trains nothing new.
    let (quiet, _) = generate(&env, 3, 6_000, 0, "2026-11-26T05:00:00Z", 3600);
    send(&server, &quiet).await;
    // The exposition, with detector, sink, ingest and metering families
    // populated, passes Prometheus's own linter.
    let exposition = crate::support::exposition(&server).await;
    for family in [
        "securenet_detector_windows_closed_total",
        "securenet_detector_training_duration_seconds",
        "securenet_api_requests_recorded_total",
        "securenet_sink_rows_total",
    ] {
        assert!(exposition.contains(family), "{family} missing");
    }
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/test.sh installs Debian's prometheus)");
    {
        use std::io::Write;
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(exposition.as_bytes())
            .unwrap();
    }
    let out = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}"
    );

    server.stop();
    assert_eq!(model_files(&env), versions);
    assert_eq!(
        store.list_training_sessions(&tenant).await.unwrap().len(),
        versions.len()
    );
}
