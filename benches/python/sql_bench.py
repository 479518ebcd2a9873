#!/usr/bin/env python3
"""Loader and query driver for benches/sql.sh.

    sql_bench.py ingest-logs URL KEY            < NDJSON (securenet gen)
    sql_bench.py ingest-scan URL KEY DAY INDEX SEED
    sql_bench.py bench URL KEY LAKE TENANT RUNS EXPECTED_LOGS
    sql_bench.py fetch URL FLIGHT_URI KEY RUNS ROWS [SERVER_PID]
    sql_bench.py concurrency URL KEYS_JSON SECONDS CLIENTS_PER_TENANT

`ingest-logs` streams NDJSON from stdin to `POST /api/ingest/logs` (~1 MiB
bodies, 8 requests in flight, retried on 503) and prints the accepted count.
`ingest-scan` posts the nightly scan report of one day (JSON format of
`POST /api/ingest/scans`): 744 internal hosts, open ports as `info`
findings and CVEs with CVSS scores, the same hosts' exposure drifting a
little from night to night (a few down, some patched), and prints the
number of findings. Both go through SecureNet's own ingest, so the
lake (logs, findings, devices, scans and the usage the pipeline counts) is
laid out exactly as in production.

`bench` runs the analyst queries of QUERIES through `POST /api/sql` and through DuckDB
(default threads) over the same Parquet files, checks that both return the
same rows, and prints JSON with the medians. Given a second query API (a
baseline build or configuration), its runs alternate with the first's,
beside the same DuckDB runs, so both are measured in the same moments.
"""
import http.client
import json
import math
import queue
import random
import statistics
import sys
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlparse

BODY_BYTES = 1 << 20
IN_FLIGHT = 8


def connect(url: str) -> http.client.HTTPConnection:
    u = urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=600)


def post(conn, path, key, body, content_type):
    """POST with retries on 503 (backpressure); returns (status, parsed body)."""
    for attempt in range(120):
        conn.request("POST", path, body=body, headers={
            "X-API-Key": key, "Content-Type": content_type})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status == 503:
            time.sleep(float(resp.getheader("Retry-After") or 1) if attempt > 2 else 0.2)
            continue
        return resp.status, data
    raise SystemExit(f"{path}: still 503 after 120 attempts")


# ---------------------------------------------------------------- ingest

def ingest_logs(url: str, key: str):
    work: queue.Queue = queue.Queue(maxsize=IN_FLIGHT * 2)
    totals = {"accepted": 0, "lines": 0, "requests": 0}
    errors: list = []
    lock = threading.Lock()

    def worker():
        conn = connect(url)
        while True:
            item = work.get()
            if item is None:
                return
            body, lines = item
            try:
                status, data = post(conn, "/api/ingest/logs", key, body, "application/x-ndjson")
                answer = json.loads(data)
                if status != 200 or answer.get("rejected") or answer.get("accepted") != lines:
                    raise RuntimeError(f"HTTP {status}: {data[:500]!r}")
                with lock:
                    totals["accepted"] += answer["accepted"]
                    totals["requests"] += 1
            except Exception as e:  # noqa: BLE001 - reported below, fails the load
                errors.append(str(e))
                conn = connect(url)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(IN_FLIGHT)]
    for t in threads:
        t.start()
    started = time.perf_counter()
    stdin = sys.stdin.buffer
    rest = b""
    last_report = started
    while not errors:
        chunk = stdin.read(BODY_BYTES)
        if not chunk:
            break
        chunk = rest + chunk
        cut = chunk.rfind(b"\n") + 1
        body, rest = chunk[:cut], chunk[cut:]
        if body:
            lines = body.count(b"\n")
            totals["lines"] += lines
            work.put((body, lines))
        now = time.perf_counter()
        if now - last_report > 10:
            last_report = now
            print(f"  ingest: {totals['accepted']:,} rows acknowledged "
                  f"({totals['accepted'] / (now - started):,.0f} rows/s)", file=sys.stderr)
    if rest.strip() and not errors:
        totals["lines"] += 1
        work.put((rest + b"\n", 1))
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"log ingest failed: {errors[0]}")
    secs = time.perf_counter() - started
    if totals["accepted"] != totals["lines"]:
        raise SystemExit(f"log ingest: {totals['accepted']} accepted of {totals['lines']} sent")
    print(f"  ingest: {totals['accepted']:,} rows in {secs:.1f} s "
          f"({totals['accepted'] / secs:,.0f} rows/s, {totals['requests']} requests)", file=sys.stderr)
    print(totals["accepted"])


