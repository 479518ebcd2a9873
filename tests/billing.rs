//! Billing through the public interface: the catalogue, limits, plan
//! changes and invoices over real recorded usage, and the Stripe webhook
//! with signatures made by openssl (valid, wrong secret, stale, replayed).

use chrono::{Datelike, Months, NaiveDate, Utc};
use serde_json::{Value, json};

use crate::support::{Env, Reply, Server, curl, download, get, post_json, read_pdf, rows, run};

const STRIPE_SECRET: &str = "whsec_e2e_billing_secret";

fn env() -> Env {
    Env::new().set("SECURENET_API__STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)
}

/// This month's base price for `cents` per month held from today on
/// (prorated by day, half up).
fn prorated_from_today(cents: u64) -> u64 {
    let today = Utc::now().date_naive();
    let first = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap();
    let dim = (first.checked_add_months(Months::new(1)).unwrap() - first).num_days() as u64;
    let days = dim - u64::from(today.day()) + 1;
    (2 * cents * days + dim) / (2 * dim)
}

fn scan_report(scan_id: &str, hosts: usize) -> String {
    let hosts: Vec<Value> = (1..=hosts)
        .map(|i| json!({"ip": format!("10.9.0.{i}"), "status": "up", "findings": []}))
        .collect();
    json!({"scan_id": scan_id, "scanner": "nmap 7.93", "status": "completed", "hosts": hosts})
        .to_string()
}

#[tokio::test]
async fn plans_limits_plan_changes_and_invoices_from_recorded_usage() {
    let env = env();
    let admin = env.org_on_plan("smallco", "starter", &["--allow-overage"]);
    let server = env.serve();
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

    let plans = get(&server, "/api/billing/plans", &viewer).json();
    let table: Vec<(String, u64, u64, u64)> = plans["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().into(),
                p["price_cents"].as_u64().unwrap(),
                p["limits"]["max_devices"].as_u64().unwrap(),
                p["limits"]["max_scans_per_month"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(table[0], ("starter".into(), 9_900, 5, 25));
    assert_eq!(table[4], ("msp".into(), 299_900, 1_000, 10_000));
    assert_eq!(
        plans["overage"],
        json!({"device_cents": 500, "scan_cents": 10})
    );

    // 7 devices in one scan on a 5-device plan (accepted: overage allowed).
    let r = curl(&[
        &server.url("/api/ingest/scans"),
        "-H",
        &format!("Authorization: Bearer {admin}"),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &scan_report("bill-1", 7),
    ]);
    assert_eq!(r.status, 201, "{}", r.body);
    let check = get(
        &server,
        "/api/billing/limits/check?additional_scans=30",
        &viewer,
    )
    .json();
    assert_eq!(check["within_limits"], false, "{check}");
    assert_eq!(check["checks"][0]["used"], 7);
    assert_eq!(check["checks"][0]["overage_units"], 2);
    assert_eq!(check["checks"][1]["used"], 1);
    assert_eq!(check["checks"][1]["overage_cents"], 60); // 31 scans - 25 = 6 × 10
    assert_eq!(check["allowed"], true, "overage allowed: {check}");
    assert_eq!(
        get(
            &server,
            "/api/billing/limits/check?additional_devices=-1",
            &viewer
        )
        .status,
        400
    );

    // The invoice follows the recorded usage: 7 distinct devices, 1 scan.
    let month = Utc::now().format("%Y-%m").to_string();
    for _ in 0..100 {
        let usage = rows(
            &server,
            &viewer,
            "SELECT count(DISTINCT subject) AS d FROM usage WHERE metric = 'devices'",
        )
        .await;
        if usage.first().and_then(|r| r["d"].as_u64()) == Some(7) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let inv = get(
        &server,
        &format!("/api/billing/invoices?month={month}"),
        &viewer,
    )
    .json();
    let inv = &inv["invoices"][0];
    let base = prorated_from_today(9_900);
    assert_eq!(
        (inv["devices"].as_u64(), inv["scans"].as_u64()),
        (Some(7), Some(1)),
        "{inv}"
    );
    assert_eq!(inv["base_cents"].as_u64(), Some(base), "{inv}");
    assert_eq!(
        inv["overage_cents"], 1_000,
        "2 devices over 5, $5 each: {inv}"
    );
    assert_eq!(inv["total_cents"].as_u64(), Some(base + 1_000));
    assert_eq!(inv["status"], "open");

    // Upgrading: members may not; admins may, effective now. Created and
    // upgraded today, so today's plan — the last chosen — is billed, with
    // the new limits (no overage).
    let upgrade = json!({"plan": "professional"});
    assert_eq!(
        post_json(&server, "/api/billing/upgrade", &viewer, &upgrade).status,
        403
    );
    assert_eq!(
        post_json(
            &server,
            "/api/billing/upgrade",
            &admin,
            &json!({"plan": "gold"})
        )
        .status,
        400
    );
    let r = post_json(&server, "/api/billing/upgrade", &admin, &upgrade);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (
            r.json()["previous_plan"].as_str(),
            r.json()["plan"].as_str()
        ),
        (Some("starter"), Some("professional"))
    );
    let current = get(&server, "/api/billing/current-plan", &viewer).json();
    assert_eq!(current["plan"], "professional");
    assert_eq!(current["limits"]["max_devices"], 50);
    assert_eq!(current["history"].as_array().unwrap().len(), 2, "{current}");
    let inv = get(&server, "/api/billing/invoices", &viewer).json();
    let inv = &inv["invoices"][0];
    assert_eq!(inv["month"], month);
    assert_eq!(
        inv["base_cents"].as_u64(),
        Some(prorated_from_today(29_900)),
        "{inv}"
    );
    assert_eq!(inv["overage_cents"], 0);
    assert_eq!(inv["plan"], "professional");
    // The limit check uses the new plan too.
    let check = get(&server, "/api/billing/limits/check", &viewer).json();
    assert_eq!(check["within_limits"], true, "{check}");
    assert_eq!(
        get(&server, "/api/billing/invoices?month=2999-01", &viewer).status,
        400
    );
    assert_eq!(
        get(&server, "/api/billing/invoices?month=1999-01", &viewer).json()["invoices"],
        json!([])
    );
}

/// `Stripe-Signature` for `body` at `t`, computed by openssl.
fn openssl_signature(secret: &str, t: i64, body: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload");
    std::fs::write(&file, format!("{t}.{body}")).unwrap();
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
    let hex = String::from_utf8(out.stdout).unwrap();
    format!("t={t},v1={}", hex.split_whitespace().next().unwrap())
}

fn webhook(server: &Server, signature: Option<&str>, body: &str) -> Reply {
    let mut args = vec![
        server.url("/api/billing/webhook/stripe"),
        "-H".into(),
        "Content-Type: application/json".into(),
    ];
    if let Some(s) = signature {
        args.extend(["-H".into(), format!("Stripe-Signature: {s}")]);
    }
    args.extend(["--data-binary".into(), body.to_string()]);
    curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> String {
    json!({"id": id, "object": "event", "type": kind, "created": created, "data": {"object": object}}).to_string()
}

#[tokio::test]
async fn the_stripe_webhook_verifies_signatures_and_applies_each_event_once() {
    let env = env();
    let admin = env.org_on_plan("payco", "starter", &[]);
    let server = env.serve();
    let now = Utc::now().timestamp();
    let plan_of = || get(&server, "/api/billing/current-plan", &admin).json();

    let created = event(
        "evt_sub_1",
        "customer.subscription.created",
        now - 10,
        json!({"id": "sub_1", "customer": "cus_1", "status": "active",
               "metadata": {"org_id": "payco"},
               "items": {"data": [{"price": {"lookup_key": "business"}}]}}),
    );
    // Refused: no signature, wrong secret, stale timestamp, tampered body.
    assert_eq!(webhook(&server, None, &created).status, 400);
    let wrong = openssl_signature("whsec_not_ours", now, &created);
    assert_eq!(webhook(&server, Some(&wrong), &created).status, 400);
    let stale = openssl_signature(STRIPE_SECRET, now - 301, &created);
    let r = webhook(&server, Some(&stale), &created);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("timestamp"), "{}", r.body);
    let good = openssl_signature(STRIPE_SECRET, now, &created);
    assert_eq!(
        webhook(&server, Some(&good), &created.replace("business", "msp")).status,
        400
    );
    assert_eq!(plan_of()["plan"], "starter", "nothing applied yet");

    let r = webhook(&server, Some(&good), &created);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["result"]["outcome"], "applied", "{}", r.body);
    let current = plan_of();
    assert_eq!(current["plan"], "business");
    assert_eq!(current["subscription"]["status"], "active");
    assert_eq!(current["subscription"]["stripe_subscription_id"], "sub_1");
    // The plan change Stripe drove is in the organization's audit log.
    let log = get(&server, "/api/audit-log", &admin).json();
    assert!(
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["key_id"] == "stripe:evt_sub_1"
                && e["path"].as_str().unwrap().contains("starter → business")),
        "{log}"
    );

    // A replay (same event, fresh signature) changes nothing.
    let operator_downgrade = post_json(
        &server,
        "/api/billing/upgrade",
        &admin,
        &json!({"plan": "professional"}),
    );
    assert_eq!(operator_downgrade.status, 200);
    let replay = openssl_signature(STRIPE_SECRET, now + 1, &created);
    let r = webhook(&server, Some(&replay), &created);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["result"]["outcome"], "duplicate");
    assert_eq!(
        plan_of()["plan"],
        "professional",
        "the replay did not re-apply business"
    );

    // An update older than the applied one is ignored (out-of-order delivery);
    // a newer one applies, found by subscription id.
    let older = event(
        "evt_sub_0",
        "customer.subscription.updated",
        now - 60,
        json!({"id": "sub_1", "customer": "cus_1", "status": "trialing", "metadata": {"plan": "enterprise"}}),
    );
    let r = webhook(
        &server,
        Some(&openssl_signature(STRIPE_SECRET, now, &older)),
        &older,
    );
    assert_eq!(r.json()["result"]["outcome"], "ignored", "{}", r.body);
    assert_eq!(plan_of()["plan"], "professional");
    let newer = event(
        "evt_sub_2",
        "customer.subscription.updated",
        now,
        json!({"id": "sub_1", "customer": "cus_1", "status": "active", "metadata": {"plan": "enterprise"}}),
    );
    let r = webhook(
        &server,
        Some(&openssl_signature(STRIPE_SECRET, now, &newer)),
        &newer,
    );
    assert_eq!(r.json()["result"]["outcome"], "applied", "{}", r.body);
    assert_eq!(plan_of()["plan"], "enterprise");

    // Invoices: failed then paid, attached to their month.
    let month = Utc::now().format("%Y-%m").to_string();
    for (id, kind, status) in [
        ("evt_inv_1", "invoice.payment_failed", "past_due"),
        ("evt_inv_2", "invoice.paid", "active"),
    ] {
        let body = event(
            id,
            kind,
            now + 1,
            json!({"id": "in_1", "subscription": "sub_1", "customer": "cus_1", "amount_due": 199_900,
                   "amount_paid": 199_900, "metadata": {"period": month}}),
        );
        let r = webhook(
            &server,
            Some(&openssl_signature(STRIPE_SECRET, now, &body)),
            &body,
        );
        assert_eq!(r.json()["result"]["outcome"], "applied", "{}", r.body);
        assert_eq!(plan_of()["subscription"]["status"], status);
    }
    let inv = get(
        &server,
        &format!("/api/billing/invoices?month={month}"),
        &admin,
    )
    .json();
    assert_eq!(inv["invoices"][0]["payment"]["status"], "paid", "{inv}");
    assert_eq!(inv["invoices"][0]["payment"]["amount_cents"], 199_900);

    // Unknown types and organizations are acknowledged, not applied.
    let other = event("evt_x", "charge.refunded", now, json!({"id": "ch_1"}));
    let r = webhook(
        &server,
        Some(&openssl_signature(STRIPE_SECRET, now, &other)),
        &other,
    );
    assert_eq!(
        (r.status, r.json()["result"]["outcome"].as_str()),
        (200, Some("ignored"))
    );
    let deleted = event(
        "evt_sub_3",
        "customer.subscription.deleted",
        now + 2,
        json!({"id": "sub_1", "customer": "cus_1", "status": "canceled"}),
    );
    let r = webhook(
        &server,
        Some(&openssl_signature(STRIPE_SECRET, now, &deleted)),
        &deleted,
    );
    assert_eq!(r.json()["result"]["outcome"], "applied", "{}", r.body);
    let current = plan_of();
    assert_eq!(current["subscription"]["status"], "canceled");
    assert_eq!(
        current["plan"], "enterprise",
        "the plan stays until changed"
    );
}

