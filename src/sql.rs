//! `securenet sql --org ID [--format json|csv|arrow] [QUERY]`: the analyst
//! SQL of `POST /api/sql` from the command line — the same read-only
//! tenant session, limits and encodings, without an API key (operators
//! with access to the data directory).

use std::io::{Read, Write};

use anyhow::Context;
use query_api::sql::SqlEngine;
use query_api::sql::format::{OutputFormat, encode};
use schemas::TenantId;

use crate::cli::SqlArgs;
use crate::config::Config;

pub fn run(config: &Config, args: SqlArgs) -> anyhow::Result<()> {
    let tenant = TenantId::new(&args.org)?;
    let runtime = crate::cli_runtime()?;
    runtime.block_on(async {
        let store = crate::admin::open_store(config).await?;
        anyhow::ensure!(
            store.organization(&tenant).await?.is_some(),
            "organization {tenant} not found"
        );
        anyhow::Ok(())
    })?;
    let format = OutputFormat::negotiate(Some(args.format.as_str()), &Default::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let query = match args.query.as_deref() {
        None | Some("-") => {
            let mut q = String::new();
            std::io::stdin()
                .read_to_string(&mut q)
                .context("reading the query from standard input")?;
            q
        }
        Some(q) => q.to_string(),
    };
    anyhow::ensure!(!query.trim().is_empty(), "the query is empty");
    let lake = config.lake()?;
    let engine =
        SqlEngine::new(config.api.sql.clone(), lake).map_err(|e| anyhow::anyhow!("{e}"))?;
    let result = runtime
        .block_on(engine.execute(&tenant, &query))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bytes = encode(format, &result, config.api.sql.max_result_bytes)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .body;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    if format != OutputFormat::Arrow {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    if result.truncated {
        eprintln!(
            "securenet: result cut at {} rows (api.sql.max_result_rows)",
            config.api.sql.max_result_rows
        );
    }
    Ok(())
}