SERVICES = [  # port, service, products with (cve, cvss) they carry
    (22, "ssh", [("OpenSSH 9.6p1", []),
                 ("OpenSSH 8.9p1", [("CVE-2023-38408", 9.8), ("CVE-2023-48795", 5.9)]),
                 ("OpenSSH 7.4", [("CVE-2023-38408", 9.8), ("CVE-2020-15778", 7.8),
                                  ("CVE-2018-15473", 5.3)])]),
    (80, "http", [("nginx 1.26.2", []), ("nginx 1.18.0", [("CVE-2021-23017", 7.7)]),
                  ("Apache httpd 2.4.49", [("CVE-2021-41773", 7.5), ("CVE-2021-42013", 9.8)])]),
    (443, "https", [("nginx 1.26.2", []), ("nginx 1.18.0", [("CVE-2021-23017", 7.7)])]),
    (3306, "mysql", [("MySQL 8.0.40", []), ("MySQL 5.7.29", [("CVE-2020-14812", 4.9)])]),
    (5432, "postgresql", [("PostgreSQL 16.4", []), ("PostgreSQL 11.2", [("CVE-2019-10164", 8.8)])]),
    (6379, "redis", [("Redis 7.2.5", []), ("Redis 5.0.7", [("CVE-2022-0543", 10.0)])]),
    (445, "microsoft-ds", [("Samba smbd 4.19", []), ("Samba smbd 4.5", [("CVE-2017-7494", 9.8)])]),
    (3389, "ms-wbt-server", [("xrdp 0.10", []), ("Microsoft Terminal Services", [("CVE-2019-0708", 9.8)])]),
]
OSES = ["Debian 12", "Ubuntu 22.04", "Ubuntu 20.04", "RHEL 9", "Windows Server 2019", "Debian 10"]
VENDORS = ["Dell", "HPE", "Lenovo", "Supermicro", "VMware"]


def scan_hosts(seed: int):
    """744 internal hosts (10.0.0-2.2-249, addresses the logs use) with a
    stable service profile each."""
    rng = random.Random(seed)
    hosts = []
    for net in range(3):
        for last in range(2, 250):
            ip = f"10.0.{net}.{last}"
            services = []
            for port, service, products in SERVICES:
                if rng.random() < (0.9 if port == 22 else 0.25):
                    # Older (vulnerable) builds on roughly a third of the hosts.
                    services.append((port, service, products[rng.choices(
                        range(len(products)), weights=[6] + [3] * (len(products) - 1))[0]]))
            hosts.append({
                "ip": ip,
                "mac": "52:54:%02x:%02x:%02x:%02x" % (rng.randrange(256), rng.randrange(256), net, last),
                "hostname": f"srv-{net}-{last:03d}",
                "os": rng.choice(OSES),
                "vendor": rng.choice(VENDORS),
                "services": services,
                "patched_on": rng.randrange(1, 120),  # day index; most stay unpatched in a month
            })
    return hosts


