//! Session-level tests: the tenant boundary and read-only planning. The
//! same properties are tested over HTTP in the end-to-end suite.

use arrow::util::pretty::pretty_format_batches;
use pipeline::sinks::parquet::ParquetSinkConfig;
use pipeline::{Lake, PipelineMetrics, Sink};
use schemas::{Envelope, LogBatchBuilder, LogRecord, RecordKind, TenantId};
use uuid::Uuid;

use super::*;

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

async fn lake_with(rows: &[(&str, &str)]) -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::local(dir.path()).unwrap();
    let metrics = PipelineMetrics::new(&prometheus::Registry::new()).unwrap();
    let sink = ParquetSinkConfig::default()
        .build(lake.clone(), metrics)
        .unwrap();
    for (tenant, message) in rows {
        let tenant = t(tenant);
        let id = Uuid::now_v7();
        let mut b = LogBatchBuilder::with_capacity(1);
        b.append(&LogRecord {
            ts_ms: 1_795_687_200_000,
            received_ms: 1_795_687_200_000,
            message: message.to_string(),
            input: "test",
            ..Default::default()
        });
        let env = Envelope::new(
            tenant.clone(),
            RecordKind::Logs,
            id,
            b.finish(&tenant, id).unwrap(),
        )
        .unwrap();
        sink.write(&env).await.unwrap();
    }
    (dir, lake)
}

fn engine(lake: Lake, config: SqlConfig) -> SqlEngine {
    SqlEngine::new(config, lake, tokio::runtime::Handle::current())
}

async fn run(engine: &SqlEngine, tenant: &str, sql: &str) -> Result<String> {
    let r = engine.execute(&t(tenant), sql).await?;
    Ok(pretty_format_batches(&r.batches).unwrap().to_string())
}

#[tokio::test]
async fn each_tenant_sees_only_its_rows() {
    let (_dir, lake) = lake_with(&[("acme", "a1"), ("acme", "a2"), ("globex", "g1")]).await;
    let e = engine(lake, SqlConfig::default());
    let sql = "SELECT tenant_id, message, date FROM logs ORDER BY message";
    assert_eq!(
        run(&e, "acme", sql).await.unwrap(),
        "+-----------+---------+------------+\n\
         | tenant_id | message | date       |\n\
         +-----------+---------+------------+\n\
         | acme      | a1      | 2026-11-26 |\n\
         | acme      | a2      | 2026-11-26 |\n\
         +-----------+---------+------------+"
    );
    // Even asking for the other tenant's rows explicitly finds nothing.
    let r = e
        .execute(
            &t("acme"),
            "SELECT count(*) AS n FROM logs WHERE tenant_id = 'globex'",
        )
        .await
        .unwrap();
    assert_eq!(
        pretty_format_batches(&r.batches)
            .unwrap()
            .to_string()
            .matches(" 0 ")
            .count(),
        1
    );
    // A tenant without data has empty tables, not errors.
    let r = e
        .execute(&t("initech"), "SELECT * FROM logs")
        .await
        .unwrap();
    assert_eq!(r.num_rows(), 0);
}

#[tokio::test]
async fn everything_but_queries_is_refused() {
    let (dir, lake) = lake_with(&[("acme", "a1"), ("globex", "g1")]).await;
    let e = engine(lake, SqlConfig::default());
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let globex = format!("{}/logs/tenant_id=globex/", root.display());
    let forbidden = [
        format!("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '{globex}'"),
        format!("COPY (SELECT 1) TO '{}/out.parquet'", root.display()),
        "INSERT INTO logs (message) VALUES ('x')".to_string(),
        "CREATE TABLE y AS SELECT 1".to_string(),
        "CREATE VIEW v AS SELECT * FROM logs".to_string(),
        "DROP TABLE logs".to_string(),
        "SET datafusion.catalog.information_schema = true".to_string(),
        "EXPLAIN INSERT INTO logs (message) VALUES ('x')".to_string(),
    ];
    for sql in &forbidden {
        let err = e
            .execute(&t("acme"), sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql} ran"));
        assert!(matches!(err, ApiError::Forbidden(_)), "{sql}: {err}");
    }
    let not_found = [
        format!("SELECT * FROM '{globex}'"),
        format!("SELECT * FROM 'file://{globex}'"),
        "SELECT * FROM information_schema.tables".to_string(),
        "SHOW TABLES".to_string(),
        "SELECT * FROM \"tenant_id=globex\"".to_string(),
        "SELECT * FROM globex.logs".to_string(),
        "SELECT * FROM datafusion.public.logs".to_string(),
    ];
    for sql in &not_found {
        match e.execute(&t("acme"), sql).await {
            Err(ApiError::BadRequest(_) | ApiError::Forbidden(_)) => {}
            Err(other) => panic!("{sql}: unexpected {other}"),
            Ok(r) => panic!("{sql}: returned {} rows", r.num_rows()),
        }
    }
}

