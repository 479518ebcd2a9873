//! Authentication and authorization, run from the route table: each route's
//! [`Access`] is checked by [`authorize`] before its handler runs, and the
//! handler gets the tenant to scope everything by through [`Caller`] (or
//! [`PlatformCaller`] on platform routes).
//!
//! Acting for a child organization: an MSP organization's credential may
//! send `X-Organization-Id: <child>`; the call then runs as the child (data,
//! rate limit, metering, audit log — the log records `key@msp`). Any other
//! organization, or a child that is not the caller's, gets 403.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use control::{Principal, Role};
use schemas::{Plan, TenantId};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::metering::CallerSlot;
use crate::routes::Access;
use crate::state::AppState;

/// The header an MSP sends to act for one of its child organizations.
pub const ACT_FOR_HEADER: &str = "x-organization-id";

/// The authenticated caller of a tenant route.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

/// The caller of a platform route.
#[derive(Debug, Clone)]
pub enum PlatformCaller {
    /// The platform-admin token: every organization.
    Operator,
    /// An MSP organization's admin: its own child organizations only.
    Msp(Principal),
}

fn from_extensions<T: Clone + Send + Sync + 'static>(parts: &Parts) -> Result<T, ApiError> {
    parts.extensions.get::<T>().cloned().ok_or_else(|| {
        ApiError::Internal(format!(
            "route {} has no access declaration for this caller type",
            parts.uri.path()
        ))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        from_extensions(parts)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PlatformCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        from_extensions(parts)
    }
}

/// The platform-admin token, kept as its SHA-256 (compared in constant time).
#[derive(Clone)]
pub struct PlatformToken(Arc<[u8; 32]>);

impl PlatformToken {
    pub fn new(token: &str) -> Result<Self, schemas::InvalidSetting> {
        if token.len() < 32 {
            return Err(schemas::InvalidSetting::new(
                "api.platform_admin_token",
                "must be at least 32 characters",
            ));
        }
        Ok(Self(Arc::new(Sha256::digest(token.as_bytes()).into())))
    }

    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&*self.0).into()
    }
}

/// Resolves `X-Organization-Id`: the principal acting for the child.
async fn act_for(
    state: &AppState,
    principal: Principal,
    parts: &Parts,
) -> Result<Principal, ApiError> {
    let Some(target) = parts.headers.get(ACT_FOR_HEADER) else {
        return Ok(principal);
    };
    let target = target
        .to_str()
        .ok()
        .and_then(|t| TenantId::new(t.trim()).ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!("{ACT_FOR_HEADER} is not an organization id"))
        })?;
    if target == principal.tenant {
        return Ok(principal);
    }
    let me = state.store.organization(&principal.tenant).await?;
    if me.as_ref().is_none_or(|o| o.plan != Plan::Msp) {
        return Err(ApiError::Forbidden(format!(
            "only MSP organizations may act for another organization ({ACT_FOR_HEADER})"
        )));
    }
    let child = state.store.organization(&target).await?;
    if child.is_none_or(|c| c.parent_id.as_ref() != Some(&principal.tenant)) {
        return Err(ApiError::Forbidden(format!(
            "{target} is not a child organization of {}",
            principal.tenant
        )));
    }
    Ok(Principal {
        key_id: format!("{}@{}", principal.key_id, principal.tenant),
        tenant: target,
        role: principal.role,
    })
}

async fn check(state: &AppState, access: Access, parts: &mut Parts) -> Result<(), ApiError> {
    match access {
        Access::Public => Ok(()),
        Access::Platform => {
            let presented = control::auth::presented_key(&parts.headers).unwrap_or_default();
            if let Some(token) = &state.platform_token
                && !presented.is_empty()
                && token.matches(presented)
            {
                parts.extensions.insert(PlatformCaller::Operator);
                return Ok(());
            }
            let principal = authenticate(state, parts).await?;
            let msp = state
                .store
                .organization(&principal.tenant)
                .await?
                .is_some_and(|o| o.plan == Plan::Msp);
            if !msp || principal.role < Role::Admin {
                return Err(ApiError::Forbidden(
                    "this route needs the platform-admin token or an MSP organization's admin"
                        .into(),
                ));
            }
            if let Some(slot) = parts.extensions.get::<CallerSlot>() {
                let _ = slot.0.set(principal.clone());
            }
            parts.extensions.insert(PlatformCaller::Msp(principal));
            Ok(())
        }
        Access::Role(min) => {
            let principal = authenticate(state, parts).await?;
            let principal = act_for(state, principal, parts).await?;
            // Tell the metering and audit middleware who called — also
            // when the call is refused below: the audit log shows the 403
            // or 429, metering does not bill a 429.
            if let Some(slot) = parts.extensions.get::<CallerSlot>() {
                let _ = slot.0.set(principal.clone());
            }
            state
                .limits
                .check(&principal.tenant)
                .map_err(ApiError::RateLimited)?;
            if principal.role < min {
                return Err(ApiError::Forbidden(format!(
                    "this route needs the {min} role; the credential has {}",
                    principal.role
                )));
            }
            parts.extensions.insert(Caller(principal));
            Ok(())
        }
    }
}

/// Authenticates the request; a refused credential whose organization is
/// known goes to that organization's audit log.
async fn authenticate(state: &AppState, parts: &Parts) -> Result<Principal, ApiError> {
    let result = control::authenticate(&state.store, &parts.headers).await;
    if let Err(control::Error::InvalidCredentials) = result
        && let Some(presented) = control::auth::presented_key(&parts.headers)
    {
        state
            .store
            .record_failed_authentication(presented, parts.method.as_str(), parts.uri.path())
            .await;
    }
    result.map_err(ApiError::from)
}

/// Middleware on every route of the table, with that route's access.
pub async fn authorize(
    State((state, access)): State<(AppState, Access)>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    if let Err(e) = check(&state, access, &mut parts).await {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}
