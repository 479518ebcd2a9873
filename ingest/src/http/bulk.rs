//! Elasticsearch `_bulk`: `/api/ingest/_bulk` and `/api/ingest/{index}/_bulk`.
//!
//! Point Fluent Bit's `es` output, Vector's `elasticsearch` sink or
//! Logstash's `elasticsearch` output at `http(s)://<host>:8080/api/ingest`
//! with the API key as a bearer token. `index` and `create` actions store
//! their document (read like a JSON log object, with `_index` kept in
//! `structured_data`); `update` and `delete` get a per-item 400. The answer
//! has Elasticsearch's shape (`took`, `errors`, `items`), one item per
//! action, in order, so clients retry exactly what failed.
//!
//! `GET /api/ingest` answers like an Elasticsearch 8 root endpoint and
//! `GET /api/ingest/_cluster/health` like a green cluster: the version and
//! health checks those clients make before sending.

use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{IngestState, classify, with_retry_headers};
use crate::error::Error;

const PRODUCT_HEADER: &str = "x-elastic-product";

fn elastic(response: impl IntoResponse) -> Response {
    let mut r = response.into_response();
    // Official Elasticsearch clients (7.14+) refuse servers without it.
    r.headers_mut()
        .insert(PRODUCT_HEADER, HeaderValue::from_static("Elasticsearch"));
    r
}

fn es_error(err: Error) -> Response {
    let (status, code, message) = classify(&err);
    let body = json!({
        "error": { "type": code, "reason": message, "root_cause": [{ "type": code, "reason": message }] },
        "status": status.as_u16(),
    });
    elastic(with_retry_headers(
        (status, Json(body)).into_response(),
        &err,
    ))
}

pub async fn info() -> Response {
    elastic(Json(json!({
        "name": "securenet",
        "cluster_name": "securenet",
        "cluster_uuid": "securenet",
        "version": {
            "number": "8.11.0",
            "build_flavor": "default",
            "lucene_version": "9.8.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0"
        },
        "tagline": "You Know, for Search"
    })))
}

pub async fn cluster_health() -> Response {
    elastic(Json(
        json!({ "cluster_name": "securenet", "status": "green", "timed_out": false }),
    ))
}

pub async fn bulk(State(state): State<IngestState>, headers: HeaderMap, body: Body) -> Response {
    handle(state, None, headers, body).await
}

pub async fn bulk_index(
    State(state): State<IngestState>,
    Path(index): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, Some(index), headers, body).await
}

