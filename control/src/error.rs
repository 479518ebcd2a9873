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

    /// A feature the organization's plan does not include, at the moment
    /// it is used (`schemas::Feature`).
    #[error(
        "{feature} is not included in the {plan} plan; it comes with the {} plan and up",
        feature.lowest_plan()
    )]
    NotInPlan {
        feature: schemas::Feature,
        plan: schemas::Plan,
    },

    #[error(transparent)]
    Schema(#[from] schemas::Error),

    #[error("metadata store error: {0}")]
    Store(#[from] crate::db::StoreError),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Store(e.into())
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The HTTP status and stable error code this error answers with, on
    /// every role's routes (ingest and query API alike): caller mistakes
    /// are 4xx, a failing store is 503.
    pub fn http_status(&self) -> (u16, &'static str) {
        match self {
            Error::MissingCredentials | Error::InvalidCredentials => (401, "unauthorized"),
            Error::NotFound { .. } => (404, "not_found"),
            Error::Conflict { .. } => (409, "conflict"),
            Error::Invalid(_) | Error::Schema(_) => (400, "bad_request"),
            Error::PlanLimit(_) => (402, "plan_limit_exceeded"),
            Error::NotInPlan { .. } => (402, "feature_not_in_plan"),
            Error::Store(_) => (503, "metadata_unavailable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    /// Ingest answered 401 for a control-plane not-found or conflict, the
    /// query API 404/409: both now answer what this says.
    #[test]
    fn one_status_per_error() {
        let not_found = Error::NotFound {
            what: "device",
            id: "d".into(),
        };
        let conflict = Error::Conflict {
            what: "scan",
            id: "s".into(),
        };
        assert_eq!(not_found.http_status(), (404, "not_found"));
        assert_eq!(conflict.http_status(), (409, "conflict"));
        assert_eq!(Error::InvalidCredentials.http_status().0, 401);
        assert_eq!(Error::PlanLimit("5 devices".into()).http_status().0, 402);
        assert_eq!(Error::Invalid("bad".into()).http_status().0, 400);
    }
}
