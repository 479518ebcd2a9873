//! Detection rules and their matches.
//!
//! - `GET/POST /api/detections/rules`, `GET/PATCH/DELETE
//!   /api/detections/rules/{id}`: an organization's Sigma rules. A rule is
//!   uploaded as YAML (in a JSON body), parsed and compiled exactly as the
//!   pipeline will run it, and refused with the construct named if the
//!   engine does not support it. An MSP uploads a pack for its children
//!   with `"scope": "children"`. Listings also show the rules an
//!   organization inherits (its MSP's pack, the operator's pack), which it
//!   cannot change.
//! - `POST /api/detections/rules/{id}/test`: the rule over the
//!   organization's stored logs of a time range, read through DataFusion
//!   in the caller's SQL session (same slot, memory and deadline as
//!   `POST /api/sql`) and evaluated by the same compiled rule the stream
//!   runs: the same rows match.
//! - `GET /api/detections`: what the rules matched in the stream (the
//!   `detections` table), newest first.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use control::rules::{DetectionRule, RuleScope};
use detectors::sigma::correlation::{Event, State as Windows};
use detectors::sigma::detections::{KeyFields, fire_context};
use detectors::sigma::{Document, FieldMap, Level, TenantRules};
use schemas::Plan;
use schemas::time::{now_ms, to_rfc3339};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::listing::{Cursor, limit, page, rfc3339_ms, to_json_rows};
use crate::sql::Bound;
use crate::state::AppState;

/// `[api.detections]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionsConfig {
    /// Rules an organization may keep (its own and, for an MSP, its packs).
    pub max_rules_per_org: usize,
    /// Matches a backtest returns (it counts them all).
    pub backtest_max_matches: usize,
    /// Threat-intel indicators an organization may keep, over its lists.
    pub max_indicators_per_org: usize,
    /// Scheduled SQL alerts an organization may keep.
    pub max_alerts_per_org: usize,
    /// The shortest schedule of a SQL alert.
    pub min_alert_interval_ms: i64,
}

impl Default for DetectionsConfig {
    fn default() -> Self {
        Self {
            max_rules_per_org: 500,
            backtest_max_matches: 1000,
            max_indicators_per_org: 100_000,
            max_alerts_per_org: 50,
            min_alert_interval_ms: 60_000,
        }
    }
}

/// A rule of the operator's pack (`pipeline.rules.rules_dir`).
pub struct OperatorRule {
    pub id: String,
    pub yaml: String,
    pub rule: Arc<Document>,
}

/// What the detection routes share.
#[derive(Default)]
pub struct Detections {
    pub config: DetectionsConfig,
    pub operator: Arc<Vec<OperatorRule>>,
    /// `pipeline.rules.fields` over the defaults: uploads and backtests
    /// compile rules as the pipelines do.
    pub map: FieldMap,
}

