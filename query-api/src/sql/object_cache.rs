//! Small lake objects kept in memory between queries.
//!
//! Every query lists its tables' prefixes and then reads column chunks of
//! each object it kept: on S3 that is a GET per object and query, on a
//! local lake a `spawn_blocking` open and read. Lake objects are written
//! whole under names of their own and not changed (compaction writes new
//! objects and deletes the old ones; a replayed batch rewrites its object
//! with the same rows), so a copy of an object's bytes stays right for as
//! long as the object exists. This store wraps the
//! lake's: objects of at most `max_object_bytes` that a listing returned
//! are fetched whole at their first read (one request) and served from
//! memory afterwards, within an LRU budget of `budget_bytes`; larger objects
//! and everything else pass through.
//!
//! A copy serves only the object version the latest listing showed — the
//! same size, modification time and e-tag — so an object rewritten in place
//! (which the lake does not do) would be fetched again, not served stale;
//! SQL sessions list before they read (no listing cache, see `SqlEngine`).
//! The wrapper is read-side only: writes, deletes and copies go to the
//! inner store unchanged (query-api writes nothing to the lake).

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::cache::{Cache, CacheValue};
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};

/// Listed versions remembered at most (~200 bytes each: path, time,
/// e-tag); past it the map is emptied. Each query lists its own tables
/// right before it reads them, so the entries it needs come back at once;
/// an object not in the map is read through, never served stale.
const MAX_LISTED: usize = 1 << 17;

/// One object's bytes, as of the version in `meta`.
#[derive(Clone)]
struct Cached {
    meta: Arc<ObjectMeta>,
    bytes: Bytes,
}

impl CacheValue for Cached {
    fn size(&self) -> usize {
        self.bytes.len() + std::mem::size_of::<ObjectMeta>()
    }
}

/// The version of an object a listing showed.
#[derive(Clone, PartialEq, Eq)]
struct Version {
    size: u64,
    last_modified: i64,
    e_tag: Option<String>,
}

impl From<&ObjectMeta> for Version {
    fn from(m: &ObjectMeta) -> Self {
        Self {
            size: m.size,
            last_modified: m.last_modified.timestamp_nanos_opt().unwrap_or(i64::MAX),
            e_tag: m.e_tag.clone(),
        }
    }
}

/// See the module docs.
pub struct ObjectCache {
    inner: Arc<dyn ObjectStore>,
    max_object_bytes: u64,
    listed: Arc<Mutex<HashMap<Path, Version>>>,
    objects: DefaultCache<Path, Cached>,
    /// Objects being fetched now, each with the lock its readers queue on.
    fetching: Fetching,
    /// Counted from [`ObjectCache::register`] on (at start, before any
    /// query).
    metrics: OnceLock<CacheMetrics>,
}

type Fetching = Mutex<HashMap<Path, Arc<tokio::sync::Mutex<()>>>>;

