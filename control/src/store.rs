//! The SQLite metadata store.
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

use rusqlite::{Connection, OptionalExtension, params};
use schemas::{Plan, PlanLimits, TenantId};
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::auth::{Principal, Role};
use crate::error::{Error, Result};
use crate::keys::{self, IssuedKey};

/// The organization single-tenant callers use.
pub const DEFAULT_ORG: &str = "default";

/// Schema migrations, applied in order; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE organizations (
        id                  TEXT PRIMARY KEY,
        name                TEXT NOT NULL,
        owner_email         TEXT NOT NULL,
        plan                TEXT NOT NULL,
        max_devices         INTEGER NOT NULL,
        max_scans_per_month INTEGER NOT NULL,
        log_retention_days  INTEGER NOT NULL,
        parent_id           TEXT REFERENCES organizations(id),
        created_at          INTEGER NOT NULL
    );
    CREATE TABLE api_keys (
        id           TEXT PRIMARY KEY,
        org_id       TEXT NOT NULL REFERENCES organizations(id),
        name         TEXT NOT NULL,
        role         TEXT NOT NULL,
        hash         BLOB NOT NULL,
        created_at   INTEGER NOT NULL,
        last_used_at INTEGER,
        revoked_at   INTEGER
    );
    CREATE INDEX api_keys_org ON api_keys(org_id);
"#,
    r#"
    ALTER TABLE organizations ADD COLUMN allow_overage INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE devices (
        org_id      TEXT NOT NULL REFERENCES organizations(id),
        device_id   TEXT NOT NULL,
        ip          TEXT,
        mac         TEXT,
        hostname    TEXT,
        os          TEXT,
        vendor      TEXT,
        first_seen  INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL,
        PRIMARY KEY (org_id, device_id)
    );
    CREATE INDEX devices_ip ON devices(org_id, ip);
    CREATE INDEX devices_mac ON devices(org_id, mac);
    CREATE TABLE scans (
        org_id      TEXT NOT NULL REFERENCES organizations(id),
        scan_id     TEXT NOT NULL,
        month       TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        PRIMARY KEY (org_id, scan_id)
    );
    CREATE INDEX scans_month ON scans(org_id, month);
"#,
    r#"
    CREATE TABLE deleted_organizations (
        id          TEXT PRIMARY KEY,
        deleted_at  INTEGER NOT NULL
    );
"#,
    // Insights: the model registry, training sessions and notifications.
    r#"
    CREATE TABLE ml_models (
        org_id      TEXT NOT NULL REFERENCES organizations(id),
        id          TEXT NOT NULL,
        version     INTEGER NOT NULL,
        name        TEXT NOT NULL,
        model_type  TEXT NOT NULL,
        status      TEXT NOT NULL,
        accuracy    REAL,
        features    TEXT NOT NULL,
        threshold   REAL,
        artifact    TEXT,
        metrics     TEXT NOT NULL DEFAULT '{}',
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        PRIMARY KEY (org_id, id, version)
    );
    CREATE TABLE ml_training_sessions (
        id            TEXT PRIMARY KEY,
        org_id        TEXT NOT NULL REFERENCES organizations(id),
        model_id      TEXT NOT NULL,
        model_version INTEGER,
        status        TEXT NOT NULL,
        rows          INTEGER NOT NULL,
        duration_ms   INTEGER,
        metrics       TEXT NOT NULL DEFAULT '{}',
        error         TEXT,
        started_at    INTEGER NOT NULL,
        finished_at   INTEGER
    );
    CREATE INDEX ml_training_sessions_org ON ml_training_sessions(org_id, started_at);
    CREATE TABLE notifications (
        id          TEXT PRIMARY KEY,
        org_id      TEXT NOT NULL REFERENCES organizations(id),
        kind        TEXT NOT NULL,
        severity    TEXT NOT NULL,
        title       TEXT NOT NULL,
        body        TEXT NOT NULL,
        ref_id      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        read_at     INTEGER,
        UNIQUE (org_id, kind, ref_id)
    );
    CREATE INDEX notifications_org ON notifications(org_id, created_at);
