//! The metadata store's schema: migrations as SQL files, one per step,
//! under `control/migrations/<backend>/`, applied in order (SQLite counts
//! them in `PRAGMA user_version`); and the tables an organization's rows
//! live in, which tenant deletion empties.
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
];

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
];

/// Tables with an `org_id` that deleting the organization keeps, and why
/// (read by the test that holds deletion to the schema).
#[cfg_attr(not(test), expect(dead_code))]
pub(crate) const KEPT_ON_DELETE: &[(&str, &str)] = &[(
    "stripe_events",
    "Stripe event ids keep webhook deliveries idempotent after the organization is gone",
)];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetaStore;

    #[test]
    fn every_migration_file_is_applied() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files.len(), SQLITE.len(), "{files:?}");
        for (i, f) in files.iter().enumerate() {
            assert!(
                f.starts_with(&format!("{:04}_", i + 1)),
                "{f} out of sequence"
            );
            let text = std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
            assert_eq!(text, SQLITE[i], "{f} is not the {}th migration", i + 1);
        }
    }

    /// Deletion cannot forget a table: every table with an `org_id` column
    /// is deleted or kept on purpose, and every listed table exists.
    #[test]
    fn tenant_tables_are_exactly_the_tables_with_an_org_id() {
        let store = MetaStore::open_in_memory().unwrap();
        let conn = store.conn();
        let mut with_org: Vec<String> = conn
            .prepare(
                "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) c \
                 WHERE m.type = 'table' AND c.name = 'org_id' ORDER BY m.name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut listed: Vec<String> = TENANT_TABLES
            .iter()
            .chain(KEPT_ON_DELETE.iter().map(|(t, _)| t))
            .map(|t| t.to_string())
            .collect();
        with_org.sort();
        listed.sort();
        assert_eq!(with_org, listed);
    }
}