/// A reader's turn to fetch an object: held while it fetches; the entry
/// leaves the map with the last reader that queued on it.
struct Turn<'a> {
    map: &'a Fetching,
    location: Path,
    gate: Arc<tokio::sync::Mutex<()>>,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl<'a> Turn<'a> {
    async fn take(map: &'a Fetching, location: &Path) -> Turn<'a> {
        let gate = Arc::clone(
            map.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(location.clone())
                .or_default(),
        );
        let held = Arc::clone(&gate).lock_owned().await;
        Turn {
            map,
            location: location.clone(),
            gate,
            _held: held,
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's reference, this turn's and its guard's: nobody else
        // queued (clones are made under the map's lock).
        if Arc::strong_count(&self.gate) <= 3 {
            map.remove(&self.location);
        }
    }
}

/// What `/metrics` shows of the cache.
#[derive(Clone)]
struct CacheMetrics {
    /// Reads answered from memory.
    hits: prometheus::IntCounter,
    /// Whole-object reads from the store (a small object's first read, or
    /// a newer version).
    fetches: prometheus::IntCounter,
    /// Bytes held.
    bytes: prometheus::IntGauge,
}

impl CacheMetrics {
    fn new() -> prometheus::Result<Self> {
        Ok(Self {
            hits: prometheus::IntCounter::new(
                "securenet_sql_object_cache_hits_total",
                "SQL reads of lake objects answered from memory",
            )?,
            fetches: prometheus::IntCounter::new(
                "securenet_sql_object_cache_fetches_total",
                "Small lake objects read whole from the store into the SQL object cache",
            )?,
            bytes: prometheus::IntGauge::new(
                "securenet_sql_object_cache_bytes",
                "Bytes of lake objects the SQL object cache holds",
            )?,
        })
    }
}

impl ObjectCache {
    pub fn new(inner: Arc<dyn ObjectStore>, budget_bytes: usize, max_object_bytes: u64) -> Self {
        Self {
            inner,
            max_object_bytes,
            listed: Arc::default(),
            objects: DefaultCache::new(budget_bytes).with_name("securenet small lake objects"),
            fetching: Fetching::default(),
            metrics: OnceLock::new(),
        }
    }

    /// Shows the cache's counters on `registry` (`/metrics`); once.
    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        let metrics = CacheMetrics::new()?;
        registry.register(Box::new(metrics.hits.clone()))?;
        registry.register(Box::new(metrics.fetches.clone()))?;
        registry.register(Box::new(metrics.bytes.clone()))?;
        self.metrics
            .set(metrics)
            .map_err(|_| prometheus::Error::Msg("the SQL object cache is registered once".into()))
    }

    /// Bytes held now.
    pub fn memory_used(&self) -> usize {
        self.objects.memory_used()
    }

    /// Remembers the listed version of a small object (a listing passing
    /// through).
    fn note_listed(listed: &Mutex<HashMap<Path, Version>>, max: u64, meta: &ObjectMeta) {
        if meta.size > max {
            return;
        }
        let mut listed = listed.lock().unwrap_or_else(PoisonError::into_inner);
        if listed.len() >= MAX_LISTED && !listed.contains_key(&meta.location) {
            listed.clear();
        }
        listed.insert(meta.location.clone(), Version::from(meta));
    }

    /// The held copy of `location` if it is the `listed` version.
    fn current(&self, location: &Path, listed: &Version) -> Option<Cached> {
        let hit = self.objects.get(location)?;
        if Version::from(hit.meta.as_ref()) != *listed {
            return None;
        }
        if let Some(m) = self.metrics.get() {
            m.hits.inc();
        }
        Some(hit)
    }

    /// The whole object at `location` from memory, or fetched and kept;
    /// `None` when it is not a small object of the latest listing (the
    /// caller reads through).
    async fn whole(&self, location: &Path) -> object_store::Result<Option<Cached>> {
        let Some(listed) = self
            .listed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(location)
            .cloned()
        else {
            return Ok(None);
        };
        if let Some(hit) = self.current(location, &listed) {
            return Ok(Some(hit));
        }
        // One fetch of an object at a time: reads of it that arrive
        // meanwhile (the same dashboard from several clients) wait for it
        // and are then served from memory, not fetched again.
        let _turn = Turn::take(&self.fetching, location).await;
        if let Some(hit) = self.current(location, &listed) {
            return Ok(Some(hit));
        }
        if let Some(m) = self.metrics.get() {
            m.fetches.inc();
        }
        let got = self.inner.get_opts(location, GetOptions::default()).await?;
        let meta = got.meta.clone();
        let bytes = got.bytes().await?;
        let cached = Cached {
            meta: Arc::new(meta),
            bytes,
        };
        // Kept only if it is the listed version (and whole); a newer one is
        // still served to this read, as reading through would.
        if Version::from(cached.meta.as_ref()) == listed
            && cached.bytes.len() as u64 == cached.meta.size
        {
            self.objects.put(location, cached.clone());
            if let Some(m) = self.metrics.get() {
                m.bytes.set(self.memory_used() as i64);
            }
        }
        Ok(Some(cached))
    }
}

impl fmt::Debug for ObjectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectCache")
            .field("inner", &self.inner)
            .field("max_object_bytes", &self.max_object_bytes)
            .field("memory_used", &self.memory_used())
            .finish()
    }
}

impl fmt::Display for ObjectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectCache({})", self.inner)
    }
}

