//! The metadata store's schema: migrations as SQL files, one per step,
//! under `control/migrations/<backend>/`, applied in order (SQLite counts
//! them in `PRAGMA user_version`, PostgreSQL in `schema_migrations`); and
//! the tables an organization's rows live in, which tenant deletion
//! empties. The PostgreSQL sequence started from SQLite's 0011 schema in
//! one step; a change from now on is a step in each directory, and a test
//! holds both schemas to the same tables and columns.
//!
//! A new table with an `org_id` column must be listed in [`TENANT_TABLES`]
//! (or, with its reason, in [`KEPT_ON_DELETE`]): a test compares both lists
//! with the migrated schema, so deletion cannot forget a table.

/// SQLite migrations, oldest first. Never edit one that shipped: add a step.
pub(crate) const SQLITE: &[&str] = &[
    include_str!("../migrations/sqlite/0001_organizations_and_keys.sql"),
    include_str!("../migrations/sqlite/0002_inventory.sql"),
    include_str!("../migrations/sqlite/0003_deleted_organizations.sql"),
    include_str!("../migrations/sqlite/0004_models_and_notifications.sql"),
    include_str!("../migrations/sqlite/0005_audit_log.sql"),
    include_str!("../migrations/sqlite/0006_users_and_settings.sql"),
    include_str!("../migrations/sqlite/0007_billing.sql"),
    include_str!("../migrations/sqlite/0008_notification_delivery.sql"),
    include_str!("../migrations/sqlite/0009_tenant_isolation.sql"),
    include_str!("../migrations/sqlite/0010_device_retirement_and_limits.sql"),
    include_str!("../migrations/sqlite/0011_email_lookup_index.sql"),
    include_str!("../migrations/sqlite/0012_detection_rules.sql"),
    include_str!("../migrations/sqlite/0013_threat_lists.sql"),
    include_str!("../migrations/sqlite/0014_sql_alerts.sql"),
    include_str!("../migrations/sqlite/0015_reseller_markups.sql"),
    include_str!("../migrations/sqlite/0016_branding.sql"),
    include_str!("../migrations/sqlite/0017_issued_invoices.sql"),
    include_str!("../migrations/sqlite/0018_stripe_outbound.sql"),
];

/// PostgreSQL migrations, oldest first.
pub(crate) const POSTGRES: &[&str] = &[
    include_str!("../migrations/postgres/0001_schema.sql"),
    include_str!("../migrations/postgres/0002_detection_rules.sql"),
    include_str!("../migrations/postgres/0003_threat_lists.sql"),
    include_str!("../migrations/postgres/0004_sql_alerts.sql"),
    include_str!("../migrations/postgres/0005_reseller_markups.sql"),
    include_str!("../migrations/postgres/0006_branding.sql"),
    include_str!("../migrations/postgres/0007_issued_invoices.sql"),
    include_str!("../migrations/postgres/0008_stripe_outbound.sql"),
];

