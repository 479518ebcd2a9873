#!/usr/bin/env python3
"""Chaos soak (benches/chaos.sh): sustained load through HTTP and syslog into
the roles on Kafka with both sinks, while a seeded random schedule SIGKILLs
(then restarts) and SIGSTOPs (then SIGCONTs) the pipeline, the ingest role,
Tansu and ClickHouse. At the end, with every process up again:

- every row an HTTP client got a 2xx for is exactly once in Parquet and
  exactly once in ClickHouse (FINAL, as readers see it);
- rows of refused or unanswered requests and syslog lines are at most once
  (they may or may not have been stored: a client retries those under new
  ids, so a second copy would be a duplicate);
- `securenet usage reconcile` finds usage equal to what is stored;
- the clients got no answer but 2xx, 429 or 503 (a connection refused or
  reset while the ingest role is down is counted apart, as unanswered).

Prints one JSON report; exits 1 when any of these fails.
"""

import argparse
import collections
import datetime
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

KEY = "chaos-key-0123456789abcdef"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


class Proc:
    """A process the soak starts, kills, stops and restarts."""

    def __init__(self, name, argv, env, cwd, logdir, ready):
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.logdir, self.ready = logdir, ready
        self.p = None
        self.starts = 0

    def start(self):
        self.starts += 1
        log = open(os.path.join(self.logdir, f"{self.name}.{self.starts}.log"), "wb")
        self.p = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd,
                                  stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        if not self.ready():
            raise RuntimeError(f"{self.name} did not become ready (see {log.name})")

    def signal(self, sig):
        if self.p and self.p.poll() is None:
            os.killpg(self.p.pid, sig)

    def kill(self):
        self.signal(signal.SIGKILL)
        if self.p:
            self.p.wait()

    def running(self):
        return self.p is not None and self.p.poll() is None

    def stop_for_good(self):
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=20)
        except Exception:
            self.kill()


def http_ready(port):
    return lambda: wait_port(port, 120)


