//! Session-level tests: the tenant boundary and read-only planning. The
//! same properties are tested over HTTP in the end-to-end suite.

use arrow::array::StringArray;
use arrow::util::pretty::pretty_format_batches;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use pipeline::sinks::parquet::ParquetSinkConfig;
use pipeline::{Lake, PipelineMetrics, Sink};
use schemas::{Envelope, LogBatchBuilder, LogRecord, RecordKind, TenantId};
use uuid::Uuid;

use super::*;

/// The answer of `sql` in `ctx` (pretty-printed) and its physical plan:
/// the rules' unit tests compare answers with and without a rule and look
/// for their operators in the plan.
pub(super) async fn answer_and_plan(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
) -> (String, String) {
    let df = ctx.sql(sql).await.unwrap();
    let plan = df.clone().create_physical_plan().await.unwrap();
    let explain = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(true)
        .to_string();
    let batches = df.collect().await.unwrap();
    (
        pretty_format_batches(&batches).unwrap().to_string(),
        explain,
    )
}

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

/// A log record `offset_ms` after 2026-11-25T10:00Z, received then.
fn record(offset_ms: i64, message: impl Into<String>) -> LogRecord {
    LogRecord {
        ts_ms: 1_795_687_200_000 + offset_ms,
        received_ms: 1_795_687_200_000,
        message: message.into(),
        input: "test",
        ..Default::default()
    }
}

async fn lake_with(rows: &[(&str, &str)]) -> (tempfile::TempDir, Lake) {
    let (dir, lake) = empty_lake();
    for (tenant, message) in rows {
        write_logs(&lake, tenant, &[record(0, *message)]).await;
    }
    (dir, lake)
}

fn empty_lake() -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::local(dir.path()).unwrap();
    (dir, lake)
}

/// Writes `records` as one batch (one Parquet object) of `tenant`.
async fn write_logs(lake: &Lake, tenant: &str, records: &[LogRecord]) {
    let metrics = PipelineMetrics::new(&prometheus::Registry::new()).unwrap();
    let sink = ParquetSinkConfig::default()
        .build(lake.clone(), metrics)
        .unwrap();
    let tenant = t(tenant);
    let id = Uuid::now_v7();
    let mut b = LogBatchBuilder::with_capacity(records.len());
    for r in records {
        b.append(r);
    }
    let env = Envelope::new(
        tenant.clone(),
        RecordKind::Logs,
        id,
        b.finish(&tenant, id).unwrap(),
    )
    .unwrap();
    sink.write(&env).await.unwrap();
}

