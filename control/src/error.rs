/// Control-plane errors. `NotFound`, `Conflict`, `Invalid` and the auth
/// variants are caller mistakes; `Store` is an internal failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing credentials: send an API key in X-API-Key or Authorization: Bearer <key>")]
    MissingCredentials,

    #[error("invalid or revoked API key")]
    InvalidCredentials,

    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },

    #[error("{what} {id:?} already exists")]
    Conflict { what: &'static str, id: String },

    #[error("{0}")]
    Invalid(String),

    /// A plan limit (devices, scans per month) would be exceeded.
    #[error("{0}")]
    PlanLimit(String),

    #[error(transparent)]
    Schema(#[from] schemas::Error),

    #[error("metadata store error: {0}")]
    Store(#[from] rusqlite::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