/// Backtests look this far back unless told otherwise.
const DEFAULT_BACKTEST_MS: i64 = 24 * 3_600_000;
const MAX_ID_CHARS: usize = 128;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    /// The rule, in Sigma's YAML format.
    yaml: String,
    /// Default true.
    enabled: Option<bool>,
    /// `own` (default) or, for an MSP organization, `children`: a pack
    /// applied to every child organization.
    scope: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleChange {
    enabled: bool,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestRequest {
    /// Start of the range (RFC 3339, on `ts`); default 24 hours ago.
    since: Option<String>,
    /// End of the range (exclusive); default now.
    until: Option<String>,
    /// Matches returned (default and at most `api.detections.backtest_max_matches`).
    limit: Option<usize>,
}

/// Where a rule an organization sees comes from.
enum Found {
    Own(DetectionRule),
    Msp(DetectionRule),
    Operator(String, Arc<Document>),
}

/// A stored rule as the engine runs it, under the id it was stored as.
fn stored_document(r: &DetectionRule) -> Result<Arc<Document>> {
    let mut doc = Document::parse(&r.yaml)
        .map_err(|e| ApiError::Internal(format!("stored rule {}: {e}", r.id)))?;
    doc.set_id(r.id.clone());
    Ok(Arc::new(doc))
}

impl Found {
    fn rule(&self) -> Result<Arc<Document>> {
        match self {
            Found::Own(r) | Found::Msp(r) => stored_document(r),
            Found::Operator(_, rule) => Ok(rule.clone()),
        }
    }

    fn json(&self, with_yaml: bool) -> Result<Value> {
        let doc = self.rule()?;
        let (source, mut v) = match self {
            Found::Own(r) => ("own", stored_json(r)),
            Found::Msp(r) => ("msp", stored_json(r)),
            Found::Operator(yaml, rule) => (
                "operator",
                json!({
                    "id": rule.id(),
                    "title": rule.title(),
                    "level": rule.level().as_str(),
                    "enabled": true,
                    "scope": "own",
                    "yaml": yaml,
                }),
            ),
        };
        v["source"] = json!(source);
        v["kind"] = json!(doc.kind());
        if !with_yaml && let Some(o) = v.as_object_mut() {
            o.remove("yaml");
        }
        Ok(v)
    }
}

fn stored_json(r: &DetectionRule) -> Value {
    json!({
        "id": r.id,
        "title": r.title,
        "level": r.level,
        "enabled": r.enabled,
        "scope": r.scope,
        "created_at": to_rfc3339(r.created_at),
        "updated_at": to_rfc3339(r.updated_at),
        "yaml": r.yaml,
    })
}

async fn find(state: &AppState, caller: &control::Principal, id: &str) -> Result<Found> {
    if let Some(r) = state.store.detection_rule(&caller.tenant, id).await? {
        return Ok(Found::Own(r));
    }
    if let Some(r) = state
        .store
        .inherited_detection_rules(&caller.tenant)
        .await?
        .into_iter()
        .find(|r| r.id == id)
    {
        return Ok(Found::Msp(r));
    }
    if let Some(o) = state.detections.operator.iter().find(|o| o.id == id) {
        return Ok(Found::Operator(o.yaml.clone(), o.rule.clone()));
    }
    Err(ApiError::NotFound(format!(
        "detection rule {id:?} not found"
    )))
}

/// The rules a correlation of `scope` may correlate: for the organization's
/// own stream, every rule it runs (its own, its MSP's pack, the
/// operator's); for an MSP's pack, the pack's other rules and the
/// operator's.
async fn correlatable(
    state: &AppState,
    caller: &control::Principal,
    scope: RuleScope,
) -> Result<Vec<Arc<Document>>> {
    let mut docs = Vec::new();
    for r in state.store.list_detection_rules(&caller.tenant).await? {
        if r.scope == scope {
            docs.push(stored_document(&r)?);
        }
    }
    if scope == RuleScope::Own {
        for r in state
            .store
            .inherited_detection_rules(&caller.tenant)
            .await?
        {
            docs.push(stored_document(&r)?);
        }
    }
    docs.extend(state.detections.operator.iter().map(|o| o.rule.clone()));
    Ok(docs)
}

/// `doc` compiled as the stream runs it — a correlation with the rules it
/// correlates, found among `others` — or a `400` naming what the engine
/// refuses.
fn compile_with(
    doc: &Arc<Document>,
    others: &[Arc<Document>],
    map: &FieldMap,
) -> Result<TenantRules> {
    let mut docs = vec![doc.clone()];
    if let Document::Correlation(c) = doc.as_ref() {
        for reference in &c.rules {
            let named = |d: &&Arc<Document>| {
                d.id() == Some(reference.as_str()) || d.name() == Some(reference.as_str())
            };
            if let Some(d) = others.iter().find(named) {
                docs.push(d.clone());
            }
        }
    }
    let (rules, refused) = TenantRules::compile(&docs, map);
    match refused.into_iter().next() {
        Some((_, e)) => Err(ApiError::BadRequest(format!("rule refused: {e}"))),
        None => Ok(rules),
    }
}

pub(crate) fn valid_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.chars().count() <= MAX_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "rule id {:?}: 1 to {MAX_ID_CHARS} characters of A-Z a-z 0-9 - _ . :",
            id.chars().take(MAX_ID_CHARS + 1).collect::<String>()
        )))
    }
}

