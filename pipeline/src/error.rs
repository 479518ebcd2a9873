/// Pipeline errors. `Overloaded` and `Closed` are flow-control conditions the
/// ingest side turns into 503s; the rest are sink or storage failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the pipeline is saturated; retry later")]
    Overloaded,

    #[error("the pipeline is shutting down")]
    Closed,

    #[error("bus error: {0}")]
    Bus(String),

    #[error("sink {sink} failed: {message}")]
    Sink { sink: &'static str, message: String },

    #[error("detector {detector} failed: {message}")]
    Detector {
        detector: &'static str,
        message: String,
    },

    #[error("object store error: {0}")]
    ObjectStore(#[from] object_store::Error),

    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error(transparent)]
    Schema(#[from] schemas::Error),

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether the same request may succeed later without any change: the
    /// bus or the store was down, slow or full. Encoding and configuration
    /// errors are not, and neither is a closed pipeline.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Overloaded | Self::Bus(_) | Self::ObjectStore(_) | Self::Io(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
