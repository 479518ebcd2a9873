//! Grouping accuracy of the log template miner (`detectors::templates`,
//! used by `POST /api/insights/summary`) on labelled log-parsing
//! benchmarks, with Drain (`detectors::drain`, the miner it replaced) on
//! the same data for comparison.
//!
//! Input files, one dataset each:
//! - Loghub's `*_structured.csv` as published (columns `Content` and
//!   `EventId`; e.g. `Linux/Linux_2k.log_structured.csv`), or
//! - JSON lines `{"event": <true event id>, "content": <message>}`
//!   (`benches/data/loghub/` holds the 2k samples in this form).
//!
//! A message is grouped correctly when the set of messages sharing its
//! template is exactly the set sharing its true event (the metric of Zhu
//! et al., "Tools and Benchmarks for Automated Log Parsing", ICSE-SEIP 2019).
//!
//!     template_accuracy FILE...     # one JSON line per dataset, then the means
//!
//! The last line also has the speed of both miners over all the messages
//! (median of `RUNS`, default 5, runs; one thread).
//!
//! `VERBOSE=1` prints every wrong group of the miner.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context;
use detectors::templates::TemplateMiner;

fn main() -> anyhow::Result<()> {
    let files: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(!files.is_empty(), "usage: template_accuracy FILE...");
    let (mut sum, mut sum_drain) = (0.0, 0.0);
    let mut all = Vec::new();
    for file in &files {
        let (truth, contents) = load(file).with_context(|| file.clone())?;
        anyhow::ensure!(!truth.is_empty(), "{file}: no messages");

        let mut miner = TemplateMiner::default();
        let shapes: Vec<_> = contents.iter().map(|c| miner.add(c)).collect();
        let mined = miner.templates();
        let predicted: Vec<u32> = shapes
            .iter()
            .map(|s| s.and_then(|s| mined.of(s)).map_or(0, |t| t.id))
            .collect();
        let texts: HashMap<u32, String> = mined.iter().map(|t| (t.id, t.text.clone())).collect();

        let mut drain = detectors::drain::Drain::new(Default::default());
        let drained: Vec<u32> = contents.iter().map(|c| drain.add(c).0).collect();

        if std::env::var("VERBOSE").is_ok() {
            explain(&truth, &predicted, &texts, &contents);
        }
        let accuracy = grouping_accuracy(&truth, &predicted);
        let accuracy_drain = grouping_accuracy(&truth, &drained);
        sum += accuracy;
        sum_drain += accuracy_drain;
        let name = std::path::Path::new(file)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = name.split(['.', '_']).next().unwrap_or_default();
        let distinct = |v: &[u32]| v.iter().collect::<BTreeSet<_>>().len();
        println!(
            "{}",
            serde_json::json!({
                "dataset": name, "messages": truth.len(),
                "events": truth.iter().collect::<BTreeSet<_>>().len(),
                "templates": distinct(&predicted),
                "grouping_accuracy": round4(accuracy),
                "drain_templates": distinct(&drained),
                "drain_grouping_accuracy": round4(accuracy_drain),
            })
        );
        all.push((truth, contents));
    }
    let n = files.len() as f64;
    // Speed: every dataset mined RUNS times by each miner, interleaved;
    // the median run over all messages.
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = std::time::Instant::now();
        for (_, contents) in &all {
            let mut miner = TemplateMiner::default();
            for c in contents {
                std::hint::black_box(miner.add(c));
            }
            std::hint::black_box(miner.templates());
        }
        ours.push(started.elapsed().as_secs_f64());
        let started = std::time::Instant::now();
        for (_, contents) in &all {
            let mut drain = detectors::drain::Drain::new(Default::default());
            for c in contents {
                std::hint::black_box(drain.add(c));
            }
        }
        theirs.push(started.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let messages: usize = all.iter().map(|(_, c)| c.len()).sum();
    let (ours, theirs) = (median(&mut ours), median(&mut theirs));
    println!(
        "{}",
        serde_json::json!({
            "datasets": files.len(),
            "mean_grouping_accuracy": round4(sum / n),
            "drain_mean_grouping_accuracy": round4(sum_drain / n),
            "messages_per_s": (messages as f64 / ours).round(),
            "drain_messages_per_s": (messages as f64 / theirs).round(),
            "speed_ratio_to_drain": round4(theirs / ours),
            "runs": runs,
        })
    );
    Ok(())
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// (true event ids, messages) of one dataset.
fn load(file: &str) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let (mut truth, mut contents) = (Vec::new(), Vec::new());
    if file.ends_with(".csv") {
        let mut reader = csv::Reader::from_path(file)?;
        let headers = reader.headers()?.clone();
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .with_context(|| format!("no {name} column"))
        };
        let (content, event) = (column("Content")?, column("EventId")?);
        for row in reader.records() {
            let row = row?;
            truth.push(row.get(event).unwrap_or_default().to_string());
            contents.push(row.get(content).unwrap_or_default().to_string());
        }
    } else {
        for line in std::fs::read_to_string(file)?
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line)?;
            truth.push(v["event"].as_str().context("no event")?.to_string());
            contents.push(v["content"].as_str().context("no content")?.to_string());
        }
    }
    Ok((truth, contents))
}

/// Prints every predicted template that does not match one true event.
fn explain(truth: &[String], predicted: &[u32], texts: &HashMap<u32, String>, contents: &[String]) {
    let mut by_pred: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut by_truth: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (t, p)) in truth.iter().zip(predicted).enumerate() {
        by_pred.entry(*p).or_default().push(i);
        by_truth.entry(t).or_default().push(i);
    }
    for (p, lines) in &by_pred {
        let events: BTreeSet<&str> = lines.iter().map(|i| truth[*i].as_str()).collect();
        let exact = match events.iter().collect::<Vec<_>>()[..] {
            [only] => by_truth[only] == *lines,
            _ => false,
        };
        if !exact {
            eprintln!(
                "  {} lines in {:?} {:?}  e.g. {:?}",
                lines.len(),
                texts.get(p).map(String::as_str).unwrap_or("?"),
                events
                    .iter()
                    .map(|e| format!("{e}:{}", by_truth[e].len()))
                    .collect::<Vec<_>>(),
                contents[lines[0]]
            );
        }
    }
}

/// Share of messages whose predicted group equals their true group.
fn grouping_accuracy(truth: &[String], predicted: &[u32]) -> f64 {
    let mut by_truth: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_pred: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, (t, p)) in truth.iter().zip(predicted).enumerate() {
        by_truth.entry(t).or_default().push(i);
        by_pred.entry(*p).or_default().push(i);
    }
    let correct = truth
        .iter()
        .zip(predicted)
        .filter(|(t, p)| by_truth[t.as_str()] == by_pred[p])
        .count();
    correct as f64 / truth.len().max(1) as f64
}
