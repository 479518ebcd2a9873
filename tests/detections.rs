//! Sigma rules in the stream, end to end through the public interfaces:
//! rules uploaded over HTTP (and an operator pack from a directory, and an
//! MSP's pack for its children), logs ingested over HTTP, matches read back
//! from `/api/detections`, SQL, ClickHouse and the notifications — each
//! organization matched only against its own rules — and the backtest
//! route finding the same rows in the stored logs as the stream did. Bad
//! uploads get a clear error each and change nothing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Env, Server, get, ingest, metric, post_json, rows, send, wait_count};

const SSH_BRUTE: &str = r#"title: SSH password guessing
id: ssh-password-guessing
status: test
description: Failed SSH password attempts, as OpenSSH logs them
level: high
tags:
  - attack.credential_access
  - attack.t1110.001
logsource:
  product: linux
  service: sshd
detection:
  selection:
    app: sshd
    message|contains:
      - 'Failed password for'
      - 'authentication failure'
  filter:
    message|contains: 'from 10.'
  condition: selection and not filter
"#;

const PACK: &str = r#"title: Sudo to root shell
id: msp-sudo-shell
level: medium
logsource:
  product: linux
detection:
  keywords:
    - 'COMMAND=/bin/bash'
    - 'COMMAND=/bin/sh'
  condition: keywords
"#;

const OPERATOR: &str = r#"title: Kernel segfault
id: op-segfault
level: low
logsource:
  product: linux
detection:
  sel:
    message|re: 'segfault at [0-9a-f]+ ip'
  condition: sel
"#;

fn patch_json(server: &Server, path: &str, key: &str, body: &Value) -> crate::support::Reply {
    send(
        server,
        "PATCH",
        path,
        key,
        Some(("application/json", &body.to_string())),
    )
}

fn delete(server: &Server, path: &str, key: &str) -> crate::support::Reply {
    send(server, "DELETE", path, key, None)
}

