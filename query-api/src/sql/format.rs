//! Result encodings.

use arrow::array::RecordBatch;
use arrow::ipc::writer::StreamWriter;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::QueryResult;
use crate::error::{ApiError, Result};

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// `{"columns": [...], "rows": [{...}], "row_count", "truncated", "elapsed_ms"}`
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One Arrow IPC stream.
    Arrow,
}

impl OutputFormat {
    /// An explicit `format` wins; otherwise the Accept header; JSON by default.
    pub fn negotiate(explicit: Option<&str>, headers: &HeaderMap) -> Result<Self> {
        if let Some(f) = explicit {
            return match f.to_ascii_lowercase().as_str() {
                "json" => Ok(Self::Json),
                "csv" => Ok(Self::Csv),
                "arrow" | "arrow_ipc" | "ipc" => Ok(Self::Arrow),
                other => Err(ApiError::BadRequest(format!(
                    "unknown format {other:?}: use json, csv or arrow"
                ))),
            };
        }
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Ok(if accept.contains(ARROW_STREAM) {
            Self::Arrow
        } else if accept.contains("text/csv") {
            Self::Csv
        } else {
            Self::Json
        })
    }
}

/// The result encoded as `format`: (content type, bytes). Shared by the
/// HTTP route and `securenet sql`.
pub fn encode(format: OutputFormat, result: &QueryResult) -> Result<(&'static str, Vec<u8>)> {
    let encode_err =
        |e: arrow::error::ArrowError| ApiError::Internal(format!("encoding result: {e}"));
    let (content_type, body) = match format {
        OutputFormat::Json => ("application/json", json(result).map_err(encode_err)?),
        OutputFormat::Csv => {
            let mut out = Vec::new();
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in &result.batches {
                w.write(b).map_err(encode_err)?;
            }
            drop(w);
            ("text/csv; charset=utf-8", out)
        }
        OutputFormat::Arrow => {
            let mut out = Vec::new();
            let mut w = StreamWriter::try_new(&mut out, &result.schema).map_err(encode_err)?;
            for b in &result.batches {
                w.write(b).map_err(encode_err)?;
            }
            w.finish().map_err(encode_err)?;
            drop(w);
            (ARROW_STREAM, out)
        }
    };
    Ok((content_type, body))
}

pub fn respond(format: OutputFormat, result: QueryResult) -> Result<Response> {
    let (content_type, body) = encode(format, &result)?;
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = response.headers_mut();
    h.insert(
        "x-securenet-row-count",
        HeaderValue::from(result.num_rows()),
    );
    h.insert(
        "x-securenet-truncated",
        HeaderValue::from_static(if result.truncated { "true" } else { "false" }),
    );
    Ok(response)
}

fn json(result: &QueryResult) -> std::result::Result<Vec<u8>, arrow::error::ArrowError> {
    let columns: Vec<serde_json::Value> = result
        .schema
        .fields()
        .iter()
        .map(|f| serde_json::json!({ "name": f.name(), "type": f.data_type().to_string() }))
        .collect();
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(b"{\"columns\":");
    out.extend_from_slice(serde_json::Value::from(columns).to_string().as_bytes());
    out.extend_from_slice(b",\"rows\":");
    {
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(&mut out);
        let refs: Vec<&RecordBatch> = result.batches.iter().collect();
        w.write_batches(&refs)?;
        w.finish()?;
    }
    // An empty result writes nothing at all: make it an empty array.
    if out.ends_with(b"\"rows\":") {
        out.extend_from_slice(b"[]");
    }
    out.extend_from_slice(
        format!(
            ",\"row_count\":{},\"truncated\":{},\"elapsed_ms\":{}}}",
            result.num_rows(),
            result.truncated,
            result.elapsed.as_millis()
        )
        .as_bytes(),
    );
    Ok(out)
}
