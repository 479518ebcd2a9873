//! Command-line interface.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use control::Role;
use schemas::Plan;

/// `--plan`: the catalogue's plan names, listed in `--help`.
fn plan_parser() -> impl TypedValueParser<Value = Plan> {
    PossibleValuesParser::new(Plan::ALL.map(Plan::as_str)).try_map(|p| p.parse::<Plan>())
}

/// `--role`: admin, member or viewer.
fn role_parser() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new([Role::Admin, Role::Member, Role::Viewer].map(Role::as_str))
        .try_map(|r| r.parse::<Role>())
}

#[derive(Debug, Parser)]
#[command(
    name = "securenet",
    version,
    about = "Multi-tenant security-telemetry pipeline"
)]
pub struct Cli {
    /// TOML configuration file; SECURENET_* environment variables override it
    /// (nested keys joined by `__`, e.g. SECURENET_HTTP__LISTEN).
    #[arg(long, short, global = true, env = "SECURENET_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process: HTTP and syslog ingest, the bus
    /// (embedded unless bus.kind = "kafka"), the pipeline and the query API.
    Serve,
    /// Run the ingest role alone: HTTP and syslog receivers publishing to
    /// Kafka (needs bus.kind = "kafka").
    Ingest,
    /// Run the pipeline role alone: consume Kafka, write the sinks, commit
    /// (needs bus.kind = "kafka"). Several share a topic's partitions.
    Pipeline,
    /// Run the query API alone over the Parquet lake.
    QueryApi,
    /// Manage organizations (tenants).
    #[command(subcommand)]
    Orgs(OrgsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Generate realistic multi-tenant test logs with injected anomalies.
    Gen(GenArgs),
    /// Print the effective configuration (defaults, file and environment
    /// merged); secrets are shown as `<redacted>`.
    Config,
    /// Run one maintenance pass now (purge deleted organizations' data,
    /// retention per plan, compaction) and print its report as JSON.
    Maintain,
    /// Billing usage.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// Run analyst SQL over one organization's tables, as `POST /api/sql`
    /// does (read-only, the same limits), and print the result.
    Sql(SqlArgs),
    /// Sigma detection rules: check them, or run them over logs.
    #[command(subcommand)]
    Sigma(SigmaCommand),
}

#[derive(Debug, Subcommand)]
pub enum SigmaCommand {
    /// Parse and compile rules (files, or directories of *.yml/*.yaml) and
    /// print each one's verdict; exits 1 if any is refused.
    Check {
        #[arg(required = true)]
        rules: Vec<PathBuf>,
    },
    /// Run rules over NDJSON logs, each line mapped to a record as
    /// `POST /api/ingest/logs` maps it, and print every match as a JSON
    /// line: {"rule", "title", "level", "line"} (`line`: 1-based).
    Match {
        /// A rule file or a directory of them; repeatable.
        #[arg(long = "rule", required = true)]
        rules: Vec<PathBuf>,
        /// The NDJSON file; `-` reads standard input.
        logs: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The organization whose tables the query sees.
    #[arg(long, alias = "tenant")]
    pub org: String,
    /// Output: JSON rows, CSV, or an Arrow IPC stream.
    #[arg(long, value_enum, default_value = "json")]
    pub format: SqlFormat,
    /// The query; `-` or nothing reads it from standard input.
    pub query: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqlFormat {
    Json,
    Csv,
    Arrow,
}

impl SqlFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            SqlFormat::Json => "json",
            SqlFormat::Csv => "csv",
            SqlFormat::Arrow => "arrow",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Recompute an organization's usage for a month from the raw records
    /// in the lake and compare it with the recorded usage, batch by batch.
    /// Exit status: 0 no difference, 2 differences found (printed), 1 the
    /// check itself failed.
    Reconcile {
        /// The organization.
        #[arg(long, alias = "tenant")]
        org: String,
        /// The month, YYYY-MM (UTC).
        #[arg(long)]
        month: String,
        /// Only batches whose last record is older than this many seconds
        /// are compared: on a live system a batch and its usage record
        /// become visible moments apart. 0 compares everything (a stopped
        /// system).
        #[arg(long, default_value_t = 300)]
        settle_secs: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgsCommand {
    /// Create an organization.
    Create {
        /// The new organization's id (tenant id): lowercase letters,
        /// digits, '-' and '_'. `--id` is the old name.
        #[arg(long, alias = "id", alias = "tenant")]
        org: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Where invoices and plan notices go.
        #[arg(long)]
        owner_email: String,
        /// The plan it is billed on.
        #[arg(long, default_value = "starter", value_parser = plan_parser())]
        plan: Plan,
        /// Parent organization (an MSP's child).
        #[arg(long)]
        parent: Option<String>,
        /// Accept devices and scans beyond the plan's limits (billed as
        /// overage) instead of refusing them.
        #[arg(long)]
        allow_overage: bool,
    },
    /// Delete an organization: its keys, inventory and all its data in the
    /// Parquet lake and ClickHouse.
    Delete {
        /// The organization (`--id` is the old name).
        #[arg(long, alias = "id", alias = "tenant")]
        org: String,
    },
    /// List organizations.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set an organization's contract terms: its own limits (each replaces
    /// the plan's, across plan changes) and whether it may go over them.
    Update {
        /// The organization (`--id` is the old name).
        #[arg(long, alias = "id", alias = "tenant")]
        org: String,
        /// Devices a month.
        #[arg(long)]
        max_devices: Option<u64>,
        /// Scans a month.
        #[arg(long)]
        max_scans: Option<u64>,
        /// Days logs are kept.
        #[arg(long)]
        retention_days: Option<u32>,
        /// Drop the organization's own limits: its plan's apply again.
        #[arg(long, conflicts_with_all = ["max_devices", "max_scans", "retention_days"])]
        clear_limits: bool,
        /// Accept devices and scans beyond the limits, billed as overage.
        #[arg(long)]
        allow_overage: Option<bool>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Issue an API key; the key is printed once on stdout.
    Create {
        /// The organization the key belongs to.
        #[arg(long, alias = "tenant")]
        org: String,
        /// A label for the key (shown in listings and the audit log).
        #[arg(long, default_value = "cli")]
        name: String,
        /// What the key may do.
        #[arg(long, default_value = "admin", value_parser = role_parser())]
        role: Role,
    },
    /// List an organization's keys (never their secrets).
    List {
        /// The organization.
        #[arg(long, alias = "tenant")]
        org: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id.
    Revoke {
        /// The organization the key belongs to.
        #[arg(long, alias = "tenant")]
        org: String,
        /// The key's id (from `keys list`).
        id: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GenFormat {
    Ndjson,
    Rfc5424,
    Rfc3164,
}

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Comma-separated tenant ids.
    #[arg(long, value_delimiter = ',', default_value = "acme,globex")]
    pub tenants: Vec<String>,
    /// Normal events to generate (anomaly bursts come on top).
    #[arg(long, default_value_t = 10_000)]
    pub rows: usize,
    /// Anomaly bursts to inject.
    #[arg(long, default_value_t = 0)]
    pub anomalies: usize,
    /// Seed of the generator: the same seed gives the same output.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// NDJSON records, or syslog lines (RFC 5424 or RFC 3164).
    #[arg(long, value_enum, default_value = "ndjson")]
    pub format: GenFormat,
    /// First event time (RFC 3339); default: the start of the current hour.
    #[arg(long)]
    pub start: Option<String>,
    /// Spread the normal events over this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub duration_secs: i64,
    /// Write one file per tenant into this directory instead of stdout.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Write the ground truth (counts, injected anomalies) as JSON here.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
}
