//! Notification delivery against the receivers `scripts/test.sh` starts (a
//! webhook listener and an SMTP sink): signed webhooks, retries with
//! backoff, giving up, severity thresholds, email, the delivery log, plan
//! gating and bad input.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Env, Server, curl, get, post_json, run, unique};

fn receiver() -> String {
    std::env::var("SECURENET_TEST_RECEIVER_HTTP").expect(
        "SECURENET_TEST_RECEIVER_HTTP is unset: run ./scripts/test.sh, which starts the receivers",
    )
}

fn smtp() -> String {
    std::env::var("SECURENET_TEST_SMTP")
        .expect("SECURENET_TEST_SMTP is unset: run ./scripts/test.sh")
}

fn recorded(what: &str) -> Vec<Value> {
    curl(&[&format!("{}/{what}", receiver())])
        .json()
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until `pred` holds over the receiver's `what` list.
async fn wait_for(what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..300 {
        let items = recorded(what);
        if pred(&items) {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "timed out waiting on the receiver's {what}: {:?}",
        recorded(what)
    );
}

fn hmac_hex(secret: &str, payload: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p");
    std::fs::write(&file, payload).unwrap();
    let out = run(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-hmac",
            secret,
            "-r",
            file.to_str().unwrap(),
        ],
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn channel(
    server: &Server,
    key: &str,
    kind: &str,
    target: &str,
    min: &str,
) -> (String, Option<String>) {
    let r = post_json(
        server,
        "/api/notifications/channels",
        key,
        &json!({"kind": kind, "target": target, "min_severity": min}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    (
        v["channel"]["id"].as_str().unwrap().to_string(),
        v["secret"].as_str().map(str::to_string),
    )
}

fn scan(server: &Server, key: &str, id: &str) {
    let report = json!({"scan_id": id, "scanner": "nmap 7.93", "status": "completed", "hosts": [
        {"ip": "10.3.0.1", "status": "up", "findings": [
            {"port": 443, "protocol": "tcp", "title": "OpenSSL RCE", "cvss": 9.8, "cve": "CVE-2099-0002"},
            {"port": 8080, "protocol": "tcp", "title": "Outdated proxy", "cvss": 7.5},
            {"port": 22, "protocol": "tcp", "title": "ssh open", "severity": "low"}]}]});
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
}

#[tokio::test]
async fn findings_reach_webhooks_and_email_with_signatures_retries_and_a_delivery_log() {
    let u = unique();
    let env = Env::new()
        .set("SECURENET_API__NOTIFY__POLL_MS", "100")
        .set("SECURENET_API__NOTIFY__BACKOFF_MS", "100")
        .set("SECURENET_API__NOTIFY__MAX_ATTEMPTS", "3")
        .set("SECURENET_API__NOTIFY__ALLOW_PRIVATE_TARGETS", "true")
        .set(
            "SECURENET_API__NOTIFY__SMTP__URL",
            &format!("smtp://{}", smtp()),
        )
        .set(
            "SECURENET_API__NOTIFY__SMTP__FROM",
            "SecureNet <alerts@securenet.test>",
        );
    let key = env.org_with_key("notifyco");
    let starter = env.org_on_plan("tinyco", "starter", &[]);
    let server = env.serve();
    let base = receiver();

    let (ok_id, secret) = channel(&server, &key, "webhook", &format!("{base}/{u}/ok"), "high");
    let secret = secret.expect("a webhook gets a secret");
    let (flaky_id, _) = channel(
        &server,
        &key,
        "webhook",
        &format!("{base}/fail-2/{u}/flaky"),
        "critical",
    );
    let (dead_id, _) = channel(
        &server,
        &key,
        "webhook",
        &format!("{base}/fail-99/{u}/dead"),
        "critical",
    );
    let mail_to = format!("ops-{u}@example.test");
    let (mail_id, no_secret) = channel(&server, &key, "email", &mail_to, "high");
    assert!(no_secret.is_none());
    let listed = get(&server, "/api/notifications/channels", &key);
    assert_eq!(listed.json()["channels"].as_array().unwrap().len(), 4);
    assert!(!listed.body.contains(&secret), "secrets are shown once");

    // Bad input, plan gating, roles.
    for (body, want) in [
        (json!({"kind": "sms", "target": "+1555"}), 400),
        (json!({"kind": "webhook", "target": "ftp://x/y"}), 400),
        (
            json!({"kind": "webhook", "target": format!("{base}/x"), "min_severity": "urgent"}),
            400,
        ),
        (json!({"kind": "email", "target": "not an address"}), 400),
    ] {
        assert_eq!(
            post_json(&server, "/api/notifications/channels", &key, &body).status,
            want,
            "{body}"
        );
    }
    let r = post_json(
        &server,
        "/api/notifications/channels",
        &starter,
        &json!({"kind": "webhook", "target": format!("{base}/{u}/starter")}),
    );
    assert_eq!(r.status, 402, "{}", r.body);
    let r = post_json(
        &server,
        "/api/notifications/channels",
        &starter,
        &json!({"kind": "email", "target": format!("tiny-{u}@example.test")}),
    );
    assert_eq!(
        r.status, 201,
        "email alerts are on the starter plan: {}",
        r.body
    );

    // One scan: a critical and a high finding notify; the low one does not.
    scan(&server, &key, &format!("scan-{u}"));
    // Another organization's findings never reach these channels.
    scan(&server, crate::support::DEFAULT_KEY, &format!("other-{u}"));

    let hooks = wait_for("requests", |r| {
        let mine: Vec<_> = r
            .iter()
            .filter(|x| x["path"].as_str().unwrap().contains(&u))
            .collect();
        mine.iter()
            .filter(|x| x["path"].as_str().unwrap().ends_with("/ok"))
            .count()
            >= 2
            && mine
                .iter()
                .filter(|x| x["path"].as_str().unwrap().ends_with("/flaky"))
                .count()
                >= 3
            && mine
                .iter()
                .filter(|x| x["path"].as_str().unwrap().ends_with("/dead"))
                .count()
                >= 3
    })
    .await;
    let mine: Vec<&Value> = hooks
        .iter()
        .filter(|x| x["path"].as_str().unwrap().contains(&u))
        .collect();
    let ok: Vec<&&Value> = mine
        .iter()
        .filter(|x| x["path"].as_str().unwrap().ends_with("/ok"))
        .collect();
    assert_eq!(ok.len(), 2, "critical and high, once each");
    let mut severities: Vec<String> = ok
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            assert_eq!(body["organization"], "notifyco");
            assert_eq!(body["event"], "notification");
            // The signature verifies with the secret shown at creation.
            let h = &r["headers"];
            let sig = h["x-securenet-signature"].as_str().unwrap();
            let (t, v1) = sig.split_once(',').unwrap();
            let t = t.strip_prefix("t=").unwrap();
            assert_eq!(
                v1.strip_prefix("v1=").unwrap(),
                hmac_hex(&secret, &format!("{t}.{}", r["body"].as_str().unwrap()))
            );
            assert_eq!(h["x-securenet-delivery"], body["id"]);
            body["notification"]["severity"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    severities.sort();
    assert_eq!(severities, ["critical", "high"]);
    // Retries keep the delivery id; the flaky one got the critical only.
    let flaky: Vec<&&Value> = mine
        .iter()
        .filter(|x| x["path"].as_str().unwrap().ends_with("/flaky"))
        .collect();
    assert_eq!(flaky.len(), 3, "two 500s, then delivered");
    assert!(flaky.iter().all(
        |r| r["headers"]["x-securenet-delivery"] == flaky[0]["headers"]["x-securenet-delivery"]
    ));
    assert!(flaky[0]["body"].as_str().unwrap().contains("\"critical\""));
    assert!(
        !hooks
            .iter()
            .any(|r| r["body"].as_str().unwrap().contains(&format!("other-{u}")))
    );

    // Email: both notifications, to the address, from the configured sender.
    let mail = wait_for("mail", |m| {
        m.iter().filter(|x| x["to"][0] == mail_to).count() >= 2
    })
    .await;
    let mine: Vec<&Value> = mail.iter().filter(|x| x["to"][0] == mail_to).collect();
    assert_eq!(mine.len(), 2);
    assert!(
        mine.iter().any(|m| m["subject"]
            .as_str()
            .unwrap()
            .starts_with("[SecureNet] critical: OpenSSL RCE on 10.3.0.1:443")),
        "{mine:?}"
    );
    assert_eq!(mine[0]["from"], "alerts@securenet.test");
    assert!(mine[0]["body"].as_str().unwrap().contains("notifyco"));

    // The delivery log: delivered, delivered after 3 attempts, failed after
    // 3, and skipped (below a channel's threshold).
    let mut log = Vec::new();
    for _ in 0..100 {
        log = get(&server, "/api/notifications/deliveries?limit=500", &key).json()["deliveries"]
            .as_array()
            .unwrap()
            .clone();
        if log.iter().filter(|d| d["status"] == "pending").count() == 0 && log.len() >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let of = |channel: &str| -> Vec<&Value> {
        log.iter().filter(|d| d["channel_id"] == channel).collect()
    };
    assert!(
        of(&ok_id)
            .iter()
            .all(|d| d["status"] == "delivered" && d["attempts"] == 1),
        "{log:?}"
    );
    let flaky_log = of(&flaky_id);
    assert_eq!(
        flaky_log
            .iter()
            .filter(|d| d["status"] == "delivered" && d["attempts"] == 3)
            .count(),
        1,
        "{flaky_log:?}"
    );
    assert_eq!(
        flaky_log
            .iter()
            .filter(|d| d["status"] == "skipped")
            .count(),
        1,
        "the high one is below critical"
    );
    let dead = of(&dead_id);
    let failed = dead
        .iter()
        .find(|d| d["status"] == "failed")
        .expect("given up");
    assert_eq!(
        (failed["attempts"].as_u64(), failed["last_status"].as_u64()),
        (Some(3), Some(500))
    );
    assert!(failed["last_error"].as_str().unwrap().contains("500"));
    assert_eq!(
        of(&mail_id)
            .iter()
            .filter(|d| d["status"] == "delivered")
            .count(),
        2
    );
    // Viewers see neither channels nor the log; another org sees none of it.
    let viewer = post_json(
        &server,
        "/api/orgs/current/api-keys",
        &key,
        &json!({"name": "v", "role": "viewer"}),
    )
    .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        get(&server, "/api/notifications/deliveries", &viewer).status,
        403
    );
    let theirs = get(
        &server,
        "/api/notifications/deliveries",
        crate::support::DEFAULT_KEY,
    );
    assert!(!theirs.body.contains(&ok_id), "{}", theirs.body);

    // The channel test sends now and reports.
    let t = post_json(
        &server,
        &format!("/api/notifications/channels/{ok_id}/test"),
        &key,
        &json!({}),
    );
    assert_eq!(t.json()["delivered"], true, "{}", t.body);
    let t = post_json(
        &server,
        &format!("/api/notifications/channels/{dead_id}/test"),
        &key,
        &json!({}),
    );
    assert_eq!(
        (t.json()["delivered"].as_bool(), t.json()["status"].as_u64()),
        (Some(false), Some(500))
    );
    let r = curl(&[
        "-X",
        "DELETE",
        &server.url(&format!("/api/notifications/channels/{dead_id}")),
        "-H",
        &format!("Authorization: Bearer {key}"),
    ]);
    assert_eq!(r.status, 204);
    assert_eq!(
        get(&server, "/api/notifications/channels", &key).json()["channels"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// White-label (enterprise and MSP plans): an organization's name, logo and
/// sender replace SecureNet's in its webhooks and e-mails; an MSP's apply to
/// its children without their own; other plans get `402`; a downgrade drops
/// the branding at the next delivery.
#[tokio::test]
async fn white_label_branding_reaches_webhooks_and_email_and_an_msps_children() {
    let u = unique();
    let env = Env::new()
        .set("SECURENET_API__NOTIFY__ALLOW_PRIVATE_TARGETS", "true")
        .set(
            "SECURENET_API__NOTIFY__SMTP__URL",
            &format!("smtp://{}", smtp()),
        )
        .set(
            "SECURENET_API__NOTIFY__SMTP__FROM",
            "SecureNet <alerts@securenet.test>",
        );
    let brandco = env.org_on_plan("brandco", "enterprise", &[]);
    let msp = env.org_on_plan("brandmsp", "msp", &[]);
    let plain = env.org_on_plan("plainco", "business", &[]);
    let server = env.serve();
    let r = post_json(
        &server,
        "/api/orgs",
        &msp,
        &json!({"id": "brandkid", "name": "Kid", "owner_email": "it@kid.test", "plan": "professional"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let kid = r.json()["api_key"]["key"].as_str().unwrap().to_string();

    let put = |key: &str, body: Value| {
        crate::support::send(
            &server,
            "PUT",
            "/api/orgs/current/branding",
            key,
            Some(("application/json", &body.to_string())),
        )
    };
    let acme = json!({"name": "Acme Shield", "logo_url": "https://cdn.acme.test/logo.png",
        "primary_color": "#0A1B2C", "sender_name": "Acme SOC", "sender_address": "soc@acme.test"});
    let r = put(&brandco, acme.clone());
    assert_eq!(r.status, 200, "{}", r.body);
    let r = put(&plain, acme.clone());
    assert_eq!(r.status, 402, "{}", r.body);
    assert_eq!(r.json()["feature"], "white_label");
    assert_eq!(r.json()["required_plan"], "enterprise");
    let r = put(&brandco, json!({"name": "Acme", "primary_color": "blue"}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("primary_color"), "{}", r.body);
    assert_eq!(put(&msp, json!({"name": "Guardian MSP"})).status, 200);
    let seen = get(&server, "/api/orgs/current/branding", &kid).json();
    assert_eq!(seen["branding"], Value::Null, "{seen}");
    assert_eq!(
        seen["applied"]["branding"]["name"], "Guardian MSP",
        "{seen}"
    );
    assert_eq!(seen["applied"]["from"], "brandmsp", "{seen}");

    let base = receiver();
    let test = |key: &str, id: &str| {
        let r = post_json(
            &server,
            &format!("/api/notifications/channels/{id}/test"),
            key,
            &json!({}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["delivered"], true, "{}", r.body);
    };
    let hook = |path: &str| {
        recorded("requests")
            .into_iter()
            .filter(|r| r["path"] == path)
            .map(|r| serde_json::from_str::<Value>(r["body"].as_str().unwrap()).unwrap())
            .collect::<Vec<Value>>()
    };
    let acme_hook = format!("/{u}/acme");
    let (acme_id, _) = channel(
        &server,
        &brandco,
        "webhook",
        &format!("{base}{acme_hook}"),
        "low",
    );
    let mail_to = format!("soc-{u}@example.test");
    let (mail_id, _) = channel(&server, &brandco, "email", &mail_to, "low");
    let kid_hook = format!("/{u}/kid");
    let (kid_id, _) = channel(
        &server,
        &kid,
        "webhook",
        &format!("{base}{kid_hook}"),
        "low",
    );
    test(&brandco, &acme_id);
    test(&brandco, &mail_id);
    test(&kid, &kid_id);

    let sent = hook(&acme_hook);
    assert_eq!(sent[0]["source"]["name"], "Acme Shield", "{sent:?}");
    assert_eq!(
        sent[0]["source"]["logo_url"],
        "https://cdn.acme.test/logo.png"
    );
    assert_eq!(sent[0]["source"]["primary_color"], "#0A1B2C");
    assert_eq!(hook(&kid_hook)[0]["source"]["name"], "Guardian MSP");
    assert_eq!(hook(&kid_hook)[0]["source"]["branded_by"], "brandmsp");
    let mail = wait_for("mail", |m| m.iter().any(|x| x["to"][0] == mail_to)).await;
    let mail = mail.iter().find(|x| x["to"][0] == mail_to).unwrap();
    assert_eq!(
        mail["subject"], "[Acme Shield] low: Test notification",
        "{mail}"
    );
    assert_eq!(mail["from"], "soc@acme.test", "{mail}");
    assert!(
        mail["from_header"].as_str().unwrap().contains("Acme SOC"),
        "{mail}"
    );
    assert!(
        mail["body"].as_str().unwrap().contains("Acme Shield"),
        "{mail}"
    );

    // Downgraded below enterprise: SecureNet's name at the next delivery.
    let r = post_json(
        &server,
        "/api/billing/upgrade",
        &brandco,
        &json!({"plan": "business"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    test(&brandco, &acme_id);
    let sent = hook(&acme_hook);
    assert_eq!(
        sent.last().unwrap()["source"],
        json!({"name": "SecureNet"}),
        "{sent:?}"
    );
    server.stop();
}