fn engine(lake: Lake, config: SqlConfig) -> SqlEngine {
    SqlEngine::new(config, lake).unwrap()
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
    let (dir, lake) = lake_with(&[("acme", "a1"), ("acme", "a2")]).await;
    let e = engine(lake, SqlConfig::default());
    let plan = run(&e, "acme", "EXPLAIN SELECT count(*) FROM logs")
        .await
        .unwrap();
    assert!(
        plan.contains("logical_plan") && plan.contains("physical_plan"),
        "{plan}"
    );
    // A plan that reads files names them relative to the lake, never by
    // the server's directories.
    let scan = run(
        &e,
        "acme",
        "EXPLAIN SELECT message FROM logs WHERE message = 'a2'",
    )
    .await
    .unwrap();
    let root = dir.path().to_str().unwrap().trim_start_matches('/');
    assert!(scan.contains("tenant_id=acme"), "{scan}");
    assert!(!scan.contains(root), "{scan}");
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

/// `1+1+…+1`: 3,000 terms overflowed the stack and aborted the process.
#[tokio::test]
async fn deep_expressions_are_refused_and_the_deepest_allowed_plans() {
    let (_dir, lake) = lake_with(&[("acme", "a1")]).await;
    let e = engine(lake, SqlConfig::default());
    let chain = |op: &str, n: usize| format!("SELECT {}", vec!["1"; n].join(op));
    for sql in [
        chain("+", 3_000),
        chain(" OR ", 20_000),
        chain(" || ", 3_000),
    ] {
        match e.execute(&t("acme"), &sql).await {
            Err(ApiError::BadRequest(m)) => assert!(m.contains("deep"), "{m}"),
            other => panic!("expected 400, got {:?}", other.map(|r| r.num_rows())),
        }
    }
    // Just under the limit plans and runs on the SQL runtime's stacks.
    let r = e.execute(&t("acme"), &chain("+", 990)).await.unwrap();
    assert_eq!(r.num_rows(), 1);
    let huge = format!("SELECT '{}'", "x".repeat(300 << 10));
    assert!(matches!(
        e.execute(&t("acme"), &huge).await,
        Err(ApiError::BadRequest(m)) if m.contains("max_sql_bytes")
    ));
}

/// A cross join that times out must stop working, and its slot must come
/// back: before, it kept a core busy and every later query timed out.
#[tokio::test]
async fn a_timed_out_query_stops_and_gives_its_slot_back() {
    let (_dir, lake) = lake_with(&[("acme", "a1")]).await;
    let e = engine(
        lake,
        SqlConfig {
            timeout_ms: 300,
            max_concurrent_queries: 1,
            max_concurrent_queries_per_org: 1,
            ..Default::default()
        },
    );
    let heavy = "SELECT count(*) FROM generate_series(1,1000000) a, generate_series(1,1000000) b";
    let started = std::time::Instant::now();
    assert!(matches!(
        e.execute(&t("acme"), heavy).await,
        Err(ApiError::QueryTimeout { limit_ms: 300 })
    ));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // The work itself ends (its slot is released when it does).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while e.running(&t("acme")) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the query kept running"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let r = e.execute(&t("acme"), "SELECT 1 AS one").await.unwrap();
    assert_eq!(r.num_rows(), 1);
}

/// Dropping the request (client gone) cancels the query at its next batch.
#[tokio::test]
async fn a_dropped_request_cancels_its_query() {
    let (_dir, lake) = lake_with(&[("acme", "a1")]).await;
    let e = std::sync::Arc::new(engine(lake, SqlConfig::default()));
    let heavy = "SELECT count(*) FROM generate_series(1,1000000) a, generate_series(1,1000000) b";
    let running = tokio::spawn({
        let e = e.clone();
        async move { e.execute(&t("acme"), heavy).await.map(|r| r.num_rows()) }
    });
    while e.running(&t("acme")) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    running.abort();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while e.running(&t("acme")) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the query kept running"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// One organization's long queries cannot hold every slot.
#[tokio::test]
async fn another_organization_gets_a_slot_while_one_saturates_its_share() {
    let (_dir, lake) = lake_with(&[("acme", "a1"), ("globex", "g1")]).await;
    let e = std::sync::Arc::new(engine(
        lake,
        SqlConfig {
            timeout_ms: 5_000,
            max_concurrent_queries: 4,
            max_concurrent_queries_per_org: 2,
            ..Default::default()
        },
    ));
    let heavy = "SELECT count(*) FROM generate_series(1,1000000) a, generate_series(1,1000000) b";
    let hogs: Vec<_> = (0..4)
        .map(|_| {
            let e = e.clone();
            tokio::spawn(async move { e.execute(&t("acme"), heavy).await.map(|r| r.num_rows()) })
        })
        .collect();
    while e.running(&t("acme")) < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let started = std::time::Instant::now();
    let r = e
        .execute(&t("globex"), "SELECT message FROM logs")
        .await
        .unwrap();
    assert_eq!(r.num_rows(), 1);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "globex waited {:?}",
        started.elapsed()
    );
    assert!(e.running(&t("acme")) <= 2);
    for h in hogs {
        h.abort();
    }
}

/// Functions that allocate from an argument are bounded by the pool before
/// they run; results are bounded in bytes as well as rows.
#[tokio::test]
async fn memory_limits_cover_functions_results_and_concatenation() {
    let (_dir, lake) = lake_with(&[("acme", "a1")]).await;
    let small_pool = SqlConfig {
        memory_limit_bytes: 128 << 20,
        max_result_bytes: 1 << 30,
        ..Default::default()
    };
    let e = engine(lake.clone(), small_pool);
    for sql in [
        "SELECT repeat('x', 2147483647)",
        "SELECT length(repeat('x', 2147483647)) AS n",
        "SELECT lpad('a', 2147483647)",
        "SELECT array_repeat('abc', 1000000000)",
        "SELECT range(1, 10000000000)",
        "SELECT replace(repeat('a', 100000), 'a', repeat('b', 100000))",
        "SELECT repeat('z', 1048576) FROM generate_series(1, 192)",
        "WITH a AS (SELECT repeat('x', 16000000) s) SELECT s||s||s||s||s||s||s||s||s||s FROM a",
    ] {
        match e.execute(&t("acme"), sql).await {
            Err(ApiError::ResourcesExhausted(m)) => assert!(m.contains("memory"), "{sql}: {m}"),
            other => panic!("{sql}: expected 422, got {:?}", other.map(|r| r.num_rows())),
        }
    }
    // Within the limits the same functions work.
    let r = run(
        &e,
        "acme",
        "SELECT length(repeat('ab', 1000)) AS n, 'a' || NULL IS NULL AS strict, 'a' || 1 AS mixed",
    )
    .await
    .unwrap();
    assert!(r.contains("| 2000 | true   | a1    |"), "{r}");
    // The result's byte limit cuts rows and says so.
    let e = engine(
        lake,
        SqlConfig {
            max_result_bytes: 8 << 20,
            ..Default::default()
        },
    );
    let r = e
        .execute(
            &t("acme"),
            "SELECT repeat('z', 1048576) AS z FROM generate_series(1, 64)",
        )
        .await
        .unwrap();
    assert!(r.truncated);
    assert!(r.num_rows() < 64, "{}", r.num_rows());
}

/// `sql` planned and run in `state` as the engine runs queries (read-only
/// planning, a guarded stream on the session's own runtime).
async fn answer(state: SessionState, sql: &str) -> Result<Vec<RecordBatch>> {
    let df = session::plan_read_only(state, sql, vec![]).await?;
    let guard = QueryGuard::new(Instant::now() + Duration::from_secs(60));
    let stream = guarded_stream(df, &guard).await?;
    stream
        .try_collect()
        .await
        .map_err(ApiError::from_datafusion)
}

/// A query runs on its own runtime though every session is a copy of the
/// engine's template: operators account against the query's pool, and a
/// scalar function checks its output against it (carried in the session's
/// options) both when the optimizer folds it into a constant and when an
/// operator calls it on rows — not against the template's pool nor the
/// fallback bound (here the config's limit, 1 KiB, and no spilling).
#[tokio::test]
async fn a_query_runs_on_its_own_pool() {
    let (_dir, lake) = lake_with(&[("acme", "a1")]).await;
    let e = engine(
        lake,
        SqlConfig {
            memory_limit_bytes: 1 << 10,
            max_spill_bytes: 0,
            ..Default::default()
        },
    );
    // The window sorts every row first: a few MiB held at once.
    let sort = "SELECT sum(n) AS s FROM (SELECT row_number() OVER (ORDER BY v) AS n \
                FROM (SELECT value * 7919 % 1000003 AS v FROM generate_series(1, 300000)))";
    let roomy = || e.session(&t("acme"), 256 << 20).unwrap();
    for sql in [
        "SELECT length(repeat('ab', 1000)) AS n",
        "SELECT length(repeat(message, 1000)) AS n FROM logs",
    ] {
        let batches = answer(roomy(), sql).await.unwrap();
        let out = pretty_format_batches(&batches).unwrap().to_string();
        assert!(out.contains("| 2000 |"), "{sql}: {out}");
    }
    let batches = answer(roomy(), sort).await.unwrap();
    let out = pretty_format_batches(&batches).unwrap().to_string();
    assert!(out.contains("45000150000"), "{out}");
    let tight = || e.session(&t("acme"), 1 << 20).unwrap();
    for sql in [
        "SELECT repeat('x', 2000000) AS x",
        "SELECT length(repeat(message, 1000000)) AS n FROM logs",
    ] {
        match answer(tight(), sql).await {
            Err(ApiError::ResourcesExhausted(m)) => assert!(m.contains("repeat"), "{sql}: {m}"),
            other => panic!("{sql}: expected 422, got {:?}", other.map(|b| b.len())),
        }
    }
    assert!(matches!(
        answer(tight(), sort).await,
        Err(ApiError::ResourcesExhausted(_))
    ));
}

/// DataFusion evaluates a filter on the `date` partition alone while it
/// prunes the listed files, without the session's options (so without the
/// query's pool), and never again: such calls are held to the smallest
/// memory limit of any plan, here starter's 1 MiB — not the default
/// 512 MiB, which a starter organization's query could otherwise reach.
#[tokio::test]
async fn functions_outside_the_query_pool_get_the_smallest_limit() {
    let (_dir, lake) = lake_with(&[("acme", "a1")]).await;
    let mut config = SqlConfig::default();
    config.plans.starter.memory_limit_bytes = Some(1 << 20);
    assert_eq!(config.smallest_memory_limit(), 1 << 20);
    let e = engine(lake, config);
    let starter = || e.session(&t("acme"), 1 << 20).unwrap();
    let run = |sql: &'static str| answer(starter(), sql);
    match run("SELECT count(*) AS n FROM logs \
               WHERE length(repeat(CAST(date AS VARCHAR), 1000000)) > 0")
    .await
    {
        Err(ApiError::ResourcesExhausted(m)) => assert!(m.contains("repeat"), "{m}"),
        other => panic!("expected 422, got {:?}", other.map(|b| b.len())),
    }
    // Under the limit the same filter prunes as before.
    let batches = run("SELECT count(*) AS n FROM logs \
                       WHERE length(repeat(CAST(date AS VARCHAR), 1000)) > 0")
    .await
    .unwrap();
    let out = pretty_format_batches(&batches).unwrap().to_string();
    assert!(out.contains("| 1 |"), "{out}");
}

/// EXPLAIN shows files relative to the lake, never server paths.
#[tokio::test]
async fn explain_does_not_show_server_paths() {
    let (dir, lake) = lake_with(&[("acme", "a1")]).await;
    let e = engine(lake, SqlConfig::default());
    let plan = run(&e, "acme", "EXPLAIN SELECT * FROM logs").await.unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let root = root.to_string_lossy();
    assert!(!plan.contains(root.trim_start_matches('/')), "{plan}");
    assert!(plan.contains("logs/tenant_id=acme/date="), "{plan}");
}

/// A valid query DataFusion cannot plan under the row limit (DISTINCT over
/// a window function) still answers, cut by the collector.
#[tokio::test]
async fn distinct_over_a_window_function_answers() {
    let (_dir, lake) = lake_with(&[("acme", "a1"), ("acme", "a2"), ("acme", "a2")]).await;
    let e = engine(
        lake,
        SqlConfig {
            max_result_rows: 1,
            ..Default::default()
        },
    );
    let r = e
        .execute(
            &t("acme"),
            "SELECT DISTINCT message, count(*) OVER (PARTITION BY message) AS n FROM logs",
        )
        .await
        .unwrap();
    assert_eq!((r.num_rows(), r.truncated), (1, true));
}

/// Bound values are values, never SQL: a quote in one cannot widen the
/// filter, and the placeholders work where the listings put them.
#[tokio::test]
async fn bound_values_are_never_sql() {
    let (_dir, lake) = lake_with(&[("acme", "a1"), ("acme", "it's"), ("globex", "g1")]).await;
    let e = engine(lake, SqlConfig::default());
    let rows = |q: Bound| {
        let e = &e;
        async move {
            let r = e.execute_bound(&t("acme"), &q).await.unwrap();
            pretty_format_batches(&r.batches).unwrap().to_string()
        }
    };
    let hostile = rows(Bound::with(|q| {
        format!(
            "SELECT message FROM logs WHERE message = {} ORDER BY message",
            q.bind("a1' OR '1' = '1")
        )
    }))
    .await;
    assert!(
        !hostile.contains("a1") && !hostile.contains("g1"),
        "{hostile}"
    );
    let found = rows(Bound::with(|q| {
        format!(
            "SELECT message FROM logs WHERE strpos(message, {}) > 0 AND CAST(ts AS BIGINT) >= {}",
            q.bind("'s"),
            q.bind(0i64)
        )
    }))
    .await;
    assert!(found.contains("it's") && !found.contains("a1"), "{found}");
    let regex = rows(Bound::with(|q| {
        format!("SELECT message FROM logs WHERE message ~* {}", q.bind("^A"))
    }))
    .await;
    assert!(regex.contains("a1") && !regex.contains("it's"), "{regex}");
}

/// Parquet footers read by one query serve the next (sessions are per
/// query; the metadata cache is the engine's), and a tenant still sees
/// only its own rows.
#[tokio::test]
async fn parquet_metadata_is_cached_across_sessions() {
    let (_dir, lake) = lake_with(&[("acme", "a1"), ("acme", "a2"), ("globex", "g1")]).await;
    let e = engine(lake, SqlConfig::default());
    assert!(e.metadata_cache.is_empty());
    let first = run(&e, "acme", "SELECT message FROM logs ORDER BY message")
        .await
        .unwrap();
    let cached = e.metadata_cache.len();
    assert_eq!(cached, 2, "one footer per acme object");
    assert_eq!(
        run(&e, "acme", "SELECT message FROM logs ORDER BY message")
            .await
            .unwrap(),
        first
    );
    assert_eq!(e.metadata_cache.len(), cached);
    let globex = run(&e, "globex", "SELECT message FROM logs").await.unwrap();
    assert!(globex.contains("g1") && !globex.contains("a1"), "{globex}");
    assert_eq!(e.metadata_cache.len(), cached + 1);
}

/// Each object's statistics, once made, serve every later query; the
/// listing is not cached, so an object written after a query is counted by
/// the next one.
#[tokio::test]
async fn file_statistics_are_cached_and_new_objects_seen_at_once() {
    let (_dir, lake) = lake_with(&[("acme", "a1"), ("acme", "a2"), ("globex", "g1")]).await;
    let e = engine(lake.clone(), SqlConfig::default());
    let count = "SELECT count(*) AS n FROM logs";
    assert!(run(&e, "acme", count).await.unwrap().contains("| 2 "));
    assert_eq!(e.statistics_cache.len(), 2, "one entry per acme object");
    assert!(run(&e, "acme", count).await.unwrap().contains("| 2 "));
    assert_eq!(e.statistics_cache.len(), 2);
    write_logs(&lake, "acme", &[record(0, "a3")]).await;
    assert!(run(&e, "acme", count).await.unwrap().contains("| 3 "));
    assert_eq!(e.statistics_cache.len(), 3);
    let globex = run(&e, "globex", "SELECT message FROM logs").await.unwrap();
    assert!(globex.contains("g1") && !globex.contains("a3"), "{globex}");
    assert_eq!(e.statistics_cache.len(), 4);
}

/// Small objects are read once and then served from memory; what a query
/// reads is still what its listing returned, so an object written or
/// deleted since the last query counts at once, and with the cache off
/// (`object_cache_bytes = 0`) the answers are the same.
#[tokio::test]
async fn small_objects_are_kept_in_memory_and_listings_still_decide() {
    let (_dir, lake) = lake_with(&[("acme", "a1"), ("acme", "a2"), ("globex", "g1")]).await;
    let e = engine(lake.clone(), SqlConfig::default());
    let off = engine(
        lake.clone(),
        SqlConfig {
            object_cache_bytes: 0,
            ..SqlConfig::default()
        },
    );
    let cache = e.object_cache.clone().expect("on by default");
    let q = "SELECT message FROM logs ORDER BY message";
    let first = run(&e, "acme", q).await.unwrap();
    assert!(first.contains("a1") && first.contains("a2"), "{first}");
    let held = cache.memory_used();
    assert!(held > 0, "both acme objects kept");
    assert_eq!(run(&e, "acme", q).await.unwrap(), first);
    assert_eq!(
        cache.memory_used(),
        held,
        "the second query read from memory"
    );
    assert_eq!(run(&off, "acme", q).await.unwrap(), first);
    // One acme object deleted (as compaction and retention do): not read.
    let objects: Vec<_> = lake
        .raw_store()
        .list(Some(lake.root()))
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let acme: Vec<_> = objects
        .iter()
        .filter(|m| m.location.as_ref().contains("tenant_id=acme"))
        .collect();
    assert_eq!(acme.len(), 2);
    lake.raw_store().delete(&acme[0].location).await.unwrap();
    let after = run(&e, "acme", q).await.unwrap();
    assert_eq!(after, run(&off, "acme", q).await.unwrap());
    assert_eq!(after.matches("| a").count(), 1, "{after}");
    let globex = run(&e, "globex", "SELECT message FROM logs").await.unwrap();
    assert!(globex.contains("g1") && !globex.contains("a2"), "{globex}");
}

#[tokio::test]
async fn time_predicates_keep_other_days_unread() {
    let (dir, lake) = lake_with(&[("acme", "a1"), ("acme", "a2")]).await;
    // The rows are of 2026-11-26. A day earlier in the month holds an
    // object no reader could decode: any query that opens it fails, so a
    // query that answers did not.
    let other_day = dir.path().join("logs/tenant_id=acme/date=2026-11-20");
    std::fs::create_dir_all(&other_day).unwrap();
    std::fs::write(other_day.join("broken.parquet"), b"not parquet at all").unwrap();
    let e = engine(lake, SqlConfig::default());
    let count = |sql: &'static str| {
        let e = &e;
        async move { run(e, "acme", sql).await }
    };
    assert!(count("SELECT count(*) AS n FROM logs").await.is_err());
    for sql in [
        "SELECT count(*) AS n FROM logs WHERE ts >= TIMESTAMP '2026-11-25T00:00:00Z'",
        "SELECT count(*) AS n FROM logs WHERE ts > now() - INTERVAL '1 day' OR ts >= '2026-11-26'",
        "SELECT count(*) AS n FROM logs WHERE ts BETWEEN '2026-11-26T00:00:00Z' AND '2026-11-27T00:00:00Z'",
        // The API's listings compare milliseconds (2026-11-25T10:00Z).
        "SELECT count(*) AS n FROM logs WHERE CAST(ts AS BIGINT) >= 1795600800000",
    ] {
        let out = count(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(out.contains("| 2 |"), "{sql}: {out}");
    }
    // A window that includes the broken day still reads it.
    assert!(
        count("SELECT count(*) AS n FROM logs WHERE ts < TIMESTAMP '2026-11-21T00:00:00Z'")
            .await
            .is_err()
    );
}

/// The physical plan of `sql` as `tenant` would run it.
async fn physical_plan(e: &SqlEngine, tenant: &str, sql: &str) -> String {
    let r = e
        .execute(&t(tenant), &format!("EXPLAIN {sql}"))
        .await
        .unwrap();
    r.batches
        .iter()
        .find_map(|b| {
            let kinds = b.column(0).as_any().downcast_ref::<StringArray>()?;
            let plans = b.column(1).as_any().downcast_ref::<StringArray>()?;
            (0..b.num_rows())
                .find(|&i| kinds.value(i) == "physical_plan")
                .map(|i| plans.value(i).to_string())
        })
        .expect("a physical plan")
}

/// Join keys that are null are dropped before an inner join hashes them
/// (the probe side of `logs ⋈ findings` is 44 % rows without an address
/// in benches/sql.sh), and an outer join still keeps its unmatched rows.
#[tokio::test]
async fn null_join_keys_are_dropped_before_an_inner_join_only() {
    let (_dir, lake) = empty_lake();
    let records: Vec<LogRecord> = (0..300)
        .map(|i| LogRecord {
            // A third of the rows have no host.
            host: (i % 3 != 0).then(|| format!("h{}", i % 5)),
            ..record(i, format!("m{i}"))
        })
        .collect();
    for part in records.chunks(100) {
        write_logs(&lake, "acme", part).await;
    }
    let e = engine(lake, SqlConfig::default());
    let join = |kind: &str| {
        format!(
            "WITH per_host AS (SELECT host, count(*) AS n FROM logs GROUP BY host) \
             SELECT count(*) AS rows, count(p.n) AS matched FROM logs l \
             {kind} JOIN per_host p ON l.host = p.host"
        )
    };
    let inner = join("INNER");
    assert!(
        run(&e, "acme", &inner)
            .await
            .unwrap()
            .contains("| 200  | 200     |")
    );
    let plan = physical_plan(&e, "acme", &inner).await;
    assert!(
        plan.lines()
            .any(|l| l.contains("FilterExec: host@") && l.contains("IS NOT NULL")),
        "no null filter before the inner join:\n{plan}"
    );
    // Every log row, those without a host unmatched.
    let left = join("LEFT");
    assert!(
        run(&e, "acme", &left)
            .await
            .unwrap()
            .contains("| 300  | 200     |")
    );
}

/// "Events, and from how many sources" over the lake: `count(*)` beside
/// `count(DISTINCT …)` is planned as two plain aggregations
/// (`distinct.rs`) and answers exactly, null sources not counted.
#[tokio::test]
async fn counts_beside_distinct_counts_answer_exactly_as_two_aggregations() {
    let (_dir, lake) = empty_lake();
    let records: Vec<LogRecord> = (0..600)
        .map(|i| LogRecord {
            host: Some(format!("h{}", i % 3)),
            // Every fourth row has no address.
            source_ip: (i % 4 != 0).then(|| format!("10.0.0.{}", i % 10)),
            ..record(i, format!("m{i}"))
        })
        .collect();
    for part in records.chunks(150) {
        write_logs(&lake, "acme", part).await;
    }
    let e = engine(lake, SqlConfig::default());
    let sql = "SELECT host, count(*) AS events, count(source_ip) AS with_ip, \
               count(DISTINCT source_ip) AS sources, max(message) AS last \
               FROM logs GROUP BY host ORDER BY host";
    let expected = |host: i64| {
        let rows: Vec<i64> = (0..600).filter(|i| i % 3 == host).collect();
        let with_ip: Vec<i64> = rows.iter().copied().filter(|i| i % 4 != 0).collect();
        let mut sources: Vec<i64> = with_ip.iter().map(|i| i % 10).collect();
        sources.sort();
        sources.dedup();
        let last = rows.iter().map(|i| format!("m{i}")).max().unwrap();
        format!(
            "| h{host}   | {:<6} | {:<7} | {:<7} | {last:<4} |",
            rows.len(),
            with_ip.len(),
            sources.len()
        )
    };
    let out = run(&e, "acme", sql).await.unwrap();
    for host in 0..3 {
        assert!(out.contains(&expected(host)), "{}\n{out}", expected(host));
    }
    let plan = physical_plan(&e, "acme", sql).await;
    assert!(plan.contains("__securenet_distinct"), "{plan}");
}

/// The build side (first child) of the outermost hash join in `plan`'s
/// physical plan text, as its lines.
fn outer_join_build_side(plan: &str) -> Vec<&str> {
    let lines: Vec<&str> = plan.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let join = lines
        .iter()
        .position(|l| l.trim_start().starts_with("HashJoinExec"))
        .unwrap_or_else(|| panic!("no hash join in\n{plan}"));
    let child = indent(lines[join]) + 2;
    let mut side = Vec::new();
    for l in &lines[join + 1..] {
        if indent(l) <= child && !side.is_empty() {
            break;
        }
        side.push(*l);
    }
    side
}

/// A chain of joins hashes its small side: estimates carry through joins
/// (DataFusion's statistics registry), so the second join of
/// `logs ⋈ hosts ⋈ per_host` builds its table on `per_host` (4 rows), not
/// on the first join's output (400). Without the registry the first join's
/// estimate came out below the other side's (see `SessionTemplate::new`), so that
/// output stayed the build side whatever it held — in benches/sql.sh's
/// logs ⋈ devices ⋈ findings, every matching log row.
#[tokio::test]
async fn a_chain_of_joins_hashes_the_small_side() {
    let (_dir, lake) = empty_lake();
    let records: Vec<LogRecord> = (0..400)
        .map(|i| LogRecord {
            host: Some(format!("h{}", i % 4)),
            ..record(i, format!("m{i}"))
        })
        .collect();
    for part in records.chunks(50) {
        write_logs(&lake, "acme", part).await;
    }
    let e = engine(lake, SqlConfig::default());
    // Shaped like benches/sql.sh's logs ⋈ devices ⋈ findings: the first
    // join's other side is a filtered aggregate, estimated at a fifth of its
    // input, the second join's an aggregate estimated at all of it.
    let sql = "WITH hosts AS (SELECT message, max(host) AS host FROM logs \
               WHERE message IS NOT NULL GROUP BY message), \
               per_host AS (SELECT host, count(DISTINCT message) AS n FROM logs GROUP BY host) \
               SELECT per_host.n AS per_host, count(*) AS joined FROM logs a \
               JOIN hosts ON a.message = hosts.message JOIN per_host ON per_host.host = hosts.host \
               GROUP BY per_host.n";
    assert!(
        run(&e, "acme", sql)
            .await
            .unwrap()
            .contains("| 100      | 400    |"),
        "4 hosts of 100 messages each"
    );
    let plan = physical_plan(&e, "acme", sql).await;
    // The outer join hashes per_host, or the first join's output counted
    // per host first (`eager.rs`: per_host is unique on host) — 4 rows
    // either way, never the first join's rows themselves.
    let build = outer_join_build_side(&plan);
    let first_join = build.iter().position(|l| l.contains("HashJoinExec"));
    let first_aggregate = build.iter().position(|l| l.contains("AggregateExec"));
    assert!(
        first_aggregate.is_some_and(|a| first_join.is_none_or(|j| a < j)),
        "the outer join hashes the first join's output:\n{plan}"
    );
}

#[tokio::test]
async fn date_trunc_of_utc_times_is_exact_on_either_side_of_1970() {
    let (_dir, lake) = lake_with(&[("acme", "a1")]).await;
    let e = engine(lake, SqlConfig::default());
    // The row's ts is 2026-11-26T10:00:00Z.
    let units = "date_trunc('hour', t) AS h, date_trunc('Day', t) AS d, \
                 date_trunc('minute', t) AS m, date_trunc('second', t) AS s";
    let out = run(
        &e,
        "acme",
        &format!(
            "SELECT {units} FROM (SELECT ts + INTERVAL '59 minutes 59.999 seconds' AS t FROM logs)"
        ),
    )
    .await
    .unwrap();
    assert!(
        out.contains(
            "| 2026-11-26T10:00:00Z | 2026-11-26T00:00:00Z | 2026-11-26T10:59:00Z | 2026-11-26T10:59:59Z |"
        ),
        "{out}"
    );
    // Negative epoch values round down, not towards zero.
    let out = run(
        &e,
        "acme",
        &format!(
            "SELECT {units} FROM (SELECT ts - INTERVAL '21000 days' + INTERVAL '90 minutes 1 millisecond' AS t FROM logs)"
        ),
    )
    .await
    .unwrap();
    assert!(
        out.contains(
            "| 1969-05-29T11:00:00Z | 1969-05-29T00:00:00Z | 1969-05-29T11:30:00Z | 1969-05-29T11:30:00Z |"
        ),
        "{out}"
    );
    // Another zone keeps DataFusion's own answer: the day starts at local midnight.
    let out = run(
        &e,
        "acme",
        "SELECT date_trunc('day', arrow_cast(ts + INTERVAL '59 minutes', 'Timestamp(Millisecond, Some(\"Asia/Kathmandu\"))')) AS d FROM logs",
    )
    .await
    .unwrap();
    assert!(out.contains("2026-11-26T00:00:00+05:45"), "{out}");
}

/// `[api.sql.plans]`: a plan's values replace `[api.sql]`'s, the rest
/// follows it; an operator's query (no plan) runs under `[api.sql]`.
#[test]
fn plan_limits_replace_the_global_ones_they_name() {
    let mut config = SqlConfig {
        max_concurrent_queries_per_org: 3,
        max_result_rows: 50,
        ..Default::default()
    };
    config.plans.business.timeout_ms = Some(7);
    let global = config.limits(None);
    assert_eq!(
        global,
        Limits {
            max_concurrent_queries_per_org: 3,
            memory_limit_bytes: 512 << 20,
            max_result_rows: 50,
            timeout_ms: 30_000,
        }
    );
    assert_eq!(config.limits(Some(Plan::Professional)), global);
    assert_eq!(
        config.limits(Some(Plan::Business)),
        Limits {
            timeout_ms: 7,
            ..global
        }
    );
    assert_eq!(
        config.limits(Some(Plan::Starter)),
        Limits {
            max_concurrent_queries_per_org: 1,
            ..global
        }
    );
    let enterprise = config.limits(Some(Plan::Enterprise));
    assert_eq!(
        enterprise,
        Limits {
            max_result_rows: 1_000_000,
            ..global
        }
    );
    assert_eq!(config.limits(Some(Plan::Msp)), enterprise);
}

/// A sort over its memory pool may spill within its budget and otherwise
/// fails cleanly; with no spill budget it fails cleanly too.
#[tokio::test]
async fn over_the_pool_a_query_spills_or_fails_cleanly() {
    let (_dir, lake) = lake_with(&[("acme", "a1")]).await;
    // The window needs all rows sorted: no limit can cut the sort short.
    let sql = "SELECT sum(n) AS s FROM (SELECT row_number() OVER (ORDER BY v) AS n \
               FROM (SELECT value * 7919 % 1000003 AS v FROM generate_series(1, 3000000)))";
    let config = SqlConfig {
        memory_limit_bytes: 24 << 20,
        ..Default::default()
    };
    let e = engine(lake.clone(), config.clone());
    match e.execute(&t("acme"), sql).await {
        Ok(r) => {
            let out = pretty_format_batches(&r.batches).unwrap().to_string();
            assert!(out.contains("4500001500000"), "{out}");
        }
        Err(ApiError::ResourcesExhausted(_)) => {}
        Err(other) => panic!("{other:?}"),
    }
    let e = engine(
        lake,
        SqlConfig {
            max_spill_bytes: 0,
            ..config
        },
    );
    match e.execute(&t("acme"), sql).await {
        Err(ApiError::ResourcesExhausted(_)) => {}
        other => panic!(
            "expected resources exhausted, got {:?}",
            other.map(|r| r.num_rows())
        ),
    }
}

/// What [`SqlEngine::stream_bound`] hands on, and how it ended.
async fn streamed(
    e: &SqlEngine,
    tenant: &str,
    sql: &str,
    capacity: usize,
) -> (
    Result<StreamEnd>,
    Option<arrow::datatypes::SchemaRef>,
    Vec<RecordBatch>,
) {
    let (schema_tx, schema_rx) = tokio::sync::oneshot::channel();
    let (tx, mut rx) = tokio::sync::mpsc::channel(capacity);
    let receiving = async move {
        let mut got = Vec::new();
        while let Some(batch) = rx.recv().await {
            got.push(batch);
        }
        got
    };
    let (tenant, query) = (t(tenant), Bound::new(sql));
    let (end, got) = tokio::join!(e.stream_bound(&tenant, &query, schema_tx, tx), receiving);
    (end, schema_rx.await.ok(), got)
}

/// Results handed on batch by batch (Flight SQL's DoGet): whole, with plain
/// string types; stopped at the row limit after the batches within it;
/// stopped when the receiver goes away, giving the slot back; a plan the
/// limit breaks (DISTINCT over a window function) run again before
/// anything was sent; EXPLAIN without server paths.
#[tokio::test]
async fn streamed_results_come_batch_by_batch_within_the_limits() {
    let (dir, lake) = lake_with(&[("acme", "a1"), ("acme", "a2"), ("acme", "a2")]).await;
    let e = engine(
        lake,
        SqlConfig {
            max_result_rows: 20_000,
            ..Default::default()
        },
    );
    let rows = |got: &[RecordBatch]| got.iter().map(RecordBatch::num_rows).sum::<usize>();

    let (end, schema, got) =
        streamed(&e, "acme", "SELECT value FROM generate_series(1, 19000)", 2).await;
    assert_eq!(end.unwrap(), StreamEnd::Complete);
    assert_eq!(rows(&got), 19_000);
    assert!(got.len() > 1, "one batch: {}", got.len());
    assert_eq!(schema.unwrap().field(0).name(), "value");

    let (end, _, got) = streamed(&e, "acme", "SELECT message FROM logs ORDER BY message", 2).await;
    assert_eq!(end.unwrap(), StreamEnd::Complete);
    assert_eq!(
        got[0].schema().field(0).data_type(),
        &arrow::datatypes::DataType::Utf8
    );

    let (end, _, got) = streamed(
        &e,
        "acme",
        "SELECT value FROM generate_series(1, 100000)",
        2,
    )
    .await;
    assert_eq!(end.unwrap(), StreamEnd::OverLimit { max_rows: 20_000 });
    assert!(
        rows(&got) <= 20_000 && !got.is_empty(),
        "{} rows",
        rows(&got)
    );

    let (end, _, _) = streamed(
        &e,
        "acme",
        "SELECT DISTINCT message, count(*) OVER (PARTITION BY message) AS n FROM logs",
        2,
    )
    .await;
    assert_eq!(end.unwrap(), StreamEnd::Complete);

    let (end, _, got) = streamed(&e, "acme", "EXPLAIN SELECT * FROM logs", 2).await;
    assert_eq!(end.unwrap(), StreamEnd::Complete);
    let plan = pretty_format_batches(&got).unwrap().to_string();
    assert!(!plan.contains(&dir.path().display().to_string()), "{plan}");

    // The receiver takes one batch of a long result and goes away.
    let (schema_tx, _schema) = tokio::sync::oneshot::channel();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let e = std::sync::Arc::new(e);
    let running = tokio::spawn({
        let e = e.clone();
        async move {
            let q = Bound::new("SELECT value FROM generate_series(1, 1000000000)");
            e.stream_bound(&t("acme"), &q, schema_tx, tx).await
        }
    });
    assert!(rx.recv().await.is_some());
    drop(rx);
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), running)
        .await
        .expect("the query went on without its receiver")
        .unwrap();
    assert_eq!(end.unwrap(), StreamEnd::Abandoned);
    assert_eq!(e.running(&t("acme")), 0);
}