"#,
    // The audit log of mutating API calls.
    r#"
    CREATE TABLE audit_log (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        org_id      TEXT NOT NULL,
        key_id      TEXT NOT NULL,
        role        TEXT NOT NULL,
        method      TEXT NOT NULL,
        route       TEXT NOT NULL,
        path        TEXT NOT NULL,
        status      INTEGER NOT NULL,
        at          INTEGER NOT NULL
    );
    CREATE INDEX audit_log_org ON audit_log(org_id, id);
"#,
    // Users (email + password, for JWTs) and process-wide settings such as
    // the JWT signing secret.
    r#"
    CREATE TABLE users (
        id            TEXT PRIMARY KEY,
        org_id        TEXT NOT NULL REFERENCES organizations(id),
        email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
        role          TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        last_login_at INTEGER
    );
    CREATE INDEX users_org ON users(org_id);
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
"#,
    // Billing: plan history (for prorated invoices), the Stripe
    // subscription, processed Stripe events (idempotency) and invoice
    // payments.
    r#"
    CREATE TABLE plan_changes (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        org_id  TEXT NOT NULL REFERENCES organizations(id),
        plan    TEXT NOT NULL,
        at      INTEGER NOT NULL,
        source  TEXT NOT NULL
    );
    CREATE INDEX plan_changes_org ON plan_changes(org_id, at);
    CREATE TABLE subscriptions (
        org_id                 TEXT PRIMARY KEY REFERENCES organizations(id),
        stripe_customer_id     TEXT,
        stripe_subscription_id TEXT UNIQUE,
        status                 TEXT NOT NULL,
        last_event_at          INTEGER NOT NULL,
        updated_at             INTEGER NOT NULL
    );
    CREATE TABLE stripe_events (
        id          TEXT PRIMARY KEY,
        type        TEXT NOT NULL,
        org_id      TEXT,
        outcome     TEXT NOT NULL,
        received_at INTEGER NOT NULL
    );
    CREATE TABLE invoice_payments (
        stripe_invoice_id TEXT PRIMARY KEY,
        org_id            TEXT NOT NULL REFERENCES organizations(id),
        status            TEXT NOT NULL,
        amount_cents      INTEGER NOT NULL,
        period            TEXT,
        at                INTEGER NOT NULL
    );
"#,
    // Notification delivery: per-organization channels (webhook, email)
    // and one delivery row per (channel, notification) — the delivery log.
    r#"
    CREATE TABLE notification_channels (
        id            TEXT PRIMARY KEY,
        org_id        TEXT NOT NULL REFERENCES organizations(id),
        kind          TEXT NOT NULL,
        target        TEXT NOT NULL,
        secret        TEXT,
        min_severity  TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    );
    CREATE INDEX notification_channels_org ON notification_channels(org_id);
    CREATE TABLE deliveries (
        id              TEXT PRIMARY KEY,
        org_id          TEXT NOT NULL REFERENCES organizations(id),
        channel_id      TEXT NOT NULL,
        notification_id TEXT NOT NULL,
        status          TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_status     INTEGER,
        last_error      TEXT,
        created_at      INTEGER NOT NULL,
        delivered_at    INTEGER,
        UNIQUE (channel_id, notification_id)
    );
    CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at);
    CREATE INDEX deliveries_org ON deliveries(org_id, created_at);
"#,
    // Tenant isolation: an email is unique within its organization only
    // (unique across all of them, one tenant could learn — and block —
    // another's users' addresses); a scan id remembers the report it
    // stored, so a different report under the same id is refused instead
    // of overwriting it.
    r#"
    CREATE TABLE users_v2 (
        id            TEXT PRIMARY KEY,
        org_id        TEXT NOT NULL REFERENCES organizations(id),
        email         TEXT NOT NULL COLLATE NOCASE,
        role          TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        last_login_at INTEGER,
        UNIQUE (org_id, email)
    );
    INSERT INTO users_v2 (id, org_id, email, role, password_hash, created_at, last_login_at)
        SELECT id, org_id, email, role, password_hash, created_at, last_login_at FROM users;
    DROP TABLE users;
    ALTER TABLE users_v2 RENAME TO users;
    CREATE INDEX users_org ON users(org_id);
    CREATE INDEX users_email ON users(email);
    ALTER TABLE scans ADD COLUMN content_hash TEXT;
    ALTER TABLE ml_training_sessions ADD COLUMN heartbeat_at INTEGER;
