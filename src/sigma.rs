//! `securenet sigma`: check Sigma rules, or run them over NDJSON logs with
//! the same field mapping and evaluation the pipeline uses — what a
//! detection engineer runs before uploading a rule.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use detectors::sigma::{FieldMap, Rule, RuleSet};
use schemas::{LogBatchBuilder, RecordKind, TenantId};

use crate::cli::SigmaCommand;

/// Lines evaluated per batch (the pipeline's batches are of this order).
const BATCH_ROWS: usize = 8192;

pub fn run(command: SigmaCommand) -> anyhow::Result<()> {
    match command {
        SigmaCommand::Check { rules } => check(&rules),
        SigmaCommand::Match { rules, logs } => run_match(&rules, &logs),
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

fn parse(file: &Path) -> anyhow::Result<Rule> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Rule::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn compile(rules: Vec<Arc<Rule>>) -> anyhow::Result<RuleSet> {
    RuleSet::compile(
        rules,
        &FieldMap::default(),
        schemas::schema::schema(RecordKind::Logs),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

fn check(paths: &[PathBuf]) -> anyhow::Result<()> {
    let mut refused = 0;
    let mut out = std::io::stdout().lock();
    for file in rule_files(paths)? {
        match parse(&file).and_then(|r| compile(vec![Arc::new(r)])) {
            Ok(set) => {
                let r = &set.rules()[0];
                writeln!(
                    out,
                    "ok\t{}\t{}\t{}",
                    file.display(),
                    r.level.as_str(),
                    r.title
                )?;
            }
            Err(e) => {
                refused += 1;
                writeln!(out, "refused\t{e}")?;
            }
        }
    }
    anyhow::ensure!(refused == 0, "{refused} rule(s) refused");
    Ok(())
}

fn run_match(paths: &[PathBuf], logs: &Path) -> anyhow::Result<()> {
    let rules = rule_files(paths)?
        .iter()
        .map(|f| parse(f).map(Arc::new))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!rules.is_empty(), "no rules");
    let set = compile(rules)?;
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
    let flush = |pending: &mut Vec<(usize, schemas::LogRecord)>,
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
        for m in set.evaluate(&batch)? {
            let rule = &set.rules()[m.rule];
            for row in m.rows {
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
