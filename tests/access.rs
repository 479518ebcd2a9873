//! Access through the public HTTP interface: the permission matrix (every
//! route × every role × no credentials × another organization), JWT
//! sign-in for users, and MSP organizations acting for their children.

use query_api::routes::{Access, table};
use serde_json::{Value, json};

use crate::support::{Env, Reply, Server, curl, unique};

const PLATFORM_TOKEN: &str = "platform-operator-token-for-e2e-tests-000001";

/// One HTTP call with curl: extra headers, and a JSON body for writes.
fn call(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[String],
    body: Option<&str>,
) -> Reply {
    let url = server.url(path);
    let mut args: Vec<&str> = vec!["-X", method, &url];
    for h in headers {
        args.extend(["-H", h.as_str()]);
    }
    if let Some(b) = body {
        args.extend(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    curl(&args)
}

fn bearer(key: &str) -> Vec<String> {
    vec![format!("Authorization: Bearer {key}")]
}

fn env() -> Env {
    Env::new()
        .set("SECURENET_API__PLATFORM_ADMIN_TOKEN", PLATFORM_TOKEN)
        .set("SECURENET_API__STRIPE_WEBHOOK_SECRET", "whsec_e2e_secret")
        // The matrix makes ~200 calls per organization in a few seconds.
        .set("SECURENET_API__RATE_LIMIT_PER_SEC", "10000")
        .set("SECURENET_API__RATE_LIMIT_BURST", "10000")
}

/// Issues a key of `role` through the API with `admin`'s key.
fn issue_key(server: &Server, admin: &str, role: &str) -> (String, String) {
    let r = call(
        server,
        "POST",
        "/api/orgs/current/api-keys",
        &bearer(admin),
        Some(&json!({"name": format!("{role} key"), "role": role}).to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    (
        v["id"].as_str().unwrap().into(),
        v["key"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn every_route_answers_every_role_as_the_permission_matrix_says() {
    let env = env();
    let acme = format!("acme{}", unique());
    let acme_admin = env.org_with_key(&acme);
    let globex_admin = env.org_with_key("globex");
    let server = env.serve();
    let (viewer_id, viewer) = issue_key(&server, &acme_admin, "viewer");
    let (member_id, member) = issue_key(&server, &acme_admin, "member");
    let r = call(
        &server,
        "POST",
        "/api/orgs/current/users",
        &bearer(&acme_admin),
        Some(
            r#"{"email": "ana@acme.test", "password": "a long enough password", "role": "member"}"#,
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let user_id = r.json()["user"]["id"].as_str().unwrap().to_string();

    // `{id}` in paths: a key acme's admin may revoke during the sweep.
    let (victim_id, _) = issue_key(&server, &acme_admin, "viewer");
    // Identifiers of acme's objects: another organization never sees them
    // (the victim's id is in the path, so error messages echo it back).
    let acme_ids = [viewer_id.as_str(), member_id.as_str(), user_id.as_str()];
    let credentials: [(&str, Vec<String>); 6] = [
        ("none", vec![]),
        ("viewer", bearer(&viewer)),
        ("member", bearer(&member)),
        ("admin", bearer(&acme_admin)),
        ("platform", bearer(PLATFORM_TOKEN)),
        ("other-org admin", bearer(&globex_admin)),
    ];
    let mut checked = 0;
    for route in table() {
        let method = route.method.as_str();
        for (who, headers) in &credentials {
            let path = route.path.replace("{id}", &victim_id);
            let body = (method != "GET").then_some("{}");
            let r = call(&server, method, &path, headers, body);
            let denied = r.status == 403 || (r.status == 401 && route.access != Access::Public);
            let expect_allowed = match (route.access, *who) {
                (Access::Public, _) => true,
                (_, "none") => false,
                (Access::Platform, w) => w == "platform",
                (Access::Role(_), "platform") => false,
                (Access::Role(_), "other-org admin") => true,
                (Access::Role(min), role) => role.parse::<control::Role>().unwrap() >= min,
            };
            assert_eq!(
                !denied, expect_allowed,
                "{method} {} as {who}: {} {}",
                route.path, r.status, r.body
            );
            if !expect_allowed {
                let want =
                    if *who == "none" || (*who == "platform" && route.access != Access::Platform) {
                        401
                    } else {
                        403
                    };
                assert_eq!(
                    r.status, want,
                    "{method} {} as {who}: {}",
                    route.path, r.body
                );
            }
            assert!(
                r.status < 500,
                "{method} {} as {who}: {} {}",
                route.path,
                r.status,
                r.body
            );
            if *who == "other-org admin" {
                // Never another tenant's data, whatever the route.
                assert!(
                    !r.body.contains(&acme),
                    "{method} {} leaked {acme}: {}",
                    route.path,
                    r.body
                );
                for id in acme_ids {
                    assert!(
                        !r.body.contains(id),
                        "{method} {} leaked {id}: {}",
                        route.path,
                        r.body
                    );
                }
                if route.path.contains("{id}") && expect_allowed {
                    assert!(
                        matches!(r.status, 400 | 404),
                        "{method} {} on acme's id: {} {}",
                        route.path,
                        r.status,
                        r.body
                    );
                }
                // Nor by asking to act for acme.
                let mut acting = headers.clone();
                acting.push(format!("X-Organization-Id: {acme}"));
                let r = call(&server, method, &path, &acting, body);
                if let Access::Role(_) = route.access {
                    assert_eq!(
                        r.status, 403,
                        "{method} {} acting for {acme}: {}",
                        route.path, r.body
                    );
                }
                assert!(!r.body.contains(&viewer_id), "{}", r.body);
            }
            checked += 1;
        }
    }
    assert!(checked >= 6 * 27, "only {checked} calls");
    // The keys acme's stranger tried to revoke still work.
    let r = call(&server, "GET", "/api/orgs/current", &bearer(&viewer), None);
    assert_eq!(r.status, 200, "{}", r.body);
}

fn sign_in(server: &Server, body: Value) -> Reply {
    call(
        server,
        "POST",
        "/api/auth/token",
        &[],
        Some(&body.to_string()),
    )
}

#[tokio::test]
async fn users_sign_in_for_jwts_that_follow_the_user_and_the_key() {
    let env = env();
    let admin = env.org_with_key("initech");
    let server = env.serve();
    let r = call(
        &server,
        "POST",
        "/api/orgs/current/users",
        &bearer(&admin),
        Some(
            r#"{"email": "Peter@Initech.test", "password": "tps reports forever", "role": "member"}"#,
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let user = r.json()["user"].clone();
    assert!(!r.body.contains("tps reports"), "{}", r.body);
    assert!(
        !r.body.contains("argon2"),
        "the hash never leaves the store: {}",
        r.body
    );

    // Case-insensitive email; the token carries organization, role, expiry.
    let r = sign_in(
        &server,
        json!({"email": "peter@initech.test", "password": "tps reports forever", "ttl_secs": 600}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let t = r.json();
    assert_eq!(
        (
            t["organization"].as_str(),
            t["role"].as_str(),
            t["expires_in"].as_u64()
        ),
        (Some("initech"), Some("member"), Some(600))
    );
    let token = t["access_token"].as_str().unwrap().to_string();
    let me = call(&server, "GET", "/api/orgs/current", &bearer(&token), None);
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["role"], "member");
    assert_eq!(
        call(&server, "GET", "/api/audit-log", &bearer(&token), None).status,
        403
    );
    let listed = call(
        &server,
        "GET",
        "/api/orgs/current/users",
        &bearer(&admin),
        None,
    );
    assert!(
        listed.json()["users"][0]["last_login_at"].is_i64(),
        "{}",
        listed.body
    );

    // Wrong password, unknown user, bad shapes.
    for (body, want) in [
        (
            json!({"email": "peter@initech.test", "password": "tps reports never!"}),
            401,
        ),
        (
            json!({"email": "bill@initech.test", "password": "tps reports forever"}),
            401,
        ),
        (json!({"email": "peter@initech.test"}), 400),
        (
            json!({"email": "peter@initech.test", "password": "tps reports forever", "ttl_secs": 999999}),
            400,
        ),
        (
            json!({"email": "peter@initech.test", "password": "x", "role": "admin"}),
            400,
        ),
    ] {
        assert_eq!(sign_in(&server, body.clone()).status, want, "{body}");
    }
    // A tampered token, and a token for another issuer's secret.
    let mut tampered = token.clone();
    tampered.insert(tampered.len() - 2, 'x');
    assert_eq!(
        call(
            &server,
            "GET",
            "/api/orgs/current",
            &bearer(&tampered),
            None
        )
        .status,
        401
    );

    // Removing the user revokes their tokens at once.
    let id = user["id"].as_str().unwrap();
    assert_eq!(
        call(
            &server,
            "DELETE",
            &format!("/api/orgs/current/users/{id}"),
            &bearer(&admin),
            None
        )
        .status,
        204
    );
    assert_eq!(
        call(&server, "GET", "/api/orgs/current", &bearer(&token), None).status,
        401
    );

    // An API key exchanges for a token with the key's role; revoking the
    // key revokes the token.
    let (key_id, viewer) = issue_key(&server, &admin, "viewer");
    let r = call(&server, "POST", "/api/auth/token", &bearer(&viewer), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    let me = call(
        &server,
        "GET",
        "/api/orgs/current",
        &[format!("X-API-Key: {token}")],
        None,
    );
    assert_eq!(me.json()["role"], "viewer", "{}", me.body);
    assert_eq!(
        call(&server, "POST", "/api/auth/token", &bearer(&token), None).status,
        400
    );
    assert_eq!(
        call(
            &server,
            "DELETE",
            &format!("/api/orgs/current/api-keys/{key_id}"),
            &bearer(&admin),
            None
        )
        .status,
        204
    );
    assert_eq!(
        call(&server, "GET", "/api/orgs/current", &bearer(&token), None).status,
        401
    );
    // Tokens survive a restart (the secret is in the metadata store).
    let (_, member) = issue_key(&server, &admin, "member");
    let token =
        call(&server, "POST", "/api/auth/token", &bearer(&member), None).json()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
    server.stop();
    let server = env.serve();
    assert_eq!(
        call(&server, "GET", "/api/orgs/current", &bearer(&token), None).status,
        200
    );
}

#[tokio::test]
async fn an_msp_acts_for_its_own_children_only() {
    let env = env();
    let server = env.serve();
    let platform = bearer(PLATFORM_TOKEN);
    let create = |headers: &[String], body: Value| {
        call(
            &server,
            "POST",
            "/api/orgs",
            headers,
            Some(&body.to_string()),
        )
    };
    let r = create(
        &platform,
        json!({"id": "msp1", "name": "MSP One", "owner_email": "ops@msp1.test", "plan": "msp"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let msp = bearer(r.json()["api_key"]["key"].as_str().unwrap());
    let r = create(
        &platform,
        json!({"id": "loner", "name": "Loner", "owner_email": "it@loner.test", "plan": "business"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let loner = bearer(r.json()["api_key"]["key"].as_str().unwrap());
    assert_eq!(
        create(
            &platform,
            json!({"id": "loner", "name": "x", "owner_email": "a@b.c"})
        )
        .status,
        409
    );
    assert_eq!(
        create(
            &platform,
            json!({"id": "Bad Id!", "name": "x", "owner_email": "a@b.c"})
        )
        .status,
        400
    );

    // The MSP's admin creates a child (parented to itself), and no other.
    let r = create(
        &msp,
        json!({"id": "clinic", "name": "Clinic", "owner_email": "it@clinic.test", "plan": "starter"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["organization"]["parent_id"], "msp1");
    let r = create(
        &msp,
        json!({"id": "sneaky", "name": "S", "owner_email": "a@s.test", "parent_id": "loner"}),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        create(
            &loner,
            json!({"id": "nope", "name": "N", "owner_email": "a@n.test"})
        )
        .status,
        403
    );
    let listed = call(&server, "GET", "/api/orgs", &msp, None).json();
    let ids: Vec<&str> = listed["organizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["clinic"]);
    let all = call(&server, "GET", "/api/orgs", &platform, None);
    assert!(
        all.body.contains("loner") && all.body.contains("clinic"),
        "{}",
        all.body
    );

    // Acting for the child: its organization, its audit log.
    let mut acting = msp.clone();
    acting.push("X-Organization-Id: clinic".into());
    let me = call(&server, "GET", "/api/orgs/current", &acting, None);
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["organization"]["id"], "clinic");
    let r = call(
        &server,
        "POST",
        "/api/orgs/current/api-keys",
        &acting,
        Some(r#"{"name": "for the clinic", "role": "viewer"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let log = call(&server, "GET", "/api/audit-log", &acting, None).json();
    assert!(
        log["entries"][0]["key_id"]
            .as_str()
            .unwrap()
            .ends_with("@msp1"),
        "{log}"
    );
    // Not for an organization that is not its child; nobody else acts.
    for (who, target) in [(&msp, "loner"), (&loner, "clinic"), (&msp, "nosuchorg")] {
        let mut h = who.clone();
        h.push(format!("X-Organization-Id: {target}"));
        let r = call(&server, "GET", "/api/orgs/current", &h, None);
        assert_eq!(r.status, 403, "{target}: {}", r.body);
    }
    // A child's own key cannot act for its parent or siblings.
    let mut h = bearer(
        r.json()
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or("none"),
    );
    h.push("X-Organization-Id: msp1".into());
    assert!(matches!(
        call(&server, "GET", "/api/orgs/current", &h, None).status,
        401 | 403
    ));
    // Leaving the msp plan while having children is refused.
    let r = call(
        &server,
        "POST",
        "/api/billing/upgrade",
        &msp,
        Some(r#"{"plan": "business"}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_served_routes() {
    let env = env();
    let server = env.serve();
    let r = call(&server, "GET", "/api/openapi.json", &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    let doc = r.json();
    let ingest = ingest::http::route_docs();
    let mut documented = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented += 1;
            let public = op["security"].as_array().is_some_and(Vec::is_empty);
            if method == "head" {
                // Served by the same handler as its GET (checked there).
                assert!(item["get"].is_object(), "{path}");
                continue;
            }
            // Every documented route exists: never the router's 404 fallback.
            let concrete = path.replace("{id}", "x").replace("{index}", "x");
            let reply = call(
                &server,
                &method.to_uppercase(),
                &concrete,
                &[],
                (method != "get").then_some("{}"),
            );
            assert!(
                !reply.body.contains("no route for"),
                "{method} {path} is documented but not served: {}",
                reply.body
            );
            assert!(
                op["responses"].as_object().unwrap().contains_key("400") || public,
                "{method} {path}"
            );
        }
    }
    assert_eq!(documented, table().len() + ingest.len() + 4);
    // The ingest receivers are there with their role and body types.
    let logs = &doc["paths"]["/api/ingest/logs"]["post"];
    assert!(
        logs["requestBody"]["content"]["application/x-ndjson"].is_object(),
        "{logs}"
    );
    assert!(logs["description"].as_str().unwrap().contains("member"));
    assert!(
        doc["paths"]["/services/collector/health"]["get"]["security"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Swagger UI over it, with its assets compiled in.
    let page = curl(&["-L", &server.url("/api/docs/")]);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("swagger-ui"), "{}", page.body);
    let init = curl(&[&server.url("/api/docs/swagger-initializer.js")]);
    assert_eq!(init.status, 200);
    assert!(init.body.contains("/api/openapi.json"), "{}", init.body);
}

/// Every error is JSON with its own status: an oversized JSON body is 413
/// (not 400), a wrong method 405, a bad query string 400 — on the API and
/// the ingest routes alike.
#[tokio::test]
async fn errors_are_json_with_their_own_status() {
    let env = Env::new();
    let server = env.serve();
    let key = crate::support::DEFAULT_KEY;
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(3 << 20));
    let path = env.path().join("big.json");
    std::fs::write(&path, big).unwrap();
    let r = curl(&[
        &server.url("/api/orgs/current/api-keys"),
        "-H",
        &format!("Authorization: Bearer {key}"),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", path.display()),
    ]);
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["code"], "payload_too_large");
    for (method, path) in [
        ("PUT", "/api/sql"),
        ("DELETE", "/api/orgs/current"),
        ("GET", "/api/ingest/logs"),
    ] {
        let r = curl(&[
            "-X",
            method,
            &server.url(path),
            "-H",
            &format!("Authorization: Bearer {key}"),
        ]);
        assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
        assert_eq!(r.json()["code"], "method_not_allowed", "{method} {path}");
    }
    let r = curl(&[
        &server.url("/api/billing/limits/check?additional_devices=many"),
        "-H",
        &format!("Authorization: Bearer {key}"),
    ]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["code"], "bad_request");
    let r = curl(&[
        &server.url("/api/orgs/current/api-keys"),
        "-H",
        &format!("Authorization: Bearer {key}"),
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        "{\"name\": \"k\"}",
    ]);
    assert_eq!(r.status, 415, "{}", r.body);
}

/// The audit log also records what happens outside a tenant's own API
/// calls: the platform operator creating the organization, CLI key
/// actions, sign-ins and token issuance, failed sign-ins and failed
/// authentication with a known key.
#[tokio::test]
async fn the_audit_log_records_operator_cli_sign_in_and_failed_authentication() {
    let env = env();
    let server = env.serve();
    let r = call(
        &server,
        "POST",
        "/api/orgs",
        &bearer(PLATFORM_TOKEN),
        Some(&json!({"id": "audited", "name": "Audited", "owner_email": "o@audited.test", "plan": "business"}).to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let admin = r.json()["api_key"]["key"].as_str().unwrap().to_string();
    let cli_key = env
        .cli(&["keys", "create", "--org", "audited", "--role", "viewer"])
        .trim()
        .to_string();
    let cli_id = cli_key.split('_').nth(1).unwrap_or_default().to_string();
    let r = call(
        &server,
        "POST",
        "/api/orgs/current/users",
        &bearer(&admin),
        Some(
            &json!({"email": "ann@audited.test", "password": "a long enough password"}).to_string(),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    for (password, want) in [("a long enough password", 200), ("not the password", 401)] {
        let r = call(
            &server,
            "POST",
            "/api/auth/token",
            &[],
            Some(&json!({"email": "ann@audited.test", "password": password}).to_string()),
        );
        assert_eq!(r.status, want, "{}", r.body);
    }
    env.cli(&["keys", "revoke", "--org", "audited", &cli_id]);
    // The revoked key used now: refused, and recorded.
    let r = call(&server, "GET", "/api/orgs/current", &bearer(&cli_key), None);
    assert_eq!(r.status, 401);
    let list = call(
        &server,
        "GET",
        "/api/audit-log?limit=100",
        &bearer(&admin),
        None,
    )
    .json();
    let entries = list["entries"].as_array().unwrap().clone();
    let has = |route: &str, actor_prefix: &str, status: u64| {
        entries.iter().any(|e| {
            e["route"] == route
                && e["key_id"].as_str().unwrap().starts_with(actor_prefix)
                && e["status"] == status
        })
    };
    assert!(has("/api/orgs", "platform-admin", 201), "{entries:#?}");
    assert!(has("securenet keys create", "cli:", 0), "{entries:#?}");
    assert!(has("securenet keys revoke", "cli:", 0), "{entries:#?}");
    assert!(has("/api/auth/token", "user:", 200), "{entries:#?}");
    assert!(has("/api/auth/token", "user:", 401), "{entries:#?}");
    assert!(has("authentication", "", 401), "{entries:#?}");
}
