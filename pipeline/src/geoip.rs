//! GeoIP: where a log's `source_ip` is, from MaxMind-format databases.
//!
//! With `pipeline.geoip.country_db` and/or `asn_db` set, the consumer fills
//! the `logs` columns `source_country` (ISO 3166-1 alpha-2: the located
//! country, else the registered one — MaxMind's advice for anycast and
//! satellite ranges), `source_asn` and `source_as_org` of every batch before
//! anything derives from it or writes it, so Sigma rules, SQL and ClickHouse
//! all see them. Any `.mmdb` with the GeoIP2/GeoLite2 field names works:
//! GeoLite2/GeoIP2 Country or City, GeoLite2/GeoIP2 ASN, DB-IP's lite
//! databases.
//!
//! Enrichment never fails a batch: an address that does not parse, is not
//! in the database, or cannot be looked up (IPv6 in an IPv4-only database)
//! leaves the columns null. An address is looked up once per batch and
//! then cached across batches (up to 200,000 addresses). A database file replaced in place (geoipupdate writes a new file
//! and renames it) is read again within [`RELOAD_CHECK`]; a replacement
//! that does not open keeps the database in use.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, StringBuilder, UInt32Builder};
use arrow::error::ArrowError;
use maxminddb::{PathElement, Reader};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use schemas::{Envelope, RecordKind};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// How often a database file is checked for a replacement.
pub const RELOAD_CHECK: Duration = Duration::from_secs(60);

/// `[pipeline.geoip]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GeoIpConfig {
    /// A Country or City database (`GeoLite2-Country.mmdb`…): fills
    /// `source_country`.
    pub country_db: Option<PathBuf>,
    /// An ASN database (`GeoLite2-ASN.mmdb`): fills `source_asn` and
    /// `source_as_org`.
    pub asn_db: Option<PathBuf>,
}

impl GeoIpConfig {
    pub fn enabled(&self) -> bool {
        self.country_db.is_some() || self.asn_db.is_some()
    }
}

/// Why a database could not be used.
#[derive(Debug, thiserror::Error)]
#[error("GeoIP database {}: {why}", path.display())]
pub struct GeoIpError {
    pub path: PathBuf,
    pub why: String,
}

