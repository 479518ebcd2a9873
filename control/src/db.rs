//! The metadata store's two backends behind one small SQL interface:
//! SQLite (embedded, the default) and PostgreSQL (several hosts sharing
//! one control plane).
//!
//! Every aggregate writes its statements once, in the SQL both accept
//! (`ON CONFLICT … DO UPDATE`, `RETURNING`, `CAST(… AS BIGINT)`; no
//! `INSERT OR …`, no SQLite-only functions), with numbered placeholders
//! `?1`, `?2` …: SQLite reads them as they are, PostgreSQL gets `$1`, `$2` ….
//! Values cross the boundary as a handful of types (64-bit integers,
//! doubles, text, bytes): integers are `BIGINT` and booleans 0/1 on both,
//! so a row reads the same from either. A column of another type (a
//! `NUMERIC` from `SUM`) is a decode error naming the column — cast it.
//!
//! SQLite: one writer connection behind an async mutex (transactions hold
//! it across their statements) and a few read-only connections that never
//! wait for it (WAL); statements are point lookups or short writes and run
//! on the calling task. PostgreSQL: a connection pool (sqlx).

use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow, Postgres};
use sqlx::{AssertSqlSafe, Column as _, Row as _, TypeInfo as _};

/// A failure of the store itself (not a caller mistake).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("column {column}: {problem}")]
    Decode { column: usize, problem: String },
}

impl StoreError {
    /// The constraint a write broke, if that is why it failed.
    pub(crate) fn violated(&self) -> Option<Constraint> {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                // SQLITE_CONSTRAINT_FOREIGNKEY = 787, _PRIMARYKEY 1555, _UNIQUE 2067.
                Some(match e.extended_code {
                    787 => Constraint::ForeignKey,
                    1555 | 2067 => Constraint::Unique,
                    _ => Constraint::Other,
                })
            }
            StoreError::Postgres(sqlx::Error::Database(e)) => Some(match e.kind() {
                sqlx::error::ErrorKind::UniqueViolation => Constraint::Unique,
                sqlx::error::ErrorKind::ForeignKeyViolation => Constraint::ForeignKey,
                sqlx::error::ErrorKind::Other => return None,
                _ => Constraint::Other,
            }),
            _ => None,
        }
    }

    /// A write that lost a race with another process's write of the same
    /// rows and may simply be run again (SQLite busy; PostgreSQL
    /// serialization failure or deadlock).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DatabaseBusy
            }
            StoreError::Postgres(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("40001" | "40P01"))
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Constraint {
    Unique,
    ForeignKey,
    Other,
}

type StoreResult<T> = std::result::Result<T, StoreError>;

/// A parameter: typed even when null, because PostgreSQL types every
/// parameter of a prepared statement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<&'a str>),
    Blob(Option<&'a [u8]>),
}

pub(crate) trait ToParam {
    fn to_param(&self) -> Param<'_>;
    /// The null of this type (for `Option<Self>`).
    const NULL: Param<'static>;
}

macro_rules! int_param {
    ($($t:ty),*) => {$(
        impl ToParam for $t {
            fn to_param(&self) -> Param<'_> {
                Param::Int(Some(i64::from(*self)))
            }
            const NULL: Param<'static> = Param::Int(None);
        }
    )*};
}
int_param!(i64, i32, u32, u16, u8, bool);

impl ToParam for u64 {
    /// Counts and limits; above `i64::MAX` they saturate (no real count
    /// gets there).
    fn to_param(&self) -> Param<'_> {
        Param::Int(Some(i64::try_from(*self).unwrap_or(i64::MAX)))
    }
    const NULL: Param<'static> = Param::Int(None);
}

impl ToParam for usize {
    fn to_param(&self) -> Param<'_> {
        Param::Int(Some(i64::try_from(*self).unwrap_or(i64::MAX)))
    }
    const NULL: Param<'static> = Param::Int(None);
}

impl ToParam for f64 {
    fn to_param(&self) -> Param<'_> {
        Param::Real(Some(*self))
    }
    const NULL: Param<'static> = Param::Real(None);
}