/// One action of the request and, for `index`/`create`, its outcome.
pub(crate) struct Item {
    action: String,
    index: String,
    id: String,
    /// `None`: stored (201); `Some((status, type, reason))`: refused.
    error: Option<(u16, &'static str, String)>,
}

async fn handle(
    state: IngestState,
    default_index: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let (principal, wire) = match state
        .begin(&headers, body, state.config.max_body_bytes)
        .await
    {
        Ok(b) => b,
        Err(e) => return es_error(e),
    };
    let now = schemas::time::now_ms();
    let default_index = default_index.unwrap_or_else(|| "logs".to_string());
    let tenant = principal.tenant.clone();
    let max_record = state.config.max_record_bytes;
    let parsed = state
        .parse(wire, move |bytes, charge| {
            parse_bulk(bytes, &default_index, &tenant, now, max_record, charge)
        })
        .await;
    let ((items, records), reservation) = match parsed {
        Ok(p) => p,
        Err(e) => return es_error(e),
    };
    let rejected = items.iter().filter(|i| i.error.is_some()).count();
    if let Err(e) = state
        .store_records(principal.tenant, "bulk", records, rejected, reservation)
        .await
    {
        return es_error(e);
    }
    let errors = rejected > 0;
    let items: Vec<Value> = items
        .into_iter()
        .enumerate()
        .map(|(seq, i)| {
            let body = match i.error {
                None => json!({
                    "_index": i.index, "_id": i.id, "_version": 1, "result": "created",
                    "_shards": { "total": 1, "successful": 1, "failed": 0 },
                    "_seq_no": seq, "_primary_term": 1, "status": 201,
                }),
                Some((status, kind, reason)) => json!({
                    "_index": i.index, "_id": i.id, "status": status,
                    "error": { "type": kind, "reason": reason },
                }),
            };
            json!({ i.action: body })
        })
        .collect();
    elastic(Json(json!({
        "took": started.elapsed().as_millis() as u64,
        "errors": errors,
        "items": items,
    })))
}

/// Action and document lines → items (one per action) and the records of
/// the stored documents, each charged as it is built.
pub(crate) fn parse_bulk(
    bytes: &[u8],
    default_index: &str,
    tenant: &schemas::TenantId,
    now: i64,
    max_record: usize,
    charge: &mut dyn FnMut(&schemas::LogRecord) -> Result<(), Error>,
) -> Result<(Vec<Item>, Vec<schemas::LogRecord>), Error> {
    let mut items = Vec::new();
    let mut records = Vec::new();
    let mut lines = bytes
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    while let Some(action_line) = lines.next() {
        let Ok(Value::Object(action)) = serde_json::from_slice::<Value>(action_line) else {
            return Err(Error::BadRequest(format!(
                "malformed action/metadata line {}: expected a JSON object such as {{\"index\":{{}}}}",
                items.len() * 2 + 1
            )));
        };
        let Some((verb, meta)) = action.into_iter().next() else {
            return Err(Error::BadRequest("empty action line".into()));
        };
        let meta = meta.as_object().cloned().unwrap_or_default();
        let index = meta
            .get("_index")
            .and_then(Value::as_str)
            .map_or_else(|| default_index.to_string(), str::to_string);
        let id = meta
            .get("_id")
            .and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
            })
            .unwrap_or_else(|| Uuid::now_v7().simple().to_string());
        let mut item = Item {
            action: verb.clone(),
            index,
            id,
            error: None,
        };
        match verb.as_str() {
            "index" | "create" => {
                let Some(doc) = lines.next() else {
                    return Err(Error::BadRequest(format!(
                        "action {verb} is missing its document line"
                    )));
                };
                item.error = store_doc(doc, &item, tenant, now, max_record, &mut records);
                if item.error.is_none()
                    && let Some(r) = records.last()
                {
                    charge(r)?;
                }
            }
            "update" => {
                lines.next(); // its document line
                item.error = Some((400, "action_request_validation_exception", "update is not supported: SecureNet stores logs append-only; use index or create".into()));
            }
            "delete" => {
                item.error = Some((
                    400,
                    "action_request_validation_exception",
                    "delete is not supported: SecureNet stores logs append-only".into(),
                ));
            }
            other => {
                return Err(Error::BadRequest(format!(
                    "unknown action {other:?}: expected index, create, update or delete"
                )));
            }
        }
        items.push(item);
    }
    if items.is_empty() {
        return Err(Error::BadRequest(
            "request body is required: send action and document lines".into(),
        ));
    }
    Ok((items, records))
}

fn store_doc(
    doc: &[u8],
    item: &Item,
    tenant: &schemas::TenantId,
    now: i64,
    max_record: usize,
    records: &mut Vec<schemas::LogRecord>,
) -> Option<(u16, &'static str, String)> {
    if doc.len() > max_record {
        return Some((
            413,
            "document_too_large",
            format!(
                "document is {} bytes, over the limit of {} bytes",
                doc.len(),
                max_record
            ),
        ));
    }
    let Ok(text) = std::str::from_utf8(doc) else {
        return Some((
            400,
            "mapper_parsing_exception",
            "document is not valid UTF-8".into(),
        ));
    };
    let extra = [("_index", item.index.as_str()), ("_id", item.id.as_str())];
    match crate::json::parse_record_with(text, tenant, now, "bulk", &extra) {
        Ok(r) => {
            records.push(r);
            None
        }
        Err(e) => Some((400, "document_parsing_exception", e.to_string())),
    }
}