#[tokio::test]
async fn limits_apply() {
    let (_dir, lake) = lake_with(&[("acme", "a1"), ("acme", "a2"), ("acme", "a3")]).await;
    let e = engine(
        lake.clone(),
        SqlConfig {
            max_result_rows: 2,
            ..Default::default()
        },
    );
    let r = e
        .execute(&t("acme"), "SELECT message FROM logs")
        .await
        .unwrap();
    assert_eq!((r.num_rows(), r.truncated), (2, true));

    let e = engine(
        lake.clone(),
        SqlConfig {
            timeout_ms: 50,
            ..Default::default()
        },
    );
    let slow = "SELECT count(*) FROM generate_series(1, 10000000000) a";
    assert!(matches!(
        e.execute(&t("acme"), slow).await,
        Err(ApiError::QueryTimeout { limit_ms: 50 })
    ));

    let e = engine(
        lake,
        SqlConfig {
            memory_limit_bytes: 64 << 10,
            ..Default::default()
        },
    );
    let hungry =
        "SELECT value, count(*) FROM generate_series(1, 2000000) t GROUP BY value ORDER BY 2 DESC";
    match e.execute(&t("acme"), hungry).await {
        Err(ApiError::ResourcesExhausted(_)) => {}
        other => panic!(
            "expected resources exhausted, got {:?}",
            other.map(|r| r.num_rows())
        ),
    }
}

#[tokio::test]
async fn explain_and_explain_analyze_show_the_plan() {
    let (_dir, lake) = lake_with(&[("acme", "a1"), ("acme", "a2")]).await;
    let e = engine(lake, SqlConfig::default());
    let plan = run(&e, "acme", "EXPLAIN SELECT count(*) FROM logs")
        .await
        .unwrap();
    assert!(
        plan.contains("logical_plan") && plan.contains("physical_plan"),
        "{plan}"
    );
    let analyzed = run(
        &e,
        "acme",
        "EXPLAIN ANALYZE SELECT message FROM logs WHERE message = 'a2'",
    )
    .await
    .unwrap();
    assert!(analyzed.contains("output_rows"), "{analyzed}");
}

#[tokio::test]
async fn text_columns_are_scanned_as_views_but_answered_as_plain_strings() {
    let (_dir, lake) = lake_with(&[("acme", "a1"), ("acme", "a2")]).await;
    let e = engine(lake, SqlConfig::default());
    let r = e
        .execute(
            &t("acme"),
            "SELECT message, upper(message) AS m, length(message) AS n FROM logs ORDER BY message",
        )
        .await
        .unwrap();
    assert_eq!(
        r.schema.field(0).data_type(),
        &arrow::datatypes::DataType::Utf8
    );
    assert_eq!(
        r.schema.field(1).data_type(),
        &arrow::datatypes::DataType::Utf8
    );
    for b in &r.batches {
        assert_eq!(b.schema(), r.schema);
    }
    let scanned = run(
        &e,
        "acme",
        "SELECT arrow_typeof(message) AS t FROM logs LIMIT 1",
    )
    .await
    .unwrap();
    assert!(scanned.contains("Utf8View"), "{scanned}");
    assert_eq!(
        run(&e, "acme", "SELECT message FROM logs WHERE message ~* 'A2'")
            .await
            .unwrap(),
        "+---------+\n| message |\n+---------+\n| a2      |\n+---------+"
    );
}
