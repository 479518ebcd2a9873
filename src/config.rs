//! The configuration file and its environment overrides.
//!
//! Precedence: built-in defaults < TOML file (`--config` / SECURENET_CONFIG)
//! < `SECURENET_*` environment variables, where `__` separates nesting
//! levels (`SECURENET_INGEST__BATCH__LINGER_MS=50`). Unknown keys are errors
//! at every level, so a typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::http_server::HttpConfig;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where embedded state lives: the metadata store and the Parquet lake.
    pub data_dir: PathBuf,
    /// HTTP listener shared by ingest and the query API in `serve`.
    pub http: HttpConfig,
    pub log: LogConfig,
    pub control: ControlConfig,
    /// Passed to the ingest crate (batching, HTTP limits).
    pub ingest: ingest::IngestConfig,
    pub pipeline: PipelineConfig,
    /// The query API's own limits (`[api.sql]` for analyst queries).
    pub api: query_api::ApiConfig,
    /// Which bus connects ingest to the pipeline.
    pub bus: BusConfig,
    /// Old name of `[api.sql]`: read, moved there, warned about; goes in
    /// the next release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<query_api::sql::SqlConfig>,
    /// What `load` moved from an old key to its new one (logged at start).
    #[serde(skip)]
    pub deprecations: Vec<String>,
}

/// `[bus]`: `kind = "embedded"` (in-process, `serve` only) or `"kafka"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    pub kind: BusKind,
    /// Batches the embedded bus holds before publishers wait.
    pub capacity: usize,
    pub kafka: pipeline::bus::kafka::KafkaConfig,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            kind: BusKind::default(),
            capacity: 64,
            kafka: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    #[default]
    Embedded,
    Kafka,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for humans, `json` for log shippers.
    pub format: String,
    /// tracing filter, e.g. `info` or `info,ingest=debug`; RUST_LOG wins.
    pub level: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// The metadata store: a SQLite file (default `<data_dir>/meta.db`) or
    /// a shared PostgreSQL database, `postgres://user:password@host/db`
    /// (libpq's URL form: `sslmode=`, `application_name=`…; the password is
    /// redacted when shown). Roles on several hosts must share PostgreSQL.
    pub database: Option<schemas::secret::DatabaseUrl>,
    /// How long a verified API key is trusted without asking the store
    /// again, in ms: the bound within which a key revoked on one host stops
    /// working on the others. Default 0 (ask every time) on SQLite, 5000 on
    /// PostgreSQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_cache_ms: Option<u64>,
    /// Plan of the default organization created on first start.
    pub default_plan: String,
    /// Use this API key for the default organization instead of generating
    /// one (at least 20 characters). Stored hashed.
    pub default_api_key: Option<schemas::Secret>,
}

/// The pipeline role's settings.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Old name of `bus.capacity` (moved there with a warning; goes in the
    /// next release).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus_capacity: Option<usize>,
    pub consumer: pipeline::consumer::ConsumerConfig,
    pub parquet: pipeline::sinks::parquet::ParquetSinkConfig,
    /// ClickHouse sink; on when `url` is set.
    pub clickhouse: pipeline::sinks::clickhouse::ClickHouseConfig,
    /// Where the Parquet lake lives: `file:///dir` or an object store
    /// (`s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`).
    /// Default: `lake_dir`, else `<data_dir>/lake`.
    pub lake_url: Option<String>,
    /// Object store settings over the environment's (`AWS_*`, `GOOGLE_*`,
    /// `AZURE_*`), with object_store's keys: `aws_endpoint`, `aws_region`,
    /// `aws_access_key_id`, `aws_secret_access_key`, `aws_allow_http`,
    /// `aws_virtual_hosted_style_request`… (secrets redacted when shown).
    pub lake_options: schemas::secret::ClientOptions,
    /// Parquet lake directory (a local lake); default `<data_dir>/lake`.
    pub lake_dir: Option<PathBuf>,
    /// Retention, tenant purges and compaction.
    pub maintenance: pipeline::maintenance::MaintenanceConfig,
    /// Streaming anomaly detection: feature windows and per-tenant models.
    pub detection: pipeline::detection::DetectionConfig,
    /// Sigma rules evaluated on every `logs` batch.
    pub rules: pipeline::rules::RulesConfig,
    /// GeoIP databases: country and AS of `logs.source_ip`.
    pub geoip: pipeline::geoip::GeoIpConfig,
    /// Scheduled SQL alerts run by the pipeline role.
    pub alerts: crate::sql_alerts::AlertsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            control: ControlConfig::default(),
            ingest: Default::default(),
            pipeline: Default::default(),
            api: Default::default(),
            bus: Default::default(),
            sql: None,
            deprecations: Vec::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            database: None,
            key_cache_ms: None,
            default_plan: "enterprise".into(),
            default_api_key: None,
        }
    }
}

impl Config {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("SECURENET_").ignore(&["config"]).split("__"));
        let mut config: Config = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.move_old_keys();
        config.validate()?;
        Ok(config)
    }

    /// Keys that moved to the section they configure: the old name still
    /// works for one release, with a warning.
    fn move_old_keys(&mut self) {
        if let Some(capacity) = self.pipeline.bus_capacity.take() {
            self.bus.capacity = capacity;
            self.deprecations.push(
                "pipeline.bus_capacity is now bus.capacity (SECURENET_BUS__CAPACITY); the old name goes in the next release".into(),
            );
        }
        if let Some(sql) = self.sql.take() {
            self.api.sql = sql;
            self.deprecations.push(
                "[sql] is now [api.sql] (SECURENET_API__SQL__*); the old name goes in the next release".into(),
            );
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.ingest.validate()?;
        self.http.validate()?;
        self.api.sql.validate().map_err(anyhow::Error::msg)?;
        if self.bus.kind == BusKind::Kafka {
            self.bus.kafka.validate()?;
        }
        if self.bus.capacity == 0 {
            anyhow::bail!("bus.capacity must be positive");
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            anyhow::bail!("log.format is {:?}; use text or json", self.log.format);
        }
        self.control
            .default_plan
            .parse::<schemas::Plan>()
            .map_err(|e| anyhow::anyhow!("control.default_plan: {e}"))?;
        Ok(())
    }

    /// The metadata store's location: `control.database`, else the SQLite
    /// file `<data_dir>/meta.db`.
    pub fn database(&self) -> String {
        match &self.control.database {
            Some(db) => db.expose().to_string(),
            None => self.data_dir.join("meta.db").to_string_lossy().into_owned(),
        }
    }

    pub fn lake_dir(&self) -> PathBuf {
        self.pipeline
            .lake_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("lake"))
    }

    /// The lake every role and command reads and writes (`pipeline.lake_url`,
    /// else the local `lake_dir`).
    pub fn lake(&self) -> anyhow::Result<pipeline::Lake> {
        Ok(match &self.pipeline.lake_url {
            Some(url) => pipeline::Lake::open(url, &self.pipeline.lake_options)?,
            None => pipeline::Lake::local(&self.lake_dir())?,
        })
    }
}
