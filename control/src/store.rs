//! The metadata store: connections, migrations (see
//! [`crate::migrations`]), the default organization and tenant deletion.
//! Each aggregate's queries live in its own module (`orgs`, `keys`,
//! `inventory`, `users`, `billing`, `stripe`, `models`, `notify`, `audit`).
//!
//! Two backends (see [`crate::db`]): SQLite, embedded, with one writer
//! connection and a small pool of read-only connections (file stores): in
//! WAL mode readers never wait for the writer, so authentication (a key or
//! user lookup on every request) and organization lookups stay fast while
//! another tenant's large write — a 40,000-device inventory — holds the
//! writer; WAL also lets the CLI (`securenet keys revoke`) write while a
//! server reads. PostgreSQL (`control.database = "postgres://…"`), shared
//! by the roles of several hosts. Keys are not cached by the store: a
//! revocation takes effect on the next request (see `auth` for the cache
//! in front of it).

use std::path::Path;

use rusqlite::Connection;
use schemas::{Plan, TenantId};

use crate::auth::Role;
use crate::db::{Backend, Db, params};
use crate::error::{Error, Result};
use crate::keys::IssuedKey;
use crate::migrations::{SQLITE, TENANT_TABLES};
use crate::orgs::NewOrganization;

/// The organization single-tenant callers use.
pub const DEFAULT_ORG: &str = "default";

pub struct MetaStore {
    pub(crate) db: Db,
    /// The JWT signing secret, loaded (or generated) on first use.
    pub(crate) jwt_secret: tokio::sync::OnceCell<Vec<u8>>,
    pub(crate) key_cache: crate::auth::KeyCache,
}

pub(crate) use schemas::time::now_ms;

