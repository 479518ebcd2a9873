//! Organizations, their API keys and users, and sign-in.
//!
//! - `POST /api/auth/token` (public) — `{"email", "password",
//!   "organization"?}`, or an API key in the usual headers, → a JWT
//!   (`ttl_secs`, default 1 h, at most 24 h). Password attempts are
//!   throttled per account and per address (see [`crate::signin`]).
//! - `GET/POST /api/orgs` (platform admin, or an MSP admin for its children).
//! - `GET/POST /api/orgs/current/users`, `DELETE …/users/{id}` (admin).
//!
//! - `GET /api/orgs/current` (viewer) — the organization, plan and limits.
//! - `GET /api/orgs/current/api-keys` (admin) — keys, never their secrets.
//! - `POST /api/orgs/current/api-keys` (admin) — `{"name", "role"}` → `201`
//!   with the key, shown this once (stored as a hash).
//! - `DELETE /api/orgs/current/api-keys/{id}` (admin) — revoke; `204`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use control::{NewOrganization, Role};
use schemas::{Plan, TenantId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Caller, PlatformCaller};
use crate::error::{ApiError, Result};
use crate::state::AppState;

/// `GET /api/orgs/current`
pub async fn current(State(state): State<AppState>, Caller(caller): Caller) -> Result<Json<Value>> {
    let org = state.caller_org(&caller).await?;
    Ok(Json(
        json!({ "organization": org, "role": caller.role.as_str() }),
    ))
}

