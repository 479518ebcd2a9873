//! The compaction protocol's read side: which objects of a date directory
//! are live.
//!
//! A compaction that merges inputs `a.parquet, b.parquet, …` into
//! `c-<id>.parquet` first writes the manifest `c-<id>.compaction` (the input
//! names, one per line), then the output (the commit point: `put` is atomic),
//! then deletes the inputs, then the manifest. Readers apply one rule per
//! directory: **an input named in a manifest whose output exists is not
//! live.** So before the commit readers see the inputs only, after it the
//! output only, and a compactor killed at any step leaves a directory that
//! reads the same and that the next run finishes or rolls back.
//!
//! [`LiveView`] applies the rule inside `list` and `list_with_delimiter`, so
//! DataFusion's listing tables (and anything else listing the lake) never
//! see a row twice. Manifests exist only while a compaction is in flight, so
//! the common listing costs nothing extra.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// Extension of a compaction manifest.
pub const MANIFEST_EXT: &str = "compaction";
/// Prefix of a compacted output's name.
pub const OUTPUT_PREFIX: &str = "c-";

pub fn output_name(id: &str) -> String {
    format!("{OUTPUT_PREFIX}{id}.parquet")
}

pub fn manifest_name(id: &str) -> String {
    format!("{OUTPUT_PREFIX}{id}.{MANIFEST_EXT}")
}

pub fn is_manifest(path: &Path) -> bool {
    path.extension() == Some(MANIFEST_EXT)
}

/// The compaction id of a manifest path (`c-<id>.compaction` → `<id>`).
pub fn manifest_id(path: &Path) -> Option<&str> {
    path.filename()?
        .strip_prefix(OUTPUT_PREFIX)?
        .strip_suffix(MANIFEST_EXT)?
        .strip_suffix('.')
}

/// The directory holding `path`.
pub fn parent(path: &Path) -> Path {
    let mut parts: Vec<_> = path.parts().collect();
    parts.pop();
    Path::from_iter(parts)
}

pub fn sibling(path: &Path, name: &str) -> Path {
    parent(path).join(name)
}

pub fn parse_manifest(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Drops manifests and every input a committed compaction superseded.
pub async fn live_objects(
    store: &dyn ObjectStore,
    entries: Vec<ObjectMeta>,
) -> object_store::Result<Vec<ObjectMeta>> {
    if !entries.iter().any(|e| is_manifest(&e.location)) {
        return Ok(entries);
    }
    let present: HashSet<&Path> = entries.iter().map(|e| &e.location).collect();
    let mut hidden = HashSet::new();
    for manifest in entries.iter().filter(|e| is_manifest(&e.location)) {
        let Some(id) = manifest_id(&manifest.location) else {
            continue;
        };
        if !present.contains(&sibling(&manifest.location, &output_name(id))) {
            continue; // not committed: its inputs are still the live copy
        }
        let body = match store.get(&manifest.location).await {
            Ok(got) => got.bytes().await?,
            // A compactor finished meanwhile and its inputs are gone too.
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        for name in parse_manifest(&body) {
            hidden.insert(sibling(&manifest.location, &name));
        }
    }
    Ok(entries
        .into_iter()
        .filter(|e| !is_manifest(&e.location) && !hidden.contains(&e.location))
        .collect())
}

/// An object store whose listings show only live objects (see the module
/// docs); everything else passes through.
#[derive(Debug, Clone)]
pub struct LiveView {
    inner: Arc<dyn ObjectStore>,
}

impl LiveView {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }
}

impl fmt::Display for LiveView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LiveView({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for LiveView {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            // Whole listing first: a manifest may sort after its inputs.
            let all: Vec<ObjectMeta> = inner.list(prefix.as_ref()).try_collect().await?;
            live_objects(inner.as_ref(), all).await
        })
        .map_ok(|live| futures::stream::iter(live.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        listed.objects = live_objects(self.inner.as_ref(), listed.objects).await?;
        Ok(listed)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let m = Path::from("logs/tenant_id=a/date=2026-11-27").join(manifest_name("0199").as_str());
        assert!(is_manifest(&m));
        assert_eq!(manifest_id(&m), Some("0199"));
        assert_eq!(
            sibling(&m, &output_name("0199")).as_ref(),
            "logs/tenant_id=a/date=2026-11-27/c-0199.parquet"
        );
        assert!(!is_manifest(&Path::from("x/c-1.parquet")));
        assert_eq!(
            parse_manifest(b"a.parquet\n\nb.parquet\n"),
            ["a.parquet", "b.parquet"]
        );
    }
}
