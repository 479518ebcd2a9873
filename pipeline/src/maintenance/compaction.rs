//! Merges a date directory's small Parquet objects into larger ones.
//!
//! The write protocol and the readers' rule are in [`super::live`]. A merge
//! stops at its commit: the superseded inputs stay (hidden) for
//! `grace_secs`, so a query that listed the directory just before the
//! commit can still read them, and a later run deletes them and then the
//! manifest. The same step repairs kills: a run finishes every committed
//! compaction older than the grace period and rolls back every uncommitted
//! one (deletes its manifest), so readers see the same rows throughout.
//!
//! Only objects older than `min_age_secs` are merged. A batch can be
//! replayed (and its object rewritten under the same name) only until its
//! Kafka offset is committed, which happens seconds after the write; merging
//! a younger object could let a replay add its rows a second time next to
//! the compacted copy.

use std::collections::BTreeMap;

use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::compute::{SortColumn, cast, concat_batches, lexsort_to_indices, take_record_batch};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use schemas::{RecordKind, schema};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::delete_if_present;
use super::live::{self, is_manifest, manifest_id, manifest_name, output_name, sibling};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::sinks::parquet::{ParquetSinkConfig, encode};

/// Settings of the compaction job.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    pub enabled: bool,
    /// Objects younger than this are left alone (see the module docs).
    pub min_age_secs: u64,
    /// A directory is compacted once it holds this many small objects.
    pub min_files: usize,
    /// Size (compressed) a merged object grows to; objects of at least half
    /// of it count as large and are not merged again.
    pub target_bytes: u64,
    /// How long superseded inputs stay readable after a commit; longer than
    /// the longest query (`sql.timeout_ms`).
    pub grace_secs: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_age_secs: 3600,
            min_files: 8,
            target_bytes: 64 << 20,
            grace_secs: 600,
        }
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct CompactionReport {
    pub directories_compacted: usize,
    pub objects_merged: usize,
    pub objects_written: usize,
    pub rows: u64,
    /// Interrupted compactions finished (committed) or rolled back, and
    /// staging files of killed writes removed.
    pub recovered: usize,
}

/// Where a test stops a compaction (right after this step), to play a kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopAt {
    Manifest,
    Commit,
    FirstDelete,
}

pub struct Compactor {
    lake: Lake,
    config: CompactionConfig,
    parquet: ParquetSinkConfig,
    /// Tests play a kill here (the run fails at that step).
    pub(crate) stop_at: Option<StopAt>,
}

/// A test's simulated kill.
const KILLED: &str = "killed by test";

impl Compactor {
    pub fn new(lake: Lake, config: CompactionConfig, parquet: ParquetSinkConfig) -> Self {
        Self {
            lake,
            config,
            parquet,
            stop_at: None,
        }
    }

    fn stop(&self, at: StopAt) -> Result<()> {
        if self.stop_at == Some(at) {
            return Err(Error::Config(KILLED.into()));
        }
        Ok(())
    }

