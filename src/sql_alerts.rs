//! Scheduled SQL alerts, run by the pipeline role.
//!
//! Every `tick_ms` the runner asks the metadata store for due alerts and
//! takes each with a conditional update of its next run time (one process
//! wins a run, however many pipelines share the store). The query runs
//! through the same [`SqlEngine`] as `POST /api/sql` — the organization's
//! tables only, its plan's slots, memory and time limit. Its value is the
//! first column of the first row (a query without rows has the value 0);
//! when the condition holds, one `detections` row (`rule_id`
//! `alert:<id>`, `source_kind` `sql_alert`) goes to every sink and a
//! notification with the alert's severity to the store.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use control::MetaStore;
use control::notify::Notification;
use control::sql_alerts::{AlertRun, SqlAlert};
use detectors::sigma::detections::{Standalone, standalone_detection};
use futures::StreamExt;
use pipeline::Sink;
use query_api::sql::SqlEngine;
use schemas::time::now_ms;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

/// `[pipeline.alerts]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Run scheduled SQL alerts in this pipeline process.
    pub enabled: bool,
    /// How often due alerts are looked for.
    pub tick_ms: u64,
    /// Alerts run at once by this process.
    pub max_concurrent: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tick_ms: 1_000,
            max_concurrent: 2,
        }
    }
}

/// The run after one due at `due`: on the schedule's grid (counted from
/// due times, not from when a busy tick got to it, so runs do not drift),
/// and after `now` (runs missed while no pipeline ran are skipped, not
/// caught up in a burst).
pub fn next_run(due: i64, every: i64, now: i64) -> i64 {
    let every = every.max(1);
    let next = due.saturating_add(every);
    if next > now {
        return next;
    }
    let missed = (now - due) / every;
    due.saturating_add((missed + 1).saturating_mul(every))
}

/// Whether `value` meets `op threshold`.
pub fn holds(op: &str, value: f64, threshold: f64) -> bool {
    match op {
        "gt" => value > threshold,
        "gte" => value >= threshold,
        "lt" => value < threshold,
        "lte" => value <= threshold,
        "eq" => value == threshold,
        "ne" => value != threshold,
        _ => false,
    }
}

/// The first column of the first row as a number (0 without rows).
fn first_value(batches: &[RecordBatch]) -> Result<f64, String> {
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(0.0);
    };
    if batch.num_columns() == 0 {
        return Err("the query returns no columns".into());
    }
    let column = cast(batch.column(0), &DataType::Float64)
        .map_err(|e| format!("its first column is not a number: {e}"))?;
    let numbers = column.as_primitive::<Float64Type>();
    if numbers.is_null(0) {
        return Err("its first value is null".into());
    }
    Ok(numbers.value(0))
}

pub fn spawn(
    store: Arc<MetaStore>,
    sql: Arc<SqlEngine>,
    sinks: Vec<Arc<dyn Sink>>,
    config: AlertsConfig,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_millis(config.tick_ms.max(100));
        loop {
            if let Err(error) = tick(&store, &sql, &sinks, config.max_concurrent.max(1)).await {
                warn!(%error, "scheduled SQL alerts: could not read the due alerts");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    })
}

async fn tick(
    store: &Arc<MetaStore>,
    sql: &Arc<SqlEngine>,
    sinks: &[Arc<dyn Sink>],
    concurrency: usize,
) -> control::Result<()> {
    let now = now_ms();
    let due = store.due_sql_alerts(now, 64).await?;
    futures::stream::iter(due)
        .for_each_concurrent(concurrency, |alert| async move {
            let next = next_run(alert.next_run_at, alert.every_ms, now);
            match store.claim_sql_alert(&alert, next).await {
                Ok(true) => run(store, sql, sinks, &alert, now).await,
                Ok(false) => {}
                Err(error) => warn!(%error, alert = %alert.id, "could not take a due SQL alert"),
            }
        })
        .await;
    Ok(())
}

async fn run(
    store: &MetaStore,
    sql: &SqlEngine,
    sinks: &[Arc<dyn Sink>],
    alert: &SqlAlert,
    at: i64,
) {
    let outcome = match sql.execute(&alert.org_id, &alert.sql).await {
        Ok(result) => first_value(&result.batches).map(|v| (v, result)),
        Err(e) => Err(e.to_string()),
    };
    let run = match outcome {
        Ok((value, result)) => {
            let fired = holds(&alert.op, value, alert.threshold);
            let error = match fired {
                true => fire(store, sinks, alert, value, &result.batches, at)
                    .await
                    .err(),
                false => None,
            };
            AlertRun {
                at,
                value: Some(value),
                error,
                fired,
            }
        }
        Err(error) => AlertRun {
            at,
            value: None,
            error: Some(error),
            fired: false,
        },
    };
    if let Err(error) = store
        .record_sql_alert_run(&alert.org_id, &alert.id, &run)
        .await
    {
        warn!(%error, alert = %alert.id, "could not record a SQL alert's run");
    }
}

