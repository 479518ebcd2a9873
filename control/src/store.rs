//! The SQLite metadata store: connections, migrations (see
//! [`crate::migrations`]), the default organization and tenant deletion.
//! Each aggregate's queries live in its own module (`orgs`, `keys`,
//! `inventory`, `users`, `billing`, `stripe`, `models`, `notify`, `audit`).
//!
//! One writer connection behind a mutex, and a small pool of read-only
//! connections (file stores): in WAL mode readers never wait for the
//! writer, so authentication (a key or user lookup on every request) and
//! organization lookups stay fast while another tenant's large write — a
//! 40,000-device inventory — holds the writer. Statements are point lookups
//! or short writes, so callers may use the store from async code; bulk
//! writes run on blocking threads (see `ingest::scans::publish`). WAL mode
//! also lets the CLI (`securenet keys revoke`) write while a server reads; a
//! revocation takes effect on the next request because keys are not cached.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, params};
use schemas::{Plan, TenantId};

use crate::auth::Role;
use crate::error::{Error, Result};
use crate::keys::IssuedKey;
use crate::migrations::{SQLITE, TENANT_TABLES};
use crate::orgs::NewOrganization;

/// The organization single-tenant callers use.
pub const DEFAULT_ORG: &str = "default";

/// Read-only connections of a file store.
const READERS: usize = 4;

pub struct MetaStore {
    conn: Mutex<Connection>,
    /// Empty for in-memory stores (a private in-memory database cannot be
    /// shared between connections): reads then use the writer.
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    /// The JWT signing secret, loaded (or generated) on first use.
    pub(crate) jwt_secret: std::sync::OnceLock<Vec<u8>>,
}

pub(crate) use schemas::time::now_ms;