/// Applies PostgreSQL migrations not applied yet. Several processes may
/// start at once against a new database: an advisory lock held for the
/// transaction lets one migrate while the others wait, then find nothing
/// left to do.
pub(crate) async fn postgres(db: &crate::db::Db) -> crate::Result<()> {
    let Some(pool) = db.pg_pool() else {
        return Ok(());
    };
    let mut tx = pool.begin().await?;
    // An arbitrary constant naming "securenet schema migration".
    sqlx::query("SELECT pg_advisory_xact_lock(7305411001)")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations \
         (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    let applied: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM schema_migrations",
    )
    .fetch_one(&mut *tx)
    .await?;
    let applied = usize::try_from(applied).unwrap_or(0);
    if applied > POSTGRES.len() {
        return Err(crate::Error::Invalid(format!(
            "metadata store is at schema version {applied}, newer than this build ({}); upgrade securenet",
            POSTGRES.len()
        )));
    }
    for (i, sql) in POSTGRES.iter().enumerate().skip(applied) {
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(i as i64 + 1)
            .bind(crate::store::now_ms())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Tables whose rows belong to one organization (`org_id`), deleted with it
/// (children before the `organizations` row itself).
pub(crate) const TENANT_TABLES: &[&str] = &[
    "api_keys",
    "devices",
    "scans",
    "ml_models",
    "ml_training_sessions",
    "notifications",
    "audit_log",
    "users",
    "plan_changes",
    "subscriptions",
    "invoice_payments",
    "notification_channels",
    "deliveries",
    "detection_rules",
    "threat_lists",
    "sql_alerts",
    "reseller_markups",
    "branding",
    "stripe_jobs",
    "stripe_requests",
];

/// Tables with an `org_id` that deleting the organization keeps, and why
/// (read by the test that holds deletion to the schema).
#[cfg_attr(not(test), expect(dead_code))]
pub(crate) const KEPT_ON_DELETE: &[(&str, &str)] = &[
    (
        "stripe_events",
        "Stripe event ids keep webhook deliveries idempotent after the organization is gone",
    ),
    (
        "issued_invoices",
        "issued invoices are accounting records (amounts and the organization id, no tenant data)",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Backend, params};
    use crate::{MetaStore, testing};

    fn files(backend: &str) -> Vec<(String, String)> {
        // At run time: see schemas::fuzzing.
        let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap();
        let dir = format!("{manifest}/migrations/{backend}");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|f| {
                let text = std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
                (f, text)
            })
            .collect()
    }

    #[test]
    fn every_migration_file_is_applied() {
        for (backend, list) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let files = files(backend);
            assert_eq!(files.len(), list.len(), "{backend}: {files:?}");
            for (i, (f, text)) in files.iter().enumerate() {
                assert!(
                    f.starts_with(&format!("{:04}_", i + 1)),
                    "{backend}/{f} out of sequence"
                );
                assert_eq!(
                    text,
                    list[i],
                    "{backend}/{f} is not the {}th migration",
                    i + 1
                );
            }
        }
    }

    /// (table, column) of every column of the migrated schema.
    async fn columns(store: &MetaStore) -> Vec<(String, String)> {
        let sql = match store.backend() {
            Backend::Sqlite => {
                "SELECT m.name, c.name FROM sqlite_master m, pragma_table_info(m.name) c \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY 1, 2"
            }
            Backend::Postgres => {
                "SELECT CAST(table_name AS TEXT), CAST(column_name AS TEXT) \
                 FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name <> 'schema_migrations' \
                 ORDER BY 1, 2"
            }
        };
        store
            .db
            .query(sql, params![])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0).unwrap(), r.get(1).unwrap()))
            .collect()
    }

    /// Deletion cannot forget a table: every table with an `org_id` column
    /// is deleted or kept on purpose, and every listed table exists.
    #[tokio::test]
    async fn tenant_tables_are_exactly_the_tables_with_an_org_id() {
        let store = testing::store().await;
        let mut with_org: Vec<String> = columns(&store)
            .await
            .into_iter()
            .filter(|(_, c)| c == "org_id")
            .map(|(t, _)| t)
            .collect();
        let mut listed: Vec<String> = TENANT_TABLES
            .iter()
            .chain(KEPT_ON_DELETE.iter().map(|(t, _)| t))
            .map(|t| t.to_string())
            .collect();
        with_org.sort();
        listed.sort();
        assert_eq!(with_org, listed);
    }

    /// Both backends' migrations end at the same tables and columns.
    #[tokio::test]
    async fn both_backends_have_the_same_schema() {
        let store = testing::store().await;
        if store.backend() == Backend::Sqlite {
            // Needs SECURENET_TEST_CONTROL=postgres (./scripts/test.sh sets it).
            return;
        }
        let sqlite = MetaStore::open_in_memory().unwrap();
        assert_eq!(columns(&store).await, columns(&sqlite).await);
    }
}
