# Shared by scripts/test.sh and benches/scaleout.sh (sourced): free ports,
# and Tansu and ClickHouse started in a private directory on free ports.
# `start_*` append the server's pid to the array named by their second
# argument (the caller's cleanup list) before waiting for it.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { # port name
  for _ in $(seq 1 200); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "$2 did not open port $1" >&2; exit 1
}

start_tansu() { # dir pids-array → sets KAFKA_BROKERS
  # TANSU_STORAGE (default sqlite://tansu.db) and TANSU_BIN (default tansu)
  # let benches/scaleout.sh compare Tansu's storage engines; the memory,
  # s3 and postgres engines need a Tansu built with the `dynostore` and
  # `postgres` cargo features.
  local -n pids=$2
  local port; port=$(free_port)
  # Tansu resolves the sqlite URL's path relative to its working directory.
  (cd "$1" && exec "${TANSU_BIN:-tansu}" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "${TANSU_STORAGE:-sqlite://tansu.db}" > tansu.log 2>&1) &
  pids+=($!)
  wait_port "$port" tansu
  KAFKA_BROKERS="127.0.0.1:$port"
}

start_clickhouse() { # dir pids-array → sets CLICKHOUSE_URL, CLICKHOUSE_VERSION
  local -n pids=$2
  local dir=$1 http tcp
  mkdir -p "$dir"
  http=$(free_port); tcp=$(free_port)
  sed -e "s|@DATA_DIR@|$dir|g" -e "s|@HTTP_PORT@|$http|" -e "s|@TCP_PORT@|$tcp|" \
    scripts/clickhouse/config.xml > "$dir/config.xml"
  cp scripts/clickhouse/users.xml "$dir/users.xml"
  clickhouse-server --config-file="$dir/config.xml" > "$dir/server.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$http/?query=SELECT%201" >/dev/null 2>&1 && break
    sleep 0.1
  done
  CLICKHOUSE_VERSION=$(curl -sf "http://127.0.0.1:$http/?query=SELECT%20version()") || {
    echo "clickhouse-server did not start:" >&2; tail -20 "$dir/server.log" >&2; exit 1; }
  CLICKHOUSE_URL="http://127.0.0.1:$http"
}

start_receivers() { # dir pids-array python → sets RECEIVER_HTTP, RECEIVER_SMTP
  local -n pids=$2
  rm -f "$1/receivers.ports"
  "$3" scripts/receivers.py "$1/receivers.ports" > "$1/receivers.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do [ -s "$1/receivers.ports" ] && break; sleep 0.1; done
  [ -s "$1/receivers.ports" ] || { echo "receivers did not start:" >&2; cat "$1/receivers.log" >&2; exit 1; }
  local http smtp
  read -r http smtp < "$1/receivers.ports"
  RECEIVER_HTTP="http://127.0.0.1:$http"
  RECEIVER_SMTP="127.0.0.1:$smtp"
}

start_moto() { # dir pids-array python → sets S3_ENDPOINT, S3_BUCKET
  # moto's S3 API server (PyPI, pinned in the venv; state in memory):
  # a real S3 protocol endpoint for the lake, with conditional writes.
  local -n pids=$2
  local port; port=$(free_port)
  "$3" -m moto.server -H 127.0.0.1 -p "$port" > "$1/moto.log" 2>&1 &
  pids+=($!)
  wait_port "$port" moto
  S3_ENDPOINT="http://127.0.0.1:$port"
  S3_BUCKET=securenet-test
  "$3" - "$S3_ENDPOINT" "$S3_BUCKET" <<'PY'
import sys, boto3
endpoint, bucket = sys.argv[1], sys.argv[2]
boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
             aws_access_key_id="test", aws_secret_access_key="test").create_bucket(Bucket=bucket)
PY
}

S3S_VERSION=0.14.1
start_s3s() { # dir pids-array → sets S3_ENDPOINT, S3_BUCKET
  # s3s-fs (crates.io): an S3 API server in Rust over a directory, a bucket
  # per subdirectory. benches/scaleout.sh runs the share-nothing shape
  # against it beside moto, whose Python takes ~0.3 s of CPU per run on
  # the cores the bench measures. Installed with cargo on first use.
  local -n pids=$2
  if ! command -v s3s-fs >/dev/null 2>&1 || ! s3s-fs --version 2>/dev/null | grep -q "$S3S_VERSION"; then
    echo "installing s3s-fs $S3S_VERSION (once; about 6 minutes on 2 cores)" >&2
    env -u CARGO_TARGET_DIR cargo install s3s-fs --locked --version "$S3S_VERSION" --features binary -q >&2
  fi
  local port; port=$(free_port)
  S3_BUCKET=securenet-test
  mkdir -p "$1/$S3_BUCKET"
  RUST_LOG=error s3s-fs --host 127.0.0.1 --port "$port" --access-key test --secret-key test "$1" > "$1.log" 2>&1 &
  pids+=($!)
  wait_port "$port" s3s-fs
  S3_ENDPOINT="http://127.0.0.1:$port"
}

postgres_bin() { # the newest PostgreSQL server's bin directory, or nothing
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)"
}

start_postgres() { # dir stop-commands-array → sets POSTGRES_URL
  # A private PostgreSQL cluster in a directory of its own on a free port:
  # trust authentication, on 127.0.0.1 only, fsync off (a test cluster
  # thrown away at the end). The server refuses to run as root, so as root
  # it runs as the `postgres` user, on a directory that user owns.
  local -n _pg_stops=$2
  local dir=$1 bin port as=()
  bin=$(postgres_bin)
  port=$(free_port)
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chmod 755 "$dir"
    chown postgres "$dir"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 > "$dir/initdb.log" 2>&1 || {
    echo "initdb failed:" >&2; cat "$dir/initdb.log" >&2; exit 1; }
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400" \
    start > /dev/null || { echo "postgres did not start:" >&2; tail -20 "$dir/server.log" >&2; exit 1; }
  _pg_stops+=("${as[*]} $bin/pg_ctl -D $dir/data -m fast -w stop")
  POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