"#,
    // Devices can be retired (they stop counting against the limit), and
    // the platform operator can set an organization's own limits.
    r#"
    ALTER TABLE devices ADD COLUMN retired_at INTEGER;
    ALTER TABLE organizations ADD COLUMN limits_override TEXT;
"#,
];

/// Only record a key's last use when the stored value is older than this, so
/// authentication stays a read on the hot path.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Organization {
    pub id: TenantId,
    pub name: String,
    pub owner_email: String,
    pub plan: Plan,
    pub limits: PlanLimits,
    pub parent_id: Option<TenantId>,
    /// Accept devices and scans beyond the plan's limits and bill them as
    /// overage, instead of refusing them.
    pub allow_overage: bool,
    /// The operator's limits for this organization, over its plan's
    /// (`limits` already includes them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits_override: Option<schemas::LimitsOverride>,
    /// ms since the epoch.
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewOrganization {
    pub id: TenantId,
    pub name: String,
    pub owner_email: String,
    pub plan: Plan,
    pub parent_id: Option<TenantId>,
    pub allow_overage: bool,
}

/// What a key listing shows: never the secret or its hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub role: Role,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

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
            if applied > MIGRATIONS.len() {
                return Err(Error::Invalid(format!(
                    "metadata store is at schema version {applied}, newer than this build ({}); upgrade securenet",
                    MIGRATIONS.len()
                )));
            }
            let Some(sql) = MIGRATIONS.get(applied) else {
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

    pub fn create_organization(&self, org: &NewOrganization) -> Result<Organization> {
        if !org.owner_email.contains('@') {
            return Err(Error::Invalid(format!(
                "owner email {:?} is not an email address",
                org.owner_email
            )));
        }
        if org.name.trim().is_empty() {
            return Err(Error::Invalid("organization name must not be empty".into()));
        }
        let limits = org.plan.limits();
        let created_at = now_ms();
        let conn = self.conn();
        let inserted = conn.execute(
            "INSERT INTO organizations (id, name, owner_email, plan, max_devices, \
             max_scans_per_month, log_retention_days, parent_id, created_at, allow_overage) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT(id) DO NOTHING",
            params![
                org.id.as_str(),
                org.name,
                org.owner_email,
                org.plan.as_str(),
                limits.max_devices as i64,
                limits.max_scans_per_month as i64,
                limits.log_retention_days,
                org.parent_id.as_ref().map(TenantId::as_str),
                created_at,
                org.allow_overage
            ],
        );
        match inserted {
            Ok(0) => Err(Error::Conflict {
                what: "organization",
                id: org.id.to_string(),
            }),
            Ok(_) => {
                // Re-using a deleted organization's id: its new data is not
                // to be purged.
                conn.execute(
                    "DELETE FROM deleted_organizations WHERE id = ?1",
                    [org.id.as_str()],
                )?;
                Ok(Organization {
                    id: org.id.clone(),
                    name: org.name.clone(),
                    owner_email: org.owner_email.clone(),
                    plan: org.plan,
                    limits,
                    parent_id: org.parent_id.clone(),
                    allow_overage: org.allow_overage,
                    limits_override: None,
                    created_at,
                })
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::NotFound {
                    what: "parent organization",
                    id: org
                        .parent_id
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                })
            }
            Err(e) => Err(e.into()),
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
        for table in [
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
        ] {
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

    /// Sets the organization's own limits (each given value replaces its
    /// plan's and any earlier override of that limit; `Some(None)` clears
    /// them all) and whether it may go over them, billed as overage — the
    /// platform operator's contract terms. Returns the organization.
    pub fn set_terms(
        &self,
        id: &TenantId,
        limits: Option<Option<schemas::LimitsOverride>>,
        allow_overage: Option<bool>,
    ) -> Result<Organization> {
        let current = self.organization(id)?.ok_or_else(|| Error::NotFound {
            what: "organization",
            id: id.to_string(),
        })?;
        let over = match limits {
            Some(None) => None,
            Some(Some(new)) => {
                let old = current.limits_override.clone().unwrap_or_default();
                Some(schemas::LimitsOverride {
                    max_devices: new.max_devices.or(old.max_devices),
                    max_scans_per_month: new.max_scans_per_month.or(old.max_scans_per_month),
                    log_retention_days: new.log_retention_days.or(old.log_retention_days),
                })
            }
            None => current.limits_override.clone(),
        }
        .filter(|o| !o.is_empty());
        let effective = current.plan.limits().with(over.as_ref());
        let allow = allow_overage.unwrap_or(current.allow_overage);
        let json = over
            .as_ref()
            .map(|o| serde_json::to_string(o).unwrap_or_default());
        self.conn().execute(
            "UPDATE organizations SET max_devices = ?2, max_scans_per_month = ?3, \
             log_retention_days = ?4, allow_overage = ?5, limits_override = ?6 WHERE id = ?1",
            params![
                id.as_str(),
                effective.max_devices as i64,
                effective.max_scans_per_month as i64,
                effective.log_retention_days,
                allow,
                json
            ],
        )?;
        Ok(Organization {
            limits: effective,
            allow_overage: allow,
            limits_override: over,
            ..current
        })
    }

    /// Deleted organizations whose data the maintenance job still purges.
    pub fn deleted_organizations(&self) -> Result<Vec<TenantId>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached("SELECT id FROM deleted_organizations ORDER BY id")?;
        let ids: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(ids
            .into_iter()
            .filter_map(|id| TenantId::new(&id).ok())
            .collect())
    }

    pub fn organization(&self, id: &TenantId) -> Result<Option<Organization>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, name, owner_email, plan, max_devices, max_scans_per_month, \
             log_retention_days, parent_id, created_at, allow_overage, limits_override \
             FROM organizations WHERE id = ?1",
        )?;
        let row = stmt.query_row([id.as_str()], raw_org).optional()?;
        row.map(RawOrg::into_org).transpose()
    }

    pub fn list_organizations(&self) -> Result<Vec<Organization>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, name, owner_email, plan, max_devices, max_scans_per_month, \
             log_retention_days, parent_id, created_at, allow_overage, limits_override \
             FROM organizations ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], raw_org)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(RawOrg::into_org).collect()
    }

    /// Issues a new key for `org`; the secret is returned once.
    pub fn create_key(&self, org: &TenantId, name: &str, role: Role) -> Result<IssuedKey> {
        let key = keys::generate();
        self.insert_key(org, name, role, &key.id, &key.secret)?;
        Ok(key)
    }

    /// Stores a key supplied by the operator (configuration); idempotent.
    pub fn import_key(
        &self,
        org: &TenantId,
        name: &str,
        role: Role,
        secret: &str,
    ) -> Result<String> {
        if secret.len() < keys::MIN_CONFIGURED_KEY_LEN {
            return Err(Error::Invalid(format!(
                "configured API key is {} characters long; use at least {}",
                secret.len(),
                keys::MIN_CONFIGURED_KEY_LEN
            )));
        }
        let id = keys::key_id(secret);
        match self.insert_key(org, name, role, &id, secret) {
            Err(Error::Conflict { .. }) => Ok(id),
            other => other.map(|()| id),
        }
    }

    fn insert_key(
        &self,
        org: &TenantId,
        name: &str,
        role: Role,
        id: &str,
        secret: &str,
    ) -> Result<()> {
        if self.organization(org)?.is_none() {
            return Err(Error::NotFound {
                what: "organization",
                id: org.to_string(),
            });
        }
        let hash = keys::hash(secret);
        let n = self.conn().execute(
            "INSERT INTO api_keys (id, org_id, name, role, hash, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(id) DO NOTHING",
            params![id, org.as_str(), name, role.as_str(), &hash[..], now_ms()],
        )?;
        if n == 0 {
            return Err(Error::Conflict {
                what: "api key",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    pub fn list_keys(&self, org: &TenantId) -> Result<Vec<ApiKeyInfo>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, org_id, name, role, created_at, last_used_at, revoked_at \
             FROM api_keys WHERE org_id = ?1 ORDER BY created_at, id",
        )?;
        let rows = stmt
            .query_map([org.as_str()], |r| {
                Ok((
                    ApiKeyInfo {
                        id: r.get(0)?,
                        org_id: r.get(1)?,
                        name: r.get(2)?,
                        role: Role::Viewer,
                        created_at: r.get(4)?,
                        last_used_at: r.get(5)?,
                        revoked_at: r.get(6)?,
                    },
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(mut info, role)| {
                info.role = role.parse()?;
                Ok(info)
            })
            .collect()
    }

    /// Revokes a key of `org`. Revoking twice is not an error.
    pub fn revoke_key(&self, org: &TenantId, id: &str) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?3) WHERE id = ?1 AND org_id = ?2",
            params![id, org.as_str(), now_ms()],
        )?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "api key",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    /// The organization and id of the key `presented` claims to be (its
    /// public id part), without checking the secret: for attributing a
    /// failed authentication to the organization it targeted.
    pub fn key_owner(&self, presented: &str) -> Result<Option<(TenantId, String)>> {
        let id = keys::key_id(presented);
        let org: Option<String> = self
            .read()
            .prepare_cached("SELECT org_id FROM api_keys WHERE id = ?1")?
            .query_row([&id], |r| r.get(0))
            .optional()?;
        Ok(org.and_then(|o| TenantId::new(&o).ok()).map(|o| (o, id)))
    }

    /// Resolves a presented API key to its principal. The lookup is by the
    /// public id; the hash comparison is constant-time.
    pub fn verify_key(&self, presented: &str) -> Result<Principal> {
        let id = keys::key_id(presented);
        let row = {
            let conn = self.read();
            let mut stmt = conn.prepare_cached(
                "SELECT hash, org_id, role, revoked_at, last_used_at FROM api_keys WHERE id = ?1",
            )?;
            stmt.query_row([&id], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .optional()?
        };
        let Some((hash, org, role, revoked_at, last_used)) = row else {
            return Err(Error::InvalidCredentials);
        };
        let matches: bool = keys::hash(presented).ct_eq(hash.as_slice()).into();
        if !matches || revoked_at.is_some() {
            return Err(Error::InvalidCredentials);
        }
        let now = now_ms();
        if last_used.is_none_or(|t| now - t > LAST_USED_RESOLUTION_MS)
            && let Some(conn) = self.try_conn()
        {
            // Best effort: skipped while a bulk write holds the writer (the
            // next request records it).
            conn.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
                params![&id, now],
            )?;
        }
        Ok(Principal {
            tenant: TenantId::new(&org)?,
            key_id: id,
            role: role.parse()?,
        })
    }
}

struct RawOrg {
    id: String,
    name: String,
    owner_email: String,
    plan: String,
    max_devices: i64,
    max_scans: i64,
    retention: u32,
    parent_id: Option<String>,
    created_at: i64,
    allow_overage: bool,
    limits_override: Option<String>,
}

fn raw_org(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawOrg> {
    Ok(RawOrg {
        id: r.get(0)?,
        name: r.get(1)?,
        owner_email: r.get(2)?,
        plan: r.get(3)?,
        max_devices: r.get(4)?,
        max_scans: r.get(5)?,
        retention: r.get(6)?,
        parent_id: r.get(7)?,
        created_at: r.get(8)?,
        allow_overage: r.get(9)?,
        limits_override: r.get(10)?,
    })
}

impl RawOrg {
    fn into_org(self) -> Result<Organization> {
        Ok(Organization {
            id: TenantId::new(&self.id)?,
            name: self.name,
            owner_email: self.owner_email,
            plan: self.plan.parse()?,
            limits: PlanLimits {
                max_devices: self.max_devices.max(0) as u64,
                max_scans_per_month: self.max_scans.max(0) as u64,
                log_retention_days: self.retention,
            },
            parent_id: self.parent_id.as_deref().map(TenantId::new).transpose()?,
            allow_overage: self.allow_overage,
            limits_override: self
                .limits_override
                .as_deref()
                .and_then(|j| serde_json::from_str(j).ok()),
            created_at: self.created_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

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
            assert_eq!(version, MIGRATIONS.len());
        }
    }

    fn org(store: &MetaStore, id: &str) -> Organization {
        store
            .create_organization(&NewOrganization {
                id: t(id),
                name: id.to_uppercase(),
                owner_email: format!("owner@{id}.test"),
                plan: Plan::Business,
                parent_id: None,
                allow_overage: false,
            })
            .unwrap()
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
    fn keys_are_stored_hashed_listed_and_revocable() {
        let store = MetaStore::open_in_memory().unwrap();
        org(&store, "acme");
        let key = store
            .create_key(&t("acme"), "forwarder", Role::Member)
            .unwrap();
        let stored: Vec<u8> = store
            .conn()
            .query_row("SELECT hash FROM api_keys WHERE id = ?1", [&key.id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_ne!(stored, key.secret.as_bytes());
        assert_eq!(stored.len(), 32);

        let listed = store.list_keys(&t("acme")).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, key.id);
        assert_eq!(listed[0].role, Role::Member);

        assert_eq!(store.verify_key(&key.secret).unwrap().role, Role::Member);
        assert!(
            store.list_keys(&t("acme")).unwrap()[0]
                .last_used_at
                .is_some()
        );

        store.revoke_key(&t("acme"), &key.id).unwrap();
        assert!(matches!(
            store.verify_key(&key.secret),
            Err(Error::InvalidCredentials)
        ));
        assert!(store.list_keys(&t("acme")).unwrap()[0].revoked_at.is_some());
    }

    #[test]
    fn wrong_secret_with_a_valid_id_is_refused() {
        let store = MetaStore::open_in_memory().unwrap();
        org(&store, "acme");
        let key = store.create_key(&t("acme"), "k", Role::Admin).unwrap();
        let mut forged = key.secret.clone();
        forged.pop();
        forged.push(if key.secret.ends_with('0') { '1' } else { '0' });
        assert!(matches!(
            store.verify_key(&forged),
            Err(Error::InvalidCredentials)
        ));
        assert!(matches!(
            store.verify_key("sn_nope"),
            Err(Error::InvalidCredentials)
        ));
    }

    #[test]
    fn a_tenant_cannot_revoke_another_tenants_key() {
        let store = MetaStore::open_in_memory().unwrap();
        org(&store, "acme");
        org(&store, "globex");
        let key = store.create_key(&t("acme"), "k", Role::Admin).unwrap();
        assert!(matches!(
            store.revoke_key(&t("globex"), &key.id),
            Err(Error::NotFound { .. })
        ));
        assert!(store.verify_key(&key.secret).is_ok());
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
    fn organizations_are_unique_and_validated() {
        let store = MetaStore::open_in_memory().unwrap();
        org(&store, "acme");
        let dup = store.create_organization(&NewOrganization {
            id: t("acme"),
            name: "x".into(),
            owner_email: "a@b.c".into(),
            plan: Plan::Starter,
            parent_id: None,
            allow_overage: false,
        });
        assert_eq!(
            dup.unwrap_err().to_string(),
            "organization \"acme\" already exists"
        );
        let orphan = store.create_organization(&NewOrganization {
            id: t("child"),
            name: "x".into(),
            owner_email: "a@b.c".into(),
            plan: Plan::Starter,
            parent_id: Some(t("nobody")),
            allow_overage: false,
        });
        assert!(matches!(orphan, Err(Error::NotFound { .. })), "{orphan:?}");
        let ids: Vec<_> = store
            .list_organizations()
            .unwrap()
            .into_iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(ids, [t("acme")]);
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