    /// One pass over every kind, tenant and date directory.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<CompactionReport> {
        let mut report = CompactionReport::default();
        let store = self.lake.raw_store();
        for kind in RecordKind::ALL {
            let mut dirs: BTreeMap<Path, Vec<ObjectMeta>> = BTreeMap::new();
            let prefix = self.lake.kind_prefix(kind);
            let mut listing = store.list(Some(&prefix));
            while let Some(meta) = listing.try_next().await? {
                dirs.entry(live::parent(&meta.location))
                    .or_default()
                    .push(meta);
            }
            for (dir, entries) in dirs {
                self.compact_dir(kind, &dir, entries, now, &mut report)
                    .await?;
            }
        }
        if report != CompactionReport::default() {
            info!(?report, "compaction pass");
        }
        Ok(report)
    }

    async fn compact_dir(
        &self,
        kind: RecordKind,
        dir: &Path,
        entries: Vec<ObjectMeta>,
        now: DateTime<Utc>,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let store = self.lake.raw_store();
        report.recovered += self
            .lake
            .remove_staging_leftovers(dir, Duration::from_secs(self.config.min_age_secs))?;
        let mut entries = entries;
        if entries.iter().any(|e| is_manifest(&e.location)) {
            report.recovered += self.recover(&entries, now).await?;
            entries = store.list_with_delimiter(Some(dir)).await?.objects;
        }
        // Inputs of committed compactions in their grace period are not
        // candidates again.
        let entries = live::live_objects(store.as_ref(), entries).await?;
        let cutoff = now - chrono::Duration::seconds(self.config.min_age_secs as i64);
        let small = self.config.target_bytes / 2;
        let mut candidates: Vec<ObjectMeta> = entries
            .into_iter()
            .filter(|e| e.location.extension() == Some("parquet"))
            .filter(|e| e.last_modified <= cutoff && e.size < small)
            .collect();
        if candidates.len() < self.config.min_files.max(2) {
            return Ok(());
        }
        candidates.sort_by(|a, b| a.location.cmp(&b.location));
        // Greedy bins up to the target size; a bin of one is left as it is.
        let mut bins: Vec<Vec<ObjectMeta>> = vec![];
        let mut bin: Vec<ObjectMeta> = vec![];
        let mut size = 0;
        for meta in candidates {
            if size + meta.size > self.config.target_bytes && !bin.is_empty() {
                bins.push(std::mem::take(&mut bin));
                size = 0;
            }
            size += meta.size;
            bin.push(meta);
        }
        bins.push(bin);
        let mut compacted = false;
        for bin in bins.into_iter().filter(|b| b.len() > 1) {
            report.rows += self.merge(kind, dir, &bin).await?;
            report.objects_merged += bin.len();
            report.objects_written += 1;
            compacted = true;
        }
        report.directories_compacted += usize::from(compacted);
        Ok(())
    }

    /// Finishes committed compactions past their grace period (deletes the
    /// inputs, then the manifest) and rolls back uncommitted ones (only one
    /// pass runs at a time, so those were killed); returns how many it
    /// handled.
    async fn recover(&self, entries: &[ObjectMeta], now: DateTime<Utc>) -> Result<usize> {
        let store = self.lake.raw_store();
        let grace_over = now - chrono::Duration::seconds(self.config.grace_secs as i64);
        let mut handled = 0;
        for manifest in entries.iter().filter(|e| is_manifest(&e.location)) {
            let Some(id) = manifest_id(&manifest.location) else {
                continue;
            };
            let output = sibling(&manifest.location, &output_name(id));
            let committed = entries.iter().any(|e| e.location == output);
            if committed {
                if manifest.last_modified > grace_over {
                    continue; // readers may still be reading the inputs
                }
                let body = store.get(&manifest.location).await?.bytes().await?;
                for (i, name) in live::parse_manifest(&body).iter().enumerate() {
                    delete_if_present(store.as_ref(), &sibling(&manifest.location, name)).await?;
                    if i == 0 {
                        self.stop(StopAt::FirstDelete)?;
                    }
                }
                // Deleted inputs must stay deleted before the manifest that
                // hides them goes: otherwise a power loss could bring one
                // back, visible.
                self.lake.sync_dir(&manifest.location)?;
            }
            delete_if_present(store.as_ref(), &manifest.location).await?;
            debug!(manifest = %manifest.location, committed, "recovered an interrupted compaction");
            handled += 1;
        }
        Ok(handled)
    }

    /// Merges `inputs` (one directory) into one object; returns its rows.
    async fn merge(&self, kind: RecordKind, dir: &Path, inputs: &[ObjectMeta]) -> Result<u64> {
        let store = self.lake.raw_store();
        let mut batches = Vec::new();
        for meta in inputs {
            let bytes = store.get(&meta.location).await?.bytes().await?;
            batches.push(bytes);
        }
        let config = self.parquet.clone();
        let (rows, encoded) = tokio::task::spawn_blocking(move || -> Result<(u64, Vec<u8>)> {
            let target = schema::schema(kind);
            let mut parts = Vec::new();
            for bytes in batches {
                for batch in ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()? {
                    parts.push(conform(&target, batch?)?);
                }
            }
            let merged = concat_batches(&target, &parts)?;
            // Time order makes the merged object's row groups prune well.
            let order = lexsort_to_indices(
                &[SortColumn {
                    values: merged.column(1).clone(),
                    options: None,
                }],
                None,
            )?;
            let merged = take_record_batch(&merged, &order)?;
            Ok((merged.num_rows() as u64, encode(&merged, &config)?))
        })
        .await
        .map_err(|e| Error::Sink {
            sink: "compaction",
            message: format!("merge task failed: {e}"),
        })??;

        let id = uuid::Uuid::now_v7().simple().to_string();
        let manifest = dir.clone().join(manifest_name(&id).as_str());
        let output = dir.clone().join(output_name(&id).as_str());
        let names: Vec<&str> = inputs
            .iter()
            .filter_map(|m| m.location.filename())
            .collect();
        store
            .put(&manifest, PutPayload::from(names.join("\n").into_bytes()))
            .await?;
        self.lake.sync(&manifest)?;
        self.stop(StopAt::Manifest)?;
        // The commit point.
        self.lake.put(&output, encoded).await?;
        self.lake.sync(&output)?;
        self.stop(StopAt::Commit)?;
        // The inputs go in a later run, after the grace period.
        debug!(%output, inputs = inputs.len(), rows, "compacted");
        Ok(rows)
    }
}