/// Stores the detection and the notification of a run that fired.
async fn fire(
    store: &MetaStore,
    sinks: &[Arc<dyn Sink>],
    alert: &SqlAlert,
    value: f64,
    batches: &[RecordBatch],
    at: i64,
) -> Result<(), String> {
    let run_id = Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("{}/{}/{at}", alert.org_id, alert.id).as_bytes(),
    );
    let preview: Vec<serde_json::Value> = query_rows(batches, 10);
    let message = format!("{}: {value} {} {}", alert.name, alert.op, alert.threshold);
    let context = json!({
        "sql": alert.sql,
        "value": value,
        "op": alert.op,
        "threshold": alert.threshold,
        "rows": preview,
    });
    let rule_id = format!("alert:{}", alert.id);
    let envelope = standalone_detection(
        &alert.org_id,
        &Standalone {
            id: run_id,
            at,
            rule_id: &rule_id,
            title: &alert.name,
            level: &alert.severity,
            tags: r#"["sql-alert"]"#,
            source_kind: "sql_alert",
            message: &message,
            context: &context.to_string(),
        },
    )
    .map_err(|e| e.to_string())?;
    pipeline::consumer::write_all(sinks, [&envelope])
        .await
        .map_err(|e| format!("storing the detection failed: {e}"))?;
    store
        .add_notification(&Notification {
            id: run_id.to_string(),
            org_id: alert.org_id.clone(),
            kind: "sql_alert".into(),
            severity: alert.severity.clone(),
            title: message.clone(),
            body: json!({ "alert_id": alert.id, "name": alert.name, "value": value,
                          "op": alert.op, "threshold": alert.threshold, "rows": context["rows"] }),
            ref_id: run_id.to_string(),
            created_at: at,
            read_at: None,
        })
        .await
        .map_err(|e| format!("recording the notification failed: {e}"))?;
    Ok(())
}

/// Up to `limit` rows of the result, as JSON objects.
fn query_rows(batches: &[RecordBatch], limit: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut writer = arrow::json::ArrayWriter::new(&mut out);
    let mut left = limit;
    for b in batches {
        if left == 0 {
            break;
        }
        let take = b.num_rows().min(left);
        if writer.write(&b.slice(0, take)).is_err() {
            return Vec::new();
        }
        left -= take;
    }
    if writer.finish().is_err() || out.is_empty() {
        return Vec::new();
    }
    serde_json::from_slice(&out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_stay_on_the_grid_and_skip_what_was_missed() {
        assert_eq!(next_run(10_000, 1_000, 10_050), 11_000);
        // Down for 5.5 s: the next run is the next grid point, not 5 at once.
        assert_eq!(next_run(10_000, 1_000, 15_500), 16_000);
        assert_eq!(next_run(10_000, 1_000, 11_000), 12_000);
    }

    #[test]
    fn conditions() {
        assert!(holds("gt", 5.0, 3.0));
        assert!(!holds("gt", 3.0, 3.0));
        assert!(holds("gte", 3.0, 3.0));
        assert!(holds("lt", 0.0, 1.0));
        assert!(holds("lte", 1.0, 1.0));
        assert!(holds("eq", 2.0, 2.0));
        assert!(holds("ne", 2.0, 3.0));
        assert!(!holds("approx", 2.0, 2.0));
    }

    #[test]
    fn the_value_is_the_first_cell() {
        use arrow::array::{Int64Array, StringArray};
        let b = RecordBatch::try_from_iter([
            ("n", Arc::new(Int64Array::from(vec![42, 7])) as _),
            ("host", Arc::new(StringArray::from(vec!["a", "b"])) as _),
        ])
        .unwrap();
        assert_eq!(first_value(std::slice::from_ref(&b)), Ok(42.0));
        assert_eq!(first_value(&[]), Ok(0.0));
        let text = RecordBatch::try_from_iter([("h", Arc::new(StringArray::from(vec!["x"])) as _)])
            .unwrap();
        assert!(first_value(&[text]).is_err(), "text is not a number");
        assert_eq!(query_rows(&[b], 1), vec![json!({"n": 42, "host": "a"})]);
    }
}
