//! `securenet gen`: writes the seeded generator's output.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};

use anyhow::Context;
use chrono::{DateTime, Timelike, Utc};
use ingest::testdata::{Format, GenConfig, Generator};
use schemas::TenantId;

use crate::cli::{GenArgs, GenFormat};

pub fn run(args: GenArgs) -> anyhow::Result<()> {
    let tenants = args
        .tenants
        .iter()
        .map(|t| TenantId::new(t))
        .collect::<Result<Vec<_>, _>>()?;
    if tenants.is_empty() {
        anyhow::bail!("--tenants needs at least one tenant id");
    }
    let start_ms = match &args.start {
        Some(s) => DateTime::parse_from_rfc3339(s)
            .with_context(|| format!("--start {s:?} is not RFC 3339"))?
            .timestamp_millis(),
        None => {
            let now = Utc::now();
            now.with_minute(0)
                .and_then(|t| t.with_second(0))
                .and_then(|t| t.with_nanosecond(0))
                .unwrap_or(now)
                .timestamp_millis()
        }
    };
    let (format, ext) = match args.format {
        GenFormat::Ndjson => (Format::Ndjson, "ndjson"),
        GenFormat::Rfc5424 => (Format::Rfc5424, "rfc5424.log"),
        GenFormat::Rfc3164 => (Format::Rfc3164, "rfc3164.log"),
    };
    let mut generator = Generator::new(GenConfig {
        seed: args.seed,
        tenants: tenants.clone(),
        rows: args.rows,
        anomalies: args.anomalies,
        start_ms,
        duration_ms: args.duration_secs.max(1) * 1000,
    });
    match &args.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let mut files = BTreeMap::new();
            for t in &tenants {
                let path = dir.join(format!("{t}.{ext}"));
                let file =
                    File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                files.insert(t.clone(), BufWriter::new(file));
            }
            for event in generator.by_ref() {
                if let Some(out) = files.get_mut(&event.tenant) {
                    writeln!(out, "{}", event.render(format))?;
                }
            }
            for (tenant, mut f) in files {
                f.flush()?;
                tracing::info!(%tenant, dir = %dir.display(), "generated");
            }
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            for event in generator.by_ref() {
                writeln!(out, "{}", event.render(format))?;
            }
            out.flush()?;
        }
    }
    if let Some(path) = &args.manifest {
        std::fs::write(path, serde_json::to_vec_pretty(generator.manifest())?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