def ingest_scan(url: str, key: str, day: str, index: int, seed: int):
    """The nightly scan of `day` (the `index`-th night): 02:00-02:23 UTC."""
    hosts = scan_hosts(seed)
    started = datetime.fromisoformat(day).replace(hour=2, tzinfo=timezone.utc)
    finished = started + timedelta(minutes=23)
    rng = random.Random(seed * 1000 + index)
    report_hosts = []
    for h in hosts:
        up = rng.random() > 0.03  # a few hosts are down on any night
        findings = []
        if up:
            for port, service, (product, cves) in h["services"]:
                findings.append({"port": port, "protocol": "tcp", "service": service,
                                 "product": product, "severity": "info",
                                 "title": f"open port {port}/tcp ({service})"})
                if index < h["patched_on"]:
                    for cve, cvss in cves:
                        findings.append({"port": port, "protocol": "tcp", "service": service,
                                         "product": product, "cvss": cvss,
                                         "title": f"{cve} in {product}", "cve": cve})
        report_hosts.append({
            "ip": h["ip"], "mac": h["mac"], "hostname": h["hostname"], "os": h["os"],
            "vendor": h["vendor"], "status": "up" if up else "down", "findings": findings})
    report = {
        "scan_id": f"nightly-{started:%Y-%m-%d}", "scanner": "openvas 22.4",
        "target": "10.0.0.0/22", "started": started.isoformat().replace("+00:00", "Z"),
        "finished": finished.isoformat().replace("+00:00", "Z"), "status": "completed",
        "hosts": report_hosts,
    }
    status, data = post(connect(url), "/api/ingest/scans", key, json.dumps(report).encode(),
                        "application/json")
    if status != 201:
        raise SystemExit(f"scan {report['scan_id']}: HTTP {status}: {data[:500]!r}")
    print(json.loads(data)["findings"])


# ---------------------------------------------------------------- queries

# Authentication failures as the streaming detector recognises them
# (detectors/src/windows/mod.rs, AUTH_FAILURE, case-insensitive).
AUTH_FAILURE = ("failed password|authentication fail|invalid user|failed login|login failed|"
                "logon failure|access denied|incorrect password|not in sudoers|unauthorized")

# The columns GET /api/logs returns (query-api/src/data.rs, LOGS).
LOG_COLUMNS = ("ts, received_at, batch_id, host, app, pid, severity, facility, msg_id, message, "
               "source_ip, structured_data, parse_status, input, bytes")

