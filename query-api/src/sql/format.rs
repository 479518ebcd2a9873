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

/// A result encoded for the wire.
pub struct Encoded {
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Rows in `body`.
    pub rows: usize,
    /// Rows were left out: by the query's row or byte limit, or because
    /// the encoding would pass `max_bytes`.
    pub truncated: bool,
}

/// Rows encoded at a time; the byte limit is checked between chunks.
const CHUNK_ROWS: usize = 1024;

/// The result encoded as `format`, at most `max_bytes` long (rows that
/// would pass it are left out and the result is marked truncated). Shared
/// by the HTTP route and `securenet sql`.
pub fn encode(format: OutputFormat, result: &QueryResult, max_bytes: usize) -> Result<Encoded> {
    let encode_err =
        |e: arrow::error::ArrowError| ApiError::Internal(format!("encoding result: {e}"));
    let mut body = Vec::with_capacity(4096);
    let mut rows = 0usize;
    let mut cut = false;
    let chunks = result.batches.iter().flat_map(|b| {
        (0..b.num_rows())
            .step_by(CHUNK_ROWS)
            .map(move |at| b.slice(at, CHUNK_ROWS.min(b.num_rows() - at)))
    });
    let content_type = match format {
        OutputFormat::Json => {
            let columns: Vec<serde_json::Value> = result
                .schema
                .fields()
                .iter()
                .map(|f| serde_json::json!({ "name": f.name(), "type": f.data_type().to_string() }))
                .collect();
            body.extend_from_slice(b"{\"columns\":");
            body.extend_from_slice(serde_json::Value::from(columns).to_string().as_bytes());
            body.extend_from_slice(b",\"rows\":[");
            for chunk in chunks {
                let lines = json_lines(&chunk).map_err(encode_err)?;
                if body.len() + lines.len() > max_bytes {
                    cut = true;
                    break;
                }
                // One object per line: join them with commas.
                for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    if !body.ends_with(b"[") {
                        body.push(b',');
                    }
                    body.extend_from_slice(line);
                }
                rows += chunk.num_rows();
            }
            body.extend_from_slice(
                format!(
                    "],\"row_count\":{rows},\"truncated\":{},\"elapsed_ms\":{}}}",
                    result.truncated || cut,
                    result.elapsed.as_millis()
                )
                .as_bytes(),
            );
            "application/json"
        }
        OutputFormat::Csv => {
            let mut first = true;
            for chunk in chunks {
                let chunk = neutralize_formulas(&chunk).map_err(encode_err)?;
                let mut part = Vec::new();
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(first)
                    .build(&mut part);
                w.write(&chunk).map_err(encode_err)?;
                drop(w);
                if body.len() + part.len() > max_bytes {
                    cut = true;
                    break;
                }
                first = false;
                body.extend_from_slice(&part);
                rows += chunk.num_rows();
            }
            if first && !cut {
                // No rows: still a header line.
                let empty = RecordBatch::new_empty(result.schema.clone());
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut body);
                w.write(&empty).map_err(encode_err)?;
            }
            "text/csv; charset=utf-8"
        }
        OutputFormat::Arrow => {
            // The stream is about as long as the batches' buffers: reserve
            // it once. Grown by doubling, a result of 100+ MB was copied
            // again at each step — 1.5× the time of a 1M-row fetch with
            // jemalloc, whose large reallocations copy where glibc's remap
            // pages (docs/benchmarks.md, "The allocator, again").
            let estimate: usize = result
                .batches
                .iter()
                .map(|b| b.get_array_memory_size())
                .sum();
            body.reserve(estimate.saturating_add(64 * 1024).min(max_bytes));
            let mut w = StreamWriter::try_new(&mut body, &result.schema).map_err(encode_err)?;
            for chunk in chunks {
                // IPC bodies are the batch's buffers: their size bounds it.
                if w.get_ref().len() + chunk.get_array_memory_size() > max_bytes {
                    cut = true;
                    break;
                }
                w.write(&chunk).map_err(encode_err)?;
                rows += chunk.num_rows();
            }
            w.finish().map_err(encode_err)?;
            drop(w);
            ARROW_STREAM
        }
    };
    Ok(Encoded {
        content_type,
        body,
        rows,
        truncated: result.truncated || cut,
    })
}

