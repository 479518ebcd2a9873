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
        Ok(Caller(control::authenticate(&state.store, &parts.headers)?))
    }
}