class Ledger:
    """What the clients sent and what they were told."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = set()
        self.maybe = set()  # refused or unanswered: stored at most once
        self.syslog = set()
        self.statuses = collections.Counter()
        self.unanswered = 0

    def record(self, ids, status):
        with self.lock:
            if status is None:
                self.unanswered += 1
                self.maybe.update(ids)
            else:
                self.statuses[status] += 1
                (self.acked if 200 <= status < 300 else self.maybe).update(ids)


def http_client(n, port, rate, batch, stop, ledger):
    seq = 0
    conn = None
    interval = batch / rate
    while not stop.is_set():
        started = time.time()
        ids = [f"chaos h{n}-{seq + i}" for i in range(batch)]
        seq += batch
        now = int(time.time() * 1000)
        body = "".join(json.dumps({"ts": now, "host": f"client{n}", "message": m}) + "\n" for m in ids)
        status, retry_after = None, 0.5
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", "/api/ingest/logs", body=body.encode(),
                         headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/x-ndjson"})
            r = conn.getresponse()
            r.read()
            status = r.status
            retry_after = float(r.getheader("Retry-After") or 0.5)
            if r.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            if conn is not None:
                conn.close()
            conn = None
        ledger.record(ids, status)
        if status is None or status in (429, 503):
            stop.wait(min(retry_after, 5))
        else:
            stop.wait(max(0.0, interval - (time.time() - started)))


def syslog_client(port, rate, stop, ledger):
    seq = 0
    sock = None
    while not stop.is_set():
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            lines = []
            for _ in range(max(1, rate // 10)):
                m = f"chaos s-{seq}"
                seq += 1
                stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                lines.append(f"<134>1 {stamp} chaoshost app - - - {m}\n")
                with ledger.lock:
                    ledger.syslog.add(m)
            sock.sendall("".join(lines).encode())
        except OSError:
            if sock is not None:
                sock.close()
            sock = None
            stop.wait(0.5)
            continue
        stop.wait(0.1)
    if sock is not None:
        sock.close()


def faults(procs, rng, stop, log, min_gap, max_gap):
    names = sorted(procs)
    while not stop.wait(rng.uniform(min_gap, max_gap)):
        name = rng.choice(names)
        proc = procs[name]
        action = rng.choice(["kill", "stop"])
        t0 = time.time()
        if action == "kill":
            proc.kill()
            down = rng.uniform(1, 5)
            time.sleep(down)
            try:
                proc.start()
            except RuntimeError as e:
                log.append({"at_s": round(t0, 1), "target": name, "error": str(e)})
                continue
        else:
            down = rng.uniform(1, 10)
            proc.signal(signal.SIGSTOP)
            time.sleep(down)
            proc.signal(signal.SIGCONT)
        log.append({"at_s": round(t0, 1), "target": name, "action": action,
                    "down_s": round(down, 1), "back_after_s": round(time.time() - t0, 1)})


def ch_query(url, sql):
    req = urllib.request.Request(url + "/", data=sql.encode())
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read().decode()


def counts_clickhouse(url, db, final):
    out = ch_query(url, f"SELECT message, count() FROM {db}.logs {'FINAL' if final else ''} "
                        "WHERE message LIKE 'chaos %' GROUP BY message FORMAT TabSeparated")
    c = collections.Counter()
    for line in out.splitlines():
        m, n = line.rsplit("\t", 1)
        c[m] = int(n)
    return c


def counts_parquet(lake):
    import duckdb
    files = os.path.join(lake, "logs", "**", "*.parquet")
    rows = duckdb.sql(f"SELECT message, count(*) FROM read_parquet('{files}', union_by_name=true) "
                      "WHERE message LIKE 'chaos %' GROUP BY message").fetchall()
    return collections.Counter({m: n for m, n in rows})


def check(name, counts, ledger):
    lost = [m for m in ledger.acked if counts.get(m, 0) == 0]
    dup_acked = [m for m in ledger.acked if counts.get(m, 0) > 1]
    dup_other = [m for m in ledger.maybe | ledger.syslog if counts.get(m, 0) > 1]
    unknown = [m for m in counts if m not in ledger.acked and m not in ledger.maybe and m not in ledger.syslog]
    return {
        "sink": name,
        "acknowledged_stored": len(ledger.acked) - len(lost),
        "lost": len(lost),
        "duplicated": len(dup_acked) + len(dup_other),
        "unacknowledged_stored": sum(1 for m in ledger.maybe if counts.get(m, 0) > 0),
        "syslog_stored": sum(1 for m in ledger.syslog if counts.get(m, 0) > 0),
        "unknown": len(unknown),
        "examples": (lost + dup_acked + dup_other)[:5],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bin", required=True, help="directory with the securenet binary")
    ap.add_argument("--work", required=True)
    ap.add_argument("--clickhouse-config", required=True, help="scripts/clickhouse")
    ap.add_argument("--http-rate", type=int, default=1000, help="rows/s over all HTTP clients")
    ap.add_argument("--syslog-rate", type=int, default=200, help="lines/s")
    ap.add_argument("--min-gap", type=float, default=5)
    ap.add_argument("--max-gap", type=float, default=20)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = os.path.abspath(args.work)
    logdir = os.path.join(work, "logs")
    os.makedirs(logdir, exist_ok=True)
    base_env = dict(os.environ)

    # Tansu and ClickHouse on fixed (free) ports, so restarts keep them.
    kafka_port = free_port()
    os.makedirs(os.path.join(work, "tansu"), exist_ok=True)
    tansu = Proc("tansu", ["tansu", "broker", "--listener-url", f"tcp://127.0.0.1:{kafka_port}",
                           "--advertised-listener-url", f"tcp://127.0.0.1:{kafka_port}",
                           "--storage-engine", "sqlite://tansu.db"],
                 base_env, os.path.join(work, "tansu"), logdir, http_ready(kafka_port))
    ch_dir = os.path.join(work, "clickhouse")
    os.makedirs(ch_dir, exist_ok=True)
    ch_http, ch_tcp = free_port(), free_port()
    conf = open(os.path.join(args.clickhouse_config, "config.xml")).read()
    conf = conf.replace("@DATA_DIR@", ch_dir).replace("@HTTP_PORT@", str(ch_http)).replace("@TCP_PORT@", str(ch_tcp))
    open(os.path.join(ch_dir, "config.xml"), "w").write(conf)
    open(os.path.join(ch_dir, "users.xml"), "w").write(open(os.path.join(args.clickhouse_config, "users.xml")).read())
    ch_url = f"http://127.0.0.1:{ch_http}"

    def ch_ready():
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                ch_query(ch_url, "SELECT 1")
                return True
            except Exception:
                time.sleep(0.2)
        return False

    clickhouse = Proc("clickhouse", ["clickhouse-server", f"--config-file={ch_dir}/config.xml"],
                      base_env, ch_dir, logdir, ch_ready)

    data = os.path.join(work, "data")
    ingest_port, syslog_port, pipeline_port = free_port(), free_port(), free_port()
    role_env = dict(base_env,
                    SECURENET_DATA_DIR=data,
                    SECURENET_CONTROL__DEFAULT_API_KEY=KEY,
                    SECURENET_BUS__KIND="kafka",
                    SECURENET_BUS__KAFKA__BROKERS=f"127.0.0.1:{kafka_port}",
                    SECURENET_BUS__KAFKA__TOPIC_PREFIX="chaos",
                    SECURENET_BUS__KAFKA__GROUP_ID="chaos",
                    SECURENET_PIPELINE__CLICKHOUSE__URL=ch_url,
                    SECURENET_PIPELINE__CLICKHOUSE__DATABASE="chaos",
                    # Files = batches, so DuckDB can read the lake directly.
                    SECURENET_PIPELINE__MAINTENANCE__ENABLED="false",
                    RUST_LOG=os.environ.get("CHAOS_RUST_LOG", "warn"))
    securenet = os.path.join(args.bin, "securenet")
    # Static membership (bus.kafka.group_instance_id), as docs/operations.md
    # advises: Tansu 0.6.0 never evicts a member whose session expired, so
    # after a broker pause longer than the session timeout a dynamic member
    # rejoins under a new id behind the dead leader and stays unassigned.
    pipeline = Proc("pipeline", [securenet, "pipeline"],
                    dict(role_env, SECURENET_HTTP__LISTEN=f"127.0.0.1:{pipeline_port}", SECURENET_INGEST__SYSLOG="[]",
                         SECURENET_BUS__KAFKA__GROUP_INSTANCE_ID="chaos-pipeline-0"),
                    work, logdir, http_ready(pipeline_port))
    ingest = Proc("ingest", [securenet, "ingest"],
                  dict(role_env, SECURENET_HTTP__LISTEN=f"127.0.0.1:{ingest_port}",
                       SECURENET_INGEST__SYSLOG=f'[{{name="tcp",protocol="tcp",listen="127.0.0.1:{syslog_port}",default_tenant="default"}}]'),
                  work, logdir, http_ready(ingest_port))
    procs = {"tansu": tansu, "clickhouse": clickhouse, "pipeline": pipeline, "ingest": ingest}
    try:
        for p in (tansu, clickhouse, pipeline, ingest):
            p.start()
        wait_port(syslog_port)

        ledger = Ledger()
        stop_load, stop_faults = threading.Event(), threading.Event()
        clients = 2
        threads = [threading.Thread(target=http_client, args=(n, ingest_port, args.http_rate // clients, 100, stop_load, ledger))
                   for n in range(clients)]
        threads.append(threading.Thread(target=syslog_client, args=(syslog_port, args.syslog_rate, stop_load, ledger)))
        fault_log = []
        fault_thread = threading.Thread(target=faults, args=(procs, rng, stop_faults, fault_log, args.min_gap, args.max_gap))
        started = time.time()
        for t in threads:
            t.start()
        fault_thread.start()
        time.sleep(args.minutes * 60)
        stop_faults.set()
        fault_thread.join()
        # Everything up again (a fault never leaves a process stopped).
        for p in procs.values():
            p.signal(signal.SIGCONT)
            if not p.running():
                p.start()
        stop_load.set()
        for t in threads:
            t.join()
        load_secs = time.time() - started

        # Drain: until both sinks hold every acknowledged row, or 10 minutes.
        lake = os.path.join(data, "lake")
        deadline = time.time() + 600
        while True:
            pq, chf = counts_parquet(lake), counts_clickhouse(ch_url, "chaos", True)
            missing = sum(1 for m in ledger.acked if pq.get(m, 0) == 0 or chf.get(m, 0) == 0)
            if missing == 0 or time.time() > deadline:
                break
            time.sleep(5)
        time.sleep(10)  # the syslog and refused rows still in flight
        pq, chf = counts_parquet(lake), counts_clickhouse(ch_url, "chaos", True)
        ch_raw = counts_clickhouse(ch_url, "chaos", False)

        month = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m")
        rec = subprocess.run([securenet, "usage", "reconcile", "--org", "default", "--month", month,
                              "--settle-secs", "0", "--json"],
                             env=dict(role_env, RUST_LOG="error"), capture_output=True, text=True, timeout=600)
        try:
            reconcile = json.loads(rec.stdout)
        except ValueError:
            reconcile = {"stdout": rec.stdout[-2000:], "stderr": rec.stderr[-2000:]}

        bad_statuses = {s: n for s, n in ledger.statuses.items() if not (200 <= s < 300 or s in (429, 503))}
        faults_by = collections.Counter(f"{f['target']}:{f['action']}" for f in fault_log if "action" in f)
        restart_errors = [f for f in fault_log if "error" in f]
        parquet = check("parquet", pq, ledger)
        clickhouse_check = check("clickhouse", chf, ledger)
        report = {
            "minutes": args.minutes,
            "seed": args.seed,
            "load_seconds": round(load_secs),
            "faults_injected": sum(faults_by.values()),
            "restart_errors": restart_errors,
            "faults": dict(sorted(faults_by.items())),
            "http_requests": dict(sorted((str(k), v) for k, v in ledger.statuses.items())),
            "http_unanswered": ledger.unanswered,
            "rows_acknowledged": len(ledger.acked),
            "rows_refused_or_unanswered": len(ledger.maybe),
            "syslog_lines_sent": len(ledger.syslog),
            "parquet": parquet,
            "clickhouse": clickhouse_check,
            "clickhouse_rows_before_merge_duplicated": sum(1 for n in ch_raw.values() if n > 1),
            "usage_reconcile_exit": rec.returncode,
            "usage_reconcile": reconcile if rec.returncode != 0 else "equal",
            "bad_statuses": bad_statuses,
            "fault_schedule": fault_log,
        }
        print(json.dumps(report, indent=1))
        ok = (parquet["lost"] == 0 and parquet["duplicated"] == 0 and clickhouse_check["lost"] == 0
              and clickhouse_check["duplicated"] == 0 and rec.returncode == 0 and not bad_statuses
              and len(ledger.acked) > 0)
        return 0 if ok else 1
    finally:
        for p in (ingest, pipeline, clickhouse, tansu):
            p.stop_for_good()


if __name__ == "__main__":
    sys.exit(main())