impl ToParam for str {
    fn to_param(&self) -> Param<'_> {
        Param::Text(Some(self))
    }
    const NULL: Param<'static> = Param::Text(None);
}

impl ToParam for String {
    fn to_param(&self) -> Param<'_> {
        Param::Text(Some(self))
    }
    const NULL: Param<'static> = Param::Text(None);
}

impl ToParam for [u8] {
    fn to_param(&self) -> Param<'_> {
        Param::Blob(Some(self))
    }
    const NULL: Param<'static> = Param::Blob(None);
}

impl ToParam for Vec<u8> {
    fn to_param(&self) -> Param<'_> {
        Param::Blob(Some(self))
    }
    const NULL: Param<'static> = Param::Blob(None);
}

impl ToParam for schemas::TenantId {
    fn to_param(&self) -> Param<'_> {
        Param::Text(Some(self.as_str()))
    }
    const NULL: Param<'static> = Param::Text(None);
}

impl<T: ToParam + ?Sized> ToParam for &T {
    fn to_param(&self) -> Param<'_> {
        (**self).to_param()
    }
    const NULL: Param<'static> = T::NULL;
}

impl<T: ToParam> ToParam for Option<T> {
    fn to_param(&self) -> Param<'_> {
        match self {
            Some(v) => v.to_param(),
            None => T::NULL,
        }
    }
    const NULL: Param<'static> = T::NULL;
}

/// `params![a, b, …]`: the statement's parameters, in placeholder order.
macro_rules! params {
    () => { &[] as &[$crate::db::Param<'_>] };
    ($($p:expr),+ $(,)?) => {
        &[$($crate::db::ToParam::to_param(&$p)),+] as &[$crate::db::Param<'_>]
    };
}
pub(crate) use params;

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Int(Some(v)) => ValueRef::Integer(v),
            Param::Real(Some(v)) => ValueRef::Real(v),
            Param::Text(Some(v)) => ValueRef::Text(v.as_bytes()),
            Param::Blob(Some(v)) => ValueRef::Blob(v),
            Param::Int(None) | Param::Real(None) | Param::Text(None) | Param::Blob(None) => {
                ValueRef::Null
            }
        }))
    }
}

/// One column's value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// A result row; columns by position, as selected.
#[derive(Debug, Clone)]
pub(crate) struct Row(Vec<Value>);

impl Row {
    pub(crate) fn get<T: FromValue>(&self, column: usize) -> StoreResult<T> {
        let value = self.0.get(column).ok_or_else(|| StoreError::Decode {
            column,
            problem: format!("the row has {} columns", self.0.len()),
        })?;
        T::from_value(value).ok_or_else(|| StoreError::Decode {
            column,
            problem: format!("{value:?} is not {}", std::any::type_name::<T>()),
        })
    }
}

/// A Rust value a column reads into (`None`: the column holds another type).
pub(crate) trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

macro_rules! narrow_int {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value) -> Option<Self> {
                i64::from_value(v).and_then(|i| <$t>::try_from(i).ok())
            }
        }
    )*};
}
narrow_int!(u64, u32, i32, u16, usize);

impl FromValue for bool {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).map(|i| i != 0)
    }
}