/// A receiver that stops taking batches (a client that stopped reading)
/// holds the query and its slot until the deadline, no longer.
#[tokio::test]
async fn a_stalled_receiver_cannot_hold_a_streamed_query_past_its_deadline() {
    let (_dir, lake) = lake_with(&[("acme", "a1")]).await;
    let e = engine(
        lake,
        SqlConfig {
            timeout_ms: 300,
            max_concurrent_queries_per_org: 1,
            ..Default::default()
        },
    );
    let (schema_tx, _schema) = tokio::sync::oneshot::channel();
    let (tx, _never_read) = tokio::sync::mpsc::channel(1);
    let started = std::time::Instant::now();
    let q = Bound::new("SELECT value FROM generate_series(1, 1000000000)");
    let end = e.stream_bound(&t("acme"), &q, schema_tx, tx).await;
    assert!(
        matches!(end, Err(ApiError::QueryTimeout { limit_ms: 300 })),
        "{end:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(e.running(&t("acme")), 0);
    let r = e.execute(&t("acme"), "SELECT 1 AS one").await.unwrap();
    assert_eq!(r.num_rows(), 1);
}

/// The rows of a pretty-printed result, as trimmed cells (header
/// excluded).
fn cells(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// Counts per address over the lake, directly (`view_count.rs`) and
/// through a join to a dimension unique on the address (`eager.rs`),
/// answer exactly what the rows say — short addresses (inline in their
/// string views) and long ones, nulls, rows spread over several objects.
#[tokio::test]
async fn counts_by_address_and_star_joins_answer_exactly() {
    let (_dir, lake) = empty_lake();
    let ip = |i: i64| {
        (i % 5 != 0).then(|| match i % 2 {
            0 => format!("10.0.0.{}", i % 7),
            _ => format!("2001:db8:ffff::{}", i % 7),
        })
    };
    let records: Vec<LogRecord> = (0..900)
        .map(|i| LogRecord {
            host: Some(format!("h{}", i % 3)),
            source_ip: ip(i),
            ..record(i, format!("m{i}"))
        })
        .collect();
    for part in records.chunks(200) {
        write_logs(&lake, "acme", part).await;
    }
    let e = engine(lake, SqlConfig::default());
    let mut per_ip: std::collections::BTreeMap<String, (usize, String)> = Default::default();
    for i in 0..900 {
        if let Some(a) = ip(i) {
            let host = format!("h{}", i % 3);
            let entry = per_ip.entry(a).or_insert((0, host.clone()));
            entry.0 += 1;
            entry.1 = entry.1.clone().min(host);
        }
    }
    assert_eq!(per_ip.len(), 14);

    let sql = "SELECT source_ip, count(*) AS n, count(source_ip) AS v FROM logs \
               WHERE source_ip IS NOT NULL GROUP BY source_ip ORDER BY source_ip";
    let want: Vec<Vec<String>> = per_ip
        .iter()
        .map(|(a, (n, _))| vec![a.clone(), n.to_string(), n.to_string()])
        .collect();
    assert_eq!(cells(&run(&e, "acme", sql).await.unwrap()), want);
    let plan = physical_plan(&e, "acme", sql).await;
    assert!(plan.contains("CountByViewExec"), "{plan}");
    // Without the filter, the rows without an address are one group:
    // counted by count(*), not by count(source_ip).
    let sql = "SELECT source_ip, count(*) AS n, count(source_ip) AS v FROM logs \
               GROUP BY source_ip ORDER BY source_ip NULLS FIRST";
    let mut want_all = vec![vec![String::new(), "180".to_string(), "0".to_string()]];
    want_all.extend(want);
    assert_eq!(cells(&run(&e, "acme", sql).await.unwrap()), want_all);
    assert!(
        physical_plan(&e, "acme", sql)
            .await
            .contains("CountByViewExec")
    );

    let sql = "WITH dim AS (SELECT source_ip AS ip, min(host) AS first_host FROM logs \
               GROUP BY source_ip) \
               SELECT dim.first_host, count(*) AS n FROM logs l JOIN dim ON l.source_ip = dim.ip \
               GROUP BY dim.first_host ORDER BY 1";
    let mut per_host: std::collections::BTreeMap<&str, usize> = Default::default();
    for (n, host) in per_ip.values() {
        *per_host.entry(host.as_str()).or_default() += n;
    }
    let want: Vec<Vec<String>> = per_host
        .iter()
        .map(|(h, n)| vec![h.to_string(), n.to_string()])
        .collect();
    assert_eq!(cells(&run(&e, "acme", sql).await.unwrap()), want);
    let plan = physical_plan(&e, "acme", sql).await;
    assert!(plan.contains("__securenet_eager_0"), "{plan}");

    // Grouped by an event column too (its distinct count): the events are
    // counted by address and host, by the pair of their dictionary keys.
    let sql = "WITH dim AS (SELECT source_ip AS ip, min(host) AS first_host FROM logs \
               GROUP BY source_ip) \
               SELECT dim.ip, dim.first_host, count(*) AS n, count(DISTINCT l.host) AS hosts \
               FROM logs l JOIN dim ON l.source_ip = dim.ip \
               GROUP BY dim.ip, dim.first_host ORDER BY 1";
    let mut hosts: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for i in 0..900 {
        if let Some(a) = ip(i) {
            hosts.entry(a).or_default().insert(format!("h{}", i % 3));
        }
    }
    let want: Vec<Vec<String>> = per_ip
        .iter()
        .map(|(a, (n, first))| {
            vec![
                a.clone(),
                first.clone(),
                n.to_string(),
                hosts[a].len().to_string(),
            ]
        })
        .collect();
    assert_eq!(cells(&run(&e, "acme", sql).await.unwrap()), want);
    let plan = physical_plan(&e, "acme", sql).await;
    assert!(plan.contains("__securenet_eager_0"), "{plan}");
    assert!(
        plan.contains("CountByViewExec: gby=[source_ip, host]"),
        "{plan}"
    );
    assert!(plan.contains("DictScanExec"), "{plan}");
}

/// A lookup of a rare value (`source_ip = '…'` among thousands of
/// addresses) reading wide columns evaluates its filter while decoding; its
/// scan takes a running TopK threshold only on a fixed-width column (one on
/// `message` would decode that column for every row); it answers as the
/// same query read without pushdown does; and a filter on a column of few
/// values, or a lookup reading nothing wide, is read as before.
#[tokio::test]
async fn lookups_filter_while_decoding_and_answer_as_full_scans() {
    let (_dir, lake) = empty_lake();
    let records: Vec<LogRecord> = (0..6000)
        .map(|i| LogRecord {
            host: Some(format!("h{}", i % 7)),
            source_ip: (i % 11 != 0).then(|| match i % 50 {
                7..=9 => format!("10.0.0.{}", i % 50),
                _ => format!("172.16.{}.{}", i / 256, i % 256),
            }),
            ..record(
                i * 997 % 6000,
                format!("event {} {i:05}", "x".repeat(150 + i as usize % 40)),
            )
        })
        .collect();
    let with_ip = |ips: &[&str]| {
        records
            .iter()
            .filter(|r| r.source_ip.as_deref().is_some_and(|ip| ips.contains(&ip)))
            .count()
    };
    write_logs(&lake, "acme", &records).await;
    let e = engine(lake, SqlConfig::default());
    let scan_of = |plan: &str| -> String {
        let scan = plan.lines().find(|l| l.contains("DataSourceExec"));
        scan.unwrap_or_else(|| panic!("no scan in {plan}"))
            .to_string()
    };
    let by_message = physical_plan(
        &e,
        "acme",
        "SELECT ts, host, message FROM logs WHERE source_ip = '10.0.0.7' ORDER BY message LIMIT 5",
    )
    .await;
    assert!(by_message.contains("CompactViewsExec"), "{by_message}");
    let scan = scan_of(&by_message);
    assert!(
        scan.contains("source_ip@") && !scan.contains("DynamicFilter"),
        "{by_message}"
    );
    let by_time = physical_plan(
        &e,
        "acme",
        "SELECT ts, host, message FROM logs WHERE source_ip = '10.0.0.7' ORDER BY ts DESC LIMIT 5",
    )
    .await;
    assert!(scan_of(&by_time).contains("DynamicFilter"), "{by_time}");
    let hundred: Vec<String> = (0..100).map(|i| format!("'172.16.1.{i}'")).collect();
    for plain in [
        // Seven hosts: one is a seventh of the rows.
        "SELECT ts, message FROM logs WHERE host = 'h3' ORDER BY ts DESC LIMIT 5".to_string(),
        // Nothing wide besides the address.
        "SELECT host, count(*) AS n FROM logs WHERE source_ip = '10.0.0.7' GROUP BY host"
            .to_string(),
        // A hundred addresses are no longer rare.
        format!(
            "SELECT ts, message FROM logs WHERE source_ip IN ({}) ORDER BY ts",
            hundred.join(", ")
        ),
    ] {
        let plan = physical_plan(&e, "acme", &plain).await;
        assert!(!plan.contains("CompactViewsExec"), "{plain}: {plan}");
    }
    // `source_ip || ''` is no column: the same rows, read without pushdown.
    let one = with_ip(&["10.0.0.7"]);
    for (sql, rows) in [
        (
            "SELECT ts, host, message FROM logs WHERE {ip} = '10.0.0.7' ORDER BY message LIMIT 5",
            5,
        ),
        (
            "SELECT ts, host, message FROM logs WHERE {ip} = '10.0.0.7' ORDER BY ts DESC LIMIT 5",
            5,
        ),
        (
            "SELECT ts, host, app, message FROM logs WHERE {ip} = '10.0.0.7' ORDER BY ts, host, app, message",
            one,
        ),
        (
            "SELECT host, max(message) AS m, count(*) AS n FROM logs WHERE {ip} IN ('10.0.0.8', '10.0.0.9') GROUP BY host ORDER BY host",
            7,
        ),
        (
            "SELECT max(host) AS h, max(message) AS m FROM logs WHERE {ip} = '10.0.0.9'",
            1,
        ),
    ] {
        let lookup = run(&e, "acme", &sql.replace("{ip}", "source_ip"))
            .await
            .unwrap();
        let full = run(&e, "acme", &sql.replace("{ip}", "source_ip || ''"))
            .await
            .unwrap();
        assert_eq!(lookup, full, "{sql}");
        // Header, rule lines and the rows.
        assert_eq!(lookup.lines().count(), rows + 4, "{sql}: {lookup}");
    }
    assert!(one > 50, "{one} rows of the address");
}
