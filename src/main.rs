//! The `securenet` binary: parses the CLI and configuration, builds the
//! components from the library crates, runs them and shuts them down. No
//! pipeline logic lives here.

mod admin;
mod cli;
mod config;
mod http_server;
mod insights;
mod maintain;
mod rules;
mod serve;
mod sigma;
mod sql;
mod sql_alerts;
mod testdata;
mod usage;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::config::Config;

/// jemalloc instead of glibc's malloc, as Vector, Quickwit and ClickHouse
/// ship. `perf` put glibc's malloc, free, realloc and the page faults of
/// memory it handed back to the kernel at ~20 % of a small analyst query's
/// CPU (many short-lived buffers: aggregation groups, decoded pages, plan
/// trees); with jemalloc that query took 0.82× the time, the other analyst
/// queries and the forwarder protocols moved within the noise or gained
/// (docs/benchmarks.md, "The allocator, again"). mimalloc, measured
/// earlier, slowed the scale-out shapes and was not kept.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A completed check that found something is not a failure to run.
        Err(e) if e.downcast_ref::<usage::DifferencesFound>().is_some() => {
            eprintln!("securenet: {e:#}");
            ExitCode::from(usage::DIFFERENCES_EXIT)
        }
        Err(e) => {
            eprintln!("securenet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    // Every command logs to stderr as the servers do (maintenance, reconcile
    // and deletes say what they are doing); `config` prints only itself.
    if matches!(cli.command, Command::Config) {
        for moved in &config.deprecations {
            eprintln!("securenet: warning: {moved}");
        }
    } else {
        init_tracing(&config);
        for moved in &config.deprecations {
            tracing::warn!("{moved}");
        }
    }
    match cli.command {
        Command::Serve | Command::Ingest | Command::Pipeline | Command::QueryApi => {
            let role = match cli.command {
                Command::Ingest => serve::Role::Ingest,
                Command::Pipeline => serve::Role::Pipeline,
                Command::QueryApi => serve::Role::QueryApi,
                _ => serve::Role::Serve,
            };
            // Analyst queries run on threads of their own, one lane per
            // organization (query_api::sql), so a heavy query can starve
            // neither ingest and the API nor other organizations.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .thread_name("securenet")
                .enable_all()
                .build()?;
            let outcome = runtime.block_on(serve::run(role, config));
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            outcome
        }
        Command::Orgs(c) => cli_runtime()?.block_on(admin::orgs(&config, c)),
        Command::Keys(c) => cli_runtime()?.block_on(admin::keys(&config, c)),
        Command::Gen(args) => testdata::run(args),
        Command::Maintain => maintain::run_once(&config),
        Command::Usage(c) => usage::run(&config, c),
        Command::Sql(args) => sql::run(&config, args),
        Command::Sigma(c) => sigma::run(c, &config.pipeline.rules),
        Command::Config => {
            println!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
    }
}

/// The runtime of a one-off command (the store's calls are async).
fn cli_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn init_tracing(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(config.log.level.clone()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