/// One database file and the reader of its current contents.
struct Database {
    /// `country` or `asn`, in metrics and logs.
    name: &'static str,
    path: PathBuf,
    loaded: RwLock<Arc<Loaded>>,
    /// When the file was last checked, and its modification time then.
    checked: Mutex<(Instant, Option<SystemTime>)>,
    /// How often to check ([`RELOAD_CHECK`]; tests check every time).
    check_every: Duration,
    /// Times a file was (re)loaded: cached lookups of an older load are
    /// dropped.
    loads: AtomicU64,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn open(path: &Path) -> Result<Reader<Vec<u8>>, GeoIpError> {
    Reader::open_readfile(path).map_err(|e| GeoIpError {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

/// A database as loaded: its reader (IPv6 addresses) and its IPv4 networks
/// flattened ([`V4Index`]).
struct Loaded {
    reader: Reader<Vec<u8>>,
    v4: V4Index,
}

impl Loaded {
    fn new(name: &'static str, path: &Path) -> Result<Self, GeoIpError> {
        let reader = open(path)?;
        let started = Instant::now();
        let v4 = V4Index::build(&reader, |found| part(name, found)).map_err(|e| GeoIpError {
            path: path.to_path_buf(),
            why: format!("reading its IPv4 networks: {e}"),
        })?;
        info!(
            database = name,
            networks = v4.len(),
            values = v4.table.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "GeoIP IPv4 index built"
        );
        Ok(Self { reader, v4 })
    }

    /// What this database says of `ip`.
    fn find(&self, name: &'static str, ip: IpAddr) -> Option<Place> {
        match ip {
            IpAddr::V4(v4) => self.v4.get(u32::from(v4)).cloned(),
            IpAddr::V6(_) => {
                let found = self.reader.lookup(ip).ok()?;
                found.has_data().then(|| part(name, &found))
            }
        }
    }
}

/// The part of a [`Place`] a database gives (`country`: its country;
/// `asn`: the AS number and organization) for one of its records.
fn part(name: &str, found: &maxminddb::LookupResult<'_, Vec<u8>>) -> Place {
    let mut place = Place::default();
    if name == "country" {
        let code = |key| {
            found
                .decode_path::<String>(&[PathElement::Key(key), PathElement::Key("iso_code")])
                .ok()
                .flatten()
        };
        place.country = code("country")
            .or_else(|| code("registered_country"))
            .map(Arc::from);
    } else if let Ok(Some(record)) = found.decode::<maxminddb::geoip2::Asn>() {
        place.asn = record.autonomous_system_number;
        place.as_org = record.autonomous_system_organization.map(Arc::from);
    }
    place
}

/// Every IPv4 network of a database with data, flattened at load into
/// sorted, disjoint address ranges that point into a table of the distinct
/// records (decoded once each), with the first range of every /16: a lookup
/// is a short binary search inside one /16 instead of a walk down the
/// database's 32-level search tree and a decode of the record it reaches
/// (the tree walk alone was 58 % of 2.3 µs a row when every address was new).
/// ClickHouse's `ip_trie` dictionaries flatten networks the same way.
#[derive(Default)]
struct V4Index {
    starts: Vec<u32>,
    ends: Vec<u32>,
    /// Index into `table` of each range.
    values: Vec<u32>,
    table: Vec<Place>,
    /// For each /16 `p`, the first range starting at or after `p << 16`;
    /// one more entry for the end.
    slots: Vec<u32>,
}

impl V4Index {
    fn build(
        reader: &Reader<Vec<u8>>,
        decode: impl Fn(&maxminddb::LookupResult<'_, Vec<u8>>) -> Place,
    ) -> Result<Self, maxminddb::MaxMindDbError> {
        let mut ranges: Vec<(u32, u32, u32)> = Vec::new();
        let mut index = Self::default();
        let mut by_offset: HashMap<usize, u32> = HashMap::new();
        let everything = "0.0.0.0/0".parse()?;
        for found in reader.within(everything, Default::default())? {
            let found = found?;
            let (Some(offset), Ok(network)) = (found.offset(), found.network()) else {
                continue;
            };
            let IpAddr::V4(start) = network.network() else {
                continue;
            };
            let start = u32::from(start);
            let size = 32 - u32::from(network.prefix()).min(32);
            let end = start | ((1u64 << size) - 1) as u32;
            let value = *by_offset.entry(offset).or_insert_with(|| {
                index.table.push(decode(&found));
                (index.table.len() - 1) as u32
            });
            ranges.push((start, end, value));
        }
        ranges.sort_unstable_by_key(|r| r.0);
        index.starts = ranges.iter().map(|r| r.0).collect();
        index.ends = ranges.iter().map(|r| r.1).collect();
        index.values = ranges.iter().map(|r| r.2).collect();
        index.slots = (0..=1u64 << 16)
            .map(|p| index.starts.partition_point(|s| u64::from(*s) < p << 16) as u32)
            .collect();
        Ok(index)
    }

    fn len(&self) -> usize {
        self.starts.len()
    }

    fn get(&self, ip: u32) -> Option<&Place> {
        let p = (ip >> 16) as usize;
        let (lo, hi) = (self.slots[p] as usize, self.slots[p + 1] as usize);
        // The last range starting at or before `ip`: inside this /16, or
        // the one before it (a network wider than a /16).
        let i = (lo + self.starts[lo..hi].partition_point(|s| *s <= ip)).checked_sub(1)?;
        (self.ends[i] >= ip).then(|| &self.table[self.values[i] as usize])
    }
}

impl Database {
    fn load(name: &'static str, path: &Path, metrics: &GeoIpMetrics) -> Result<Self, GeoIpError> {
        let mtime = modified(path);
        let loaded = Loaded::new(name, path)?;
        metrics.observe(name, &loaded.reader);
        info!(database = name, path = %path.display(), kind = %loaded.reader.metadata.database_type, "GeoIP database loaded");
        Ok(Self {
            name,
            path: path.to_path_buf(),
            loaded: RwLock::new(Arc::new(loaded)),
            checked: Mutex::new((Instant::now(), mtime)),
            check_every: RELOAD_CHECK,
            loads: AtomicU64::new(1),
        })
    }

    /// The reader to use now, having read the file again if it changed
    /// (checked at most every [`RELOAD_CHECK`]).
    fn current(&self, metrics: &GeoIpMetrics) -> Arc<Loaded> {
        let changed = {
            let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            if checked.0.elapsed() < self.check_every {
                false
            } else {
                let now = modified(&self.path);
                let changed = now.is_some() && now != checked.1;
                *checked = (Instant::now(), now.or(checked.1));
                changed
            }
        };
        if changed {
            match Loaded::new(self.name, &self.path) {
                Ok(fresh) => {
                    info!(database = self.name, path = %self.path.display(), "GeoIP database reloaded");
                    metrics.observe(self.name, &fresh.reader);
                    *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
                    self.loads.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    warn!(%error, "GeoIP database not reloaded; the previous one stays in use")
                }
            }
        }
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[derive(Clone)]
struct GeoIpMetrics {
    /// Rows enriched, by database and outcome.
    rows: IntCounterVec,
    /// Each database's build time (seconds since the epoch): how stale it is.
    built: IntGaugeVec,
}

impl GeoIpMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            rows: IntCounterVec::new(
                Opts::new(
                    "securenet_geoip_rows_total",
                    "Log rows looked up in a GeoIP database, by database and result (found, not_found, no_address)",
                ),
                &["database", "result"],
            )?,
            built: IntGaugeVec::new(
                Opts::new(
                    "securenet_geoip_database_build_timestamp_seconds",
                    "When the GeoIP database in use was built",
                ),
                &["database"],
            )?,
        };
        registry.register(Box::new(m.rows.clone()))?;
        registry.register(Box::new(m.built.clone()))?;
        Ok(m)
    }

    fn observe(&self, name: &str, reader: &Reader<Vec<u8>>) {
        self.built
            .with_label_values(&[name])
            .set(reader.metadata.build_epoch as i64);
    }
}

/// What one address is (shared text: a place is copied per address).
#[derive(Default, Clone, Debug, PartialEq)]
struct Place {
    country: Option<Arc<str>>,
    asn: Option<u32>,
    as_org: Option<Arc<str>>,
}

/// Addresses at most in [`Cache`]; when full it starts afresh.
const CACHE_MAX: usize = 200_000;

/// Addresses looked up lately, across batches (the sources of logs repeat
/// far more than within one batch), for the databases as loaded
/// `generation` times.
#[derive(Default)]
struct Cache {
    generation: u64,
    places: HashMap<IpAddr, Place>,
}

/// The GeoIP stage of the consumer.
pub struct GeoIp {
    country: Option<Database>,
    asn: Option<Database>,
    metrics: GeoIpMetrics,
    cache: Mutex<Cache>,
}

/// The address in a `source_ip` value: an IP, IPv4-mapped IPv6 as IPv4.
fn address(text: &str) -> Option<IpAddr> {
    let ip: IpAddr = text.trim().parse().ok()?;
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    })
}

impl GeoIp {
    /// Opens the configured databases (an error names the file); None when
    /// none is configured.
    pub fn start(config: &GeoIpConfig, registry: &Registry) -> Result<Option<Self>, GeoIpError> {
        if !config.enabled() {
            return Ok(None);
        }
        let metrics = GeoIpMetrics::new(registry).map_err(|e| GeoIpError {
            path: PathBuf::new(),
            why: e.to_string(),
        })?;
        let load = |name, path: &Option<PathBuf>| {
            path.as_deref()
                .map(|p| Database::load(name, p, &metrics))
                .transpose()
        };
        Ok(Some(Self {
            country: load("country", &config.country_db)?,
            asn: load("asn", &config.asn_db)?,
            metrics,
            cache: Mutex::default(),
        }))
    }

    fn locate(&self, ip: IpAddr, country: Option<&Loaded>, asn: Option<&Loaded>) -> Place {
        let mut place = Place::default();
        if let Some(found) = country.and_then(|db| db.find("country", ip)) {
            place.country = found.country;
        }
        if let Some(found) = asn.and_then(|db| db.find("asn", ip)) {
            place.asn = found.asn;
            place.as_org = found.as_org;
        }
        place
    }

    /// `batch` (of `logs`) with its GeoIP columns filled from `source_ip`.
    pub fn enrich_batch(&self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let schema = batch.schema();
        let (Ok(ip_col), Ok(country_col), Ok(asn_col), Ok(org_col)) = (
            schema.index_of("source_ip"),
            schema.index_of("source_country"),
            schema.index_of("source_asn"),
            schema.index_of("source_as_org"),
        ) else {
            return Ok(batch.clone());
        };
        let Some(ips) = batch.column(ip_col).as_any().downcast_ref::<StringArray>() else {
            return Ok(batch.clone());
        };
        let country = self.country.as_ref().map(|d| d.current(&self.metrics));
        let asn = self.asn.as_ref().map(|d| d.current(&self.metrics));
        let generation = [&self.country, &self.asn]
            .iter()
            .map(|d| d.as_ref().map_or(0, |d| d.loads.load(Ordering::Relaxed)))
            .fold(0u64, |g, loads| g.wrapping_mul(1 << 32).wrapping_add(loads));
        let rows = batch.num_rows();
        let addresses: Vec<Option<IpAddr>> = ips.iter().map(|t| t.and_then(address)).collect();
        // Addresses neither this batch nor the cache has seen: looked up
        // outside the lock (deliveries in flight enrich concurrently).
        let mut misses: HashMap<IpAddr, Place> = HashMap::new();
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = cache.generation == generation;
            for ip in addresses.iter().flatten() {
                if !(fresh && cache.places.contains_key(ip)) {
                    misses.entry(*ip).or_default();
                }
            }
        }
        for (ip, place) in misses.iter_mut() {
            *place = self.locate(*ip, country.as_deref(), asn.as_deref());
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.generation != generation || cache.places.len() + misses.len() > CACHE_MAX {
            // A new database, or full: start afresh (simple, and a full
            // cache means the sources do not repeat much anyway).
            cache.places.clear();
            cache.generation = generation;
        }
        let mut countries = StringBuilder::with_capacity(rows, rows * 2);
        let mut numbers = UInt32Builder::with_capacity(rows);
        let mut orgs = StringBuilder::with_capacity(rows, rows * 8);
        let (mut found, mut not_found, mut no_address) = ([0u64; 2], [0u64; 2], 0u64);
        for ip in &addresses {
            let place = ip.and_then(|ip| misses.get(&ip).or_else(|| cache.places.get(&ip)));
            let Some(place) = place else {
                no_address += 1;
                countries.append_null();
                numbers.append_null();
                orgs.append_null();
                continue;
            };
            let count = |hit: bool, i: usize, found: &mut [u64; 2], missed: &mut [u64; 2]| {
                if hit { found[i] += 1 } else { missed[i] += 1 }
            };
            count(place.country.is_some(), 0, &mut found, &mut not_found);
            count(place.asn.is_some(), 1, &mut found, &mut not_found);
            countries.append_option(place.country.as_deref());
            numbers.append_option(place.asn);
            orgs.append_option(place.as_org.as_deref());
        }
        cache.places.extend(misses);
        drop(cache);
        for (i, db) in [(0, &self.country), (1, &self.asn)] {
            let Some(db) = db else { continue };
            let rows = &self.metrics.rows;
            rows.with_label_values(&[db.name, "found"]).inc_by(found[i]);
            rows.with_label_values(&[db.name, "not_found"])
                .inc_by(not_found[i]);
            rows.with_label_values(&[db.name, "no_address"])
                .inc_by(no_address);
        }
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        if self.country.is_some() {
            columns[country_col] = Arc::new(countries.finish());
        }
        if self.asn.is_some() {
            columns[asn_col] = Arc::new(numbers.finish());
            columns[org_col] = Arc::new(orgs.finish());
        }
        RecordBatch::try_new(schema, columns)
    }
}

impl crate::consumer::Inline for GeoIp {
    fn name(&self) -> &'static str {
        "geoip"
    }

    fn enrich(&self, envelope: Envelope) -> detectors::Result<Envelope> {
        if envelope.kind() != RecordKind::Logs {
            return Ok(envelope);
        }
        let batch = self.enrich_batch(envelope.batch())?;
        Ok(envelope.with_batch(batch)?)
    }

    fn derive(&self, _: &Envelope) -> detectors::Result<Vec<Envelope>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::UInt32Array;
    use schemas::{LogBatchBuilder, LogRecord, TenantId};

    fn data(name: &str) -> PathBuf {
        // At run time: see schemas::fuzzing.
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap())
            .join("../tests/data/geoip")
            .join(name)
    }