impl MetaStore {
    /// Opens the store `database` names: a `postgres://` or
    /// `postgresql://` URL (a shared PostgreSQL control plane), else the
    /// path of a SQLite file (created if needed). Applies migrations.
    pub async fn connect(database: &str) -> Result<Self> {
        if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            let db = Db::postgres(database).await?;
            crate::migrations::postgres(&db).await?;
            Ok(Self::with(db))
        } else {
            let path =
                std::path::PathBuf::from(database.strip_prefix("sqlite://").unwrap_or(database));
            tokio::task::spawn_blocking(move || Self::open(&path))
                .await
                .map_err(|e| Error::Invalid(format!("opening the metadata store: {e}")))?
        }
    }

    /// Opens (creating if needed) the SQLite store at `path` and applies
    /// migrations.
    pub fn open(path: &Path) -> Result<Self> {
        // SQLite answers "busy" without waiting in a few cases the busy
        // timeout does not cover (a journal-mode switch or WAL recovery
        // racing another process's first open): those are retried here.
        let started = std::time::Instant::now();
        let writer = loop {
            match Connection::open(path)
                .map_err(Error::from)
                .and_then(Self::init)
            {
                Err(Error::Store(e))
                    if e.is_transient()
                        && started.elapsed() < std::time::Duration::from_secs(30) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let mut readers = Vec::new();
        for _ in 0..crate::db::SQLITE_READERS {
            let reader = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            reader.busy_timeout(std::time::Duration::from_secs(5))?;
            readers.push(reader);
        }
        Ok(Self::with(Db::sqlite(writer, readers)))
    }

    /// A private in-memory SQLite store, for tests.
    pub fn open_in_memory() -> Result<Self> {
        Ok(Self::with(Db::sqlite(
            Self::init(Connection::open_in_memory()?)?,
            Vec::new(),
        )))
    }

    fn with(db: Db) -> Self {
        let ttl = match db.backend() {
            Backend::Sqlite => std::time::Duration::ZERO,
            Backend::Postgres => crate::auth::SHARED_KEY_CACHE_TTL,
        };
        Self {
            db,
            jwt_secret: tokio::sync::OnceCell::new(),
            key_cache: crate::auth::KeyCache::new(ttl),
        }
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    fn init(mut conn: Connection) -> Result<Connection> {
        // First: every role opens the same file at start (`ingest` and
        // `pipeline` side by side), and switching to WAL or migrating takes
        // a lock the other must wait for rather than fail on.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // One migration per write transaction, its version read inside it,
        // so a process that waited for another's migration skips it.
        loop {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let applied: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if applied > SQLITE.len() {
                return Err(Error::Invalid(format!(
                    "metadata store is at schema version {applied}, newer than this build ({}); upgrade securenet",
                    SQLITE.len()
                )));
            }
            let Some(sql) = SQLITE.get(applied) else {
                break;
            };
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", applied + 1)?;
            tx.commit()?;
        }
        Ok(conn)
    }

    /// Creates the default organization on first start. Returns the key
    /// issued for it when one was generated (to be shown once), `None` when
    /// the organization already existed or `configured_key` was used.
    pub async fn ensure_default_org(
        &self,
        plan: Plan,
        configured_key: Option<&str>,
    ) -> Result<Option<IssuedKey>> {
        let id = TenantId::new(DEFAULT_ORG)?;
        if self.organization(&id).await?.is_none() {
            let created = self
                .create_organization(&NewOrganization {
                    id: id.clone(),
                    name: "Default organization".into(),
                    owner_email: "admin@localhost".into(),
                    plan,
                    parent_id: None,
                    allow_overage: false,
                })
                .await;
            match created {
                // Another role started at the same time created it.
                Ok(_) | Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        match configured_key {
            Some(key) => {
                self.import_key(&id, "configured", Role::Admin, key).await?;
                Ok(None)
            }
            None if self.list_keys(&id).await?.is_empty() => {
                Ok(Some(self.create_key(&id, "default", Role::Admin).await?))
            }
            None => Ok(None),
        }
    }

    /// Deletes an organization with its keys, devices and scan records, and
    /// leaves a tombstone so the maintenance job keeps purging its data from
    /// the stores (records still in flight land after this). Refused while
    /// it has child organizations.
    pub async fn delete_organization(&self, id: &TenantId) -> Result<()> {
        let mut tx = self.db.begin().await?;
        let children: Vec<String> = tx
            .query(
                "SELECT id FROM organizations WHERE parent_id = ?1 ORDER BY id",
                params![id],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect::<Result<_, _>>()?;
        if !children.is_empty() {
            return Err(Error::Invalid(format!(
                "organization {id} has child organizations ({}); delete them first",
                children.join(", ")
            )));
        }
        for table in TENANT_TABLES {
            tx.execute(
                &format!("DELETE FROM {table} WHERE org_id = ?1"),
                params![id],
            )
            .await?;
        }
        if tx
            .execute("DELETE FROM organizations WHERE id = ?1", params![id])
            .await?
            == 0
        {
            return Err(Error::NotFound {
                what: "organization",
                id: id.to_string(),
            });
        }
        tx.execute(
            "INSERT INTO deleted_organizations (id, deleted_at) VALUES (?1, ?2) \
             ON CONFLICT(id) DO UPDATE SET deleted_at = excluded.deleted_at",
            params![id, now_ms()],
        )
        .await?;
        tx.commit().await?;
        self.key_cache.forget(id, None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{org, t};

    /// `ingest` and `pipeline` started side by side on a new store: the
    /// second to open waited for the first's WAL switch and migrations
    /// instead of failing ("database is locked"; found by benches/chaos.sh).
    #[tokio::test]
    async fn roles_opening_a_new_store_at_once_all_succeed() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("meta.db");
            let start = std::sync::Arc::new(std::sync::Barrier::new(4));
            let opened: Vec<_> = (0..4)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        MetaStore::open(&path).map(|_| ())
                    })
                })
                .collect();
            for o in opened {
                o.join().unwrap().unwrap();
            }
            let store = MetaStore::open(&path).unwrap();
            let version: usize = store
                .db
                .with_sqlite(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(version, SQLITE.len());
        }
    }

    #[tokio::test]
    async fn default_org_is_created_once_with_one_key() {
        let store = crate::testing::store().await;
        let key = store
            .ensure_default_org(Plan::Professional, None)
            .await
            .unwrap()
            .unwrap();
        assert!(
            store
                .ensure_default_org(Plan::Professional, None)
                .await
                .unwrap()
                .is_none()
        );
        let p = store.verify_key(&key.secret).await.unwrap();
        assert_eq!(p.tenant.as_str(), "default");
        assert_eq!(p.role, Role::Admin);
        let org = store.organization(&t("default")).await.unwrap().unwrap();
        assert_eq!(org.plan, Plan::Professional);
        assert_eq!(org.limits, Plan::Professional.limits());
    }

    #[tokio::test]
    async fn configured_default_key_works_and_is_idempotent() {
        let store = crate::testing::store().await;
        let key = "configured-key-for-tests-0001";
        assert!(
            store
                .ensure_default_org(Plan::Starter, Some(key))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .ensure_default_org(Plan::Starter, Some(key))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            store.verify_key(key).await.unwrap().tenant.as_str(),
            "default"
        );
        assert_eq!(store.list_keys(&t("default")).await.unwrap().len(), 1);
        assert!(matches!(
            store.ensure_default_org(Plan::Starter, Some("short")).await,
            Err(Error::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn deleting_an_organization_removes_it_and_leaves_a_tombstone() {
        let store = crate::testing::store().await;
        org(&store, "msp-1").await;
        store
            .create_organization(&NewOrganization {
                id: t("child-1"),
                name: "Child".into(),
                owner_email: "o@child.test".into(),
                plan: Plan::Starter,
                parent_id: Some(t("msp-1")),
                allow_overage: false,
            })
            .await
            .unwrap();
        let key = store
            .create_key(&t("child-1"), "k", Role::Admin)
            .await
            .unwrap();
        let err = store.delete_organization(&t("msp-1")).await.unwrap_err();
        assert!(err.to_string().contains("child-1"), "{err}");
        store.delete_organization(&t("child-1")).await.unwrap();
        assert_eq!(store.organization(&t("child-1")).await.unwrap(), None);
        assert!(matches!(
            store.verify_key(&key.secret).await,
            Err(Error::InvalidCredentials)
        ));
        assert_eq!(store.deleted_organizations().await.unwrap(), [t("child-1")]);
        assert!(matches!(
            store.delete_organization(&t("child-1")).await,
            Err(Error::NotFound { .. })
        ));
        // Re-creating the id clears the tombstone.
        org(&store, "child-1").await;
        assert!(store.deleted_organizations().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn reopening_a_file_keeps_data_and_skips_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let key = {
            let store = MetaStore::open(&path).unwrap();
            store
                .ensure_default_org(Plan::Starter, None)
                .await
                .unwrap()
                .unwrap()
        };
        let store = MetaStore::open(&path).unwrap();
        assert_eq!(
            store.verify_key(&key.secret).await.unwrap().tenant.as_str(),
            "default"
        );
    }
}
