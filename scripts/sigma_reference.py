#!/usr/bin/env python3
"""The reference matches of Sigma rules: each rule converted to SQL by
pySigma's DuckDB backend (no field mapping: the rules name the log columns
themselves) and run by DuckDB over the same NDJSON logs.

    sigma_reference.py RULES_DIR LOGS.ndjson

Prints {"<rule file>": {"lines": [1-based line numbers]} | {"refused": why}}.
Keyword-only rules are refused by the backend (full-text search); their
expected matches are written by hand in the test instead.
"""
import json
import pathlib
import sys

import duckdb
from sigma.collection import SigmaCollection
from sigma.processing.pipeline import ProcessingPipeline
from sigma_backend_duckdb import DuckDBBackend

COLUMNS = ["message", "host", "app", "source_ip", "severity"]


def main():
    rules_dir, logs = pathlib.Path(sys.argv[1]), sys.argv[2]
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE logs (line INTEGER, message VARCHAR, host VARCHAR, app VARCHAR, "
        "source_ip VARCHAR, severity INTEGER)"
    )
    rows = []
    with open(logs) as f:
        for n, text in enumerate(f, start=1):
            if not text.strip():
                continue
            record = json.loads(text)
            rows.append([n] + [record.get(c) for c in COLUMNS])
    con.executemany("INSERT INTO logs VALUES (?, ?, ?, ?, ?, ?)", rows)
    backend = DuckDBBackend(processing_pipeline=ProcessingPipeline())
    out = {}
    for path in sorted(rules_dir.glob("*.yml")):
        try:
            queries = backend.convert(SigmaCollection.from_yaml(path.read_text()))
        except Exception as e:  # the backend's own refusal, reported as such
            out[path.name] = {"refused": f"{type(e).__name__}: {e}"}
            continue
        lines = set()
        for q in queries:
            sql = q.replace("SELECT * FROM logs", "SELECT line FROM logs", 1)
            lines.update(r[0] for r in con.execute(sql).fetchall())
        out[path.name] = {"lines": sorted(lines), "sql": queries}
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