/// Waits until the pipeline compiled `at_least` rules (summed over
/// organizations).
async fn wait_rules_loaded(server: &Server, at_least: f64) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let loaded = metric(server, "securenet_rules_loaded").await;
        if loaded >= at_least {
            return;
        }
        assert!(
            Instant::now() < until,
            "rules loaded: {loaded} < {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Real-world lines: OpenSSH's own wording, PAM's, sudo's, the kernel's.
fn acme_logs(ts: &str) -> Vec<Value> {
    vec![
        json!({"ts": ts, "host": "bastion-1", "app": "sshd", "src_ip": "203.0.113.7",
               "message": "Failed password for invalid user admin from 203.0.113.7 port 52211 ssh2"}),
        json!({"ts": ts, "host": "bastion-1", "app": "sshd", "src_ip": "198.51.100.23",
               "message": "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=198.51.100.23  user=root"}),
        // The filter: an internal address is not guessing.
        json!({"ts": ts, "host": "bastion-1", "app": "sshd",
               "message": "Failed password for deploy from 10.0.4.2 port 40022 ssh2"}),
        // Not sshd.
        json!({"ts": ts, "host": "web-1", "app": "nginx",
               "message": "Failed password for admin (basic auth) from 203.0.113.9"}),
        json!({"ts": ts, "host": "bastion-1", "app": "sshd",
               "message": "Accepted publickey for alice from 192.0.2.10 port 50514 ssh2: ED25519 SHA256:abc"}),
        json!({"ts": ts, "host": "web-1", "app": "kernel",
               "message": "nginx[4242]: segfault at 7f3a2c000010 ip 000055d5c8a1b2c3 sp 00007ffd0a1b2c30 error 4 in nginx[55d5c8a00000+100000]"}),
        json!({"ts": ts, "host": "web-1", "app": "sudo",
               "message": "    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash"}),
    ]
}

fn ids_of(v: &Value, field: &str) -> BTreeSet<String> {
    v[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn sigma_rules_run_in_the_stream_per_organization_and_backtest_the_same() {
    let ops_rules = tempfile::tempdir().unwrap();
    std::fs::write(ops_rules.path().join("segfault.yml"), OPERATOR).unwrap();
    let (env, ch) = Env::new().clickhouse();
    let env = env
        .set(
            "SECURENET_PIPELINE__RULES__RULES_DIR",
            ops_rules.path().to_str().unwrap(),
        )
        .set("SECURENET_PIPELINE__RULES__REFRESH_MS", "200")
        .set("SECURENET_API__DETECTIONS__MAX_RULES_PER_ORG", "3");
    let acme = env.org_with_key("acme");
    let globex = env.org_with_key("globex");
    let msp = env.org_on_plan("msp", "msp", &[]);
    let kid = env.org_on_plan("kid", "business", &["--parent", "msp"]);
    let server = env.serve();

    // Uploads: the MSP's pack first, then acme's own rule.
    let r = post_json(
        &server,
        "/api/detections/rules",
        &msp,
        &json!({"yaml": PACK, "scope": "children"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["rule"]["scope"], "children");
    let r = post_json(
        &server,
        "/api/detections/rules",
        &acme,
        &json!({"yaml": SSH_BRUTE}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json()["rule"].clone();
    assert_eq!(created["id"], "ssh-password-guessing");
    assert_eq!(created["level"], "high");
    assert_eq!(created["source"], "own");

    // What each organization sees.
    let listed = get(&server, "/api/detections/rules", &acme).json();
    assert_eq!(
        ids_of(&listed, "rules"),
        BTreeSet::from(["ssh-password-guessing".into(), "op-segfault".into()])
    );
    let listed = get(&server, "/api/detections/rules", &kid).json();
    assert_eq!(
        ids_of(&listed, "rules"),
        BTreeSet::from(["msp-sudo-shell".into(), "op-segfault".into()])
    );
    let sources: BTreeSet<String> = listed["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["source"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sources, BTreeSet::from(["msp".into(), "operator".into()]));
    let one = get(
        &server,
        "/api/detections/rules/ssh-password-guessing",
        &acme,
    )
    .json();
    assert_eq!(one["rule"]["yaml"], SSH_BRUTE);
    assert_eq!(
        one["rule"]["tags"],
        json!(["attack.credential_access", "attack.t1110.001"])
    );
    assert_eq!(one["rule"]["logsource"]["service"], "sshd");

    // Another organization cannot see, change or test acme's rule.
    for (status, r) in [
        (
            404,
            get(
                &server,
                "/api/detections/rules/ssh-password-guessing",
                &globex,
            ),
        ),
        (
            404,
            patch_json(
                &server,
                "/api/detections/rules/ssh-password-guessing",
                &globex,
                &json!({"enabled": false}),
            ),
        ),
        (
            404,
            delete(
                &server,
                "/api/detections/rules/ssh-password-guessing",
                &globex,
            ),
        ),
        (
            404,
            post_json(
                &server,
                "/api/detections/rules/ssh-password-guessing/test",
                &globex,
                &json!({}),
            ),
        ),
        // Inherited rules are not the organization's to change.
        (
            403,
            patch_json(
                &server,
                "/api/detections/rules/msp-sudo-shell",
                &kid,
                &json!({"enabled": false}),
            ),
        ),
        (
            403,
            delete(&server, "/api/detections/rules/op-segfault", &acme),
        ),
    ] {
        assert_eq!(r.status, status, "{}", r.body);
    }

    // Bad uploads: each a clear 4xx, nothing stored.
    let bad: Vec<(Value, u16, &str)> = vec![
        (json!({"yaml": "title: [unclosed"}), 400, "rule refused"),
        (
            json!({"yaml": SSH_BRUTE.replace("condition: selection and not filter", "condition: selection | count() > 5")}),
            400,
            "count",
        ),
        (
            json!({"yaml": SSH_BRUTE.replace("message|contains:", "message|expand:")}),
            400,
            "expand",
        ),
        (
            json!({"yaml": SSH_BRUTE.replace("'Failed password for'", "'(unclosed'").replace("message|contains:", "message|re:")}),
            400,
            "regex",
        ),
        (json!({"yaml": SSH_BRUTE}), 409, "already exists"),
        (
            json!({"yaml": SSH_BRUTE.replace("id: ssh-password-guessing", "id: has spaces/and slash")}),
            400,
            "rule id",
        ),
        (
            json!({"yaml": SSH_BRUTE.replace("ssh-password-guessing", "other"), "scope": "children"}),
            403,
            "MSP",
        ),
        (
            json!({"yaml": SSH_BRUTE, "scope": "everyone"}),
            400,
            "scope",
        ),
        (json!({"yml": SSH_BRUTE}), 400, "yml"),
    ];
    for (body, status, says) in bad {
        let r = post_json(&server, "/api/detections/rules", &acme, &body);
        assert_eq!(r.status, status, "{body:.200}: {}", r.body);
        assert!(r.body.contains(says), "{says:?} not in {}", r.body);
    }
    let r = post(&server, &acme, "not json at all");
    assert_eq!(r.status, 400, "{}", r.body);
    // Oversized (too big for a curl argument: reqwest).
    let big = json!({"yaml": format!("{SSH_BRUTE}\n# {}", "x".repeat(300 << 10))});
    let r = crate::support::client()
        .post(server.url("/api/detections/rules"))
        .bearer_auth(&acme)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("over the limit"), "{text}");
    // Over the count limit (3 per organization here).
    for id in ["extra-1", "extra-2"] {
        let yaml = OPERATOR.replace("op-segfault", id);
        assert_eq!(
            post_json(
                &server,
                "/api/detections/rules",
                &acme,
                &json!({"yaml": yaml, "enabled": false})
            )
            .status,
            201
        );
    }
    let r = post_json(
        &server,
        "/api/detections/rules",
        &acme,
        &json!({"yaml": OPERATOR.replace("op-segfault", "extra-3")}),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("max_rules_per_org = 3"), "{}", r.body);
    // A viewer reads rules but does not upload them.
    let viewer = env
        .cli(&["keys", "create", "--org", "acme", "--role", "viewer"])
        .trim()
        .to_string();
    assert_eq!(get(&server, "/api/detections/rules", &viewer).status, 200);
    assert_eq!(
        post_json(
            &server,
            "/api/detections/rules",
            &viewer,
            &json!({"yaml": PACK})
        )
        .status,
        403
    );

    // Every organization has the operator's rule; acme and kid one more each.
    let orgs = metric(&server, "securenet_rules_tenants").await;
    wait_rules_loaded(&server, orgs + 2.0).await;

    let ts = chrono_now();
    for (key, lines) in [
        (&acme, acme_logs(&ts)),
        (&globex, acme_logs(&ts)),
        (&kid, acme_logs(&ts)),
    ] {
        let (status, body) = ingest(&server, key, ndjson(&lines)).await;
        assert_eq!(status, 200, "{body}");
    }
    for key in [&acme, &globex, &kid] {
        assert_eq!(wait_count(&server, key, "logs", 7).await, 7);
    }

    // acme: its rule (2 rows) and the operator's (1); globex: the
    // operator's alone, though it sent the same lines; kid: the MSP pack
    // and the operator's.
    let expect = [
        (
            &acme,
            vec![("op-segfault", 1), ("ssh-password-guessing", 2)],
        ),
        (&globex, vec![("op-segfault", 1)]),
        (&kid, vec![("msp-sudo-shell", 1), ("op-segfault", 1)]),
    ];
    for (key, want) in &expect {
        let total: u64 = want.iter().map(|(_, n)| n).sum();
        assert_eq!(wait_count(&server, key, "detections", total).await, total);
        let got = rows(
            &server,
            key,
            "SELECT rule_id, count(*) AS n FROM detections GROUP BY rule_id ORDER BY rule_id",
        )
        .await;
        let got: Vec<(String, u64)> = got
            .iter()
            .map(|r| {
                (
                    r["rule_id"].as_str().unwrap().to_string(),
                    r["n"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, u64)> = want.iter().map(|(r, n)| (r.to_string(), *n)).collect();
        assert_eq!(got, want);
    }

    // The listing: key fields of the matching rows, tags as JSON.
    let listed = get(
        &server,
        "/api/detections?rule_id=ssh-password-guessing",
        &acme,
    )
    .json();
    let found = listed["detections"].as_array().unwrap();
    assert_eq!(found.len(), 2, "{listed}");
    let first = found
        .iter()
        .find(|d| d["source_ip"] == "203.0.113.7")
        .expect("the invalid-user line");
    assert_eq!(first["level"], "high");
    assert_eq!(first["rule_title"], "SSH password guessing");
    assert_eq!(first["host"], "bastion-1");
    assert_eq!(
        first["tags"],
        json!(["attack.credential_access", "attack.t1110.001"])
    );
    assert_eq!(first["source_kind"], "logs");
    let level = get(&server, "/api/detections?level=low", &acme).json();
    assert_eq!(level["detections"].as_array().unwrap().len(), 1);
    assert_eq!(
        get(&server, "/api/detections?level=severe", &acme).status,
        400
    );

    // ClickHouse holds the same matches.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = ch.counts("detections").await;
        if counts.get("acme") == Some(&3)
            && counts.get("globex") == Some(&1)
            && counts.get("kid") == Some(&2)
        {
            break;
        }
        assert!(Instant::now() < until, "ClickHouse detections: {counts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Notifications: one per rule and batch, the rule's level as severity.
    let until = Instant::now() + Duration::from_secs(30);
    let notes = loop {
        let n = get(&server, "/api/notifications", &acme).json();
        let detections: Vec<Value> = n["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["kind"] == "detection")
            .cloned()
            .collect();
        if detections.len() == 2 || Instant::now() > until {
            break detections;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(notes.len(), 2, "{notes:?}");
    let ssh = notes
        .iter()
        .find(|x| x["body"]["rule_id"] == "ssh-password-guessing")
        .expect("ssh notification");
    assert_eq!(ssh["severity"], "high");
    assert_eq!(ssh["body"]["matches"], 2);
    assert!(
        ssh["title"]
            .as_str()
            .unwrap()
            .contains("SSH password guessing"),
        "{ssh}"
    );

    // The backtest over the stored logs finds exactly the stream's rows.
    let stream: BTreeSet<(String, i64, String)> = rows(
        &server,
        &acme,
        "SELECT source_batch_id, CAST(ts AS BIGINT) AS ts_ms, message FROM detections WHERE rule_id = 'ssh-password-guessing'",
    )
    .await
    .iter()
    .map(|r| (r["source_batch_id"].as_str().unwrap().into(), r["ts_ms"].as_i64().unwrap(), r["message"].as_str().unwrap().into()))
    .collect();
    let r = post_json(
        &server,
        "/api/detections/rules/ssh-password-guessing/test",
        &acme,
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let test = r.json();
    assert_eq!(test["rows_scanned"], 7, "{test}");
    assert_eq!(test["matched"], 2, "{test}");
    let backtest: BTreeSet<(String, i64, String)> = test["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["source_batch_id"].as_str().unwrap().into(),
                m["ts_ms"].as_i64().unwrap(),
                m["message"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(backtest, stream);
    // Inherited rules backtest too; a range with no logs matches nothing.
    let r = post_json(
        &server,
        "/api/detections/rules/msp-sudo-shell/test",
        &kid,
        &json!({}),
    );
    assert_eq!(r.json()["matched"], 1, "{}", r.body);
    let r = post_json(
        &server,
        "/api/detections/rules/op-segfault/test",
        &acme,
        &json!({"since": "2020-01-01T00:00:00Z", "until": "2020-01-02T00:00:00Z"}),
    );
    assert_eq!(
        (r.status, r.json()["matched"].clone()),
        (200, json!(0)),
        "{}",
        r.body
    );
    let r = post_json(
        &server,
        "/api/detections/rules/op-segfault/test",
        &acme,
        &json!({"since": "yesterday"}),
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // Disabled, the rule stops matching new logs; deleted, it is gone.
    // (The count is read before the change: a refresh may land between
    // the PATCH's answer and a read after it.)
    let before = metric(&server, "securenet_rules_loaded").await;
    let r = patch_json(
        &server,
        "/api/detections/rules/ssh-password-guessing",
        &acme,
        &json!({"enabled": false}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["rule"]["enabled"], false);
    let until = Instant::now() + Duration::from_secs(30);
    while metric(&server, "securenet_rules_loaded").await >= before {
        assert!(Instant::now() < until, "the disabled rule stayed loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = ingest(&server, &acme, ndjson(&acme_logs(&ts))).await;
    assert_eq!(status, 200);
    assert_eq!(wait_count(&server, &acme, "logs", 14).await, 14);
    assert_eq!(
        wait_count(&server, &acme, "detections", 4).await,
        4,
        "only the operator's rule matched again"
    );
    assert_eq!(
        delete(
            &server,
            "/api/detections/rules/ssh-password-guessing",
            &acme
        )
        .status,
        204
    );
    assert_eq!(
        get(
            &server,
            "/api/detections/rules/ssh-password-guessing",
            &acme
        )
        .status,
        404
    );
    server.stop();
}

/// POSTs a raw body to the rules route.
fn post(server: &Server, key: &str, body: &str) -> crate::support::Reply {
    crate::support::post(
        server,
        "/api/detections/rules",
        key,
        "application/json",
        body,
    )
}

/// Now as RFC 3339 (event times within the backtest's default 24 hours).
fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = crate::support::run(
        "date",
        &["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"],
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

const FAILED_LOGIN: &str = r#"title: Failed SSH login
id: 3b2f0c1e-5a52-4b8e-9d1a-0c7a61f0a001
name: ssh_failed_login
level: low
logsource:
  product: linux
  service: sshd
detection:
  selection:
    app: sshd
    message|contains: 'Failed password'
  condition: selection
"#;

const BRUTE_FORCE: &str = r#"title: SSH brute force from one address
id: 3b2f0c1e-5a52-4b8e-9d1a-0c7a61f0a002
level: high
tags:
  - attack.t1110
correlation:
  type: event_count
  rules:
    - ssh_failed_login
  group-by:
    - source_ip
  timespan: 5m
  condition:
    gte: 5
"#;

const SPRAY: &str = r#"title: Password spraying from one address
id: spray
level: medium
correlation:
  type: value_count
  rules:
    - ssh_failed_login
  group-by:
    - source_ip
  timespan: 10m
  condition:
    field: user
    gte: 3
"#;

/// OpenSSH's own failure line, with the user in structured data the way a
/// JSON shipper sends it.
fn failure(ts: &str, ip: &str, user: &str) -> Value {
    json!({"ts": ts, "host": "bastion-1", "app": "sshd", "src_ip": ip, "user": user,
           "message": format!("Failed password for {user} from {ip} port 52211 ssh2")})
}

/// RFC 3339 for `secs` after the epoch.
fn at(secs: u64) -> String {
    let out = crate::support::run(
        "date",
        &["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"],
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn correlation_rules_fire_per_group_in_the_stream_and_the_backtest() {
    let env = Env::new().set("SECURENET_PIPELINE__RULES__REFRESH_MS", "200");
    let acme = env.org_with_key("acme");
    let server = env.serve();

    // A correlation needs the rules it names; refusals name what is wrong.
    for (yaml, says) in [
        (BRUTE_FORCE.to_string(), "no detection rule with id or name"),
        (BRUTE_FORCE.replace("gte: 5", "lt: 5"), "condition.lt"),
        (
            BRUTE_FORCE.replace("timespan: 5m", "timespan: forever"),
            "timespan",
        ),
    ] {
        let r = post_json(
            &server,
            "/api/detections/rules",
            &acme,
            &json!({"yaml": yaml}),
        );
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.body.contains(says), "{says:?} not in {}", r.body);
    }
    for yaml in [FAILED_LOGIN, BRUTE_FORCE, SPRAY] {
        let r = post_json(
            &server,
            "/api/detections/rules",
            &acme,
            &json!({"yaml": yaml}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = post_json(
        &server,
        "/api/detections/rules",
        &acme,
        &json!({"yaml": SPRAY.replace("id: spray", "id: spray-2").replace("ssh_failed_login", "spray")}),
    );
    assert_eq!(r.status, 400, "chained: {}", r.body);
    assert!(r.body.contains("chained correlations"), "{}", r.body);
    let got = get(
        &server,
        "/api/detections/rules/3b2f0c1e-5a52-4b8e-9d1a-0c7a61f0a002",
        &acme,
    )
    .json();
    assert_eq!(got["rule"]["kind"], "correlation");
    assert_eq!(got["rule"]["correlation"]["type"], "event_count");
    assert_eq!(got["rule"]["correlation"]["at_least"], 5);
    wait_rules_loaded(&server, 3.0).await;

    // 203.0.113.7 fails 6 times as root within a minute (brute force: one
    // fire at the 5th); 198.51.100.23 fails 4 times over 4 users within 2
    // minutes (not 5 events, but 3 distinct users at the 3rd: spraying);
    // 192.0.2.50 failed 5 times earlier, spread over 24 minutes (no fire).
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let brute: Vec<Value> = (0..6)
        .map(|i| failure(&at(t0 + i * 10), "203.0.113.7", "root"))
        .collect();
    let spray: Vec<Value> = ["admin", "oracle", "test", "guest"]
        .iter()
        .enumerate()
        .map(|(i, user)| failure(&at(t0 + 5 + i as u64 * 30), "198.51.100.23", user))
        .collect();
    let spread: Vec<Value> = (0..5)
        .map(|i| failure(&at(t0 - 1500 + i * 360), "192.0.2.50", "deploy"))
        .collect();
    // The later half of each burst arrives first (within the lateness
    // allowed): events are placed by their own time.
    let first: Vec<Value> = spread
        .iter()
        .chain(&brute[3..])
        .chain(&spray[2..])
        .cloned()
        .collect();
    let second: Vec<Value> = brute[..3].iter().chain(&spray[..2]).cloned().collect();
    for part in [first, second] {
        let (status, body) = ingest(&server, &acme, ndjson(&part)).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(wait_count(&server, &acme, "logs", 15).await, 15);
    assert_eq!(
        wait_count(&server, &acme, "detections", 2).await,
        2,
        "the base rule's own matches are not stored (generate: false)"
    );
    let found = rows(
        &server,
        &acme,
        "SELECT rule_id, level, context FROM detections ORDER BY rule_id",
    )
    .await;
    let brute: Value = serde_json::from_str(found[0]["context"].as_str().unwrap()).unwrap();
    assert_eq!(found[0]["rule_id"], "3b2f0c1e-5a52-4b8e-9d1a-0c7a61f0a002");
    assert_eq!(found[0]["level"], "high");
    assert_eq!(brute["correlation"], "event_count");
    assert_eq!(brute["group"]["source_ip"], "203.0.113.7");
    assert_eq!(brute["count"], 5);
    let spray: Value = serde_json::from_str(found[1]["context"].as_str().unwrap()).unwrap();
    assert_eq!(found[1]["rule_id"], "spray");
    assert_eq!(spray["group"]["source_ip"], "198.51.100.23");
    assert_eq!(spray["count"], 3);
    let listed = get(&server, "/api/detections?rule_id=spray", &acme).json();
    assert_eq!(
        listed["detections"][0]["context"]["field"], "user",
        "{listed}"
    );

    // The backtest replays the stored logs in time order: the same fires.
    for (id, group, count) in [
        ("3b2f0c1e-5a52-4b8e-9d1a-0c7a61f0a002", "203.0.113.7", 5),
        ("spray", "198.51.100.23", 3),
    ] {
        let r = post_json(
            &server,
            &format!("/api/detections/rules/{id}/test"),
            &acme,
            &json!({}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let t = r.json();
        assert_eq!(t["matched"], 1, "{t}");
        assert_eq!(t["rule"]["kind"], "correlation");
        assert_eq!(t["matches"][0]["context"]["group"]["source_ip"], group);
        assert_eq!(t["matches"][0]["context"]["count"], count);
    }
    // The base rule alone matches all 15 failures.
    let r = post_json(
        &server,
        "/api/detections/rules/3b2f0c1e-5a52-4b8e-9d1a-0c7a61f0a001/test",
        &acme,
        &json!({}),
    );
    assert_eq!(r.json()["matched"], 15, "{}", r.body);
    server.stop();
}

/// `securenet sigma check/match` take correlation rules with the rules they
/// name, as the stream does.
#[test]
fn the_sigma_command_runs_correlations_over_files() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("failed.yml"), FAILED_LOGIN).unwrap();
    std::fs::write(dir.path().join("brute.yml"), BRUTE_FORCE).unwrap();
    let checked = env.cli(&["sigma", "check", dir.path().to_str().unwrap()]);
    assert!(
        checked.contains("\tcorrelation\thigh\tSSH brute force from one address"),
        "{checked}"
    );
    let logs = dir.path().join("logs.ndjson");
    let lines: Vec<Value> = (0..6)
        .map(|i| {
            failure(
                &format!("2026-12-01T10:00:{:02}Z", i * 5),
                "203.0.113.7",
                "root",
            )
        })
        .chain([failure("2026-12-01T10:00:40Z", "198.51.100.1", "root")])
        .collect();
    std::fs::write(&logs, ndjson(&lines)).unwrap();
    let out = env.cli(&[
        "sigma",
        "match",
        "--rule",
        dir.path().to_str().unwrap(),
        logs.to_str().unwrap(),
    ]);
    let hits: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hits.len(), 1, "{out}");
    assert_eq!(hits[0]["line"], 5, "the 5th failure from one address fires");
    assert_eq!(hits[0]["correlation"]["count"], 5);
    assert_eq!(hits[0]["correlation"]["group"]["source_ip"], "203.0.113.7");

    // Alone, the correlation names a rule the files lack: refused.
    let alone = tempfile::tempdir().unwrap();
    std::fs::write(alone.path().join("brute.yml"), BRUTE_FORCE).unwrap();
    let out = env
        .command(&["sigma", "check", alone.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("no detection rule with id or name"),
        "{stdout}"
    );
}

const FEED: &str = "type,value,expires_at,description
ip,203.0.113.66,,known scanner
cidr,198.51.100.0/24,,bulletproof hosting
domain,evil.example.com,,C2
hash,44d88612fea8a8f36de82e1278abb02f,,EICAR test file (MD5)
";

const STIX: &str = r#"{"type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d", "objects": [
  {"type": "indicator", "spec_version": "2.1", "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
   "created": "2026-11-01T00:00:00.000Z", "modified": "2026-11-01T00:00:00.000Z", "name": "Phishing landing page",
   "pattern": "[url:value = 'https://login.phish.test/owa']", "pattern_type": "stix", "valid_from": "2026-11-01T00:00:00Z"},
  {"type": "identity", "spec_version": "2.1", "id": "identity--1", "name": "ACME CERT"}
]}"#;

fn put(server: &Server, path: &str, key: &str, media: &str, body: &str) -> crate::support::Reply {
    send(server, "PUT", path, key, Some((media, body)))
}

async fn wait_indicators(server: &Server, n: f64) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let loaded = metric(server, "securenet_rules_indicators").await;
        if loaded == n {
            return;
        }
        assert!(
            Instant::now() < until,
            "indicators loaded: {loaded}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn threat_intel_lists_match_addresses_ranges_domains_urls_and_hashes_per_organization() {
    let env = Env::new()
        .set("SECURENET_PIPELINE__RULES__REFRESH_MS", "200")
        .set("SECURENET_API__DETECTIONS__MAX_INDICATORS_PER_ORG", "8");
    let acme = env.org_with_key("acme");
    let globex = env.org_with_key("globex");
    let server = env.serve();

    let r = put(
        &server,
        "/api/detections/intel/feed?level=critical",
        &acme,
        "text/csv",
        FEED,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["list"]["indicators"], 4);
    let r = put(
        &server,
        "/api/detections/intel/stix",
        &acme,
        "application/json",
        STIX,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["list"]["level"], "high");

    // Bad uploads: every bad entry named, nothing stored.
    for (path, media, body, status, says) in [
        (
            "/api/detections/intel/bad",
            "text/csv",
            "type,value\nip,999.0.0.1\nhash,xyz\n",
            400,
            "line 2",
        ),
        (
            "/api/detections/intel/bad",
            "text/csv",
            "type,value\nip,999.0.0.1\nhash,xyz\n",
            400,
            "line 3",
        ),
        (
            "/api/detections/intel/bad",
            "application/json",
            "{\"indicators\": [{\"type\": \"ip\"}]}",
            400,
            "indicators[0]",
        ),
        (
            "/api/detections/intel/bad",
            "application/json",
            "not json",
            400,
            "not JSON",
        ),
        (
            "/api/detections/intel/bad",
            "application/xml",
            "<x/>",
            415,
            "text/csv",
        ),
        (
            "/api/detections/intel/bad?level=severe",
            "text/csv",
            "203.0.113.1\n",
            400,
            "level",
        ),
        (
            "/api/detections/intel/bad%20name",
            "text/csv",
            "203.0.113.1\n",
            400,
            "rule id",
        ),
        (
            "/api/detections/intel/big",
            "text/csv",
            "203.0.113.1\n203.0.113.2\n203.0.113.3\n203.0.113.4\n",
            409,
            "max_indicators_per_org",
        ),
    ] {
        let r = put(&server, path, &acme, media, body);
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert!(r.body.contains(says), "{says:?} not in {}", r.body);
    }
    let lists = get(&server, "/api/detections/intel", &acme).json();
    let names: Vec<&str> = lists["lists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["feed", "stix"]);
    let feed = get(&server, "/api/detections/intel/feed", &acme).json();
    assert_eq!(feed["indicators"][1]["type"], "cidr");
    assert_eq!(
        get(&server, "/api/detections/intel/feed", &globex).status,
        404
    );
    assert_eq!(
        get(&server, "/api/detections/intel", &globex).json()["lists"],
        json!([])
    );
    wait_indicators(&server, 5.0).await;

    let ts = chrono_now();
    let lines = vec![
        json!({"ts": ts, "host": "fw-1", "app": "kernel", "src_ip": "203.0.113.66", "message": "UFW BLOCK IN=eth0 SRC=203.0.113.66 DPT=22"}),
        json!({"ts": ts, "host": "fw-1", "app": "kernel", "src_ip": "198.51.100.200", "message": "UFW BLOCK IN=eth0 SRC=198.51.100.200 DPT=3389"}),
        json!({"ts": ts, "host": "proxy-1", "app": "squid", "message": "TCP_MISS/200 GET http://cdn.evil.example.com/payload.bin - HIER_DIRECT"}),
        json!({"ts": ts, "host": "proxy-1", "app": "squid", "message": "TCP_MISS/200 GET https://login.phish.test/owa?user=alice"}),
        json!({"ts": ts, "host": "av-1", "app": "clamd", "message": "/tmp/eicar.com: Eicar-Signature FOUND md5=44D88612FEA8A8F36DE82E1278ABB02F"}),
        // Near misses: another domain ending in the same letters, another
        // address, a longer hex string.
        json!({"ts": ts, "host": "proxy-1", "app": "squid", "message": "GET http://devil.example.com/ and evil.example.community"}),
        json!({"ts": ts, "host": "fw-1", "app": "kernel", "src_ip": "203.0.113.67", "message": "UFW ALLOW SRC=203.0.113.67"}),
        json!({"ts": ts, "host": "av-1", "app": "clamd", "message": "sha=44d88612fea8a8f36de82e1278abb02f00 clean"}),
    ];
    for key in [&acme, &globex] {
        let (status, body) = ingest(&server, key, ndjson(&lines)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(wait_count(&server, key, "logs", 8).await, 8);
    }
    assert_eq!(wait_count(&server, &acme, "detections", 5).await, 5);
    let found = rows(
        &server,
        &acme,
        "SELECT rule_id, level, host, context FROM detections ORDER BY message",
    )
    .await;
    let mut seen: Vec<(String, String, String)> = found
        .iter()
        .map(|r| {
            let c: Value = serde_json::from_str(r["context"].as_str().unwrap()).unwrap();
            (
                r["rule_id"].as_str().unwrap().to_string(),
                c["indicator"].as_str().unwrap().to_string(),
                c["field"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "intel:feed".into(),
                "198.51.100.0/24".into(),
                "source_ip".into()
            ),
            (
                "intel:feed".into(),
                "203.0.113.66".into(),
                "source_ip".into()
            ),
            (
                "intel:feed".into(),
                "44d88612fea8a8f36de82e1278abb02f".into(),
                "message".into()
            ),
            (
                "intel:feed".into(),
                "evil.example.com".into(),
                "message".into()
            ),
            (
                "intel:stix".into(),
                "https://login.phish.test/owa".into(),
                "message".into()
            ),
        ]
    );
    assert!(
        found
            .iter()
            .filter(|r| r["rule_id"] == "intel:feed")
            .all(|r| r["level"] == "critical")
    );
    // globex has no lists: the same lines matched nothing of acme's.
    assert_eq!(
        rows(&server, &globex, "SELECT count(*) AS n FROM detections").await[0]["n"],
        0
    );

    // An indicator that expires stops matching; a deleted list too.
    let soon = at(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3);
    let r = put(
        &server,
        "/api/detections/intel/stix",
        &acme,
        "text/csv",
        &format!("value,expires_at\n192.0.2.99,{soon}\n192.0.2.98,\n"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    wait_indicators(&server, 6.0).await;
    let probe = |n: u32| {
        ndjson(&[
            json!({"ts": chrono_now(), "host": "h", "src_ip": "192.0.2.99", "message": format!("probe {n}")}),
        ])
    };
    ingest(&server, &acme, probe(1)).await;
    assert_eq!(wait_count(&server, &acme, "detections", 6).await, 6);
    wait_indicators(&server, 5.0).await;
    let deleted = delete(&server, "/api/detections/intel/feed", &acme);
    assert_eq!(deleted.status, 204);
    wait_indicators(&server, 1.0).await;
    ingest(&server, &acme, probe(2)).await;
    ingest(&server, &acme, ndjson(&lines)).await;
    assert_eq!(wait_count(&server, &acme, "logs", 18).await, 18);
    assert_eq!(
        count_now(&server, &acme).await,
        6,
        "nothing matches once expired and deleted"
    );
    server.stop();
}

async fn count_now(server: &Server, key: &str) -> u64 {
    rows(server, key, "SELECT count(*) AS n FROM detections").await[0]["n"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn scheduled_sql_alerts_run_on_schedule_and_fire_on_their_condition() {
    let env = Env::new()
        .set("SECURENET_API__DETECTIONS__MIN_ALERT_INTERVAL_MS", "1000")
        .set("SECURENET_PIPELINE__ALERTS__TICK_MS", "200");
    let acme = env.org_with_key("acme");
    let globex = env.org_with_key("globex");
    let server = env.serve();
    let failures =
        "SELECT count(*) AS n FROM logs WHERE app = 'sshd' AND message LIKE '%Failed password%'";
    let alert = |name: &str, sql: &str, op: &str, value: f64| json!({"name": name, "sql": sql, "every": "1s", "condition": {"op": op, "value": value}, "severity": "critical"});

    // Refused at once, each with its reason.
    for (body, status, says) in [
        (
            alert("x", "SELECT count(*) FROM nowhere", "gt", 1.0),
            400,
            "query refused",
        ),
        (
            alert("x", "DROP TABLE logs", "gt", 1.0),
            400,
            "query refused",
        ),
        (
            alert("x", "SELECT 1; SELECT 2", "gt", 1.0),
            400,
            "query refused",
        ),
        (alert("x", failures, "about", 1.0), 400, "condition.op"),
        (
            json!({"name": "x", "sql": failures, "every": "1ms", "condition": {"op": "gt", "value": 1}}),
            400,
            "every",
        ),
        (
            json!({"name": "x", "sql": failures, "every": "1s", "condition": {"op": "gt", "value": 1}, "severity": "urgent"}),
            400,
            "severity",
        ),
        (
            json!({"name": "", "sql": failures, "every": "1s", "condition": {"op": "gt", "value": 1}}),
            400,
            "name",
        ),
    ] {
        let r = post_json(&server, "/api/detections/alerts", &acme, &body);
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert!(r.body.contains(says), "{says:?} not in {}", r.body);
    }
    let r = post_json(
        &server,
        "/api/detections/alerts",
        &acme,
        &alert("SSH failures", failures, "gte", 3.0),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["alert"]["id"].as_str().unwrap().to_string();
    let r = post_json(
        &server,
        "/api/detections/alerts",
        &acme,
        &alert("Quiet", failures, "gt", 1000.0),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let quiet = r.json()["alert"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        get(&server, &format!("/api/detections/alerts/{id}"), &globex).status,
        404
    );

    // Below the threshold: runs, does not fire.
    let lines: Vec<Value> = (0..4)
        .map(|i| failure(&chrono_now(), &format!("203.0.113.{i}"), "root"))
        .collect();
    let (status, _) = ingest(&server, &acme, ndjson(&lines[..2])).await;
    assert_eq!(status, 200);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let a = get(&server, &format!("/api/detections/alerts/{id}"), &acme).json();
        if a["alert"]["last_value"] == 2.0 {
            assert!(a["alert"]["last_fired_at"].is_null(), "{a}");
            break;
        }
        assert!(Instant::now() < until, "the alert did not run: {a}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // globex's failures are not acme's.
    let (status, _) = ingest(&server, &globex, ndjson(&lines)).await;
    assert_eq!(status, 200);
    let (status, _) = ingest(&server, &acme, ndjson(&lines[2..3])).await;
    assert_eq!(status, 200);
    assert_eq!(
        wait_count(
            &server,
            &acme,
            "detections WHERE source_kind = 'sql_alert'",
            1
        )
        .await,
        1
    );
    let found = rows(
        &server,
        &acme,
        "SELECT rule_id, level, message, context FROM detections WHERE source_kind = 'sql_alert'",
    )
    .await;
    assert_eq!(found[0]["rule_id"], format!("alert:{id}"));
    assert_eq!(found[0]["level"], "critical");
    let context: Value = serde_json::from_str(found[0]["context"].as_str().unwrap()).unwrap();
    assert_eq!(context["value"], 3.0);
    assert_eq!(context["rows"][0]["n"], 3);
    let a = get(&server, &format!("/api/detections/alerts/{id}"), &acme).json();
    assert!(a["alert"]["last_fired_at"].is_string(), "{a}");
    let notes = get(&server, "/api/notifications", &acme).json();
    assert!(
        notes["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["kind"] == "sql_alert" && n["severity"] == "critical"),
        "{notes}"
    );
    let q = get(&server, &format!("/api/detections/alerts/{quiet}"), &acme).json();
    assert!(
        q["alert"]["last_run_at"].is_string() && q["alert"]["last_fired_at"].is_null(),
        "{q}"
    );
    assert_eq!(
        rows(&server, &globex, "SELECT count(*) AS n FROM detections").await[0]["n"],
        0
    );

    // Disabled, it stops running; deleted, it is gone.
    let r = patch_json(
        &server,
        &format!("/api/detections/alerts/{id}"),
        &acme,
        &json!({"enabled": false}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let last = r.json()["alert"]["last_run_at"].clone();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        get(&server, &format!("/api/detections/alerts/{id}"), &acme).json()["alert"]["last_run_at"],
        last
    );
    let r = delete(&server, &format!("/api/detections/alerts/{id}"), &acme);
    assert_eq!(r.status, 204);
    assert_eq!(
        get(&server, &format!("/api/detections/alerts/{id}"), &acme).status,
        404
    );
    server.stop();
}

const CLIENT_RULE: &str = r#"title: Client from a watched range
id: watched-client
level: medium
logsource:
  category: webserver
detection:
  sel:
    ClientIP|cidr: 203.0.113.0/24
  condition: sel
"#;

/// `pipeline.rules.fields` maps a deployment's own field names: uploads,
/// the stream and `securenet sigma` all read it.
#[tokio::test]
async fn a_configured_field_map_applies_to_the_stream_and_the_sigma_command() {
    let env = Env::new()
        .set("SECURENET_PIPELINE__RULES__REFRESH_MS", "200")
        .set(
            "SECURENET_PIPELINE__RULES__FIELDS__CLIENTIP",
            "structured_data:client|clientAddr",
        );
    let acme = env.org_with_key("acme");
    let server = env.serve();
    let r = post_json(
        &server,
        "/api/detections/rules",
        &acme,
        &json!({"yaml": CLIENT_RULE}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    wait_rules_loaded(&server, 1.0).await;
    let lines = vec![
        json!({"ts": chrono_now(), "host": "web-1", "app": "nginx", "client": "203.0.113.5", "message": "GET /admin 403"}),
        json!({"ts": chrono_now(), "host": "web-1", "app": "nginx", "clientAddr": "203.0.113.9", "message": "GET /login 200"}),
        json!({"ts": chrono_now(), "host": "web-1", "app": "nginx", "client": "198.51.100.5", "message": "GET / 200"}),
    ];
    let (status, body) = ingest(&server, &acme, ndjson(&lines)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(wait_count(&server, &acme, "logs", 3).await, 3);
    assert_eq!(wait_count(&server, &acme, "detections", 2).await, 2);
    server.stop();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client.yml"), CLIENT_RULE).unwrap();
    let logs = dir.path().join("logs.ndjson");
    std::fs::write(&logs, ndjson(&lines)).unwrap();
    let args = [
        "sigma",
        "match",
        "--rule",
        dir.path().to_str().unwrap(),
        logs.to_str().unwrap(),
    ];
    assert_eq!(env.cli(&args).lines().count(), 2);
    // Without the mapping, ClientIP is a key the records lack.
    assert_eq!(Env::new().cli(&args).lines().count(), 0);
    let bad = Env::new().set("SECURENET_PIPELINE__RULES__FIELDS__CLIENTIP", "raw");
    let out = bad.command(&args).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pipeline.rules.fields"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SigmaHQ-style: the selection is only words, the logsource says whose.
const SSHD_WORDS: &str = r#"title: Failed password (sshd only)
id: sshd-failed-password-words
level: low
logsource:
  product: linux
  service: sshd
detection:
  keywords:
    - 'Failed password'
  condition: keywords
"#;

/// A rule's `logsource` selects the records it sees, in the stream and in
/// its backtest alike: the same words from another program do not match.
#[tokio::test]
async fn a_rules_logsource_selects_the_records_it_sees_in_the_stream_and_the_backtest() {
    let env = Env::new().set("SECURENET_PIPELINE__RULES__REFRESH_MS", "200");
    let acme = env.org_with_key("acme");
    let server = env.serve();
    let r = post_json(
        &server,
        "/api/detections/rules",
        &acme,
        &json!({"yaml": SSHD_WORDS}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    wait_rules_loaded(&server, 1.0).await;
    let ts = chrono_now();
    let lines = vec![
        json!({"ts": ts, "host": "bastion-1", "app": "sshd", "message": "Failed password for root from 203.0.113.7 port 52211 ssh2"}),
        // OpenSSH 9.8+: per-connection processes are sshd-session.
        json!({"ts": ts, "host": "bastion-2", "app": "sshd-session", "message": "Failed password for invalid user admin from 203.0.113.8 port 40110 ssh2"}),
        // Same words, other programs: a web app's login, a test runner.
        json!({"ts": ts, "host": "web-1", "app": "nginx", "message": "Failed password for admin (basic auth) from 203.0.113.9"}),
        json!({"ts": ts, "host": "ci-1", "app": "pytest", "message": "test_login: Failed password branch covered"}),
    ];
    let (status, body) = ingest(&server, &acme, ndjson(&lines)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(wait_count(&server, &acme, "logs", 4).await, 4);
    assert_eq!(wait_count(&server, &acme, "detections", 2).await, 2);
    let hosts = rows(&server, &acme, "SELECT host FROM detections ORDER BY host").await;
    assert_eq!(
        hosts,
        [json!({"host": "bastion-1"}), json!({"host": "bastion-2"})]
    );
    let r = post_json(
        &server,
        "/api/detections/rules/sshd-failed-password-words/test",
        &acme,
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let test = r.json();
    assert_eq!(test["rows_scanned"], 4, "{test}");
    assert_eq!(test["matched"], 2, "{test}");
    server.stop();
}

const CRITICAL_SSH: &str = "title: Critical finding on SSH
id: critical-ssh-finding
level: critical
logsource:
  category: vulnerability
detection:
  sel:
    DestinationPort: 22
    cvss|gte: 9
  terrapin:
    vulnerability.id: CVE-2023-48795
  condition: sel or terrapin
";

/// Rules over scan findings (`logsource: {category: vulnerability}`): a
/// scan report's findings meet them in the stream, detections carry the
/// finding, the backtest over stored findings finds the same, and a rule
/// naming a field findings do not have is refused at upload.
#[tokio::test]
async fn rules_over_scan_findings_run_in_the_stream_and_backtest_the_same() {
    let env = Env::new().set("SECURENET_PIPELINE__RULES__REFRESH_MS", "200");
    let acme = env.org_with_key("acme");
    let server = env.serve();
    let r = post_json(
        &server,
        "/api/detections/rules",
        &acme,
        &json!({ "yaml": CRITICAL_SSH }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let bad = CRITICAL_SSH
        .replace("critical-ssh-finding", "bad")
        .replace("DestinationPort", "CommandLine");
    let r = post_json(
        &server,
        "/api/detections/rules",
        &acme,
        &json!({ "yaml": bad }),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("is not a finding field"),
        "the refusal names the problem: {}",
        r.body
    );
    wait_rules_loaded(&server, 1.0).await;

    let now = chrono::Utc::now().to_rfc3339();
    let report = json!({"scan_id": "weekly-49", "scanner": "openvas 22.4", "status": "completed",
        "started": now, "finished": now, "hosts": [
        {"ip": "10.7.0.5", "hostname": "bastion", "status": "up", "findings": [
            {"port": 22, "protocol": "tcp", "service": "ssh", "product": "OpenSSH 7.2",
             "cvss": 9.8, "title": "OpenSSH pre-auth RCE"},
            {"port": 22, "protocol": "tcp", "service": "ssh", "product": "OpenSSH 9.2",
             "cvss": 5.9, "title": "Terrapin prefix truncation", "cve": "CVE-2023-48795"},
            {"port": 443, "protocol": "tcp", "service": "https", "cvss": 9.1, "title": "TLS RCE"},
            {"port": 22, "protocol": "tcp", "service": "ssh", "severity": "low", "title": "ssh banner"}]}]});
    let r = crate::support::post(
        &server,
        "/api/ingest/scans",
        &acme,
        "application/json",
        &report.to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    let mut stream = Vec::new();
    for _ in 0..150 {
        stream = get(
            &server,
            "/api/detections?rule_id=critical-ssh-finding",
            &acme,
        )
        .json()["detections"]
            .as_array()
            .unwrap()
            .clone();
        if stream.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut titles: Vec<&str> = stream
        .iter()
        .map(|d| d["message"].as_str().unwrap())
        .collect();
    titles.sort();
    assert_eq!(
        titles,
        ["OpenSSH pre-auth RCE", "Terrapin prefix truncation"],
        "{stream:#?}"
    );
    for d in &stream {
        assert_eq!(d["source_kind"], "findings", "{d}");
        assert_eq!(d["host"], "10.7.0.5");
        assert_eq!(d["level"], "critical");
        assert_eq!(d["context"]["port"], "22", "{d}");
    }
    assert!(
        stream
            .iter()
            .any(|d| d["context"]["cve"] == "CVE-2023-48795")
    );

    let test = post_json(
        &server,
        "/api/detections/rules/critical-ssh-finding/test",
        &acme,
        &json!({}),
    );
    assert_eq!(test.status, 200, "{}", test.body);
    let test = test.json();
    assert_eq!(test["rows_scanned"], 4, "{test}");
    let mut backtest: Vec<&str> = test["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    backtest.sort();
    assert_eq!(backtest, titles, "the backtest finds what the stream found");
    server.stop();
}