QUERIES = [
    {
        "name": "count by hour",
        "ordered": True,
        "securenet": "SELECT date_trunc('hour', ts) AS hour, count(*) AS events "
                     "FROM logs GROUP BY 1 ORDER BY 1",
    },
    {
        "name": "top 10 sources",
        "ordered": True,
        "securenet": "SELECT source_ip, count(*) AS events FROM logs WHERE source_ip IS NOT NULL "
                     "GROUP BY source_ip ORDER BY events DESC, source_ip LIMIT 10",
    },
    {
        "name": "failed logins per host",
        "ordered": True,
        "securenet": "SELECT host, count(*) AS failures, count(DISTINCT source_ip) AS sources "
                     f"FROM logs WHERE message ~* '{AUTH_FAILURE}' "
                     "GROUP BY host ORDER BY failures DESC, host",
        "duckdb": "SELECT host, count(*) AS failures, count(DISTINCT source_ip) AS sources "
                  f"FROM logs WHERE regexp_matches(message, '{AUTH_FAILURE}', 'i') "
                  "GROUP BY host ORDER BY failures DESC, host",
    },
    {
        "name": "logs ⋈ findings (ip)",
        "ordered": True,
        "securenet": "WITH vulnerable AS ("
                     " SELECT ip, count(DISTINCT cve) AS cves, max(cvss) AS max_cvss FROM findings"
                     " WHERE severity IN ('high', 'critical') GROUP BY ip)"
                     " SELECT v.ip, v.cves, v.max_cvss, count(*) AS events,"
                     " count(DISTINCT l.host) AS hosts"
                     " FROM logs l JOIN vulnerable v ON l.source_ip = v.ip"
                     " GROUP BY v.ip, v.cves, v.max_cvss ORDER BY events DESC, v.ip LIMIT 20",
    },
    {
        "name": "usage by day",
        "ordered": True,
        # As GET /api/billing/usage computes it (query-api/src/usage.rs).
        "securenet": "SELECT CAST(day AS VARCHAR) AS day, metric, "
                     "CAST(CASE WHEN metric = 'devices' THEN count(DISTINCT subject) "
                     "ELSE sum(value) END AS BIGINT) AS value "
                     "FROM usage GROUP BY day, metric ORDER BY day, metric",
    },
    {
        # {needle}: the rarest source address in the data (chosen by DuckDB
        # before the runs), the way an analyst pivots on one IP.
        "name": "needle: one IP",
        "ordered": True,
        "securenet": "SELECT ts, host, app, message FROM logs WHERE source_ip = '{needle}' "
                     "ORDER BY ts, host, app, message",
    },
    {
        "name": "substring in message",
        "ordered": True,
        "securenet": "SELECT host, count(*) AS n FROM logs WHERE message LIKE '%apt-get upgrade%' "
                     "GROUP BY host ORDER BY n DESC, host",
    },
    {
        "name": "one hour of the month",
        "ordered": True,
        "securenet": "SELECT app, count(*) AS n, count(DISTINCT host) AS hosts FROM logs "
                     "WHERE ts >= '2026-10-15T13:00:00Z' AND ts < '2026-10-15T14:00:00Z' "
                     "GROUP BY app ORDER BY n DESC, app",
    },
    {
        "name": "distinct hosts per day",
        "ordered": True,
        "securenet": "SELECT date_trunc('day', ts) AS day, count(DISTINCT host) AS hosts "
                     "FROM logs GROUP BY 1 ORDER BY 1",
    },
    {
        "name": "top talkers per day (window)",
        "ordered": True,
        "securenet": "SELECT day, source_ip, n, rnk FROM ("
                     " SELECT date_trunc('day', ts) AS day, source_ip, count(*) AS n,"
                     " rank() OVER (PARTITION BY date_trunc('day', ts) ORDER BY count(*) DESC) AS rnk"
                     " FROM logs WHERE source_ip IS NOT NULL GROUP BY 1, 2) t"
                     " WHERE rnk <= 3 ORDER BY day, rnk, source_ip",
    },
    {
        "name": "logs ⋈ findings ⋈ devices",
        "ordered": True,
        "securenet": "WITH dev AS (SELECT ip, max(hostname) AS hostname, max(os) AS os FROM devices"
                     " WHERE ip IS NOT NULL GROUP BY ip),"
                     " vul AS (SELECT ip, count(DISTINCT cve) AS cves FROM findings"
                     " WHERE cve IS NOT NULL GROUP BY ip)"
                     " SELECT dev.hostname, dev.os, vul.cves, count(*) AS events"
                     " FROM logs l JOIN dev ON l.source_ip = dev.ip JOIN vul ON vul.ip = dev.ip"
                     " GROUP BY 1, 2, 3 ORDER BY events DESC, dev.hostname LIMIT 20",
    },
    {
        # GET /api/logs?since=…&until=… as query-api/src/data.rs builds it
        # (its values bound; the same values inlined here), first page.
        "name": "/api/logs: one day, first page",
        "ordered": True,
        "securenet": "SELECT CAST(ts AS BIGINT) AS ts_ms, " + LOG_COLUMNS + " FROM logs "
                     "WHERE 1 = 1 AND CAST(ts AS BIGINT) >= 1792281600000 "
                     "AND CAST(ts AS BIGINT) < 1792368000000 "
                     "ORDER BY ts DESC, batch_id DESC, message, host, app, raw LIMIT 51",
        "duckdb": "SELECT epoch_ms(ts) AS ts_ms, " + LOG_COLUMNS + " FROM logs "
                  "WHERE 1 = 1 AND epoch_ms(ts) >= 1792281600000 "
                  "AND epoch_ms(ts) < 1792368000000 "
                  "ORDER BY ts DESC, batch_id DESC, message, host, app, raw LIMIT 51",
    },
    {
        # GET /api/logs with no filter: the newest page.
        "name": "/api/logs: newest page",
        "ordered": True,
        "securenet": "SELECT CAST(ts AS BIGINT) AS ts_ms, " + LOG_COLUMNS + " FROM logs "
                     "WHERE 1 = 1 ORDER BY ts DESC, batch_id DESC, message, host, app, raw LIMIT 51",
        "duckdb": "SELECT epoch_ms(ts) AS ts_ms, " + LOG_COLUMNS + " FROM logs "
                  "WHERE 1 = 1 ORDER BY ts DESC, batch_id DESC, message, host, app, raw LIMIT 51",
    },
]