impl MetaStore {
    /// Opens (creating if needed) the store at `path` and applies migrations.
    pub fn open(path: &Path) -> Result<Self> {
        // SQLite answers "busy" without waiting in a few cases the busy
        // timeout does not cover (a journal-mode switch or WAL recovery
        // racing another process's first open): those are retried here.
        let started = std::time::Instant::now();
        let mut store = loop {
            match Connection::open(path)
                .map_err(Error::from)
                .and_then(Self::init)
            {
                Err(Error::Store(rusqlite::Error::SqliteFailure(e, _)))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && started.elapsed() < std::time::Duration::from_secs(30) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        for _ in 0..READERS {
            let reader = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            reader.busy_timeout(std::time::Duration::from_secs(5))?;
            store.readers.push(Mutex::new(reader));
        }
        Ok(store)
    }

    /// A private in-memory store, for tests.
    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
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
        Ok(Self {
            conn: Mutex::new(conn),
            readers: Vec::new(),
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            jwt_secret: std::sync::OnceLock::new(),
        })
    }

    /// The writer connection (also for reads that must see a write of the
    /// same call).
    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (statements are atomic), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read-only connection that does not wait for the writer: a free
    /// reader if there is one, else the next in turn.
    pub(crate) fn read(&self) -> std::sync::MutexGuard<'_, Connection> {
        if self.readers.is_empty() {
            return self.conn();
        }
        let start = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = self.readers.len();
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(guard) => return guard,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.readers[start % n]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The writer, if nobody holds it: for best-effort bookkeeping (a key's
    /// last use) that must never make a request wait behind a bulk write.
    pub(crate) fn try_conn(&self) -> Option<std::sync::MutexGuard<'_, Connection>> {
        match self.conn.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Creates the default organization on first start. Returns the key
    /// issued for it when one was generated (to be shown once), `None` when
    /// the organization already existed or `configured_key` was used.
    pub fn ensure_default_org(
        &self,
        plan: Plan,
        configured_key: Option<&str>,
    ) -> Result<Option<IssuedKey>> {
        let id = TenantId::new(DEFAULT_ORG)?;
        if self.organization(&id)?.is_none() {
            self.create_organization(&NewOrganization {
                id: id.clone(),
                name: "Default organization".into(),
                owner_email: "admin@localhost".into(),
                plan,
                parent_id: None,
                allow_overage: false,
            })?;
        }
        match configured_key {
            Some(key) => {
                self.import_key(&id, "configured", Role::Admin, key)?;
                Ok(None)
            }
            None if self.list_keys(&id)?.is_empty() => {
                Ok(Some(self.create_key(&id, "default", Role::Admin)?))
            }
            None => Ok(None),
        }
    }

    /// Deletes an organization with its keys, devices and scan records, and
    /// leaves a tombstone so the maintenance job keeps purging its data from
    /// the stores (records still in flight land after this). Refused while
    /// it has child organizations.
    pub fn delete_organization(&self, id: &TenantId) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let children: Vec<String> = tx
            .prepare("SELECT id FROM organizations WHERE parent_id = ?1 ORDER BY id")?
            .query_map([id.as_str()], |r| r.get(0))?
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
                [id.as_str()],
            )?;
        }
        if tx.execute("DELETE FROM organizations WHERE id = ?1", [id.as_str()])? == 0 {
            return Err(Error::NotFound {
                what: "organization",
                id: id.to_string(),
            });
        }
        tx.execute(
            "INSERT INTO deleted_organizations (id, deleted_at) VALUES (?1, ?2) \
             ON CONFLICT(id) DO UPDATE SET deleted_at = excluded.deleted_at",
            params![id.as_str(), now_ms()],
        )?;
        tx.commit()?;
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
    #[test]
    fn roles_opening_a_new_store_at_once_all_succeed() {
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
                .conn()
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap();
            assert_eq!(version, SQLITE.len());
        }
    }

    #[test]
    fn default_org_is_created_once_with_one_key() {
        let store = MetaStore::open_in_memory().unwrap();
        let key = store
            .ensure_default_org(Plan::Professional, None)
            .unwrap()
            .unwrap();
        assert!(
            store
                .ensure_default_org(Plan::Professional, None)
                .unwrap()
                .is_none()
        );
        let p = store.verify_key(&key.secret).unwrap();
        assert_eq!(p.tenant.as_str(), "default");
        assert_eq!(p.role, Role::Admin);
        let org = store.organization(&t("default")).unwrap().unwrap();
        assert_eq!(org.plan, Plan::Professional);
        assert_eq!(org.limits, Plan::Professional.limits());
    }

    #[test]
    fn configured_default_key_works_and_is_idempotent() {
        let store = MetaStore::open_in_memory().unwrap();
        let key = "configured-key-for-tests-0001";
        assert!(
            store
                .ensure_default_org(Plan::Starter, Some(key))
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .ensure_default_org(Plan::Starter, Some(key))
                .unwrap()
                .is_none()
        );
        assert_eq!(store.verify_key(key).unwrap().tenant.as_str(), "default");
        assert_eq!(store.list_keys(&t("default")).unwrap().len(), 1);
        assert!(matches!(
            store.ensure_default_org(Plan::Starter, Some("short")),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn deleting_an_organization_removes_it_and_leaves_a_tombstone() {
        let store = MetaStore::open_in_memory().unwrap();
        org(&store, "msp-1");
        store
            .create_organization(&NewOrganization {
                id: t("child-1"),
                name: "Child".into(),
                owner_email: "o@child.test".into(),
                plan: Plan::Starter,
                parent_id: Some(t("msp-1")),
                allow_overage: false,
            })
            .unwrap();
        let key = store.create_key(&t("child-1"), "k", Role::Admin).unwrap();
        let err = store.delete_organization(&t("msp-1")).unwrap_err();
        assert!(err.to_string().contains("child-1"), "{err}");
        store.delete_organization(&t("child-1")).unwrap();
        assert_eq!(store.organization(&t("child-1")).unwrap(), None);
        assert!(matches!(
            store.verify_key(&key.secret),
            Err(Error::InvalidCredentials)
        ));
        assert_eq!(store.deleted_organizations().unwrap(), [t("child-1")]);
        assert!(matches!(
            store.delete_organization(&t("child-1")),
            Err(Error::NotFound { .. })
        ));
        // Re-creating the id clears the tombstone.
        org(&store, "child-1");
        assert!(store.deleted_organizations().unwrap().is_empty());
    }

    #[test]
    fn reopening_a_file_keeps_data_and_skips_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let key = {
            let store = MetaStore::open(&path).unwrap();
            store
                .ensure_default_org(Plan::Starter, None)
                .unwrap()
                .unwrap()
        };
        let store = MetaStore::open(&path).unwrap();
        assert_eq!(
            store.verify_key(&key.secret).unwrap().tenant.as_str(),
            "default"
        );
    }
}