pub fn respond(format: OutputFormat, result: QueryResult, max_bytes: usize) -> Result<Response> {
    let encoded = encode(format, &result, max_bytes)?;
    let mut response =
        ([(header::CONTENT_TYPE, encoded.content_type)], encoded.body).into_response();
    let h = response.headers_mut();
    h.insert("x-securenet-row-count", HeaderValue::from(encoded.rows));
    h.insert(
        "x-securenet-truncated",
        HeaderValue::from_static(if encoded.truncated { "true" } else { "false" }),
    );
    Ok(response)
}

fn json_lines(batch: &RecordBatch) -> std::result::Result<Vec<u8>, arrow::error::ArrowError> {
    let mut out = Vec::new();
    let mut w = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::LineDelimited>(&mut out);
    w.write(batch)?;
    w.finish()?;
    drop(w);
    Ok(out)
}

/// Cells a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab,
/// carriage return first) get a leading `'`, as OWASP advises for CSV
/// exports. Only text columns: numbers are typed and safe.
pub fn neutralize_formulas(
    batch: &RecordBatch,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{Array, ArrayRef, AsArray, StringArray};
    use arrow::datatypes::DataType;
    let risky = |s: &str| s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    let mut changed = false;
    for c in batch.columns() {
        let text = match c.data_type() {
            DataType::Utf8 => c.as_string::<i32>(),
            _ => {
                columns.push(c.clone());
                continue;
            }
        };
        if !(0..text.len()).any(|i| !text.is_null(i) && risky(text.value(i))) {
            columns.push(c.clone());
            continue;
        }
        changed = true;
        let fixed: StringArray = (0..text.len())
            .map(|i| {
                (!text.is_null(i)).then(|| {
                    let v = text.value(i);
                    if risky(v) {
                        format!("'{v}")
                    } else {
                        v.to_string()
                    }
                })
            })
            .collect();
        columns.push(std::sync::Arc::new(fixed));
    }
    if !changed {
        return Ok(batch.clone());
    }
    RecordBatch::try_new(batch.schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn result(n: usize) -> QueryResult {
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let s: StringArray = (0..n)
            .map(|i| {
                Some(if i == 0 {
                    "=HYPERLINK(\"x\")".to_string()
                } else {
                    format!("row{i}")
                })
            })
            .collect();
        let v: Int64Array = (0..n as i64).map(|i| Some(-i)).collect();
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(s), Arc::new(v)]).unwrap();
        QueryResult {
            schema,
            batches: vec![batch],
            truncated: false,
            max_rows: n,
            elapsed: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn csv_cells_that_look_like_formulas_are_quoted_and_numbers_are_not() {
        let e = encode(OutputFormat::Csv, &result(3), 1 << 20).unwrap();
        let text = String::from_utf8(e.body).unwrap();
        assert_eq!(
            text,
            "s,n\n\"'=HYPERLINK(\"\"x\"\")\",0\nrow1,-1\nrow2,-2\n"
        );
    }

    #[test]
    fn every_format_stops_at_the_byte_limit_and_says_so() {
        let r = result(10_000);
        for format in [OutputFormat::Json, OutputFormat::Csv, OutputFormat::Arrow] {
            let full = encode(format, &r, usize::MAX).unwrap();
            assert_eq!((full.rows, full.truncated), (10_000, false));
            let cut = encode(format, &r, 64 << 10).unwrap();
            assert!(cut.truncated && cut.rows < 10_000, "{format:?}");
            assert!(cut.body.len() <= 64 << 10, "{format:?}: {}", cut.body.len());
            if format == OutputFormat::Json {
                let v: serde_json::Value = serde_json::from_slice(&cut.body).unwrap();
                assert_eq!(v["rows"].as_array().unwrap().len(), cut.rows);
                assert_eq!(v["truncated"], true);
            }
        }
    }
}