/// `GET /api/detections/rules`
pub async fn list_rules(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>> {
    let mut rules: Vec<Value> = Vec::new();
    for r in state.store.list_detection_rules(&caller.tenant).await? {
        rules.push(Found::Own(r).json(false)?);
    }
    for r in state
        .store
        .inherited_detection_rules(&caller.tenant)
        .await?
    {
        rules.push(Found::Msp(r).json(false)?);
    }
    for o in state.detections.operator.iter() {
        rules.push(Found::Operator(String::new(), o.rule.clone()).json(false)?);
    }
    Ok(Json(json!({ "rules": rules })))
}

/// `GET /api/detections/rules/{id}`
pub async fn get_rule(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let found = find(&state, &caller, &id).await?;
    let doc = found.rule()?;
    let mut v = found.json(true)?;
    v["tags"] = json!(doc.tags());
    v["description"] = json!(doc.description());
    match doc.as_ref() {
        Document::Rule(rule) => {
            v["status"] = json!(rule.status);
            v["logsource"] = json!({
                "product": rule.logsource.product,
                "service": rule.logsource.service,
                "category": rule.logsource.category,
            });
        }
        Document::Correlation(c) => {
            v["correlation"] = json!({
                "type": c.kind.as_str(),
                "rules": c.rules,
                "group_by": c.group_by,
                "timespan_ms": c.timespan_ms,
                "at_least": c.at_least,
                "field": c.field,
                "generate": c.generate,
            });
        }
    }
    Ok(Json(json!({ "rule": v })))
}

/// `POST /api/detections/rules`
pub async fn create_rule(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: crate::extract::JsonBody<NewRule>,
) -> Result<(StatusCode, Json<Value>)> {
    let crate::extract::JsonBody(req) = body;
    let scope = match req.scope.as_deref() {
        None => RuleScope::Own,
        Some(s) => RuleScope::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?,
    };
    if scope == RuleScope::Children && state.caller_org(&caller).await?.plan != Plan::Msp {
        return Err(ApiError::Forbidden(
            "only an MSP organization pushes rule packs (scope children) to its children".into(),
        ));
    }
    let mut rule = Document::parse(&req.yaml)
        .map_err(|e| ApiError::BadRequest(format!("rule refused: {e}")))?;
    let id = rule
        .id()
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
    valid_id(&id)?;
    rule.set_id(id.clone());
    let rule = Arc::new(rule);
    compile_with(
        &rule,
        &correlatable(&state, &caller, scope).await?,
        &state.detections.map,
    )?;
    let max = state.detections.config.max_rules_per_org;
    let count = state.store.count_detection_rules(&caller.tenant).await?;
    if count >= max {
        return Err(ApiError::Conflict(format!(
            "this organization has {count} detection rules, the most allowed \
             (api.detections.max_rules_per_org = {max}); delete some first"
        )));
    }
    let now = now_ms();
    let stored = DetectionRule {
        org_id: caller.tenant.clone(),
        id,
        title: rule.title().to_string(),
        level: rule.level().as_str().into(),
        yaml: req.yaml,
        enabled: req.enabled.unwrap_or(true),
        scope,
        created_at: now,
        updated_at: now,
    };
    state.store.add_detection_rule(&stored).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "rule": Found::Own(stored).json(true)? })),
    ))
}

/// An organization changes only its own rules.
async fn own_rule(state: &AppState, caller: &control::Principal, id: &str) -> Result<()> {
    match find(state, caller, id).await? {
        Found::Own(_) => Ok(()),
        Found::Msp(_) => Err(ApiError::Forbidden(format!(
            "rule {id:?} is your MSP's; it manages it"
        ))),
        Found::Operator(..) => Err(ApiError::Forbidden(format!(
            "rule {id:?} is the operator's; it applies to every organization"
        ))),
    }
}

/// `PATCH /api/detections/rules/{id}`
pub async fn set_rule(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: crate::extract::JsonBody<RuleChange>,
) -> Result<Json<Value>> {
    let crate::extract::JsonBody(change) = body;
    own_rule(&state, &caller, &id).await?;
    state
        .store
        .set_detection_rule_enabled(&caller.tenant, &id, change.enabled, now_ms())
        .await?;
    get_rule(State(state), Caller(caller), Path(id)).await
}