/// Brings a batch read from an older object to the current schema: columns
/// by name, missing (newer, nullable) ones as nulls, types cast.
fn conform(target: &arrow::datatypes::SchemaRef, batch: RecordBatch) -> Result<RecordBatch> {
    if batch.schema().fields() == target.fields() {
        return Ok(batch);
    }
    let columns: Vec<ArrayRef> = target
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => cast(c, f.data_type()),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<_, _>>()?;
    Ok(RecordBatch::try_new(target.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::Sink;
    use crate::testutil::{envelope_with_rows, lake_rows};

    /// A lake with `n` one-row objects in one directory, written an hour
    /// and more ago as far as the compactor can tell.
    async fn lake_with_small_objects(dir: &std::path::Path, n: usize) -> Lake {
        let lake = Lake::local(dir).unwrap();
        let sink = ParquetSinkConfig::default()
            .build(
                lake.clone(),
                crate::metrics::PipelineMetrics::new(&prometheus::Registry::new()).unwrap(),
            )
            .unwrap();
        for i in 0..n {
            sink.write(&envelope_with_rows("acme", i as u64 * 10, 10))
                .await
                .unwrap();
        }
        lake
    }

    fn compactor(lake: &Lake) -> Compactor {
        Compactor::new(
            lake.clone(),
            CompactionConfig {
                min_files: 4,
                ..CompactionConfig::default()
            },
            ParquetSinkConfig::default(),
        )
    }

    fn later() -> DateTime<Utc> {
        Utc::now() + chrono::Duration::hours(2)
    }

    #[tokio::test]
    async fn merges_small_objects_and_keeps_every_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let lake = lake_with_small_objects(dir.path(), 6).await;
        let before = lake_rows(&lake).await;
        assert_eq!(before.len(), 60);
        // Young objects are left alone.
        let report = compactor(&lake).run_once(Utc::now()).await.unwrap();
        assert_eq!(report, CompactionReport::default());
        let report = compactor(&lake).run_once(later()).await.unwrap();
        assert_eq!(report.objects_merged, 6);
        assert_eq!(report.objects_written, 1);
        assert_eq!(report.rows, 60);
        assert_eq!(lake_rows(&lake).await, before);
        // The inputs stay, hidden, for the grace period: 6 + manifest + output.
        assert_eq!(crate::testutil::object_names(&lake).await.len(), 8);
        // The next run (past the grace period) deletes them.
        let report = compactor(&lake).run_once(later()).await.unwrap();
        assert_eq!(report.recovered, 1);
        assert_eq!(report.objects_written, 0);
        assert_eq!(crate::testutil::object_names(&lake).await.len(), 1);
        assert_eq!(lake_rows(&lake).await, before);
        let report = compactor(&lake).run_once(later()).await.unwrap();
        assert_eq!(report, CompactionReport::default());
    }

    #[tokio::test]
    async fn inputs_stay_readable_during_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let lake = lake_with_small_objects(dir.path(), 4).await;
        let mut compactor = compactor(&lake);
        compactor.config.min_age_secs = 0;
        compactor.run_once(Utc::now()).await.unwrap();
        // Within the grace period nothing is deleted, and nothing re-merged.
        let report = compactor.run_once(Utc::now()).await.unwrap();
        assert_eq!(report, CompactionReport::default());
        assert_eq!(crate::testutil::object_names(&lake).await.len(), 6);
    }

    #[tokio::test]
    async fn a_kill_at_any_step_keeps_readers_exact_and_the_next_run_repairs() {
        for stop in [StopAt::Manifest, StopAt::Commit, StopAt::FirstDelete] {
            let dir = tempfile::tempdir().unwrap();
            let lake = lake_with_small_objects(dir.path(), 5).await;
            let before = lake_rows(&lake).await;
            if stop == StopAt::FirstDelete {
                // Deleting inputs happens in the run after the commit.
                compactor(&lake).run_once(later()).await.unwrap();
            }
            let mut killed = compactor(&lake);
            killed.stop_at = Some(stop);
            let err = killed
                .run_once(later())
                .await
                .expect_err(&format!("{stop:?}"));
            assert!(err.to_string().contains(KILLED), "{stop:?}: {err}");
            // Readers (through the live view) see every row exactly once.
            assert_eq!(lake_rows(&lake).await, before, "{stop:?}");
            let report = compactor(&lake).run_once(later()).await.unwrap();
            assert_eq!(report.recovered, 1, "{stop:?}");
            assert_eq!(lake_rows(&lake).await, before, "{stop:?}");
            // A rolled-back merge was redone; its inputs go one run later.
            compactor(&lake).run_once(later()).await.unwrap();
            assert_eq!(lake_rows(&lake).await, before, "{stop:?}");
            let names = crate::testutil::object_names(&lake).await;
            assert_eq!(names.len(), 1, "{stop:?}: {names:?}");
            assert!(names[0].starts_with("c-"), "{stop:?}: {names:?}");
        }
    }
}