def securenet_sql(conn, key, sql):
    body = json.dumps({"sql": sql, "format": "json"}).encode()
    t = time.perf_counter()
    conn.request("POST", "/api/sql", body=body,
                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    answer = json.loads(data) if data else {}
    elapsed = time.perf_counter() - t
    if resp.status != 200:
        raise QueryFailed(f"HTTP {resp.status}: {answer.get('error', data[:500])}")
    if answer.get("truncated"):
        raise QueryFailed("result truncated (sql.max_result_rows)")
    return elapsed, answer


class QueryFailed(Exception):
    pass


def duckdb_sql(con, sql):
    t = time.perf_counter()
    cur = con.execute(sql)
    rows = cur.fetchall()
    elapsed = time.perf_counter() - t
    return elapsed, [d[0] for d in cur.description], rows


def norm_securenet(answer):
    cols = [c["name"] for c in answer["columns"]]
    types = {c["name"]: c["type"] for c in answer["columns"]}
    out = []
    for row in answer["rows"]:
        vals = []
        for c in cols:
            v = row.get(c)
            if v is not None and types[c].startswith("Timestamp"):
                v = datetime.fromisoformat(v.replace("Z", "+00:00"))
                if v.tzinfo is None:
                    v = v.replace(tzinfo=timezone.utc)
                v = round(v.timestamp() * 1000)
            vals.append(v)
        out.append(tuple(vals))
    return cols, out


def norm_duckdb(rows):
    out = []
    for row in rows:
        vals = []
        for v in row:
            if isinstance(v, datetime):
                if v.tzinfo is None:
                    v = v.replace(tzinfo=timezone.utc)
                v = round(v.timestamp() * 1000)
            elif isinstance(v, date):
                v = v.isoformat()
            vals.append(v)
        out.append(tuple(vals))
    return out


def same_value(a, b):
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def sort_key(row):
    # Floats rounded so that an f32 printed two ways sorts the same.
    return tuple((0, "") if v is None else (1, round(v, 4)) if isinstance(v, float) else (1, v)
                 for v in row)


def compare(name, ordered, sn_cols, sn_rows, dk_cols, dk_rows):
    if [c.lower() for c in sn_cols] != [c.lower() for c in dk_cols]:
        raise SystemExit(f"{name}: columns differ: securenet {sn_cols}, duckdb {dk_cols}")
    if len(sn_rows) != len(dk_rows):
        raise SystemExit(f"{name}: securenet returned {len(sn_rows)} rows, duckdb {len(dk_rows)}")
    if not ordered:
        sn_rows, dk_rows = sorted(sn_rows, key=sort_key), sorted(dk_rows, key=sort_key)
    for i, (a, b) in enumerate(zip(sn_rows, dk_rows)):
        if len(a) != len(b) or not all(same_value(x, y) for x, y in zip(a, b)):
            raise SystemExit(f"{name}: row {i} differs: securenet {a}, duckdb {b}")


def bench(url, key, lake, tenant, runs, expected_logs, baseline_url=None):
    import duckdb

    lake = Path(lake)
    leftovers = [p for p in lake.rglob("*") if p.is_file() and not p.name.endswith(".parquet")
                 and f"tenant_id={tenant}" in str(p)]
    if leftovers:
        raise SystemExit(f"lake has non-Parquet objects DuckDB's glob would not account for: {leftovers[:5]}")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    files = {}
    for kind in ("logs", "findings", "devices", "usage"):
        glob = f"{lake}/{kind}/tenant_id={tenant}/date=*/*.parquet"
        files[kind] = len(list(lake.glob(f"{kind}/tenant_id={tenant}/date=*/*.parquet")))
        con.execute(f"CREATE VIEW {kind} AS SELECT * FROM read_parquet('{glob}', hive_partitioning = false)")
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]

    conn = connect(url)
    _, answer = securenet_sql(conn, key, "SELECT count(*) AS n FROM logs")
    sn_count = answer["rows"][0]["n"]
    dk_count = con.execute("SELECT count(*) FROM logs").fetchone()[0]
    if not (sn_count == dk_count == expected_logs):
        raise SystemExit(f"log rows: securenet {sn_count}, duckdb {dk_count}, ingested {expected_logs}")
    print(f"  {sn_count:,} log rows; files: {files}; duckdb threads {threads}", file=sys.stderr)

    needle = con.execute("SELECT source_ip FROM logs WHERE source_ip IS NOT NULL "
                         "GROUP BY source_ip ORDER BY count(*), source_ip LIMIT 1").fetchone()[0]
    print(f"  needle: {needle}", file=sys.stderr)

    # Each engine under test: (label, connection). With a baseline, its runs
    # alternate with the current build's, beside the same DuckDB runs.
    engines = [("current", conn)] + ([("baseline", connect(baseline_url))] if baseline_url else [])
    results = {label: [] for label, _ in engines}
    for q in QUERIES:
        name = q["name"]
        sn_sql = q["securenet"].replace("{needle}", needle)
        dk_sql = q.get("duckdb", q["securenet"]).replace("{needle}", needle)
        dk_times = []
        sn = {label: {"times": [], "server_ms": [], "failure": None} for label, _ in engines}
        answers = {}
        for label, c in engines:
            try:
                _, answers[label] = securenet_sql(c, key, sn_sql)  # warm-up
            except QueryFailed as e:
                sn[label]["failure"] = str(e)
        _, dk_cols, dk_rows = duckdb_sql(con, dk_sql)  # warm-up
        for label, answer in answers.items():
            sn_cols, sn_rows = norm_securenet(answer)
            compare(name, q["ordered"], sn_cols, sn_rows, dk_cols, norm_duckdb(dk_rows))
        for i in range(runs):
            order = engines if i % 2 == 0 else engines[::-1]
            for label, c in order:
                e = sn[label]
                if e["failure"] is not None:
                    continue
                try:
                    t, answer = securenet_sql(c, key, sn_sql)
                    e["times"].append(t)
                    e["server_ms"].append(answer["elapsed_ms"])
                    sn_cols, sn_rows = norm_securenet(answer)
                    compare(name, q["ordered"], sn_cols, sn_rows, dk_cols, norm_duckdb(dk_rows))
                except QueryFailed as err:
                    e["failure"] = str(err)
            t, _, rows = duckdb_sql(con, dk_sql)
            dk_times.append(t)
            compare(name, q["ordered"], dk_cols, norm_duckdb(rows), dk_cols, norm_duckdb(dk_rows))
        for label, _ in engines:
            e = sn[label]
            r = {"query": name, "rows": len(dk_rows),
                 "duckdb_ms": round(statistics.median(dk_times) * 1000, 1),
                 "duckdb_runs_ms": [round(t * 1000, 1) for t in dk_times]}
            if e["failure"] is None:
                r.update({
                    "securenet_ms": round(statistics.median(e["times"]) * 1000, 1),
                    "securenet_server_ms": statistics.median(e["server_ms"]),
                    "securenet_runs_ms": [round(t * 1000, 1) for t in e["times"]],
                    "ratio": round(statistics.median(e["times"]) / statistics.median(dk_times), 2),
                })
            else:
                r["securenet_error"] = e["failure"]
            print(f"  {name} ({label}): {r}", file=sys.stderr)
            results[label].append(r)
    print(json.dumps({"bench": "sql", "log_rows": sn_count, "runs": runs, "files": files,
                      "duckdb": duckdb.__version__, "duckdb_threads": threads,
                      "queries": QUERIES, "results": results["current"],
                      "baseline_results": results.get("baseline")}))


