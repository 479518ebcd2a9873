//! The caller's organization and its API keys.
//!
//! - `GET /api/orgs/current` (viewer) — the organization, plan and limits.
//! - `GET /api/orgs/current/api-keys` (admin) — keys, never their secrets.
//! - `POST /api/orgs/current/api-keys` (admin) — `{"name", "role"}` → `201`
//!   with the key, shown this once (stored as a hash).
//! - `DELETE /api/orgs/current/api-keys/{id}` (admin) — revoke; `204`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use control::Role;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::state::AppState;

fn require_admin(caller: &control::Principal) -> Result<()> {
    if caller.role < Role::Admin {
        return Err(ApiError::Forbidden(format!(
            "managing API keys needs the admin role; the key has {}",
            caller.role.as_str()
        )));
    }
    Ok(())
}

/// `GET /api/orgs/current`
pub async fn current(State(state): State<AppState>, Caller(caller): Caller) -> Result<Json<Value>> {
    let org = state.store.organization(&caller.tenant)?.ok_or_else(|| {
        ApiError::NotFound(format!("organization {} no longer exists", caller.tenant))
    })?;
    Ok(Json(
        json!({ "organization": org, "role": caller.role.as_str() }),
    ))
}

/// `GET /api/orgs/current/api-keys`
pub async fn list_keys(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>> {
    require_admin(&caller)?;
    Ok(Json(
        json!({ "api_keys": state.store.list_keys(&caller.tenant)? }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    name: String,
    role: Option<String>,
}

/// `POST /api/orgs/current/api-keys`
pub async fn create_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: std::result::Result<Json<NewKey>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>)> {
    require_admin(&caller)?;
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::BadRequest(
            "name must be 1 to 128 characters".into(),
        ));
    }
    let role: Role = req.role.as_deref().unwrap_or("member").parse()?;
    let issued = state.store.create_key(&caller.tenant, name, role)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": issued.id,
            "key": issued.secret,
            "name": name,
            "role": role.as_str(),
            "note": "the key is shown only this once; store it now",
        })),
    ))
}

/// `DELETE /api/orgs/current/api-keys/{id}`
pub async fn revoke_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    require_admin(&caller)?;
    if id == caller.key_id {
        return Err(ApiError::BadRequest(
            "a key cannot revoke itself; use another admin key".into(),
        ));
    }
    state.store.revoke_key(&caller.tenant, &id)?;
    Ok(StatusCode::NO_CONTENT)
}
