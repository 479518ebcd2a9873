#!/usr/bin/env python3
"""DuckDB running the same Sigma rules over the same rows as sigma_bench:
each rule converted by pySigma's DuckDB backend (no field mapping: the rules
name the columns), keyword-only rules (which that backend refuses) written
as the `message ILIKE '%…%'` they mean. Rows loaded into an in-memory table
first (not timed); then every rule's `SELECT count(*) … WHERE <rule>` run in
turn, RUNS times; the median of the total is reported. Fails if any rule's
count differs from sigma_bench's (DIR/counts.json).

    sigma_duckdb.py DIR RUNS THREADS
"""
import json
import pathlib
import statistics
import sys
import time

import duckdb
import yaml
from sigma.collection import SigmaCollection
from sigma.exceptions import SigmaFeatureNotSupportedByBackendError
from sigma.processing.pipeline import ProcessingPipeline
from sigma_backend_duckdb import DuckDBBackend


def keyword_sql(text):
    rule = yaml.safe_load(text)
    det = rule["detection"]
    words = det[det["condition"]]
    escaped = [w.replace("'", "''") for w in words]
    return " OR ".join(f"message ILIKE '%{w}%'" for w in escaped)


def main():
    directory, runs, threads = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute(
        "CREATE TABLE logs AS SELECT * FROM read_json(?, format = 'newline_delimited', "
        "columns = {message: 'VARCHAR', host: 'VARCHAR', app: 'VARCHAR', source_ip: 'VARCHAR', severity: 'INTEGER'})",
        [str(directory / "logs.ndjson")],
    )
    rows = con.execute("SELECT count(*) FROM logs").fetchone()[0]
    backend = DuckDBBackend(processing_pipeline=ProcessingPipeline())
    queries = {}
    hand_written = 0
    for path in sorted((directory / "rules").glob("*.yml")):
        text = path.read_text()
        try:
            converted = backend.convert(SigmaCollection.from_yaml(text))
            where = " OR ".join(f"({q.split(' WHERE ', 1)[1]})" for q in converted)
        except SigmaFeatureNotSupportedByBackendError:
            where = keyword_sql(text)
            hand_written += 1
        queries[path.name] = f"SELECT count(*) FROM logs WHERE {where}"
    ours = json.loads((directory / "counts.json").read_text())
    mismatches = {}
    totals = []
    for run in range(runs + 1):
        started = time.perf_counter()
        counts = {name: con.execute(sql).fetchone()[0] for name, sql in queries.items()}
        elapsed = time.perf_counter() - started
        if run == 0:  # warm-up, and the check
            mismatches = {n: (ours[n], c) for n, c in counts.items() if ours[n] != c}
        else:
            totals.append(elapsed)
    median = statistics.median(totals)
    print(json.dumps({
        "rows": rows,
        "rules": len(queries),
        "keyword_rules_written_by_hand": hand_written,
        "threads": threads,
        "median_s": median,
        "rows_per_s": round(rows / median),
        "mismatches": mismatches,
    }))
    if mismatches:
        print(f"counts differ from SecureNet's (ours, duckdb): {mismatches}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