/// Devices count per billing month and can be retired; the platform admin
/// sets an organization's own limits and overage (contract terms) by API
/// and CLI, and they hold across plan changes.
#[tokio::test]
async fn devices_can_be_retired_and_the_operator_sets_contract_limits() {
    const OPERATOR: &str = "platform-operator-token-for-billing-tests-01";
    let env = Env::new().set("SECURENET_API__PLATFORM_ADMIN_TOKEN", OPERATOR);
    let key = env.org_on_plan("tinyterms", "starter", &[]);
    let server = env.serve();
    let inventory = |from: u32, to: u32| {
        let devices: Vec<Value> = (from..to)
            .map(|i| json!({"ip": format!("10.7.0.{i}")}))
            .collect();
        post_json(
            &server,
            "/api/ingest/devices",
            &key,
            &json!({ "devices": devices }),
        )
    };
    let r = inventory(1, 6);
    assert_eq!(r.status, 201, "{}", r.body);
    let first = r.json()["device_ids"][0].as_str().unwrap().to_string();
    assert_eq!(inventory(6, 7).status, 402);
    // Retiring one makes room for another this month.
    let r = curl(&[
        "-X",
        "DELETE",
        &server.url(&format!("/api/devices/{first}")),
        "-H",
        &format!("Authorization: Bearer {key}"),
    ]);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(inventory(6, 7).status, 201);
    let check = get(&server, "/api/billing/limits/check", &key).json();
    assert_eq!(check["checks"][0]["used"], 5, "{check}");
    // The operator's own limits for the organization.
    let patch = |body: Value| {
        curl(&[
            "-X",
            "PATCH",
            &server.url("/api/orgs/tinyterms"),
            "-H",
            &format!("Authorization: Bearer {OPERATOR}"),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body.to_string(),
        ])
    };
    let r = patch(json!({"limits": {"max_devices": 8}}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["organization"]["limits"]["max_devices"], 8);
    assert_eq!(inventory(7, 10).status, 201);
    assert_eq!(inventory(10, 11).status, 402);
    // They hold across a plan change.
    let r = post_json(
        &server,
        "/api/billing/upgrade",
        &key,
        &json!({"plan": "professional"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let org = get(&server, "/api/orgs/current", &key).json();
    assert_eq!(org["organization"]["limits"]["max_devices"], 8, "{org}");
    assert_eq!(
        org["organization"]["limits"]["max_scans_per_month"], 250,
        "{org}"
    );
    // Overage can be switched on after creation.
    assert_eq!(patch(json!({"allow_overage": true})).status, 200);
    assert_eq!(inventory(10, 12).status, 201);
    // Only the platform admin sets terms; the tenant's own admin cannot.
    let r = curl(&[
        "-X",
        "PATCH",
        &server.url("/api/orgs/tinyterms"),
        "-H",
        &format!("Authorization: Bearer {key}"),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        "{\"limits\": {\"max_devices\": 1000}}",
    ]);
    assert_eq!(r.status, 403, "{}", r.body);
    // The CLI clears them: the plan's limits again.
    let out = env.cli(&["orgs", "update", "--org", "tinyterms", "--clear-limits"]);
    let org: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(org["limits"]["max_devices"], 50, "{org}");
    assert!(org.get("limits_override").is_none(), "{org}");
}

/// Training data the insights API accepts: numeric features and a label.
fn training_csv(n: usize) -> String {
    let mut out = String::from("attempts,failures,hour,label\n");
    for i in 0..n {
        let bad = i % 10 == 0;
        let (a, f) = if bad {
            (200 + i % 50, 180 + i % 40)
        } else {
            (1 + i % 6, i % 2)
        };
        let label = if bad { "brute_force" } else { "benign" };
        out.push_str(&format!("{a},{f},{},{label}\n", i % 24));
    }
    out
}

/// Every sold feature is checked where it is used, with the same `402`
/// (the feature, the plan, the plan that has it); an upgrade opens it and a
/// downgrade the same day closes it at once — in the API and in the
/// pipeline's streaming models.
#[tokio::test]
async fn plan_features_are_checked_at_use_and_a_same_day_downgrade_stops_them() {
    let env = Env::new();
    let key = env.org_on_plan("featuretest", "starter", &[]);
    let server = env.serve();
    let upload = || {
        crate::support::post(
            &server,
            "/api/insights/models/upload-training-data",
            &key,
            "text/csv",
            &training_csv(300),
        )
    };
    let refused = |r: &Reply, feature: &str, required: &str| {
        assert_eq!(r.status, 402, "{}", r.body);
        let body = r.json();
        assert_eq!(body["code"], "feature_not_in_plan", "{body}");
        assert_eq!(body["feature"], feature, "{body}");
        assert_eq!(body["plan"], "starter", "{body}");
        assert_eq!(body["required_plan"], required, "{body}");
    };
    refused(&upload(), "ml_detection", "professional");
    let train = json!({"dataset_id": "none", "name": "egress"});
    refused(
        &post_json(&server, "/api/insights/models/train", &key, &train),
        "ml_detection",
        "professional",
    );
    refused(
        &post_json(
            &server,
            "/api/notifications/channels",
            &key,
            &json!({"kind": "webhook", "target": "http://127.0.0.1:9/hook"}),
        ),
        "webhooks",
        "professional",
    );
    // The catalogue says what each plan includes.
    let plans = get(&server, "/api/billing/plans", &key).json();
    let starter = &plans["plans"][0];
    assert_eq!(starter["entitlements"], json!([]), "{plans}");
    assert_eq!(
        plans["plans"][4]["entitlements"],
        json!([
            "ml_detection",
            "webhooks",
            "compliance_reports",
            "white_label",
            "reseller"
        ])
    );

    // The pipeline's streaming models pass a starter organization's
    // batches by.
    let not_entitled =
        r#"securenet_pipeline_batches_not_entitled_total{feature="ml_detection",stage="windows"}"#;
    let logs = |tag: &str| {
        (0..20)
            .map(|i| format!("{{\"message\": \"login {tag} {i}\", \"host\": \"h{i}\"}}\n"))
            .collect::<String>()
    };
    let (status, body) = crate::support::ingest(&server, &key, logs("starter")).await;
    assert_eq!(status, 200, "{body}");
    crate::support::wait_count(&server, &key, "logs", 20).await;
    let passed_by = crate::support::metric(&server, not_entitled).await;
    assert!(passed_by >= 1.0, "{passed_by}");

    // Upgrade: the API at once, the pipeline within its plan refresh (5 s).
    let r = post_json(
        &server,
        "/api/billing/upgrade",
        &key,
        &json!({"plan": "professional"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(upload().status, 201);
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    // (Batches handled before the refresh, such as the API calls' metering,
    // may have been passed by meanwhile.)
    let passed_by = crate::support::metric(&server, not_entitled).await;
    let (status, body) = crate::support::ingest(&server, &key, logs("professional")).await;
    assert_eq!(status, 200, "{body}");
    crate::support::wait_count(&server, &key, "logs", 40).await;
    assert_eq!(
        crate::support::metric(&server, not_entitled).await,
        passed_by,
        "a professional organization's batches reach the models"
    );

    // Downgrade the same day: refused at the next call.
    let r = post_json(
        &server,
        "/api/billing/upgrade",
        &key,
        &json!({"plan": "starter"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    refused(&upload(), "ml_detection", "professional");
    server.stop();
}

/// Enterprise and MSP are sold with "1,000+ devices": the 1,001st device is
/// accepted and billed as overage, not refused; business still stops at its
/// limit unless overage is allowed.
#[tokio::test]
async fn enterprise_devices_beyond_a_thousand_are_billed_not_refused() {
    let env = Env::new();
    let big = env.org_on_plan("bigcorp", "enterprise", &[]);
    let mid = env.org_on_plan("midcorp", "business", &[]);
    let server = env.serve();
    let inventory = |key: &str, n: u32| {
        let devices: Vec<Value> = (0..n)
            .map(
                |i| json!({"ip": format!("10.{}.{}.{}", 20 + i / 65536, (i / 256) % 256, i % 256)}),
            )
            .collect();
        post_json(
            &server,
            "/api/ingest/devices",
            key,
            &json!({ "devices": devices }),
        )
    };
    let r = inventory(&big, 1_003);
    assert_eq!(r.status, 201, "{}", r.body);
    let check = get(&server, "/api/billing/limits/check", &big).json();
    assert_eq!(check["checks"][0]["used"], 1_003, "{check}");
    assert_eq!(check["checks"][0]["exceeded"], true, "{check}");
    assert_eq!(check["checks"][0]["allowed"], true, "{check}");
    assert_eq!(check["checks"][0]["overage_cents"], 1_500, "{check}");
    let invoice = get(&server, "/api/billing/invoices", &big).json();
    let current = &invoice["invoices"][0];
    assert_eq!(current["devices"], 1_003, "{current}");
    assert_eq!(current["overage_cents"], 1_500, "{current}");

    let r = inventory(&mid, 501);
    assert_eq!(r.status, 402, "{}", r.body);
    assert_eq!(r.json()["code"], "plan_limit_exceeded");
    server.stop();
}

/// Reseller capabilities of the MSP plan: a markup per child that the
/// child's invoice carries, moving a child between plans, and one
/// consolidated invoice over every child; other plans get the same `402`.
#[tokio::test]
async fn an_msp_resells_with_markups_moves_children_and_sees_one_consolidated_invoice() {
    let env = Env::new();
    let msp = env.org_on_plan("resell", "msp", &[]);
    let loner = env.org_on_plan("lonely", "business", &[]);
    let server = env.serve();
    let create = |body: Value| post_json(&server, "/api/orgs", &msp, &body);
    let r = create(
        json!({"id": "kid-a", "name": "Kid A", "owner_email": "it@a.test", "plan": "professional"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let kid_a = r.json()["api_key"]["key"].as_str().unwrap().to_string();
    let r = create(
        json!({"id": "kid-b", "name": "Kid B", "owner_email": "it@b.test", "plan": "business"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    let markup = |who: &str, org: &str, bps: Value| {
        crate::support::send(
            &server,
            "PUT",
            &format!("/api/orgs/{org}/markup"),
            who,
            Some((
                "application/json",
                &json!({ "markup_bps": bps }).to_string(),
            )),
        )
    };
    let r = markup(&msp, "kid-a", json!(1_250));
    assert_eq!(r.status, 200, "{}", r.body);
    // Not another organization's, not absurd, not by a child.
    assert_eq!(markup(&msp, "lonely", json!(1_000)).status, 404);
    assert_eq!(markup(&msp, "kid-a", json!(100_001)).status, 400);
    assert_eq!(markup(&kid_a, "kid-a", json!(0)).status, 403);

    // The child's invoice is what its reseller bills: cost plus markup.
    let inv = get(&server, "/api/billing/invoices", &kid_a).json();
    let current = &inv["invoices"][0];
    let markup_cents = current["markup_cents"].as_u64().unwrap();
    let total = current["total_cents"].as_u64().unwrap();
    let cost = current["base_cents"].as_u64().unwrap() + current["overage_cents"].as_u64().unwrap();
    assert_eq!(
        markup_cents,
        (2 * cost * 1_250 + 10_000) / 20_000,
        "{current}"
    );
    assert_eq!(total, cost + markup_cents, "{current}");
    assert_eq!(
        current["lines"].as_array().unwrap().last().unwrap()["description"],
        "reseller markup 12.50 %"
    );

    // Moving a child between plans: the MSP's admin, acting for it.
    let r = curl(&[
        "-X",
        "POST",
        &server.url("/api/billing/upgrade"),
        "-H",
        &format!("Authorization: Bearer {msp}"),
        "-H",
        "X-Organization-Id: kid-b",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        r#"{"plan": "enterprise"}"#,
    ]);
    assert_eq!(r.status, 200, "{}", r.body);

    let all = get(&server, "/api/billing/invoices/consolidated", &msp);
    assert_eq!(all.status, 200, "{}", all.body);
    let all = all.json();
    let kids = all["children"].as_array().unwrap();
    assert_eq!(kids.len(), 2, "{all}");
    assert_eq!(kids[0]["organization"], "kid-a");
    assert_eq!(kids[0]["markup_bps"], 1_250);
    assert_eq!(kids[0]["billed_cents"], total);
    assert_eq!(kids[1]["organization"], "kid-b");
    assert_eq!(
        kids[1]["plan"], "enterprise",
        "the day's highest plan: {all}"
    );
    assert_eq!(kids[1]["markup_cents"], 0);
    let cost_sum: u64 = kids.iter().map(|k| k["cost_cents"].as_u64().unwrap()).sum();
    assert_eq!(all["children_cost_cents"], cost_sum);
    assert_eq!(all["children_billed_cents"], cost_sum + markup_cents);
    assert_eq!(
        all["due_cents"],
        all["own"]["total_cents"].as_u64().unwrap() + cost_sum,
        "the platform bills the MSP its own plan and its children at cost"
    );
    // Reseller is the MSP plan's: everyone else gets the same 402.
    for key in [&loner, &kid_a] {
        let r = get(&server, "/api/billing/invoices/consolidated", key);
        assert_eq!(r.status, 402, "{}", r.body);
        assert_eq!(r.json()["feature"], "reseller");
        assert_eq!(r.json()["required_plan"], "msp");
    }
    server.stop();
}

/// Makes `org` (created now by the CLI) look created at `at_ms`: as if the
/// server had run since then. The embedded store is a SQLite file.
fn backdate(env: &Env, org: &str, at_ms: i64) {
    let db = rusqlite::Connection::open(env.path().join("meta.db")).unwrap();
    db.execute(
        "UPDATE organizations SET created_at = ?1 WHERE id = ?2",
        rusqlite::params![at_ms, org],
    )
    .unwrap();
    db.execute(
        "UPDATE plan_changes SET at = ?1 WHERE org_id = ?2",
        rusqlite::params![at_ms, org],
    )
    .unwrap();
}

/// A closed month's invoice is issued once by the monthly job — numbered,
/// final, the same after a restart — and served as JSON and as a PDF that
/// pypdf reads back and PDFium renders; numbers of other organizations or
/// of no invoice answer 404.
#[tokio::test]
async fn closed_months_are_issued_once_with_a_number_as_json_and_pdf() {
    let env = Env::new().set("SECURENET_API__INVOICE_GRACE_HOURS", "0");
    let key = env.org_on_plan("oldco", "professional", &[]);
    let other = env.org_on_plan("otherco", "starter", &[]);
    let now = Utc::now().date_naive();
    let current = NaiveDate::from_ymd_opt(now.year(), now.month(), 1).unwrap();
    let previous = current.checked_sub_months(Months::new(1)).unwrap();
    let created = previous.and_hms_opt(12, 0, 0).unwrap().and_utc();
    backdate(&env, "oldco", created.timestamp_millis());
    let (cur, prev) = (
        current.format("%Y%m").to_string(),
        previous.format("%Y%m").to_string(),
    );
    let number = format!("SN-{prev}-oldco");

    let server = env.serve();
    // The job runs at start; wait for it.
    let mut listing = Value::Null;
    for _ in 0..100 {
        listing = get(&server, "/api/billing/invoices", &key).json();
        if listing["invoices"][1]["status"] == "final" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let open = &listing["invoices"][0];
    assert_eq!(open["number"], format!("SN-{cur}-oldco"), "{listing}");
    assert_eq!(open["status"], "open", "{listing}");
    let issued = listing["invoices"][1].clone();
    assert_eq!(issued["status"], "final", "{listing}");
    assert_eq!(issued["number"], number.as_str());
    // Created on the 1st: the whole month of professional, no usage.
    assert_eq!(issued["total_cents"], 29_900, "{issued}");
    assert_eq!(issued["base_cents"], 29_900, "{issued}");
    let finalized_at = issued["finalized_at"].as_i64().expect("finalized_at");

    let one = get(&server, &format!("/api/billing/invoices/{number}"), &key);
    assert_eq!(one.status, 200, "{}", one.body);
    let one = one.json();
    assert_eq!(one["number"], number.as_str());
    assert_eq!(one["total_cents"], 29_900);
    assert_eq!(one["lines"], issued["lines"]);
    assert_eq!(one["organization"], "oldco");

    let pdf = env.path().join("invoice.pdf");
    let (status, media) = download(
        &server,
        &format!("/api/billing/invoices/{number}?format=pdf"),
        &key,
        &pdf,
    );
    assert_eq!((status, media.as_str()), (200, "application/pdf"));
    let read = read_pdf(&pdf);
    let text = read["text"].as_array().unwrap()[0]
        .as_str()
        .unwrap()
        .to_string();
    for expected in [
        format!("Invoice {number}"),
        "professional plan".to_string(),
        "$299.00".to_string(),
        "Status: final".to_string(),
        "oldco".to_string(),
    ] {
        assert!(text.contains(&expected), "{expected:?} not in {text}");
    }
    assert_eq!(read["title"], format!("Invoice {number}"));
    assert_eq!(read["render"]["width"], 595, "{read}");
    // SecureNet's letterhead band (no white-label on professional) and text.
    assert_eq!(read["render"]["band_rgb"], "#1F3A5F", "{read}");
    assert!(
        read["render"]["dark_fraction"].as_f64().unwrap() > 0.001,
        "{read}"
    );

    // Not the caller's, or not an invoice: 404 alike; a bad format: 400.
    for bad in [
        format!("SN-{prev}-otherco"),
        "SN-299901-oldco".into(),
        "INV-1".into(),
    ] {
        let r = get(&server, &format!("/api/billing/invoices/{bad}"), &key);
        assert_eq!(r.status, 404, "{bad}: {}", r.body);
    }
    let r = get(
        &server,
        &format!("/api/billing/invoices/{number}?format=xml"),
        &key,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // otherco was created this month: nothing to issue for last month.
    let theirs = get(&server, "/api/billing/invoices", &other).json();
    assert_eq!(theirs["invoices"].as_array().unwrap().len(), 1, "{theirs}");
    server.stop();

    // A restart runs the job again: nothing is issued twice.
    let server = env.serve();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let again = get(&server, "/api/billing/invoices", &key).json();
    assert_eq!(
        again["invoices"][1]["finalized_at"], finalized_at,
        "{again}"
    );
    assert_eq!(again["invoices"][1]["number"], number.as_str());
    server.stop();
}

/// The first job of `kind` SecureNet's Stripe queue ended (per
/// `GET /api/billing/stripe`).
async fn stripe_job_ended(server: &Server, key: &str, kind: &str) -> Value {
    for _ in 0..150 {
        let calls = get(server, "/api/billing/stripe", key).json();
        if let Some(job) = calls["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["kind"] == kind && j["status"] != "pending")
        {
            return job.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("no {kind} job ended");
}

/// scripts/stripe_double.py, a test double of the Stripe API that checks
/// requests as Stripe does; stopped when dropped.
struct StripeDouble {
    child: std::process::Child,
    url: String,
}

impl StripeDouble {
    fn start() -> Self {
        use std::io::BufRead;
        let script = crate::support::repo_path("scripts/stripe_double.py");
        let mut child = std::process::Command::new(crate::support::python())
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the Stripe double");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().strip_prefix("port ").expect("port N");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = crate::support::client()
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        let r = crate::support::client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }
}

impl Drop for StripeDouble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With `api.stripe.secret_key`: a plan change moves the Stripe
/// subscription to the plan's price (no Stripe proration), an issued
/// invoice becomes a finalised Stripe invoice with SecureNet's number and
/// one item per line whose total Stripe computes equal to ours; every POST
/// carries an Idempotency-Key, failures (500, 429) are retried with the
/// same key, every request is recorded, and a restart sends nothing twice.
#[tokio::test]
async fn plan_changes_and_issued_invoices_reach_stripe_once_with_retries() {
    let stripe = StripeDouble::start();
    let seeded = stripe
        .post(
            "/_seed",
            json!({"email": "sec@stripeco.test", "plan": "professional",
                   "plans": ["starter", "professional", "business", "enterprise", "msp"]}),
        )
        .await;
    let (customer, subscription) = (
        seeded["customer"].as_str().unwrap().to_string(),
        seeded["subscription"].as_str().unwrap().to_string(),
    );
    let env = env()
        .set("SECURENET_API__STRIPE__SECRET_KEY", "sk_test_securenet_e2e")
        .set("SECURENET_API__STRIPE__API_BASE", &stripe.url)
        // Nothing is issued until the subscription is linked (below).
        .set("SECURENET_API__INVOICE_GRACE_HOURS", "100000");
    let key = env.org_on_plan("stripeco", "professional", &[]);
    let now = Utc::now().date_naive();
    let current = NaiveDate::from_ymd_opt(now.year(), now.month(), 1).unwrap();
    let previous = current.checked_sub_months(Months::new(1)).unwrap();
    backdate(
        &env,
        "stripeco",
        previous
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis(),
    );
    let number = format!("SN-{}-stripeco", previous.format("%Y%m"));

    let server = env.serve();
    // Stripe tells SecureNet about the subscription (signed webhook).
    let t = Utc::now().timestamp();
    let created = event(
        "evt_link",
        "customer.subscription.created",
        t - 5,
        json!({"id": subscription, "customer": customer, "status": "active",
               "metadata": {"org_id": "stripeco"},
               "items": {"data": [{"price": {"lookup_key": "professional"}}]}}),
    );
    let r = webhook(
        &server,
        Some(&openssl_signature(STRIPE_SECRET, t, &created)),
        &created,
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // A plan change through SecureNet, with Stripe failing twice first.
    stripe
        .post(
            "/_faults",
            json!({"method": "POST", "path": "/v1/subscriptions", "status": 503, "count": 2}),
        )
        .await;
    let r = post_json(
        &server,
        "/api/billing/upgrade",
        &key,
        &json!({"plan": "business"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let job = stripe_job_ended(&server, &key, "subscription").await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 3, "two 503s, then through: {job}");
    let posts: Vec<&Value> = job["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "POST")
        .collect();
    assert_eq!(posts.len(), 3, "{job}");
    assert!(
        posts
            .iter()
            .all(|r| r["idempotency_key"] == posts[0]["idempotency_key"])
    );
    assert_eq!(posts[2]["status"], 200);
    let state = stripe.get("/_state").await;
    let sub = &state["subscriptions"][0];
    assert_eq!(
        sub["items"]["data"][0]["price"]["lookup_key"], "business",
        "{sub}"
    );
    assert_eq!(sub["metadata"]["plan"], "business");
    assert_eq!(sub["proration_behavior_last"], "none");
    server.stop();

    // Month end: the job issues last month's invoice at start; Stripe
    // fails the invoice creation once and rate-limits an item once.
    stripe
        .post(
            "/_faults",
            json!({"method": "POST", "path": "/v1/invoices", "status": 500, "count": 1}),
        )
        .await;
    stripe
        .post(
            "/_faults",
            json!({"method": "POST", "path": "/v1/invoiceitems", "status": 429, "count": 1}),
        )
        .await;
    let env = env.set("SECURENET_API__INVOICE_GRACE_HOURS", "0");
    let server = env.serve();
    let job = stripe_job_ended(&server, &key, "invoice").await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["key"], number.as_str());
    let ours = get(&server, "/api/billing/invoices", &key).json()["invoices"][1].clone();
    assert_eq!(ours["number"], number.as_str(), "{ours}");
    assert_eq!(ours["status"], "final");
    assert_eq!(ours["stripe"]["status"], "succeeded", "{ours}");
    let state = stripe.get("/_state").await;
    let invoices = state["invoices"].as_array().unwrap();
    assert_eq!(
        invoices.len(),
        1,
        "one Stripe invoice despite the retries: {state}"
    );
    let theirs = &invoices[0];
    assert_eq!(theirs["number"], number.as_str());
    assert_eq!(theirs["status"], "open", "finalised");
    assert_eq!(theirs["customer"], customer.as_str());
    assert_eq!(
        theirs["metadata"]["period"],
        previous.format("%Y-%m").to_string()
    );
    // Stripe's own sum of the items is SecureNet's total.
    assert_eq!(theirs["total"], ours["total_cents"], "{theirs} vs {ours}");
    assert_eq!(ours["stripe"]["invoice"]["id"], theirs["id"]);

    let requests = stripe.get("/_requests").await["requests"]
        .as_array()
        .unwrap()
        .clone();
    let posts: Vec<&Value> = requests.iter().filter(|r| r["method"] == "POST").collect();
    assert!(
        posts.iter().all(|r| r["idempotency_key"].is_string()),
        "every POST has an Idempotency-Key: {posts:#?}"
    );
    assert!(
        posts
            .iter()
            .all(|r| r["content_type"] == "application/x-www-form-urlencoded"),
        "{posts:#?}"
    );
    let sent = posts.len();
    server.stop();

    // A restart sends nothing again.
    let server = env.serve();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let again = stripe.get("/_requests").await["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "POST")
        .count();
    assert_eq!(again, sent);
    server.stop();
}

/// Reselling and Stripe: the platform bills the MSP — its own lines and
/// each child at cost — in one Stripe invoice; a child's invoice (with the
/// markup) and a child's plan change are the MSP's to collect and never
/// reach Stripe; the consolidated invoice's `due_cents` is Stripe's total.
#[tokio::test]
async fn an_msp_is_billed_in_stripe_for_itself_and_its_children_at_cost() {
    let stripe = StripeDouble::start();
    let seeded = stripe
        .post(
            "/_seed",
            json!({"email": "billing@resellco.test", "plan": "msp",
                   "plans": ["starter", "professional", "business", "enterprise", "msp"]}),
        )
        .await;
    let env = env()
        .set("SECURENET_API__STRIPE__SECRET_KEY", "sk_test_securenet_e2e")
        .set("SECURENET_API__STRIPE__API_BASE", &stripe.url)
        .set("SECURENET_API__INVOICE_GRACE_HOURS", "100000");
    let msp = env.org_on_plan("resellco", "msp", &[]);
    let server = env.serve();
    let r = post_json(
        &server,
        "/api/orgs",
        &msp,
        &json!({"id": "kid-x", "name": "Kid X", "owner_email": "it@x.test", "plan": "professional"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let kid = r.json()["api_key"]["key"].as_str().unwrap().to_string();
    let r = crate::support::send(
        &server,
        "PUT",
        "/api/orgs/kid-x/markup",
        &msp,
        Some(("application/json", r#"{"markup_bps": 1000}"#)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let t = Utc::now().timestamp();
    let created = event(
        "evt_msp",
        "customer.subscription.created",
        t - 5,
        json!({"id": seeded["subscription"], "customer": seeded["customer"], "status": "active",
               "metadata": {"org_id": "resellco"},
               "items": {"data": [{"price": {"lookup_key": "msp"}}]}}),
    );
    let r = webhook(
        &server,
        Some(&openssl_signature(STRIPE_SECRET, t, &created)),
        &created,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    server.stop();

    let now = Utc::now().date_naive();
    let current = NaiveDate::from_ymd_opt(now.year(), now.month(), 1).unwrap();
    let previous = current.checked_sub_months(Months::new(1)).unwrap();
    let at = previous
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis();
    backdate(&env, "resellco", at);
    backdate(&env, "kid-x", at);
    let month = previous.format("%Y-%m").to_string();
    let number = format!("SN-{}-resellco", previous.format("%Y%m"));

    let env = env.set("SECURENET_API__INVOICE_GRACE_HOURS", "0");
    let server = env.serve();
    let job = stripe_job_ended(&server, &msp, "invoice").await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["key"], number.as_str());

    // The child's invoice carries the markup; Stripe gets it at cost.
    let kid_invoice = get(&server, "/api/billing/invoices", &kid).json()["invoices"][1].clone();
    assert_eq!(kid_invoice["status"], "final", "{kid_invoice}");
    let kid_cost = kid_invoice["total_cents"].as_u64().unwrap()
        - kid_invoice["markup_cents"].as_u64().unwrap();
    assert_eq!(
        kid_invoice["markup_cents"],
        (2 * kid_cost * 1_000 + 10_000) / 20_000
    );
    let own = get(&server, "/api/billing/invoices", &msp).json()["invoices"][1].clone();
    assert_eq!(own["number"], number.as_str(), "{own}");

    let state = stripe.get("/_state").await;
    let invoices = state["invoices"].as_array().unwrap();
    assert_eq!(invoices.len(), 1, "the MSP's only: {state}");
    let theirs = &invoices[0];
    assert_eq!(theirs["number"], number.as_str());
    assert_eq!(theirs["status"], "open");
    assert_eq!(
        theirs["total"].as_u64().unwrap(),
        own["total_cents"].as_u64().unwrap() + kid_cost,
        "{theirs}"
    );
    let lines: Vec<&str> = theirs["lines"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["description"].as_str().unwrap())
        .collect();
    assert!(
        lines.contains(&format!("kid-x (professional) at cost, {month}").as_str()),
        "{lines:?}"
    );
    let consolidated = get(
        &server,
        &format!("/api/billing/invoices/consolidated?month={month}"),
        &msp,
    )
    .json();
    assert_eq!(consolidated["status"], "final", "{consolidated}");
    assert_eq!(consolidated["due_cents"], theirs["total"], "{consolidated}");

    // Moving the child between plans is not Stripe's business either.
    let r = curl(&[
        "-X",
        "POST",
        &server.url("/api/billing/upgrade"),
        "-H",
        &format!("Authorization: Bearer {msp}"),
        "-H",
        "X-Organization-Id: kid-x",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        r#"{"plan": "business"}"#,
    ]);
    assert_eq!(r.status, 200, "{}", r.body);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let kid_calls = get(&server, "/api/billing/stripe", &kid).json();
    assert_eq!(kid_calls["jobs"], json!([]), "{kid_calls}");
    let posts = stripe.get("/_requests").await["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["method"] == "POST" && r["path"].as_str().unwrap().starts_with("/v1/subscriptions")
        })
        .count();
    assert_eq!(posts, 0, "no subscription update for a child");
    server.stop();
}