/// `DELETE /api/detections/rules/{id}`
pub async fn delete_rule(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    own_rule(&state, &caller, &id).await?;
    state
        .store
        .delete_detection_rule(&caller.tenant, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The key fields of a row a backtest reports.
fn row_json(keys: &KeyFields, batch_ids: &arrow::array::StringArray, i: usize) -> Value {
    let text = |a: &arrow::array::StringArray| a.is_valid(i).then(|| a.value(i).to_string());
    json!({
        "ts": to_rfc3339(keys.ts.value(i)),
        "ts_ms": keys.ts.value(i),
        "source_batch_id": batch_ids.value(i),
        "host": text(&keys.host),
        "app": text(&keys.app),
        "source_ip": text(&keys.source_ip),
        "message": text(&keys.message),
    })
}

/// What a backtest gathers while the rows stream by: the matches of rules
/// that store their own, and the events of correlations (with the rows
/// they came from), replayed in time order at the end.
struct Backtest {
    rules: TenantRules,
    /// A rule over scan findings: `findings` rows through `rules.findings`.
    over_findings: bool,
    keep: usize,
    scanned: usize,
    matched: usize,
    matches: Vec<Value>,
    events: Vec<Vec<Event>>,
    /// Key fields of the rows events came from, by `Event::origin`.
    origins: Vec<Value>,
}

impl Backtest {
    fn visit(&mut self, batch: RecordBatch) -> Result<bool> {
        self.scanned += batch.num_rows();
        let internal = |e: arrow::error::ArrowError| ApiError::Internal(e.to_string());
        let set = match self.over_findings {
            true => &self.rules.findings,
            false => &self.rules.set,
        };
        let found = set.evaluate(&batch).map_err(internal)?;
        if found.is_empty() {
            return Ok(true);
        }
        let keys = KeyFields::of(&batch).map_err(internal)?;
        let batch_ids = match batch.column_by_name("batch_id") {
            Some(c) => cast(c, &DataType::Utf8).map_err(internal)?,
            None => return Err(ApiError::Internal("logs without batch_id".into())),
        };
        let batch_ids = batch_ids.as_string::<i32>();
        let stores = |i: usize| self.over_findings || self.rules.stores(i);
        for m in found.iter().filter(|m| stores(m.rule)) {
            self.matched += m.rows.len();
            let room = self.keep.saturating_sub(self.matches.len());
            for &row in m.rows.iter().take(room) {
                self.matches.push(row_json(&keys, batch_ids, row as usize));
            }
        }
        for (k, c) in self.rules.correlations.iter().enumerate() {
            let mut events = c
                .events(&self.rules.map, &batch, &found, |row| row as usize)
                .map_err(internal)?;
            // Origins across batches: the index of the row's key fields.
            for e in &mut events {
                let row = e.origin;
                e.origin = self.origins.len();
                self.origins.push(row_json(&keys, batch_ids, row));
            }
            self.events[k].extend(events);
        }
        Ok(true)
    }

    /// Correlation events in time order through fresh windows: what fired.
    fn fire(&mut self) {
        for (k, c) in self.rules.correlations.iter().enumerate() {
            let mut events = std::mem::take(&mut self.events[k]);
            events.sort_by_key(|e| (e.ts, e.origin));
            // Every event is in order here: no lateness to allow.
            let fired = Windows::default().feed(&c.correlation, 0, events);
            self.matched += fired.len();
            for f in fired {
                if self.matches.len() >= self.keep {
                    continue;
                }
                let mut row = self.origins.get(f.origin).cloned().unwrap_or_default();
                row["context"] =
                    serde_json::from_str(&fire_context(&c.correlation, &f)).unwrap_or_default();
                self.matches.push(row);
            }
        }
    }
}

/// `POST /api/detections/rules/{id}/test`
pub async fn test_rule(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: crate::extract::JsonBody<BacktestRequest>,
) -> Result<Json<Value>> {
    let crate::extract::JsonBody(req) = body;
    let found = find(&state, &caller, &id).await?;
    let scope = match &found {
        Found::Own(r) => r.scope,
        Found::Msp(_) | Found::Operator(..) => RuleScope::Own,
    };
    let rule = found.rule()?;
    let mut rules = compile_with(
        &rule,
        &correlatable(&state, &caller, scope).await?,
        &state.detections.map,
    )?;
    // A correlation's rules feed it here even if they store their own.
    let correlations = rules.correlations.len();
    let now = now_ms();
    let until = match &req.until {
        Some(u) => rfc3339_ms("until", u)?,
        None => now + 1,
    };
    let since = match &req.since {
        Some(s) => rfc3339_ms("since", s)?,
        None => until - DEFAULT_BACKTEST_MS,
    };
    if since >= until {
        return Err(ApiError::BadRequest("since must be before until".into()));
    }
    if correlations > 0 {
        rules.store_none();
    }
    let max = state.detections.config.backtest_max_matches;
    let keep = req.limit.unwrap_or(max).min(max);
    let mut query = Bound::default();
    let (lo, hi) = (query.bind(since), query.bind(until));
    // Every column a rule may name; not `raw` (bytes as received).
    let over_findings = !rules.findings.is_empty();
    query.sql = if over_findings {
        format!(
            "SELECT tenant_id, ts, received_at, batch_id, finding_id, scan_id, device_id, ip, \
             port, protocol, service, product, severity, cvss, title, cve \
             FROM findings WHERE CAST(ts AS BIGINT) >= {lo} AND CAST(ts AS BIGINT) < {hi}"
        )
    } else {
        format!(
            "SELECT tenant_id, ts, received_at, batch_id, host, app, pid, severity, facility, \
             msg_id, message, source_ip, structured_data, parse_status, input, source_country, \
             source_asn, source_as_org \
             FROM logs WHERE CAST(ts AS BIGINT) >= {lo} AND CAST(ts AS BIGINT) < {hi}"
        )
    };
    let started = std::time::Instant::now();
    let state_in = Backtest {
        rules,
        over_findings,
        keep,
        scanned: 0,
        matched: 0,
        matches: Vec::new(),
        events: vec![Vec::new(); correlations],
        origins: Vec::new(),
    };
    let mut done = state
        .sql
        .scan_bound(&caller.tenant, &query, state_in, Backtest::visit)
        .await?;
    done.fire();
    let mut matches = done.matches;
    matches.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                v["ts_ms"].as_i64(),
                v["source_batch_id"].as_str().map(str::to_string),
                v["message"].as_str().map(str::to_string),
            )
        };
        key(a).cmp(&key(b))
    });
    Ok(Json(json!({
        "rule": { "id": rule.id(), "title": rule.title(), "level": rule.level().as_str(), "kind": rule.kind() },
        "since": to_rfc3339(since),
        "until": to_rfc3339(until),
        "rows_scanned": done.scanned,
        "matched": done.matched,
        "truncated": done.matched > matches.len(),
        "elapsed_ms": started.elapsed().as_millis() as u64,
        "matches": matches,
    })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DetectionParams {
    /// Comma-separated: informational, low, medium, high, critical.
    level: Option<String>,
    /// One rule's matches.
    rule_id: Option<String>,
    /// Matches of rows at or after this event time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Matches of rows before this event time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /api/detections`
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    params: crate::extract::QueryParams<DetectionParams>,
) -> Result<Json<Value>> {
    let crate::extract::QueryParams(p) = params;
    let limit = limit(p.limit)?;
    let mut query = Bound::default();
    let mut filters = vec!["1 = 1".to_string()];
    if let Some(levels) = &p.level {
        let mut list = Vec::new();
        for l in levels.split(',') {
            let level = Level::parse_name(l.trim()).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "level {:?} is not one of informational, low, medium, high, critical",
                    l.trim()
                ))
            })?;
            list.push(query.bind(level.as_str()));
        }
        filters.push(format!("level IN ({})", list.join(", ")));
    }
    if let Some(r) = &p.rule_id {
        valid_id(r)?;
        filters.push(format!("rule_id = {}", query.bind(r.as_str())));
    }
    let ts = "CAST(ts AS BIGINT)";
    if let Some(s) = &p.since {
        filters.push(format!("{ts} >= {}", query.bind(rfc3339_ms("since", s)?)));
    }
    if let Some(u) = &p.until {
        filters.push(format!("{ts} < {}", query.bind(rfc3339_ms("until", u)?)));
    }
    if let Some(Cursor { at_ms, id, .. }) = Cursor::param(p.cursor.as_deref())? {
        let (ms, id) = (query.bind(at_ms), query.bind(id.as_str()));
        filters.push(format!(
            "({ts} < {ms} OR ({ts} = {ms} AND detection_id < {id}))"
        ));
    }
    query.sql = format!(
        "SELECT detection_id, rule_id, rule_title, level, tags, {ts} AS ts_ms, host, app, \
         source_ip, message, source_kind, source_batch_id, source_row, context FROM detections \
         WHERE {} ORDER BY ts_ms DESC, detection_id DESC LIMIT {}",
        filters.join(" AND "),
        limit + 1
    );
    let result = state.sql.execute_bound(&caller.tenant, &query).await?;
    let (mut rows, next) = page(to_json_rows(&result.batches)?, limit, |r| {
        let at_ms = r["ts_ms"].as_i64().unwrap_or_default();
        Cursor::new(at_ms, r["detection_id"].as_str().unwrap_or_default()).to_string()
    });
    for r in &mut rows {
        for field in ["tags", "context"] {
            if let Some(Value::String(s)) = r.get(field) {
                let parsed = serde_json::from_str(s).unwrap_or(Value::Null);
                r[field] = parsed;
            }
        }
        if let Some(ms) = r["ts_ms"].as_i64() {
            r["ts"] = json!(to_rfc3339(ms));
        }
    }
    Ok(Json(json!({ "detections": rows, "next_cursor": next })))
}
