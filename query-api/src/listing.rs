//! What every listing route shares: the page size, the cursor, the page
//! itself, time parameters, and reading Arrow results as JSON rows.
//!
//! Cursors are opaque strings to clients (`next_cursor`, passed back as
//! `?cursor=`); inside they are `<ms>.<id>` — the sort key of the last item
//! — with `.<skip>` where the sort key has ties (the data listings: rows of
//! one batch share a time), or, for the audit log, the entry number. Any
//! other text is a `400`.

use arrow::array::RecordBatch;
use serde_json::Value;

use crate::error::{ApiError, Result};

/// Items per page unless `?limit=` says otherwise.
pub(crate) const DEFAULT_LIMIT: usize = 50;
pub(crate) const MAX_LIMIT: usize = 500;

/// `?limit=`: 1..=500, default 50.
pub(crate) fn limit(l: Option<usize>) -> Result<usize> {
    match l.unwrap_or(DEFAULT_LIMIT) {
        0 => Err(ApiError::BadRequest("limit must be at least 1".into())),
        n if n > MAX_LIMIT => Err(ApiError::BadRequest(format!(
            "limit {n} is over the maximum of {MAX_LIMIT}"
        ))),
        n => Ok(n),
    }
}

fn foreign_cursor() -> ApiError {
    ApiError::BadRequest("cursor is not one this API issued".into())
}

/// Rows sharing one sort key that a cursor may skip: at most a batch's rows
/// (ingest.batch.max_rows is far below). Anything larger is forged.
const MAX_SKIP: usize = 10_000_000;

/// `<ms>.<id>[.<skip>]`: the time and id of the last item of the previous
/// page (ids are UUIDs or `prefix_hex` slugs), and how many items with that
/// same time and id it already showed (listings whose key has ties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub at_ms: i64,
    pub id: String,
    pub skip: usize,
}

impl Cursor {
    pub fn new(at_ms: i64, id: impl Into<String>) -> Self {
        Self {
            at_ms,
            id: id.into(),
            skip: 0,
        }
    }

    /// A cursor past `skip` items sharing the key `(at_ms, id)`.
    pub fn with_skip(self, skip: usize) -> Self {
        Self { skip, ..self }
    }

    pub fn parse(text: &str) -> Result<Self> {
        let mut parts = text.splitn(3, '.');
        let (Some(ms), Some(id)) = (parts.next(), parts.next()) else {
            return Err(foreign_cursor());
        };
        let skip = match parts.next() {
            None => 0,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|s| *s <= MAX_SKIP)
                .ok_or_else(foreign_cursor)?,
        };
        let at_ms = ms.parse().map_err(|_| foreign_cursor())?;
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !id_ok {
            return Err(foreign_cursor());
        }
        Ok(Self::new(at_ms, id).with_skip(skip))
    }

    /// `?cursor=` if given.
    pub fn param(text: Option<&str>) -> Result<Option<Self>> {
        text.map(Self::parse).transpose()
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.at_ms, self.id)?;
        if self.skip > 0 {
            write!(f, ".{}", self.skip)?;
        }
        Ok(())
    }
}

/// A page of at most `limit` items out of `limit + 1` fetched: the extra
/// one only says there is more, and the last kept item names the cursor.
pub(crate) fn page<T>(
    mut items: Vec<T>,
    limit: usize,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more {
        items.last().map(cursor_of)
    } else {
        None
    };
    (items, next)
}

/// An RFC 3339 query parameter → milliseconds, or a `400` naming it.
pub(crate) fn rfc3339_ms(name: &str, v: &str) -> Result<i64> {
    schemas::time::parse_rfc3339_ms(v)
        .ok_or_else(|| ApiError::BadRequest(format!("{name} {v:?} is not an RFC 3339 time")))
}

/// Arrow results as JSON objects, one per row (arrow's JSON writer).
pub(crate) fn to_json_rows(batches: &[RecordBatch]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    {
        let mut w = arrow::json::ArrayWriter::new(&mut out);
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        w.write_batches(&refs)
            .and_then(|_| w.finish())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    if out.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&out).map_err(|e| ApiError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        let c = Cursor::new(1_796_000_000_123, "dl_9f86d081884c7d65");
        assert_eq!(Cursor::parse(&c.to_string()).unwrap(), c);
        let uuid = Cursor::parse("5.01a23634-af26-743f-843d-4931ff4b4b97").unwrap();
        assert_eq!(uuid.id, "01a23634-af26-743f-843d-4931ff4b4b97");
        // Ties: how many rows of the same key the previous pages showed.
        let tied = Cursor::new(7, "01a23634-af26-743f-843d-4931ff4b4b97").with_skip(3);
        assert_eq!(tied.to_string(), "7.01a23634-af26-743f-843d-4931ff4b4b97.3");
        assert_eq!(Cursor::parse(&tied.to_string()).unwrap(), tied);
        for forged in [
            "",
            "5",
            "5.id.x",
            "5.id.-1",
            "5.id.10000001",
            "5.id.1.2",
            "x.id",
            "5.",
            "5.a'b",
            "5.a b",
            &format!("5.{}", "a".repeat(65)),
        ] {
            assert!(Cursor::parse(forged).is_err(), "{forged:?}");
        }
    }

    #[test]
    fn pages_and_limits() {
        let (items, next) = page(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!((items, next), (vec![1, 2], Some("2".to_string())));
        let (items, next) = page(vec![1, 2], 2, |n| n.to_string());
        assert_eq!((items, next), (vec![1, 2], None));
        assert_eq!(limit(None).unwrap(), 50);
        assert!(limit(Some(0)).is_err() && limit(Some(501)).is_err());
        assert_eq!(rfc3339_ms("since", "1970-01-01T00:00:01Z").unwrap(), 1000);
        assert!(rfc3339_ms("since", "yesterday").is_err());
    }
}
