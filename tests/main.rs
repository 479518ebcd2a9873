//! End-to-end tests: the real `securenet` binary, driven through its public
//! interfaces (HTTP, CLI, files). Run by `scripts/test.sh`
//! (`cargo test --features e2e`), which also starts the external services
//! later suites need.

mod netns;
mod support;

mod access;
mod analysis;
mod attack;
mod billing;
mod cli;
mod clickhouse;
mod detections;
mod detectors;
mod flight_sql;
mod fluent;
mod forwarders;
mod gelf;
mod geoip;
mod hosts;
mod ingest_http;
mod insights;
mod kafka;
mod lifecycle;
mod listings;
mod maintenance;
mod notify;
mod orgs;
mod otlp;
mod reports;
mod scans;
mod sigma;
mod sql_tenancy;
mod streaming;
mod syslog;
mod tls;
mod usage;