/// `range` in an object of `len` bytes with the stores' semantics
/// (`GetRange::as_range`): a start past the end is an error, an end past it
/// is cut to the end.
fn absolute(range: &GetRange, len: u64, location: &Path) -> object_store::Result<Range<u64>> {
    range
        .as_range(len)
        .map_err(|e| object_store::Error::Generic {
            store: "ObjectCache",
            source: format!("{location}: {e}").into(),
        })
}

fn slice(bytes: &Bytes, range: &Range<u64>) -> Bytes {
    bytes.slice(range.start as usize..range.end as usize)
}

#[async_trait]
impl ObjectStore for ObjectCache {
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
        // Only plain reads (a range or the whole object) are served from
        // memory; conditional, versioned and HEAD requests go to the store.
        let plain = options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none()
            && !options.head;
        if !plain {
            return self.inner.get_opts(location, options).await;
        }
        let Some(object) = self.whole(location).await? else {
            return self.inner.get_opts(location, options).await;
        };
        let len = object.bytes.len() as u64;
        let range = match &options.range {
            Some(r) => absolute(r, len, location)?,
            None => 0..len,
        };
        let bytes = slice(&object.bytes, &range);
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async { Ok(bytes) }).boxed()),
            meta: object.meta.as_ref().clone(),
            range,
            attributes: Attributes::default(),
        })
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        match self.whole(location).await? {
            Some(object) => ranges
                .iter()
                .map(|r| {
                    let len = object.bytes.len() as u64;
                    absolute(&GetRange::Bounded(r.clone()), len, location)
                        .map(|r| slice(&object.bytes, &r))
                })
                .collect(),
            None => self.inner.get_ranges(location, ranges).await,
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let listed = Arc::clone(&self.listed);
        let max = self.max_object_bytes;
        self.inner
            .list(prefix)
            .inspect(move |item| {
                if let Ok(meta) = item {
                    Self::note_listed(&listed, max, meta);
                }
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let listed = self.inner.list_with_delimiter(prefix).await?;
        for meta in &listed.objects {
            Self::note_listed(&self.listed, self.max_object_bytes, meta);
        }
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
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;

    /// Counts the reads that reach the inner store.
    #[derive(Debug)]
    struct Counting {
        inner: InMemory,
        gets: std::sync::atomic::AtomicUsize,
    }

    impl fmt::Display for Counting {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Counting")
        }
    }

    #[async_trait]
    impl ObjectStore for Counting {
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
            self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    fn store() -> (Arc<Counting>, ObjectCache) {
        let counting = Arc::new(Counting {
            inner: InMemory::new(),
            gets: Default::default(),
        });
        let cache = ObjectCache::new(counting.clone(), 1 << 20, 64);
        let registry = prometheus::Registry::new();
        cache.register(&registry).unwrap();
        assert!(cache.register(&registry).is_err(), "once");
        (counting, cache)
    }

    fn gets(c: &Counting) -> usize {
        c.gets.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn list_all(cache: &ObjectCache) {
        let _: Vec<_> = cache.list(None).collect().await;
    }

    #[tokio::test]
    async fn a_listed_small_object_is_fetched_once_and_its_ranges_served_from_memory() {
        let (counting, cache) = store();
        let path = Path::from("logs/a.parquet");
        counting
            .put(&path, PutPayload::from_static(b"0123456789"))
            .await
            .unwrap();
        list_all(&cache).await;
        assert_eq!(cache.get_range(&path, 2..5).await.unwrap(), &b"234"[..]);
        let parts = cache.get_ranges(&path, &[0..1, 8..10]).await.unwrap();
        assert_eq!(
            parts,
            vec![Bytes::from_static(b"0"), Bytes::from_static(b"89")]
        );
        let suffix = cache
            .get_opts(
                &path,
                GetOptions::default().with_range(Some(GetRange::Suffix(3))),
            )
            .await
            .unwrap();
        assert_eq!(suffix.range, 7..10);
        assert_eq!(suffix.bytes().await.unwrap(), &b"789"[..]);
        assert_eq!(gets(&counting), 1, "one whole read, then memory");
        let m = cache.metrics.get().unwrap();
        assert_eq!((m.fetches.get(), m.hits.get()), (1, 2));
        assert_eq!(m.bytes.get(), cache.memory_used() as i64);
        assert!(cache.memory_used() >= 10);
        // Past the end as the stores answer: the end cut, a start refused.
        assert_eq!(cache.get_range(&path, 5..11).await.unwrap(), &b"56789"[..]);
        assert!(cache.get_range(&path, 10..12).await.is_err());
        assert!(cache.get_ranges(&path, &[0..1, 10..12]).await.is_err());
        assert_eq!(gets(&counting), 1);
    }

    #[tokio::test]
    async fn unlisted_large_and_conditional_reads_go_to_the_store() {
        let (counting, cache) = store();
        let small = Path::from("logs/small.parquet");
        let large = Path::from("logs/large.parquet");
        counting
            .put(&small, PutPayload::from_static(b"abc"))
            .await
            .unwrap();
        counting
            .put(&large, PutPayload::from(vec![7u8; 65]))
            .await
            .unwrap();
        // Not listed yet: read through, nothing kept.
        assert_eq!(cache.get_range(&small, 0..1).await.unwrap(), &b"a"[..]);
        assert_eq!(cache.memory_used(), 0);
        list_all(&cache).await;
        for _ in 0..2 {
            assert_eq!(cache.get_range(&large, 0..2).await.unwrap(), &[7u8, 7][..]);
        }
        assert_eq!(
            gets(&counting),
            3,
            "over max_object_bytes: every read goes through"
        );
        let head = cache
            .get_opts(&small, GetOptions::default().with_head(true))
            .await
            .unwrap();
        assert_eq!(head.meta.size, 3);
        assert_eq!(gets(&counting), 4, "a HEAD goes to the store");
    }

    #[tokio::test]
    async fn an_object_listed_again_with_another_version_is_fetched_again() {
        let (counting, cache) = store();
        let path = Path::from("usage/u.parquet");
        counting
            .put(&path, PutPayload::from_static(b"old"))
            .await
            .unwrap();
        list_all(&cache).await;
        assert_eq!(cache.get_range(&path, 0..3).await.unwrap(), &b"old"[..]);
        counting
            .put(&path, PutPayload::from_static(b"newer"))
            .await
            .unwrap();
        list_all(&cache).await;
        assert_eq!(cache.get_range(&path, 0..5).await.unwrap(), &b"newer"[..]);
        assert_eq!(cache.get_range(&path, 0..5).await.unwrap(), &b"newer"[..]);
        assert_eq!(gets(&counting), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_reads_of_an_object_fetch_it_once() {
        let (counting, cache) = store();
        let cache = Arc::new(cache);
        let path = Path::from("findings/f.parquet");
        counting
            .put(&path, PutPayload::from_static(b"0123456789"))
            .await
            .unwrap();
        list_all(&cache).await;
        let reads: Vec<_> = (0..16)
            .map(|i| {
                let (cache, path) = (Arc::clone(&cache), path.clone());
                tokio::spawn(async move { cache.get_range(&path, i % 5..10).await.unwrap() })
            })
            .collect();
        for (i, r) in reads.into_iter().enumerate() {
            assert_eq!(r.await.unwrap().len(), 10 - i % 5);
        }
        assert_eq!(gets(&counting), 1);
        assert!(
            cache.fetching.lock().unwrap().is_empty(),
            "no turn left behind"
        );
    }

    #[tokio::test]
    async fn the_budget_bounds_what_is_kept() {
        let counting = Arc::new(Counting {
            inner: InMemory::new(),
            gets: Default::default(),
        });
        let cache = ObjectCache::new(counting.clone(), 400, 1 << 10);
        for i in 0..10 {
            counting
                .put(
                    &Path::from(format!("o/{i}")),
                    PutPayload::from(vec![1u8; 100]),
                )
                .await
                .unwrap();
        }
        list_all(&cache).await;
        for i in 0..10 {
            cache
                .get_range(&Path::from(format!("o/{i}")), 0..100)
                .await
                .unwrap();
        }
        assert!(cache.memory_used() <= 400, "{}", cache.memory_used());
        assert!(cache.memory_used() > 0);
    }
}