/// `GET /api/orgs/current/branding` — the organization's own branding,
/// the branding its notifications carry now (its own, its MSP's, or none:
/// SecureNet's) and whether its plan includes white-label.
pub async fn branding(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>> {
    let org = state.caller_org(&caller).await?;
    let own = state.store.branding(&org.id).await?;
    let applied = state.store.applied_branding(&org).await?;
    Ok(Json(json!({
        "branding": own,
        "applied": applied,
        "white_label": org.plan.includes(schemas::Feature::WhiteLabel),
    })))
}

/// `PUT /api/orgs/current/branding` — white-label (enterprise and MSP
/// plans): the name, logo, colours and sender of the organization's
/// notifications (an MSP's also its children's that have none).
pub async fn set_branding(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: crate::extract::JsonBody<control::branding::Branding>,
) -> Result<Json<Value>> {
    let org = state
        .entitled_org(&caller, schemas::Feature::WhiteLabel)
        .await?;
    state.store.set_branding(&org.id, &body.0).await?;
    Ok(Json(json!({ "branding": body.0 })))
}

/// `DELETE /api/orgs/current/branding` — back to SecureNet's (or the
/// MSP's) branding; allowed on any plan.
pub async fn clear_branding(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<StatusCode> {
    state.store.clear_branding(&caller.tenant).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/orgs/current/api-keys`
pub async fn list_keys(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>> {
    Ok(Json(
        json!({ "api_keys": state.store.list_keys(&caller.tenant).await? }),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    name: String,
    role: Option<String>,
}

/// `POST /api/orgs/current/api-keys`
pub async fn create_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: crate::extract::JsonBody<NewKey>,
) -> Result<(StatusCode, Json<Value>)> {
    let req = body.0;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::BadRequest(
            "name must be 1 to 128 characters".into(),
        ));
    }
    let role: Role = req.role.as_deref().unwrap_or("member").parse()?;
    let issued = state.store.create_key(&caller.tenant, name, role).await?;
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
    if id == caller.key_id {
        return Err(ApiError::BadRequest(
            "a key cannot revoke itself; use another admin key".into(),
        ));
    }
    state.store.revoke_key(&caller.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    email: Option<String>,
    password: Option<String>,
    /// Which organization's account, when the email has accounts in
    /// several.
    organization: Option<String>,
    ttl_secs: Option<u64>,
}

/// `POST /api/auth/token`
pub async fn token(
    State(state): State<AppState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    // No body: exchange the API key in the headers.
    let req: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TokenRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid sign-in request: {e}")))?
    };
    let ttl = req.ttl_secs.unwrap_or(control::jwt::DEFAULT_TTL_SECS);
    if !(60..=control::jwt::MAX_TTL_SECS).contains(&ttl) {
        return Err(ApiError::BadRequest(format!(
            "ttl_secs must be within 60..={}",
            control::jwt::MAX_TTL_SECS
        )));
    }
    let principal = match (req.email, req.password) {
        (Some(email), Some(password)) => {
            let organization = req.organization.as_deref().map(TenantId::new).transpose()?;
            state.sign_in.attempt(&email, peer.map(|p| p.0.0.ip()))?;
            let slot = state.sign_in.hashing_slot().await?;
            let store = state.store.clone();
            // Argon2 takes tens of milliseconds: off the async workers, and
            // at most a few at a time.
            let tried = email.clone();
            // Argon2 verification is CPU work: off the async workers.
            let runtime = tokio::runtime::Handle::current();
            let signed = tokio::task::spawn_blocking(move || {
                let _slot = slot;
                runtime.block_on(store.sign_in(&email, &password, organization.as_ref()))
            })
            .await
            .map_err(|e| ApiError::Internal(format!("sign-in task: {e}")))?;
            match signed {
                Ok((_, principal)) => principal,
                Err(e) => {
                    // A failed sign-in to an existing account is in its
                    // organization's log (an unknown address has no log).
                    for (org, user) in state.store.users_by_email(&tried).await.unwrap_or_default()
                    {
                        crate::audit::record(
                            &state.store,
                            control::audit::AuditEntry::system(
                                &org,
                                format!("user:{user}"),
                                "-",
                                "POST",
                                "/api/auth/token",
                                "sign-in failed",
                                401,
                            ),
                        )
                        .await;
                    }
                    return Err(e.into());
                }
            }
        }
        (None, None) => {
            let key =
                control::auth::presented_key(&headers).ok_or(control::Error::MissingCredentials)?;
            if control::jwt::looks_like_jwt(key) {
                return Err(ApiError::BadRequest(
                    "exchange an email and password or an API key, not a token".into(),
                ));
            }
            state.store.verify_key(key).await?
        }
        _ => {
            return Err(ApiError::BadRequest(
                "send both email and password, or neither and an API key".into(),
            ));
        }
    };
    let (token, claims) = state.store.issue_jwt(&principal, ttl).await?;
    crate::audit::record(
        &state.store,
        control::audit::AuditEntry::system(
            &principal.tenant,
            principal.key_id.clone(),
            principal.role.as_str(),
            "POST",
            "/api/auth/token",
            format!("token issued for {ttl} s"),
            200,
        ),
    )
    .await;
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "expires_at": claims.exp,
        "organization": claims.org,
        "role": claims.role,
    })))
}

/// `GET /api/orgs`
pub async fn list_orgs(
    State(state): State<AppState>,
    caller: PlatformCaller,
) -> Result<Json<Value>> {
    let mut orgs = state.store.list_organizations().await?;
    if let PlatformCaller::Msp(p) = &caller {
        orgs.retain(|o| o.parent_id.as_ref() == Some(&p.tenant));
    }
    Ok(Json(json!({ "organizations": orgs })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrg {
    id: String,
    name: String,
    owner_email: String,
    plan: Option<String>,
    parent_id: Option<String>,
    #[serde(default)]
    allow_overage: bool,
}

/// `POST /api/orgs` — creates the organization with a first admin key
/// (shown once).
pub async fn create_org(
    State(state): State<AppState>,
    caller: PlatformCaller,
    body: crate::extract::JsonBody<NewOrg>,
) -> Result<(StatusCode, Json<Value>)> {
    let req = body.0;
    let parent_id = req.parent_id.as_deref().map(TenantId::new).transpose()?;
    let parent_id = match &caller {
        PlatformCaller::Operator => parent_id,
        PlatformCaller::Msp(p) => match parent_id {
            None => Some(p.tenant.clone()),
            Some(parent) if parent == p.tenant => Some(parent),
            Some(other) => {
                return Err(ApiError::Forbidden(format!(
                    "an MSP creates child organizations of its own, not of {other}"
                )));
            }
        },
    };
    let plan: Plan = req.plan.as_deref().unwrap_or("starter").parse()?;
    let org = state
        .store
        .create_organization(&NewOrganization {
            id: TenantId::new(req.id.trim())?,
            name: req.name,
            owner_email: req.owner_email,
            plan,
            parent_id,
            allow_overage: req.allow_overage,
        })
        .await?;
    let key = state
        .store
        .create_key(&org.id, "initial admin", Role::Admin)
        .await?;
    // In the new organization's own log: who created it.
    let actor = match &caller {
        PlatformCaller::Operator => "platform-admin".to_string(),
        PlatformCaller::Msp(p) => format!("{}@{}", p.key_id, p.tenant),
    };
    crate::audit::record(
        &state.store,
        control::audit::AuditEntry::system(
            &org.id,
            actor,
            "platform",
            "POST",
            "/api/orgs",
            format!("created on the {} plan with key {}", org.plan, key.id),
            201,
        ),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "organization": org,
            "api_key": { "id": key.id, "key": key.secret, "role": "admin" },
            "note": "the key is shown only this once; store it now",
        })),
    ))
}

/// `GET /api/orgs/current/users`
pub async fn list_users(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>> {
    Ok(Json(
        json!({ "users": state.store.list_users(&caller.tenant).await? }),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    email: String,
    password: String,
    role: Option<String>,
}

/// `POST /api/orgs/current/users`
pub async fn create_user(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: crate::extract::JsonBody<NewUser>,
) -> Result<(StatusCode, Json<Value>)> {
    let req = body.0;
    let role: Role = req.role.as_deref().unwrap_or("viewer").parse()?;
    let slot = state.sign_in.hashing_slot().await?;
    let store = state.store.clone();
    let runtime = tokio::runtime::Handle::current();
    let user = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        runtime.block_on(store.create_user(&caller.tenant, &req.email, &req.password, role))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("user task: {e}")))??;
    Ok((StatusCode::CREATED, Json(json!({ "user": user }))))
}

/// `DELETE /api/orgs/current/users/{id}`
pub async fn delete_user(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state.store.delete_user(&caller.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Terms {
    /// The organization's own limits, each replacing its plan's
    /// (`max_devices`, `max_scans_per_month`, `log_retention_days`).
    #[schema(value_type = Option<Object>)]
    limits: Option<schemas::LimitsOverride>,
    /// Drop the organization's own limits: its plan's apply again.
    #[serde(default)]
    clear_limits: bool,
    /// Accept devices and scans over the limits, billed as overage.
    allow_overage: Option<bool>,
}

/// `PATCH /api/orgs/{id}` — contract terms (platform admin only).
pub async fn set_terms(
    State(state): State<AppState>,
    caller: PlatformCaller,
    Path(id): Path<String>,
    body: crate::extract::JsonBody<Terms>,
) -> Result<Json<Value>> {
    if let PlatformCaller::Msp(_) = caller {
        return Err(ApiError::Forbidden(
            "contract limits are set by the platform admin".into(),
        ));
    }
    let req = body.0;
    if req.clear_limits && req.limits.is_some() {
        return Err(ApiError::BadRequest(
            "give either limits or clear_limits, not both".into(),
        ));
    }
    let id = TenantId::new(&id)?;
    let limits = if req.clear_limits {
        Some(None)
    } else {
        req.limits.map(Some)
    };
    let org = state
        .store
        .set_terms(&id, limits, req.allow_overage)
        .await?;
    crate::audit::record(
        &state.store,
        control::audit::AuditEntry::system(
            &org.id,
            "platform-admin",
            "platform",
            "PATCH",
            "/api/orgs/{id}",
            format!(
                "limits {:?}, allow_overage {}",
                org.limits, org.allow_overage
            ),
            200,
        ),
    )
    .await;
    Ok(Json(json!({ "organization": org })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Markup {
    /// Basis points over the child's invoice at cost (1500 = 15.00 %;
    /// 0 removes the markup); at most 100000 (1,000 %).
    markup_bps: u32,
}

/// At most 1,000 %: a markup past that is a typo, not a price.
const MAX_MARKUP_BPS: u32 = 100_000;

/// `PUT /api/orgs/{id}/markup` — an MSP's markup on a child organization's
/// invoices (reseller capability of the MSP plan); the platform admin may
/// set it too.
pub async fn set_markup(
    State(state): State<AppState>,
    caller: PlatformCaller,
    Path(id): Path<String>,
    body: crate::extract::JsonBody<Markup>,
) -> Result<Json<Value>> {
    let bps = body.0.markup_bps;
    if bps > MAX_MARKUP_BPS {
        return Err(ApiError::BadRequest(format!(
            "markup_bps {bps} is over {MAX_MARKUP_BPS} (1,000 %)"
        )));
    }
    let id = TenantId::new(&id)?;
    let child = state
        .store
        .organization(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("organization {id:?} not found")))?;
    let actor = match &caller {
        PlatformCaller::Operator => "platform-admin".to_string(),
        PlatformCaller::Msp(p) => {
            // Another MSP's child, or a top-level organization: as if it
            // did not exist (no probing of other organizations).
            if child.parent_id.as_ref() != Some(&p.tenant) {
                return Err(ApiError::NotFound(format!("organization {id:?} not found")));
            }
            state.entitled_org(p, schemas::Feature::Reseller).await?;
            p.tenant.to_string()
        }
    };
    if child.parent_id.is_none() {
        return Err(ApiError::BadRequest(format!(
            "{id} has no reseller: a markup is for a child organization of an MSP"
        )));
    }
    state.store.set_markup(&id, bps).await?;
    crate::audit::record(
        &state.store,
        control::audit::AuditEntry::system(
            &id,
            &actor,
            "platform",
            "PUT",
            "/api/orgs/{id}/markup",
            format!("markup_bps {bps}"),
            200,
        ),
    )
    .await;
    Ok(Json(json!({ "organization": id, "markup_bps": bps })))
}
