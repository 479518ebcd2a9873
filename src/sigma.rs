//! `securenet sigma`: check Sigma rules, or run them over NDJSON logs with
//! the same field mapping and evaluation the pipeline uses — what a
//! detection engineer runs before uploading a rule.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use detectors::sigma::correlation::State as Windows;
use detectors::sigma::detections::fire_context;
use detectors::sigma::{Document, FieldMap, TenantRules};
use schemas::{LogBatchBuilder, TenantId};

use crate::cli::SigmaCommand;

/// Lines evaluated per batch (the pipeline's batches are of this order).
const BATCH_ROWS: usize = 8192;

pub fn run(command: SigmaCommand, config: &pipeline::rules::RulesConfig) -> anyhow::Result<()> {
    let map = config
        .field_map()
        .context("pipeline.rules.fields or pipeline.rules.logsources")?;
    match command {
        SigmaCommand::Check { rules } => check(&rules, &map),
        SigmaCommand::Match { rules, logs } => run_match(&rules, &logs, &map),
    }
}

/// Rule files named by `paths` (directories: their *.yml and *.yaml, sorted).
pub(crate) fn rule_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|e| e == "yml" || e == "yaml"))
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn parse(file: &Path) -> anyhow::Result<Document> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Document::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

/// The files' rules compiled together, as one organization's (a
/// correlation finds the rules it names among them); what does not
/// compile is returned with its reason.
fn compile(
    docs: &[Arc<Document>],
    map: &FieldMap,
) -> (TenantRules, Vec<(String, detectors::sigma::SigmaError)>) {
    TenantRules::compile(docs, map)
}

fn check(paths: &[PathBuf], map: &FieldMap) -> anyhow::Result<()> {
    let mut refused = 0;
    let mut out = std::io::stdout().lock();
    let mut docs = Vec::new();
    let mut files = Vec::new();
    for file in rule_files(paths)? {
        match parse(&file) {
            Ok(doc) => {
                docs.push(Arc::new(doc));
                files.push(file);
            }
            Err(e) => {
                refused += 1;
                writeln!(out, "refused\t{e}")?;
            }
        }
    }
    let (_, bad) = compile(&docs, map);
    for (doc, file) in docs.iter().zip(&files) {
        let key = doc.id().unwrap_or(doc.title());
        match bad.iter().find(|(id, _)| id == key) {
            Some((_, e)) => {
                refused += 1;
                writeln!(out, "refused\t{}: {e}", file.display())?;
            }
            None => writeln!(
                out,
                "ok\t{}\t{}\t{}\t{}",
                file.display(),
                doc.kind(),
                doc.level().as_str(),
                doc.title()
            )?,
        }
    }
    anyhow::ensure!(refused == 0, "{refused} rule(s) refused");
    Ok(())
}

fn run_match(paths: &[PathBuf], logs: &Path, map: &FieldMap) -> anyhow::Result<()> {
    let docs = rule_files(paths)?
        .iter()
        .map(|f| parse(f).map(Arc::new))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!docs.is_empty(), "no rules");
    let (rules, bad) = compile(&docs, map);
    if let Some((id, e)) = bad.first() {
        anyhow::bail!("rule {id}: {e}");
    }
    let mut windows: Vec<Windows> = rules
        .correlations
        .iter()
        .map(|_| Windows::default())
        .collect();
    let input: Box<dyn BufRead> = if logs == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(logs).with_context(|| format!("opening {}", logs.display()))?,
        ))
    };
    let tenant = TenantId::new("local")?;
    let now = schemas::time::now_ms();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut pending: Vec<(usize, schemas::LogRecord)> = Vec::with_capacity(BATCH_ROWS);
    let mut bad = 0usize;
    let mut flush = |pending: &mut Vec<(usize, schemas::LogRecord)>,
                     out: &mut dyn Write|
     -> anyhow::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let mut b = LogBatchBuilder::with_capacity(pending.len());
        for (_, r) in pending.iter() {
            b.append(r);
        }
        let batch = b.finish(&tenant, uuid::Uuid::now_v7())?;
        let found = rules.set.evaluate(&batch)?;
        for m in found.iter().filter(|m| rules.stores(m.rule)) {
            let rule = &rules.set.rules()[m.rule];
            for &row in &m.rows {
                let line = pending[row as usize].0;
                let hit = serde_json::json!({
                    "rule": rule.id.as_deref().unwrap_or(&rule.title),
                    "title": rule.title,
                    "level": rule.level.as_str(),
                    "line": line,
                });
                writeln!(out, "{hit}")?;
            }
        }
        // Correlations: lines are taken in file order, so no lateness.
        for (c, w) in rules.correlations.iter().zip(windows.iter_mut()) {
            let events = c.events(&rules.map, &batch, &found, |row| pending[row as usize].0)?;
            for fire in w.feed(&c.correlation, 0, events) {
                let corr = &c.correlation;
                let context: serde_json::Value =
                    serde_json::from_str(&fire_context(corr, &fire)).unwrap_or_default();
                let hit = serde_json::json!({
                    "rule": corr.id.as_deref().unwrap_or(&corr.title),
                    "title": corr.title,
                    "level": corr.level.as_str(),
                    "line": fire.origin,
                    "correlation": context,
                });
                writeln!(out, "{hit}")?;
            }
        }
        pending.clear();
        Ok(())
    };
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        match ingest::json::parse_record(&line, &tenant, now, "cli") {
            Ok(record) => pending.push((n + 1, record)),
            Err(e) => {
                bad += 1;
                eprintln!("line {}: {e}", n + 1);
            }
        }
        if pending.len() == BATCH_ROWS {
            flush(&mut pending, &mut out)?;
        }
    }
    flush(&mut pending, &mut out)?;
    out.flush()?;
    if bad > 0 {
        eprintln!("{bad} line(s) were not log records and were skipped");
    }
    Ok(())
}
