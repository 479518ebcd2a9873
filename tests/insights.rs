//! The model registry over HTTP with curl: upload CSV/JSON training data,
//! train (random forest with held-out metrics, isolation forest), list
//! versions, predict with confidences — with roles, tenancy and bad input.

use std::io::Write;

use serde_json::{Value, json};

use crate::support::{DEFAULT_KEY, Env, Reply, Server, curl, get, post};

/// Login telemetry: 5 % brute-force rows far from the benign cloud.
fn logins_csv(n: usize) -> String {
    let mut out = String::from("attempts,failures,distinct_users,hour,label,source\n");
    for i in 0..n {
        let bad = i % 20 == 0;
        let (a, f, u) = if bad {
            (200 + i % 50, 180 + i % 40, 30 + i % 9)
        } else {
            (1 + i % 6, i % 2, 1 + i % 2)
        };
        let label = if bad { "brute_force" } else { "benign" };
        out.push_str(&format!(
            "{a},{f},{u},{},{label},10.0.{}.{}\n",
            i % 24,
            i % 7,
            i % 250
        ));
    }
    out
}

/// Waits for a `202` training job to end; returns its session and model.
fn finished(server: &Server, key: &str, accepted: &Reply) -> (Value, Value) {
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let a = accepted.json();
    assert_eq!(a["training_session"]["status"], "queued", "{a}");
    let id = a["training_session"]["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let session = loop {
        let r = get(
            server,
            &format!("/api/insights/models/training-sessions/{id}"),
            key,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let s = r.json()["training_session"].clone();
        if matches!(s["status"].as_str(), Some("ready" | "failed")) {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "training did not end: {s}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let models = get(server, "/api/insights/models", key).json();
    let model = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == a["model"]["id"] && m["version"] == a["model"]["version"])
        .cloned()
        .unwrap_or_else(|| panic!("{models}"));
    (session, model)
}

fn write(env: &Env, name: &str, body: &[u8]) -> String {
    let path = env.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(body)
        .unwrap();
    format!("@{}", path.display())
}

#[tokio::test]
async fn upload_train_list_and_predict_with_roles_and_tenancy() {
    let env = Env::new();
    let server = env.serve();
    let viewer = env
        .cli(&["keys", "create", "--org", "default", "--role", "viewer"])
        .trim()
        .to_string();
    let other = env.org_with_key("globex");

    // Upload labelled CSV with curl.
    let csv = write(&env, "logins.csv", logins_csv(3000).as_bytes());
    let up = post(
        &server,
        "/api/insights/models/upload-training-data",
        DEFAULT_KEY,
        "text/csv",
        &csv,
    );
    assert_eq!(up.status, 201, "{}", up.body);
    let up = up.json();
    assert_eq!(up["rows"], 3000);
    assert_eq!(up["label_column"], "label");
    assert_eq!(up["classes"], json!({"benign": 2850, "brute_force": 150}));
    assert_eq!(
        up["features"],
        json!(["attempts", "failures", "distinct_users", "hour"])
    );
    assert_eq!(up["ignored_columns"], json!(["source"]));
    let dataset = up["dataset_id"].as_str().unwrap().to_string();

    // Train: a random forest, with metrics on a held-out 20 %.
    let body = json!({"dataset_id": dataset, "name": "Login classifier"}).to_string();
    let trained = post(
        &server,
        "/api/insights/models/train",
        DEFAULT_KEY,
        "application/json",
        &body,
    );
    let (session, model) = finished(&server, DEFAULT_KEY, &trained);
    let t = json!({"model": model, "training_session": session});
    assert_eq!(t["model"]["id"], "login-classifier");
    assert_eq!(t["model"]["version"], 1);
    assert_eq!(t["model"]["model_type"], "random_forest");
    assert_eq!(t["model"]["status"], "ready");
    assert_eq!(t["training_session"]["status"], "ready");
    // Artifacts are named relative to the lake, never by a server path.
    let artifact = t["model"]["artifact"].as_str().unwrap();
    assert!(
        artifact.starts_with("models/tenant_id=default/"),
        "{artifact}"
    );
    let m = &t["model"]["metrics"];
    assert_eq!(m["test_rows"], 600);
    assert!(m["accuracy"].as_f64().unwrap() > 0.98, "{m}");
    assert!(m["precision"].as_f64().unwrap() > 0.9, "{m}");
    assert!(m["recall"].as_f64().unwrap() > 0.9, "{m}");
    assert!(m["isolation_forest_auc"].as_f64().unwrap() > 0.95, "{m}");
    assert_eq!(t["training_session"]["rows"], 3000);

    // Training again makes version 2; version 1 is archived.
    let again = post(
        &server,
        "/api/insights/models/train",
        DEFAULT_KEY,
        "application/json",
        &body,
    );
    finished(&server, DEFAULT_KEY, &again);
    let list = get(&server, "/api/insights/models", &viewer);
    assert_eq!(list.status, 200, "{}", list.body);
    let models = list.json()["models"].as_array().unwrap().clone();
    let versions: Vec<(u64, &str)> = models
        .iter()
        .filter(|m| m["id"] == "login-classifier")
        .map(|m| {
            (
                m["version"].as_u64().unwrap(),
                m["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(versions, [(2, "ready"), (1, "archived")]);
    assert_eq!(
        list.json()["training_sessions"].as_array().unwrap().len(),
        2
    );

    // Predict (a viewer may): objects by name or arrays in feature order.
    let rows = json!({"rows": [
        {"attempts": 230, "failures": 200, "distinct_users": 35, "hour": 3},
        [2, 0, 1, 14]
    ]})
    .to_string();
    let p = post(
        &server,
        "/api/insights/models/login-classifier/predict",
        &viewer,
        "application/json",
        &rows,
    );
    assert_eq!(p.status, 200, "{}", p.body);
    let p = p.json();
    assert_eq!(p["version"], 2);
    assert_eq!(p["predictions"][0]["label"], "brute_force");
    assert_eq!(p["predictions"][1]["label"], "benign");
    for pred in p["predictions"].as_array().unwrap() {
        let c = pred["confidence"].as_f64().unwrap();
        assert!(c > 0.8 && c <= 1.0, "{pred}");
    }
    let v1 = json!({"rows": [[2, 0, 1, 14]], "version": 1}).to_string();
    let p1 = post(
        &server,
        "/api/insights/models/login-classifier/predict",
        &viewer,
        "application/json",
        &v1,
    );
    assert_eq!(p1.json()["version"], 1);

    // Unlabelled JSON trains an isolation forest with scores and explanations.
    let rows: Vec<Value> = (0..400)
        .map(|i| json!({"bytes": 1000 + (i * 37) % 500, "requests": 10 + i % 5}))
        .collect();
    let up = post(
        &server,
        "/api/insights/models/upload-training-data",
        DEFAULT_KEY,
        "application/json",
        &serde_json::to_string(&rows).unwrap(),
    );
    assert_eq!(up.status, 201, "{}", up.body);
    let body = json!({"dataset_id": up.json()["dataset_id"], "name": "egress"}).to_string();
    let t = post(
        &server,
        "/api/insights/models/train",
        DEFAULT_KEY,
        "application/json",
        &body,
    );
    let (_, model) = finished(&server, DEFAULT_KEY, &t);
    assert_eq!(model["model_type"], "isolation_forest");
    let q = json!({"rows": [{"bytes": 90000, "requests": 400}, {"bytes": 1200, "requests": 12}]})
        .to_string();
    let p = post(
        &server,
        "/api/insights/models/egress/predict",
        DEFAULT_KEY,
        "application/json",
        &q,
    );
    assert_eq!(p.status, 200, "{}", p.body);
    let preds = p.json()["predictions"].clone();
    assert_eq!(preds[0]["label"], "anomaly");
    assert_eq!(preds[1]["label"], "normal");
    assert!(preds[0]["score"].as_f64().unwrap() > preds[1]["score"].as_f64().unwrap());
    assert!(preds[0]["explanation"]["bytes"].as_f64().is_some());

    // Roles: a viewer cannot upload or train.
    let r = post(
        &server,
        "/api/insights/models/upload-training-data",
        &viewer,
        "text/csv",
        &csv,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post(
        &server,
        "/api/insights/models/train",
        &viewer,
        "application/json",
        &body,
    );
    assert_eq!(r.status, 403, "{}", r.body);

    // Tenancy: another organization sees no models, datasets or predictions.
    let theirs = get(&server, "/api/insights/models", &other);
    assert_eq!(theirs.json()["models"], json!([]));
    let r = post(
        &server,
        "/api/insights/models/login-classifier/predict",
        &other,
        "application/json",
        &rows_json(),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let steal = json!({"dataset_id": dataset, "name": "stolen"}).to_string();
    let r = post(
        &server,
        "/api/insights/models/train",
        &other,
        "application/json",
        &steal,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = get(&server, "/api/insights/models", "not-a-key");
    assert_eq!(r.status, 401);

    // The audit log: every mutating call of the organization, refusals
    // included, newest first; admins only; nothing of other organizations.
    let log = get(&server, "/api/audit-log?limit=500", DEFAULT_KEY);
    assert_eq!(log.status, 200, "{}", log.body);
    let entries = log.json()["entries"].as_array().unwrap().clone();
    let seen: Vec<(String, u64, String)> = entries
        .iter()
        .map(|e| {
            (
                e["route"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap(),
                e["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let count = |route: &str, status: u64, role: &str| {
        seen.iter()
            .filter(|(r, s, ro)| r == route && *s == status && ro == role)
            .count()
    };
    assert_eq!(
        count("/api/insights/models/upload-training-data", 201, "admin"),
        2,
        "{seen:?}"
    );
    assert_eq!(
        count("/api/insights/models/train", 202, "admin"),
        3,
        "{seen:?}"
    );
    assert_eq!(
        count("/api/insights/models/upload-training-data", 403, "viewer"),
        1,
        "{seen:?}"
    );
    assert_eq!(
        count("/api/insights/models/train", 403, "viewer"),
        1,
        "{seen:?}"
    );
    assert_eq!(
        count("/api/insights/models/{id}/predict", 200, "viewer"),
        2,
        "{seen:?}"
    );
    assert!(entries.iter().all(|e| e["org_id"] == "default"));
    assert!(
        entries
            .windows(2)
            .all(|w| w[0]["id"].as_i64() > w[1]["id"].as_i64())
    );
    // Reads are not audited.
    assert!(seen.iter().all(|(r, _, _)| r != "/api/insights/models"));
    let page = get(&server, "/api/audit-log?limit=2", DEFAULT_KEY).json();
    // Opaque like every cursor (a string), passed back as it came.
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = get(
        &server,
        &format!("/api/audit-log?limit=2&cursor={cursor}"),
        DEFAULT_KEY,
    )
    .json();
    assert_eq!(next["entries"][0]["id"], entries[2]["id"]);
    assert_eq!(get(&server, "/api/audit-log", &viewer).status, 403);
    let theirs = get(&server, "/api/audit-log", &other).json();
    assert!(
        theirs["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["org_id"] == "globex")
    );
}

fn rows_json() -> String {
    json!({"rows": [[2, 0, 1, 14]]}).to_string()
}

#[tokio::test]
async fn bad_training_data_and_requests_get_clear_errors() {
    let env = Env::new();
    let server = env.serve();
    let upload = |media: &str, body: &str| {
        post(
            &server,
            "/api/insights/models/upload-training-data",
            DEFAULT_KEY,
            media,
            body,
        )
    };
    // Malformed.
    let r = upload("application/json", "{\"attempts\": 1,");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["error"].as_str().unwrap().contains("cannot parse"),
        "{}",
        r.body
    );
    // Wrong encoding.
    let latin1 = write(&env, "latin1.csv", b"name,value\n\xe9t\xe9,1\n");
    let r = upload("text/csv", &latin1);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("UTF-8"), "{}", r.body);
    // Wrong media type.
    let r = upload("application/xml", "<a/>");
    assert_eq!(r.status, 415, "{}", r.body);
    // No usable features; too few rows.
    let r = upload("text/csv", "host,user\nweb,alice\n");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("no numeric feature"), "{}", r.body);
    let r = upload("text/csv", "a,b\n1,2\n");
    assert!(r.body.contains("at least 20"), "{}", r.body);
    // Over the row limit (200,000).
    let mut big = String::from("a,b\n");
    for i in 0..200_001 {
        big.push_str(&format!("{i},1\n"));
    }
    let big = write(&env, "big.csv", big.as_bytes());
    let r = upload("text/csv", &big);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("over the limit"), "{}", r.body);
    // Oversized body (64 MiB limit).
    let huge = write(&env, "huge.csv", &vec![b'1'; (64 << 20) + 1]);
    let r = upload("text/csv", &huge);
    assert_eq!(r.status, 413, "{}", r.body);
    // Train: unknown dataset, bad names, unknown fields; predict: unknown
    // model, missing features.
    let train = |body: Value| {
        post(
            &server,
            "/api/insights/models/train",
            DEFAULT_KEY,
            "application/json",
            &body.to_string(),
        )
    };
    let missing = "01900000-0000-7000-8000-000000000000";
    assert_eq!(
        train(json!({"dataset_id": missing, "name": "x"})).status,
        404
    );
    assert_eq!(
        train(json!({"dataset_id": "../../etc", "name": "x"})).status,
        400
    );
    assert_eq!(
        train(json!({"dataset_id": missing, "name": "!!!"})).status,
        400
    );
    assert_eq!(
        train(json!({"dataset_id": missing, "name": "x", "depth": 3})).status,
        400
    );
    let mut csv = String::from("a,b,label\n");
    for i in 0..40 {
        csv.push_str(&format!(
            "{i},{},{}\n",
            i % 3,
            if i % 4 == 0 { "x" } else { "y" }
        ));
    }
    let up = upload("text/csv", &csv);
    assert_eq!(up.status, 201, "{}", up.body);
    let t =
        train(json!({"dataset_id": up.json()["dataset_id"], "name": "small", "n_estimators": 10}));
    finished(&server, DEFAULT_KEY, &t);
    let predict = |id: &str, body: Value| {
        post(
            &server,
            &format!("/api/insights/models/{id}/predict"),
            DEFAULT_KEY,
            "application/json",
            &body.to_string(),
        )
    };
    assert_eq!(predict("nope", json!({"rows": [[1, 2]]})).status, 404);
    let r = predict("small", json!({"rows": [{"a": 1}]}));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("lacks feature \\\"b\\\""), "{}", r.body);
    assert_eq!(predict("small", json!({"rows": [[1, "x"]]})).status, 400);
    assert_eq!(predict("small", json!({"rows": []})).status, 400);
    assert_eq!(predict("small", json!({"rows": [[1, 2]]})).status, 200);
    // A training that fails is recorded as such, with its reason.
    let mut unlabelled = String::from("a,b\n");
    for i in 0..40 {
        unlabelled.push_str(&format!("{i},{}\n", i % 5));
    }
    let up = upload("text/csv", &unlabelled);
    let t = train(
        json!({"dataset_id": up.json()["dataset_id"], "name": "needs labels", "model_type": "random_forest"}),
    );
    let (session, _) = finished(&server, DEFAULT_KEY, &t);
    assert_eq!(session["status"], "failed");
    assert!(
        session["error"].as_str().unwrap().contains("labelled data"),
        "{session}"
    );
    let list = curl(&[
        &server.url("/api/insights/models"),
        "-H",
        &format!("Authorization: Bearer {DEFAULT_KEY}"),
    ])
    .json();
    let failed = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "needs-labels")
        .cloned()
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["metrics"]["error"]
            .as_str()
            .unwrap()
            .contains("labelled")
    );
    let sessions = list["training_sessions"].as_array().unwrap();
    assert!(
        sessions
            .iter()
            .any(|s| s["model_id"] == "needs-labels" && s["status"] == "failed")
    );
}
