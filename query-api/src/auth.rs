//! Authentication as an extractor: a handler that takes a [`Caller`] cannot
//! run unauthenticated, and gets the tenant to scope everything by.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use control::Principal;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = control::authenticate(&state.store, &parts.headers)?;
        // Tell the metering and audit middleware who called (first caller
        // wins) — also when the call is refused below: the audit log shows
        // the 429, metering does not bill it.
        if let Some(slot) = parts.extensions.get::<crate::metering::CallerSlot>() {
            let _ = slot.0.set(principal.clone());
        }
        state
            .limits
            .check(&principal.tenant)
            .map_err(ApiError::RateLimited)?;
        Ok(Caller(principal))
    }
}
