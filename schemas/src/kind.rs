//! Record kinds: one Arrow schema, one Kafka topic and one table each.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The kinds of records that travel through the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Logs,
    Devices,
    Scans,
    Findings,
    Anomalies,
    Usage,
    ApiRequests,
    /// Sigma rule matches, derived in the pipeline from `logs` batches.
    Detections,
}

impl RecordKind {
    pub const ALL: [RecordKind; 8] = [
        RecordKind::Logs,
        RecordKind::Devices,
        RecordKind::Scans,
        RecordKind::Findings,
        RecordKind::Anomalies,
        RecordKind::Usage,
        RecordKind::ApiRequests,
        RecordKind::Detections,
    ];

    /// The name used for headers, table names and object-store prefixes.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Logs => "logs",
            RecordKind::Devices => "devices",
            RecordKind::Scans => "scans",
            RecordKind::Findings => "findings",
            RecordKind::Anomalies => "anomalies",
            RecordKind::Usage => "usage",
            RecordKind::ApiRequests => "api_requests",
            RecordKind::Detections => "detections",
        }
    }

    /// Kafka topic for this kind: `<prefix>.<kind>.v<major>`.
    pub fn topic(self, prefix: &str) -> String {
        format!(
            "{prefix}.{}.v{}",
            self.as_str(),
            crate::schema::version(self).major
        )
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecordKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        RecordKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::UnknownKind(s.chars().take(64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in RecordKind::ALL {
            assert_eq!(k.as_str().parse::<RecordKind>().unwrap(), k);
        }
        assert!("log".parse::<RecordKind>().is_err());
    }

    #[test]
    fn topic_names() {
        assert_eq!(RecordKind::Logs.topic("securenet"), "securenet.logs.v1");
        assert_eq!(RecordKind::ApiRequests.topic("x"), "x.api_requests.v1");
    }
}
