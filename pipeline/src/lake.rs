//! The lake: Parquet objects in a Hive layout on object_store.
//!
//! `<root>/<kind>/tenant_id=<tenant>/date=<YYYY-MM-DD>/<batch id>.parquet`
//!
//! Writers (the Parquet sink) and readers (the query API's listing tables)
//! both derive paths from here, so they cannot disagree. Tenant ids are
//! validated to a path-safe alphabet ([`TenantId`]), so no escaping happens.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use schemas::{RecordKind, TenantId};

use crate::error::{Error, Result};
use crate::maintenance::live::LiveView;

#[derive(Clone)]
pub struct Lake {
    /// The live view: what readers and writers use.
    store: Arc<dyn ObjectStore>,
    /// Every object, compaction manifests and superseded inputs included.
    raw: Arc<dyn ObjectStore>,
    /// Scheme and authority the store is registered under, e.g. `file://`.
    store_url: String,
    /// Prefix of every object inside the store.
    root: Path,
    /// Set for the local filesystem: lets the sink fsync what it wrote.
    local_root: Option<PathBuf>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lake({}{})", self.store_url, self.root)
    }
}

impl Lake {
    /// A lake in a local directory (created if missing).
    pub fn local(dir: &FsPath) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let abs = std::fs::canonicalize(dir)?;
        let root = Path::from_filesystem_path(&abs)
            .map_err(|e| Error::Config(format!("lake directory {}: {e}", abs.display())))?;
        // An unprefixed store: paths are absolute, exactly as DataFusion's
        // default `file://` store sees them.
        let raw: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
        Ok(Self {
            store: Arc::new(LiveView::new(raw.clone())),
            raw,
            store_url: "file://".into(),
            root,
            local_root: Some(abs),
        })
    }

    /// The store as readers must see it: listings hide what a committed
    /// compaction superseded (see [`crate::maintenance::live`]).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Every object as stored, for maintenance jobs.
    pub fn raw_store(&self) -> Arc<dyn ObjectStore> {
        self.raw.clone()
    }

    /// The URL DataFusion must map to [`Lake::store`].
    pub fn store_url(&self) -> &str {
        &self.store_url
    }

    /// Prefix of every object of this lake.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` relative to the lake root: what may be shown to a tenant
    /// (never a server path).
    pub fn relative(&self, path: &Path) -> String {
        path.prefix_match(&self.root)
            .map(|parts| {
                parts
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_else(|| path.to_string())
    }

    pub fn kind_prefix(&self, kind: RecordKind) -> Path {
        self.root.clone().join(kind.as_str())
    }

    pub fn tenant_prefix(&self, kind: RecordKind, tenant: &TenantId) -> Path {
        self.kind_prefix(kind)
            .join(format!("tenant_id={tenant}").as_str())
    }

    pub fn object_path(
        &self,
        kind: RecordKind,
        tenant: &TenantId,
        date: NaiveDate,
        name: &str,
    ) -> Path {
        self.tenant_prefix(kind, tenant)
            .join(format!("date={}", date.format("%Y-%m-%d")).as_str())
            .join(name)
    }

    /// URL of a tenant's table directory, with a trailing slash (a
    /// DataFusion `ListingTableUrl` treats that as a directory).
    pub fn table_url(&self, kind: RecordKind, tenant: &TenantId) -> String {
        format!("{}/{}/", self.store_url, self.tenant_prefix(kind, tenant))
    }

    /// Flushes a written object to stable storage on the local filesystem
    /// (file and directory); object stores with their own durability need
    /// nothing.
    pub fn sync(&self, path: &Path) -> Result<()> {
        if self.local_root.is_none() {
            return Ok(());
        }
        std::fs::File::open(format!("/{path}"))?.sync_all()?;
        self.sync_dir(path)
    }

    /// Makes deletions and renames in the directory holding `path` durable
    /// (local filesystem only).
    pub fn sync_dir(&self, path: &Path) -> Result<()> {
        if self.local_root.is_none() {
            return Ok(());
        }
        if let Some(dir) = PathBuf::from(format!("/{path}")).parent() {
            match std::fs::File::open(dir) {
                Ok(d) => d.sync_all()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Deletes what killed writers left behind in the directory `dir`: the
    /// local store stages each `put` as `<name>#<n>` and renames it into
    /// place, so a kill mid-write leaves the staging file (never listed,
    /// never read). Only files older than `min_age` go — younger ones may
    /// be a write in progress. Returns how many were removed.
    pub fn remove_staging_leftovers(
        &self,
        dir: &Path,
        min_age: std::time::Duration,
    ) -> Result<usize> {
        if self.local_root.is_none() {
            return Ok(0);
        }
        let entries = match std::fs::read_dir(format!("/{dir}")) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let staged = name
                .to_str()
                .and_then(|n| n.rsplit_once('#'))
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !staged {
                continue;
            }
            // A staging file vanishes when its write completes (renamed into
            // place) while we look: that is not an error, just not ours.
            let old_file = entry.metadata().and_then(|m| {
                Ok(m.is_file() && m.modified()?.elapsed().is_ok_and(|age| age >= min_age))
            });
            let outcome = match old_file {
                Ok(true) => std::fs::remove_file(entry.path()).map(|()| true),
                other => other,
            };
            match outcome {
                Ok(gone) => removed += usize::from(gone),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }

    /// Removes the empty directories left under `prefix` once its objects
    /// were deleted (object stores without directories need nothing).
    pub fn prune_empty_dirs(&self, prefix: &Path) -> Result<()> {
        if self.local_root.is_none() {
            return Ok(());
        }
        fn prune(dir: &FsPath) -> std::io::Result<bool> {
            let mut empty = true;
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    empty &= prune(&entry.path())?;
                } else {
                    empty = false;
                }
            }
            if empty {
                std::fs::remove_dir(dir)?;
            }
            Ok(empty)
        }
        let dir = PathBuf::from(format!("/{prefix}"));
        match prune(&dir) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lake in a fresh directory and the path of object `name` in
    /// acme's logs of 2026-11-26.
    fn acme_object(name: &str) -> (tempfile::TempDir, Lake, Path) {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::local(dir.path()).unwrap();
        let t = TenantId::new("acme").unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        let path = lake.object_path(RecordKind::Logs, &t, date, name);
        (dir, lake, path)
    }

    #[test]
    fn paths_follow_the_hive_layout() {
        let (dir, lake, p) = acme_object("0192.parquet");
        let t = TenantId::new("acme").unwrap();
        let abs = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            format!("/{p}"),
            format!(
                "{}/logs/tenant_id=acme/date=2026-11-26/0192.parquet",
                abs.display()
            )
        );
        assert_eq!(
            lake.table_url(RecordKind::Logs, &t),
            format!("file://{}/logs/tenant_id=acme/", abs.display())
        );
    }

    #[test]
    fn only_old_staging_files_are_removed() {
        let (_dir, lake, object) = acme_object("a.parquet");
        let fs_dir = PathBuf::from(format!("/{object}"))
            .parent()
            .unwrap()
            .to_path_buf();
        std::fs::create_dir_all(&fs_dir).unwrap();
        for name in ["a.parquet", "b.parquet#3", "c.parquet#", "d#x"] {
            std::fs::write(fs_dir.join(name), b"x").unwrap();
        }
        let table = Path::from(object.as_ref().rsplit_once('/').unwrap().0);
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(lake.remove_staging_leftovers(&table, hour).unwrap(), 0);
        let zero = std::time::Duration::ZERO;
        assert_eq!(lake.remove_staging_leftovers(&table, zero).unwrap(), 1);
        let mut left: Vec<String> = std::fs::read_dir(&fs_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["a.parquet", "c.parquet#", "d#x"]);
        let missing = Path::from(format!("{table}/nothing"));
        assert_eq!(lake.remove_staging_leftovers(&missing, zero).unwrap(), 0);
    }
}