    fn geoip(country: bool, asn: bool) -> GeoIp {
        let config = GeoIpConfig {
            country_db: country.then(|| data("country.mmdb")),
            asn_db: asn.then(|| data("asn.mmdb")),
        };
        GeoIp::start(&config, &Registry::new()).unwrap().unwrap()
    }

    fn batch(ips: &[Option<&str>]) -> RecordBatch {
        let mut b = LogBatchBuilder::with_capacity(ips.len());
        for ip in ips {
            b.append(&LogRecord {
                message: "m".into(),
                source_ip: ip.map(String::from),
                input: "test",
                ..Default::default()
            });
        }
        b.finish(&TenantId::new("acme").unwrap(), uuid::Uuid::nil())
            .unwrap()
    }

    fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
        let col = batch.column_by_name(name).unwrap();
        let col = col.as_any().downcast_ref::<StringArray>().unwrap();
        col.iter().map(|v| v.map(String::from)).collect()
    }

    #[test]
    fn fills_country_and_as_from_the_source_address() {
        let ips = [
            Some("198.51.100.7"),
            Some("203.0.113.9"),
            Some("2001:db8:1::5"),
            Some("::ffff:198.51.100.8"),
            Some("192.0.2.1"),
            Some("10.0.0.1"),
            Some("not an address"),
            None,
            Some("198.51.100.7"),
        ];
        let out = geoip(true, true).enrich_batch(&batch(&ips)).unwrap();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            strings(&out, "source_country"),
            [
                s("DE"),
                s("JP"),
                s("FR"),
                s("DE"),
                None,
                None,
                None,
                None,
                s("DE")
            ]
        );
        let asn = out.column_by_name("source_asn").unwrap();
        let asn: Vec<Option<u32>> = asn
            .as_any()
            .downcast_ref::<UInt32Array>()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(
            asn,
            [
                Some(64500),
                Some(64501),
                Some(64502),
                Some(64500),
                None,
                None,
                None,
                None,
                Some(64500)
            ]
        );
        assert_eq!(strings(&out, "source_as_org")[1], s("Beispiel K.K."));
        // Everything else is the batch as it was.
        assert_eq!(out.num_columns(), 20);
        assert_eq!(out.column(11), batch(&ips).column(11));
    }

    #[test]
    fn the_ipv4_index_answers_as_the_database_does() {
        for name in ["country", "asn"] {
            let loaded = Loaded::new(name, &data(&format!("{name}.mmdb"))).unwrap();
            assert!(loaded.v4.len() > 0, "{name}");
            // Every range's edges and their neighbours, the ends of the
            // address space, and pseudo-random addresses.
            let mut probes: Vec<u32> = vec![0, u32::MAX];
            for (start, end) in loaded.v4.starts.iter().zip(&loaded.v4.ends) {
                probes.extend([start.wrapping_sub(1), *start, *end, end.wrapping_add(1)]);
            }
            let mut x = 0x9e37_79b9u32;
            for _ in 0..50_000 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                probes.push(x);
            }
            for ip in probes {
                let ip = IpAddr::V4(ip.into());
                let by_tree = loaded
                    .reader
                    .lookup(ip)
                    .ok()
                    .filter(|found| found.has_data())
                    .map(|found| part(name, &found));
                assert_eq!(loaded.find(name, ip), by_tree, "{name} {ip}");
            }
        }
    }

    #[test]
    fn one_database_fills_only_its_columns() {
        let out = geoip(false, true)
            .enrich_batch(&batch(&[Some("198.51.100.7")]))
            .unwrap();
        assert_eq!(strings(&out, "source_country"), [None]);
        assert_eq!(
            strings(&out, "source_as_org"),
            [Some("Example Transit GmbH".to_string())]
        );
    }

    #[test]
    fn a_replaced_database_is_read_again_and_a_broken_replacement_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("GeoLite2-Country.mmdb");
        std::fs::copy(data("country.mmdb"), &path).unwrap();
        let config = GeoIpConfig {
            country_db: Some(path.clone()),
            asn_db: None,
        };
        let mut geoip = GeoIp::start(&config, &Registry::new()).unwrap().unwrap();
        if let Some(db) = geoip.country.as_mut() {
            db.check_every = Duration::ZERO;
        }
        let one = batch(&[Some("198.51.100.7")]);
        let country = |g: &GeoIp| strings(&g.enrich_batch(&one).unwrap(), "source_country");
        assert_eq!(country(&geoip), [Some("DE".to_string())]);
        // A new release in place (here: a database without countries),
        // with a new modification time, as geoipupdate's rename gives.
        let replace = |bytes: &[u8], secs: u64| {
            let tmp = dir.path().join("new.mmdb");
            std::fs::write(&tmp, bytes).unwrap();
            let file = std::fs::File::options().write(true).open(&tmp).unwrap();
            file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
                .unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        // A broken replacement keeps the database in use.
        replace(b"half-written", 1_800_000_000);
        assert_eq!(country(&geoip), [Some("DE".to_string())]);
        replace(&std::fs::read(data("asn.mmdb")).unwrap(), 1_800_000_100);
        assert_eq!(country(&geoip), [None]);
        replace(&std::fs::read(data("country.mmdb")).unwrap(), 1_800_000_200);
        assert_eq!(country(&geoip), [Some("DE".to_string())]);
    }

    #[test]
    fn a_missing_or_broken_database_is_named() {
        let config = GeoIpConfig {
            country_db: Some("/nonexistent/GeoLite2-Country.mmdb".into()),
            asn_db: None,
        };
        let err = GeoIp::start(&config, &Registry::new()).err().unwrap();
        assert!(
            err.to_string()
                .contains("/nonexistent/GeoLite2-Country.mmdb"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.mmdb");
        std::fs::write(&bad, b"not a database").unwrap();
        let config = GeoIpConfig {
            country_db: Some(bad.clone()),
            asn_db: None,
        };
        let err = GeoIp::start(&config, &Registry::new()).err().unwrap();
        assert!(err.to_string().contains("bad.mmdb"), "{err}");
        assert!(
            GeoIp::start(&GeoIpConfig::default(), &Registry::new())
                .unwrap()
                .is_none()
        );
    }
}