# The fetch comparison: one wide result, fetched whole by each transport.
FETCH_SQL = "SELECT ts, host, app, severity, message, source_ip FROM logs LIMIT {rows}"


def fetch(url, flight_uri, key, runs, rows, server_pid=None):
    """Fetches ROWS rows through Flight SQL (ADBC, Arrow), POST /api/sql as
    an Arrow IPC stream and as JSON; medians of RUNS after one warm-up,
    each run fetched whole and decoded by the client. For Flight SQL also
    the time to the first batch, and (with SERVER_PID, a query-api started
    for this step) the server's peak resident memory after the Flight SQL
    runs, before the HTTP ones (which collect the result)."""
    import adbc_driver_flightsql.dbapi as flight_sql
    import pyarrow as pa

    sql = FETCH_SQL.format(rows=rows)

    def over_http(fmt):
        conn = connect(url)
        body = json.dumps({"sql": sql, "format": fmt}).encode()
        t = time.perf_counter()
        conn.request("POST", "/api/sql", body=body,
                     headers={"X-API-Key": key, "Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise SystemExit(f"{fmt}: HTTP {resp.status}: {data[:300]!r}")
        if fmt == "arrow":
            n = pa.ipc.open_stream(data).read_all().num_rows
        else:
            n = len(json.loads(data)["rows"])
        return time.perf_counter() - t, n, len(data)

    conn = flight_sql.connect(flight_uri, db_kwargs={
        "adbc.flight.sql.authorization_header": f"Bearer {key}"})

    def over_flight():
        t = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(sql)
            table = cur.fetch_arrow_table()
        return time.perf_counter() - t, table.num_rows, table.nbytes

    def first_flight_batch():
        t = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(sql)
            reader = cur.fetch_record_batch()
            reader.read_next_batch()
            first = time.perf_counter() - t
            for _ in reader:  # the rest: the next run starts on an idle server
                pass
        return first

    def peak_rss_kb():
        if server_pid is None:
            return None
        for line in open(f"/proc/{server_pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return None

    ways = {"flight_sql": over_flight, "http_arrow": lambda: over_http("arrow"),
            "http_json": lambda: over_http("json")}
    out = {}
    for name, way in ways.items():
        if name == "http_arrow":
            firsts = [first_flight_batch() for _ in range(runs)]
            out["flight_sql"]["first_batch_median_ms"] = round(statistics.median(firsts) * 1000, 1)
            out["flight_sql"]["server_peak_rss_kb"] = peak_rss_kb()
        _, n, size = way()  # warm-up
        if n != rows:
            raise SystemExit(f"{name}: {n} rows, expected {rows}")
        times = [way()[0] for _ in range(runs)]
        med = statistics.median(times)
        out[name] = {"median_ms": round(med * 1000, 1), "rows_per_s": round(rows / med),
                     "bytes": size, "runs_ms": [round(t * 1000, 1) for t in times]}
        print(f"  fetch {name}: {out[name]}", file=sys.stderr)
    base = out["flight_sql"]["median_ms"]
    for name in out:
        out[name]["time_vs_flight_sql"] = round(out[name]["median_ms"] / base, 2)
    print(json.dumps({"bench": "sql-fetch", "rows": rows, "runs": runs, "sql": sql, "results": out}))


# The fairness bench: light queries an analyst's dashboard issues, and the
# heavy ones a careless analyst runs (a full join, a high-cardinality
# GROUP BY sorted, a regex over every message).
LIGHT = [
    "SELECT source_ip, count(*) AS events FROM logs WHERE source_ip IS NOT NULL "
    "GROUP BY source_ip ORDER BY events DESC, source_ip LIMIT 10",
    "SELECT app, count(*) AS n FROM logs WHERE ts >= '2026-10-15T13:00:00Z' "
    "AND ts < '2026-10-15T14:00:00Z' GROUP BY app ORDER BY n DESC, app",
    "SELECT CAST(day AS VARCHAR) AS day, metric, sum(value) AS v FROM usage GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT CAST(ts AS BIGINT) AS ts_ms, host, app, message FROM logs "
    "ORDER BY ts DESC, batch_id DESC, message LIMIT 51",
]
HEAVY = [
    "SELECT message, count(*) AS n FROM logs GROUP BY message ORDER BY n DESC, message LIMIT 10",
    "SELECT l.host, count(*) AS n FROM logs l JOIN findings f ON l.source_ip = f.ip "
    "GROUP BY l.host ORDER BY n DESC LIMIT 10",
    f"SELECT host, count(*) AS n FROM logs WHERE message ~* '{AUTH_FAILURE}' GROUP BY host ORDER BY n DESC",
]


def concurrency(url, keys_json, seconds, clients_per_tenant):
    """Phases of SECONDS each, CLIENTS_PER_TENANT clients per organization,
    each client sending its next query as soon as the last one answered:
    `mix` (every organization light), `light alone` (the heavy
    organization idle), `with heavy` (the same light clients while the
    last organization runs HEAVY). Prints per-organization p50/p99 and
    queries/s per phase, and the light organizations' p99 with the heavy
    one against alone."""
    keys = json.loads(keys_json)
    tenants = list(keys)
    heavy_tenant = tenants[-1]

    def client(key, queries, deadline, out, offset):
        conn = connect(url)
        i = offset
        while time.perf_counter() < deadline:
            sql = queries[i % len(queries)]
            i += 1
            body = json.dumps({"sql": sql}).encode()
            t = time.perf_counter()
            try:
                conn.request("POST", "/api/sql", body=body,
                             headers={"X-API-Key": key, "Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn = connect(url)
                status = 0
            out.append((time.perf_counter() - t, status))

    def phase(name, plan):
        deadline = time.perf_counter() + seconds
        results = {t: [] for t in plan}
        threads = []
        for t, queries in plan.items():
            for c in range(clients_per_tenant):
                th = threading.Thread(target=client, args=(keys[t], queries, deadline, results[t], c))
                th.start()
                threads.append(th)
        for th in threads:
            th.join()
        summary = {}
        for t, samples in results.items():
            ok = sorted(d for d, s in samples if s == 200)
            def pct(p):
                return round(ok[min(len(ok) - 1, int(p * len(ok)))] * 1000, 1) if ok else None
            summary[t] = {"ok": len(ok), "refused": sum(1 for _, s in samples if s != 200),
                          "statuses": sorted({s for _, s in samples if s != 200}),
                          "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                          "qps": round(len(ok) / seconds, 2)}
        print(f"  {name}: {summary}", file=sys.stderr)
        return summary

    light = {t: LIGHT for t in tenants}
    phases = {"mix": phase("mix", light)}
    phases["light alone"] = phase("light alone", {t: LIGHT for t in tenants[:-1]})
    phases["with heavy"] = phase("with heavy", {**{t: LIGHT for t in tenants[:-1]}, heavy_tenant: HEAVY})
    ratios = {t: round(phases["with heavy"][t]["p99_ms"] / phases["light alone"][t]["p99_ms"], 2)
              for t in tenants[:-1]
              if phases["with heavy"][t]["p99_ms"] and phases["light alone"][t]["p99_ms"]}
    print(json.dumps({"bench": "sql-concurrency", "seconds": seconds,
                      "clients_per_tenant": clients_per_tenant, "heavy_tenant": heavy_tenant,
                      "light": LIGHT, "heavy": HEAVY, "phases": phases,
                      "p99_with_heavy_vs_alone": ratios}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "ingest-logs":
        ingest_logs(*args)
    elif cmd == "ingest-scan":
        ingest_scan(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif cmd == "bench":
        bench(args[0], args[1], args[2], args[3], int(args[4]), int(args[5]), *args[6:7])
    elif cmd == "concurrency":
        concurrency(args[0], args[1], int(args[2]), int(args[3]))
    elif cmd == "fetch":
        fetch(args[0], args[1], args[2], int(args[3]), int(args[4]), *map(int, args[5:6]))
    else:
        raise SystemExit(__doc__)