impl FromValue for f64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Real(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Blob(b) => Some(b.clone()),
            Value::Text(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// Which backend a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Read-only connections of a SQLite file store.
pub(crate) const SQLITE_READERS: usize = 4;

/// PostgreSQL connections per process: requests are point lookups, so a
/// few connections carry a role's load; several hosts share the server's
/// `max_connections` (100 by default).
const PG_POOL: u32 = 8;

pub(crate) struct Db {
    inner: Inner,
}

enum Inner {
    Sqlite(Sqlite),
    Postgres(PgPool),
}

struct Sqlite {
    writer: tokio::sync::Mutex<Connection>,
    /// Empty for in-memory stores (a private in-memory database cannot be
    /// shared between connections): reads then use the writer.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

impl Db {
    pub(crate) fn sqlite(writer: Connection, readers: Vec<Connection>) -> Self {
        Db {
            inner: Inner::Sqlite(Sqlite {
                writer: tokio::sync::Mutex::new(writer),
                readers: readers.into_iter().map(Mutex::new).collect(),
                next_reader: AtomicUsize::new(0),
            }),
        }
    }

    pub(crate) async fn postgres(url: &str) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(PG_POOL)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Db {
            inner: Inner::Postgres(pool),
        })
    }

    pub(crate) fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// Rows of a read. SQLite: on a reader connection (it does not see
    /// a transaction in progress; use the [`Tx`] for that).
    pub(crate) async fn query(&self, sql: &str, params: &[Param<'_>]) -> StoreResult<Vec<Row>> {
        match &self.inner {
            Inner::Sqlite(s) => {
                if let Some(rows) = s.on_reader(|conn| sqlite_query(conn, sql, params)) {
                    return rows;
                }
                sqlite_query(&*s.writer.lock().await, sql, params)
            }
            Inner::Postgres(pool) => pg_query(pool, sql, params).await,
        }
    }

    pub(crate) async fn query_opt(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> StoreResult<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// A statement that writes; the number of rows it changed.
    pub(crate) async fn execute(&self, sql: &str, params: &[Param<'_>]) -> StoreResult<u64> {
        match &self.inner {
            Inner::Sqlite(s) => sqlite_execute(&*s.writer.lock().await, sql, params),
            Inner::Postgres(pool) => pg_execute(pool, sql, params).await,
        }
    }

    /// A write that returns rows (`… RETURNING`).
    pub(crate) async fn write_query(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> StoreResult<Vec<Row>> {
        match &self.inner {
            Inner::Sqlite(s) => sqlite_query(&*s.writer.lock().await, sql, params),
            Inner::Postgres(pool) => pg_query(pool, sql, params).await,
        }
    }

    /// Best-effort bookkeeping (a key's last use) that must never make a
    /// request wait behind a bulk write: skipped (`None`) while SQLite's
    /// writer is busy. PostgreSQL has no single writer to wait for.
    pub(crate) async fn try_execute(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> StoreResult<Option<u64>> {
        match &self.inner {
            Inner::Sqlite(s) => match s.writer.try_lock() {
                Ok(conn) => sqlite_execute(&conn, sql, params).map(Some),
                Err(_) => Ok(None),
            },
            Inner::Postgres(pool) => pg_execute(pool, sql, params).await.map(Some),
        }
    }

    /// A write transaction; rolled back unless [`Tx::commit`]ted.
    pub(crate) async fn begin(&self) -> StoreResult<Tx<'_>> {
        match &self.inner {
            Inner::Sqlite(s) => {
                let conn = s.writer.lock().await;
                conn.execute_batch("BEGIN IMMEDIATE")?;
                Ok(Tx(TxInner::Sqlite { conn, open: true }))
            }
            Inner::Postgres(pool) => Ok(Tx(TxInner::Postgres(Some(pool.begin().await?)))),
        }
    }

    /// Runs `f` on SQLite's writer connection (tests read pragmas); `None`
    /// on PostgreSQL.
    #[cfg(test)]
    pub(crate) async fn with_sqlite<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> Option<T> {
        match &self.inner {
            Inner::Sqlite(s) => Some(f(&mut *s.writer.lock().await)),
            Inner::Postgres(_) => None,
        }
    }

    pub(crate) fn pg_pool(&self) -> Option<&PgPool> {
        match &self.inner {
            Inner::Postgres(pool) => Some(pool),
            Inner::Sqlite(_) => None,
        }
    }
}

impl Sqlite {
    /// Runs `f` on a read-only connection that does not wait for the
    /// writer: a free reader if there is one, else the next in turn. `None`
    /// for an in-memory store (no readers). Synchronous, so the reader's
    /// guard never lives across an await.
    fn on_reader<T>(&self, f: impl FnOnce(&Connection) -> T) -> Option<T> {
        self.reader().map(|conn| f(&conn))
    }

    fn reader(&self) -> Option<std::sync::MutexGuard<'_, Connection>> {
        if self.readers.is_empty() {
            return None;
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(guard) => return Some(guard),
                // A panic while holding the lock cannot leave SQLite
                // inconsistent (statements are atomic).
                Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        Some(
            self.readers[start % n]
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }
}

fn pg_tx<'t>(
    tx: &'t mut Option<sqlx::Transaction<'static, Postgres>>,
) -> StoreResult<&'t mut sqlx::Transaction<'static, Postgres>> {
    tx.as_mut()
        .ok_or(StoreError::Postgres(sqlx::Error::PoolClosed))
}

/// A write transaction (see [`Db::begin`]).
pub(crate) struct Tx<'a>(TxInner<'a>);

enum TxInner<'a> {
    Sqlite {
        conn: tokio::sync::MutexGuard<'a, Connection>,
        open: bool,
    },
    /// `None` once committed.
    Postgres(Option<sqlx::Transaction<'static, Postgres>>),
}

impl Tx<'_> {
    pub(crate) async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> StoreResult<u64> {
        match &mut self.0 {
            TxInner::Sqlite { conn, .. } => sqlite_execute(conn, sql, params),
            TxInner::Postgres(tx) => pg_execute(&mut **pg_tx(tx)?, sql, params).await,
        }
    }

    pub(crate) async fn query(&mut self, sql: &str, params: &[Param<'_>]) -> StoreResult<Vec<Row>> {
        match &mut self.0 {
            TxInner::Sqlite { conn, .. } => sqlite_query(conn, sql, params),
            TxInner::Postgres(tx) => pg_query(&mut **pg_tx(tx)?, sql, params).await,
        }
    }

    pub(crate) async fn query_opt(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
    ) -> StoreResult<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Serializes this transaction with every other one that locks the same
    /// organization, until commit or rollback: for checks that read before
    /// they write (a plan limit, a device's identity). SQLite's transactions
    /// already run one at a time; PostgreSQL takes a transaction-scoped
    /// advisory lock on the organization id's hash.
    pub(crate) async fn lock_org(&mut self, org: &schemas::TenantId) -> StoreResult<()> {
        if let TxInner::Postgres(_) = self.0 {
            self.execute("SELECT pg_advisory_xact_lock(hashtext(?1))", params![org])
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn commit(mut self) -> StoreResult<()> {
        match &mut self.0 {
            TxInner::Sqlite { conn, open } => {
                conn.execute_batch("COMMIT")?;
                *open = false;
            }
            TxInner::Postgres(tx) => {
                if let Some(tx) = tx.take() {
                    tx.commit().await?;
                }
            }
        }
        Ok(())
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if let TxInner::Sqlite { conn, open: true } = &mut self.0 {
            // An error return or a dropped future: undo, so the writer
            // connection is not left inside a transaction.
            let _ = conn.execute_batch("ROLLBACK");
        }
        // sqlx rolls a dropped PostgreSQL transaction back itself.
    }
}

fn sqlite_query(conn: &Connection, sql: &str, params: &[Param<'_>]) -> StoreResult<Vec<Row>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Real(v) => Value::Real(v),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            });
        }
        out.push(Row(values));
    }
    Ok(out)
}

fn sqlite_execute(conn: &Connection, sql: &str, params: &[Param<'_>]) -> StoreResult<u64> {
    let n = conn
        .prepare_cached(sql)?
        .execute(rusqlite::params_from_iter(params.iter()))?;
    Ok(n as u64)
}

/// `?1` → `$1`; a bare `?` takes the next number. Our statements have no
/// `?` inside string literals.
pub(crate) fn pg_sql(sql: &str) -> Cow<'_, str> {
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 1;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '?' {
            out.push(c);
            continue;
        }
        out.push('$');
        if chars.peek().is_some_and(char::is_ascii_digit) {
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                out.push(d);
            }
        } else {
            out.push_str(&next.to_string());
            next += 1;
        }
    }
    Cow::Owned(out)
}

fn pg_bind<'q>(
    sql: &str,
    params: &[Param<'_>],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let mut q = sqlx::query(AssertSqlSafe(pg_sql(sql).into_owned()));
    for p in params {
        q = match *p {
            Param::Int(v) => q.bind(v),
            Param::Real(v) => q.bind(v),
            Param::Text(v) => q.bind(v),
            Param::Blob(v) => q.bind(v),
        };
    }
    q
}

async fn pg_query<'c, E>(executor: E, sql: &str, params: &[Param<'_>]) -> StoreResult<Vec<Row>>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let rows = pg_bind(sql, params).fetch_all(executor).await?;
    rows.iter().map(pg_row).collect()
}

