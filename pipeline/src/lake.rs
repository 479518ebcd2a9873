//! The lake: Parquet objects in a Hive layout on object_store.
//!
//! `<root>/<kind>/tenant_id=<tenant>/date=<YYYY-MM-DD>/<batch id>.parquet`
//!
//! Writers (the Parquet sink) and readers (the query API's listing tables)
//! both derive paths from here, so they cannot disagree. Tenant ids are
//! validated to a path-safe alphabet ([`TenantId`]), so no escaping happens.
//!
//! The lake is a local directory ([`Lake::local`]) or any object store
//! object_store reaches ([`Lake::open`]: `s3://bucket/prefix`, `gs://…`,
//! `az://…`). What only a filesystem needs (fsync, staging leftovers,
//! empty directories) is a no-op on object stores, which have their own
//! durability and no directories.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use schemas::{RecordKind, TenantId};

use crate::error::{Error, Result};
use crate::maintenance::live::LiveView;

/// Objects up to this size are one PUT; larger ones upload in parts of it
/// (S3's parts are 5 MiB to 5 GiB).
pub const MULTIPART_PART_BYTES: usize = 16 << 20;

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

    /// Opens the lake at `url`: `file:///abs/dir` (or a plain path) is
    /// [`Lake::local`]; `s3://bucket/prefix`, `gs://bucket/prefix` and
    /// `az://container/prefix` are object stores, configured like their
    /// SDKs from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`: e.g.
    /// `AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, `AWS_REGION`) and then from
    /// `options` (object_store's keys — `aws_endpoint`, `aws_region`,
    /// `aws_allow_http`, `aws_virtual_hosted_style_request`…), which win.
    pub fn open(url: &str, options: &BTreeMap<String, String>) -> Result<Self> {
        let bad = |why: String| Error::Config(format!("lake URL {url:?}: {why}"));
        let parsed = match url::Url::parse(url) {
            Ok(u) => u,
            // A plain path (no scheme).
            Err(url::ParseError::RelativeUrlWithoutBase) => return Self::local(FsPath::new(url)),
            Err(e) => return Err(bad(e.to_string())),
        };
        let env_prefix = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad("not an absolute file path".into()))?;
                return Self::local(&dir);
            }
            "s3" | "s3a" => "AWS_",
            "gs" => "GOOGLE_",
            "az" | "abfs" | "abfss" | "azure" => "AZURE_",
            other => {
                return Err(bad(format!(
                    "unsupported scheme {other:?} (file, s3, gs or az)"
                )));
            }
        };
        let Some(bucket) = parsed.host_str().filter(|b| !b.is_empty()) else {
            return Err(bad("no bucket".into()));
        };
        // The environment first, the configuration over it.
        let mut settings: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with(env_prefix))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        settings.extend(options.iter().map(|(k, v)| (k.clone(), v.clone())));
        let (store, root) =
            object_store::parse_url_opts(&parsed, settings).map_err(|e| bad(e.to_string()))?;
        let raw: Arc<dyn ObjectStore> = Arc::from(store);
        Ok(Self {
            store: Arc::new(LiveView::new(raw.clone())),
            raw,
            store_url: format!("{}://{bucket}", parsed.scheme()),
            root,
            local_root: None,
        })
    }

    /// Writes `bytes` at `path`: one request when small, a multipart upload
    /// in parts of [`MULTIPART_PART_BYTES`] when larger (object stores cap
    /// a single PUT and retry a failed part, not the whole object).
    /// The object appears whole or not at all (a multipart upload shows
    /// nothing until completed; the local store renames a staged file).
    pub async fn put(&self, path: &Path, bytes: impl Into<bytes::Bytes>) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut writer = object_store::buffered::BufWriter::with_capacity(
            self.raw.clone(),
            path.clone(),
            MULTIPART_PART_BYTES,
        );
        writer.put(bytes.into()).await?;
        writer.shutdown().await?;
        Ok(())
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

    #[test]
    fn lakes_open_from_urls() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let local = Lake::open(&url, &BTreeMap::new()).unwrap();
        assert_eq!(local.store_url(), "file://");
        assert!(local.local_root.is_some());
        let plain = Lake::open(&dir.path().display().to_string(), &BTreeMap::new()).unwrap();
        assert_eq!(plain.root(), local.root());

        let options = BTreeMap::from([
            ("aws_endpoint".to_string(), "http://127.0.0.1:9".to_string()),
            ("aws_allow_http".to_string(), "true".to_string()),
        ]);
        let s3 = Lake::open("s3://lake-bucket/prod/eu", &options).unwrap();
        assert_eq!(s3.store_url(), "s3://lake-bucket");
        assert_eq!(s3.root().as_ref(), "prod/eu");
        assert!(s3.local_root.is_none());
        let acme = TenantId::new("acme").unwrap();
        assert_eq!(
            s3.table_url(RecordKind::Logs, &acme),
            "s3://lake-bucket/prod/eu/logs/tenant_id=acme/"
        );
        let bucket_only = Lake::open("s3://lake-bucket", &options).unwrap();
        assert_eq!(
            bucket_only.table_url(RecordKind::Logs, &acme),
            "s3://lake-bucket/logs/tenant_id=acme/"
        );

        for bad in ["ftp://host/x", "s3:///no-bucket", "http://[::1"] {
            let err = Lake::open(bad, &options).unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }

    /// An object over the part size goes up in parts and reads back whole.
    #[tokio::test]
    async fn large_objects_upload_in_parts_and_read_back_whole() {
        use object_store::ObjectStoreExt;
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::local(dir.path()).unwrap();
        let path = lake.root().clone().join("big.bin");
        let body: Vec<u8> = (0..MULTIPART_PART_BYTES + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        lake.put(&path, body.clone()).await.unwrap();
        let back = lake
            .store()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(back.len(), body.len());
        assert!(back == body);
    }
}
