//! The caller's organization and API keys over HTTP: issue (shown once),
//! list (never secrets), revoke (effective on the next request); admins
//! only; never across organizations.

use serde_json::json;

use crate::support::{DEFAULT_KEY, Env, Reply, Server, curl};

fn call(server: &Server, method: &str, path: &str, key: &str, body: Option<&str>) -> Reply {
    let url = server.url(path);
    let auth = format!("Authorization: Bearer {key}");
    let mut args = vec!["-X", method, url.as_str(), "-H", auth.as_str()];
    if let Some(b) = body {
        args.extend(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    curl(&args)
}

#[tokio::test]
async fn admins_issue_list_and_revoke_keys_of_their_own_organization() {
    let env = Env::new();
    let server = env.serve();
    let globex = env.org_with_key("globex");

    let me = call(&server, "GET", "/api/orgs/current", DEFAULT_KEY, None);
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["organization"]["id"], "default");
    assert_eq!(me.json()["role"], "admin");

    let issued = call(
        &server,
        "POST",
        "/api/orgs/current/api-keys",
        DEFAULT_KEY,
        Some(&json!({"name": "dashboards", "role": "viewer"}).to_string()),
    );
    assert_eq!(issued.status, 201, "{}", issued.body);
    let issued = issued.json();
    let (id, key) = (
        issued["id"].as_str().unwrap().to_string(),
        issued["key"].as_str().unwrap().to_string(),
    );
    let as_viewer = call(&server, "GET", "/api/orgs/current", &key, None);
    assert_eq!(as_viewer.json()["role"], "viewer");
    assert_eq!(
        call(&server, "GET", "/api/orgs/current/api-keys", &key, None).status,
        403
    );
    let r = call(
        &server,
        "POST",
        "/api/orgs/current/api-keys",
        &key,
        Some(r#"{"name": "escalate", "role": "admin"}"#),
    );
    assert_eq!(r.status, 403);

    let list = call(
        &server,
        "GET",
        "/api/orgs/current/api-keys",
        DEFAULT_KEY,
        None,
    );
    assert_eq!(list.status, 200);
    assert!(list.body.contains("dashboards"));
    assert!(!list.body.contains(&key), "secrets are never listed");

    // Another organization's admin cannot touch it.
    let r = call(
        &server,
        "DELETE",
        &format!("/api/orgs/current/api-keys/{id}"),
        &globex,
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        call(&server, "GET", "/api/orgs/current", &key, None).status,
        200
    );
    // Revoked: refused on the next request.
    let r = call(
        &server,
        "DELETE",
        &format!("/api/orgs/current/api-keys/{id}"),
        DEFAULT_KEY,
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        call(&server, "GET", "/api/orgs/current", &key, None).status,
        401
    );

    // Bad requests.
    let bad_role = call(
        &server,
        "POST",
        "/api/orgs/current/api-keys",
        DEFAULT_KEY,
        Some(r#"{"name": "x", "role": "owner"}"#),
    );
    assert_eq!(bad_role.status, 400, "{}", bad_role.body);
    let unnamed = call(
        &server,
        "POST",
        "/api/orgs/current/api-keys",
        DEFAULT_KEY,
        Some(r#"{"name": " "}"#),
    );
    assert_eq!(unnamed.status, 400);
    let missing = call(
        &server,
        "DELETE",
        "/api/orgs/current/api-keys/nope",
        DEFAULT_KEY,
        None,
    );
    assert_eq!(missing.status, 404);
    let own_id = call(&server, "GET", "/api/orgs/current/api-keys", &globex, None).json()["api_keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let own = call(
        &server,
        "DELETE",
        &format!("/api/orgs/current/api-keys/{own_id}"),
        &globex,
        None,
    );
    assert_eq!(own.status, 400, "{}", own.body);
}