async fn pg_execute<'c, E>(executor: E, sql: &str, params: &[Param<'_>]) -> StoreResult<u64>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    Ok(pg_bind(sql, params)
        .execute(executor)
        .await?
        .rows_affected())
}

fn pg_row(r: &PgRow) -> StoreResult<Row> {
    let mut values = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let v = match col.type_info().name() {
            "INT8" => r.try_get::<Option<i64>, _>(i)?.map(Value::Int),
            "INT4" => r
                .try_get::<Option<i32>, _>(i)?
                .map(|v| Value::Int(v.into())),
            "INT2" => r
                .try_get::<Option<i16>, _>(i)?
                .map(|v| Value::Int(v.into())),
            "BOOL" => r
                .try_get::<Option<bool>, _>(i)?
                .map(|v| Value::Int(v.into())),
            "FLOAT8" => r.try_get::<Option<f64>, _>(i)?.map(Value::Real),
            "FLOAT4" => r
                .try_get::<Option<f32>, _>(i)?
                .map(|v| Value::Real(v.into())),
            "BYTEA" => r.try_get::<Option<Vec<u8>>, _>(i)?.map(Value::Blob),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "UNKNOWN" => {
                r.try_get::<Option<String>, _>(i)?.map(Value::Text)
            }
            other => {
                return Err(StoreError::Decode {
                    column: i,
                    problem: format!(
                        "{} is {other}; cast it to BIGINT, DOUBLE PRECISION or TEXT",
                        col.name()
                    ),
                });
            }
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

/// Creates an empty database on the server `url` names and returns the
/// URL of it (for tests and the end-to-end suite: every test its own
/// database).
pub async fn fresh_postgres_database(url: &str) -> StoreResult<String> {
    use sqlx::ConnectOptions as _;
    let name = format!(
        "securenet_test_{}_{}",
        std::process::id(),
        NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .connect()
        .await?;
    sqlx::Executor::execute(
        &mut conn,
        AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")),
    )
    .await?;
    sqlx::Executor::execute(&mut conn, AssertSqlSafe(format!("CREATE DATABASE {name}"))).await?;
    let mut fresh: url::Url = url
        .parse()
        .map_err(|e| StoreError::Postgres(sqlx::Error::Configuration(Box::new(e))))?;
    fresh.set_path(&format!("/{name}"));
    Ok(fresh.to_string())
}

static NEXT_DATABASE: AtomicUsize = AtomicUsize::new(0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(pg_sql("SELECT 1"), "SELECT 1");
        assert_eq!(
            pg_sql("UPDATE t SET a = ?2 WHERE id = ?1 AND b = ?12"),
            "UPDATE t SET a = $2 WHERE id = $1 AND b = $12"
        );
        assert_eq!(pg_sql("VALUES (?, ?)"), "VALUES ($1, $2)");
    }

    #[test]
    fn typed_nulls_and_values() {
        let none: Option<&str> = None;
        let p = params![1_i64, true, "x", none, Some(2.5_f64), 7_u64];
        assert!(matches!(p[0], Param::Int(Some(1))));
        assert!(matches!(p[1], Param::Int(Some(1))));
        assert!(matches!(p[2], Param::Text(Some("x"))));
        assert!(matches!(p[3], Param::Text(None)));
        assert!(matches!(p[4], Param::Real(Some(_))));
        assert!(matches!(p[5], Param::Int(Some(7))));
        let row = Row(vec![Value::Int(3), Value::Null, Value::Text("t".into())]);
        assert_eq!(row.get::<i64>(0).unwrap(), 3);
        assert_eq!(row.get::<Option<i64>>(1).unwrap(), None);
        assert_eq!(row.get::<String>(2).unwrap(), "t");
        assert!(row.get::<i64>(2).is_err());
        assert!(row.get::<i64>(5).is_err());
    }
}
