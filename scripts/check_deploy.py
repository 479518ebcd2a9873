#!/usr/bin/env python3
"""Static checks of deploy/ against the real `securenet` binary.

Usage: check_deploy.py SECURENET_BINARY METRICS_DUMP [METRICS_DUMP ...]
                       [--deploy-dir DIR]

Docker and Kubernetes cannot run here, so what they would run is checked
against its source of truth instead:

- every YAML file under deploy/ parses (all documents), every JSON file too;
- every `securenet` subcommand and flag in the compose files, the Kubernetes
  manifests and the Dockerfile appears in that subcommand's `--help`;
- every SECURENET_* variable they set (compose `environment`, Kubernetes
  `env`/`envFrom` with ConfigMaps and Secrets, Dockerfile `ENV`) names a real
  configuration key, and every container's whole configuration (its config
  file and variables, as the container would see them) is accepted by
  `securenet config` — the binary's own loader, which rejects unknown keys
  and bad values. The key list is the one `securenet config` prints; keys it
  omits because they are unset by default (`control.database`, …) are
  checked by running `securenet config` with the variable set;
- every metric in the Prometheus rules and the Grafana dashboards exists in
  the /metrics dump(s) (a histogram `x` provides `x_bucket`, `x_sum`,
  `x_count`), and every label a selector matches on exists on that metric;
  metrics that do not come from SecureNet must be listed in EXTERNAL_METRICS;
- Grafana panels use a provisioned datasource; Kubernetes probes point at
  /api/metrics/health on the port the configuration listens on; Services,
  PodDisruptionBudgets and HorizontalPodAutoscalers select existing
  Deployments.

Exits 1 and lists every problem when anything is off. Python 3.11+ (tomllib)
and PyYAML.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# Metrics the rules and dashboards may use that SecureNet does not export,
# with where they come from. Anything else must be in the /metrics dump.
EXTERNAL_METRICS = {
    "up": "Prometheus, per scrape target",
    "kafka_consumergroup_lag": "kafka-exporter (deploy/docker-compose.yml)",
}
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}
# Labels of external metrics (for the selector check).
EXTERNAL_LABELS = {
    "up": set(),
    "kafka_consumergroup_lag": {"consumergroup", "topic", "partition"},
}
HEALTH_PATH = "/api/metrics/health"


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")


# ---------------------------------------------------------------- binary


class Binary:
    """The securenet CLI: subcommands, flags and configuration keys."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._help: dict[tuple[str, ...], tuple[set[str], set[str]]] = {}
        self.config_keys, self.open_maps, self.defaults = self._config_keys()

    def _run(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
        base.update(env or {})
        return subprocess.run([self.path, *args], capture_output=True, text=True, env=base, timeout=60)

    def help(self, words: tuple[str, ...]) -> tuple[set[str], set[str]] | None:
        """(subcommands, flags) of `securenet WORDS --help`, None if unknown."""
        if words not in self._help:
            out = self._run([*words, "--help"])
            if out.returncode != 0:
                self._help[words] = None  # type: ignore[assignment]
            else:
                self._help[words] = parse_help(out.stdout)
        return self._help[words]

    def _config_keys(self) -> tuple[set[str], set[str], dict[str, object]]:
        out = self._run(["config"])
        if out.returncode != 0:
            sys.exit(f"`{self.path} config` failed: {out.stderr.strip()}")
        keys: set[str] = set()
        open_maps: set[str] = set()
        defaults: dict[str, object] = {}

        def walk(prefix: str, table: dict) -> None:
            for k, v in table.items():
                path = f"{prefix}.{k}" if prefix else k
                if isinstance(v, dict):
                    if not v:
                        open_maps.add(path)  # e.g. bus.kafka.options: any key
                    keys.add(path)
                    walk(path, v)
                else:
                    keys.add(path)
                    defaults[path] = v

        walk("", tomllib.loads(out.stdout))
        return keys, open_maps, defaults

    def check_config(self, env: dict[str, str], config_file: str | None) -> str | None:
        """Runs `securenet config` as a container would; the error or None."""
        args = ["config"]
        if config_file:
            args += ["--config", config_file]
        out = self._run(args, env)
        if out.returncode != 0:
            return (out.stderr.strip() or out.stdout.strip()).replace("securenet: ", "")
        return None


def parse_help(text: str) -> tuple[set[str], set[str]]:
    """Subcommands and flags of a clap `--help` page."""
    subcommands: set[str] = set()
    flags: set[str] = set()
    section = None
    for line in text.splitlines():
        if re.match(r"^[A-Z][\w ]*:$", line):
            section = line[:-1]
            continue
        if section == "Commands":
            m = re.match(r"^  (\S+)", line)
            if m:
                subcommands.add(m.group(1))
        elif section == "Options":
            # `  -c, --config <CONFIG>  text` or `      --rows <ROWS>  text`:
            # only the part before the description names flags.
            m = re.match(r"^\s+((?:-\w, )?--?[\w-]+(?:[ =]<[^>]+>)?(?:\.\.\.)?)", line)
            if m:
                flags.update(re.findall(r"--?[\w-]+", m.group(1)))
    return subcommands, flags


def check_invocation(binary: Binary, argv: list[str], where: str, problems: Problems) -> None:
    """argv without the program name: `ingest --config /x.toml`."""
    words: tuple[str, ...] = ()
    i = 0
    # Subcommands first (any depth: `keys create`), then flags and values.
    while i < len(argv) and not argv[i].startswith("-"):
        info = binary.help(words)
        if info is None:
            break
        subs, _ = info
        if not subs:
            break  # a positional argument (e.g. a query)
        if argv[i] not in subs:
            problems.add(where, f"`securenet {' '.join(words + (argv[i],))}`: no such subcommand (known: {', '.join(sorted(subs - {'help'}))})")
            return
        words += (argv[i],)
        i += 1
    info = binary.help(words)
    if info is None:
        problems.add(where, f"`securenet {' '.join(words)} --help` fails")
        return
    if not words:
        problems.add(where, f"`securenet {' '.join(argv)}` names no subcommand")
    _, flags = info
    global_flags = binary.help(())[1]  # type: ignore[index]
    for arg in argv[i:]:
        if not arg.startswith("-") or arg == "-":
            continue
        name = arg.split("=", 1)[0]
        if name not in flags and name not in global_flags:
            problems.add(where, f"`securenet {' '.join(words)}` has no flag {name} (it has: {', '.join(sorted(f for f in flags if f.startswith('--')))})")


def config_path_of(var: str) -> list[str] | None:
    if not var.startswith("SECURENET_") or var == "SECURENET_CONFIG":
        return None
    return var[len("SECURENET_"):].lower().split("__")


def check_env_name(binary: Binary, var: str, value: str, where: str, problems: Problems) -> None:
    path = config_path_of(var)
    if path is None:
        return
    dotted = ".".join(path)
    if dotted in binary.config_keys:
        return
    for i in range(1, len(path)):
        if ".".join(path[:i]) in binary.open_maps:
            return
    # Keys unset by default are not printed: ask the loader itself.
    if not value or "${" in value:
        value = placeholder(binary, dotted)
    err = binary.check_config({var: value}, None)
    if err is None:
        return
    problems.add(where, f"{var} is not a SecureNet setting ({dotted}): {err or 'not in `securenet config`'}")


def placeholder(binary: Binary, dotted: str) -> str:
    """A stand-in for a value only known at deploy time (a secret)."""
    default = binary.defaults.get(dotted)
    if isinstance(default, bool):
        return "true"
    if isinstance(default, int):
        return "1"
    return "deploy-time-secret-placeholder-0001"


# ---------------------------------------------------------------- metrics


@dataclass
class Metrics:
    names: set[str] = field(default_factory=set)
    labels: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, paths: list[str]) -> "Metrics":
        m = cls()
        types: dict[str, str] = {}
        for p in paths:
            for line in Path(p).read_text().splitlines():
                if line.startswith("# TYPE "):
                    _, _, name, kind = line.split(None, 3)
                    types[name] = kind.strip()
                    continue
                if not line or line.startswith("#"):
                    continue
                mt = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*?)\})?\s", line)
                if not mt:
                    continue
                name = mt.group(1)
                m.names.add(name)
                labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', mt.group(3) or ""))
                m.labels.setdefault(name, set()).update(labels)
        # A histogram/summary family is usable by its own name in metadata
        # queries; the samples carry the suffixes.
        for name, kind in types.items():
            if kind in ("histogram", "summary"):
                m.names.add(name)
                base = set()
                for suffix in ("_bucket", "_sum", "_count", ""):
                    base |= m.labels.get(name + suffix, set())
                m.labels.setdefault(name, set()).update(base - {"le", "quantile"})
        if not any(n.startswith("securenet_") for n in m.names):
            sys.exit(f"no securenet_* metric in {', '.join(paths)}: not a SecureNet /metrics dump")
        return m


PROMQL_FUNCTIONS_AND_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan", "atan2", "start", "end",
}


def promql_selectors(expr: str) -> list[tuple[str, set[str], set[str]]]:
    """[(metric, matcher labels, grouping labels)] of a PromQL expression.

    A tokenizer, not a parser: strings, ranges and durations are removed,
    identifiers followed by `(` are functions, grouping clauses give labels.
    """
    # Grafana variables and macros.
    e = re.sub(r"\$__\w+|\$\{?\w+\}?", "x", expr)
    strings: list[str] = []
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', lambda m: (strings.append(m.group(0)), '""')[1], e)
    e = re.sub(r"\[[^\]]*\]", " ", e)  # range / subquery
    grouping: set[str] = set()

    def take_grouping(m: re.Match) -> str:
        grouping.update(x.strip() for x in m.group(2).split(",") if x.strip())
        return " "

    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", take_grouping, e)
    out = []
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?(\s*\()?", e):
        name, matchers, call = m.group(1), m.group(2), m.group(3)
        start = m.start()
        if call or name.lower() in PROMQL_FUNCTIONS_AND_KEYWORDS:
            continue
        if start > 0 and (e[start - 1].isdigit() or e[start - 1] == "."):
            continue  # 5m, 1e3
        if re.fullmatch(r"\d+[smhdwy]", name):
            continue
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers or ""))
        out.append((name, labels, grouping))
    # `{__name__="x"}` selectors.
    for s in re.findall(r'__name__\s*=\s*"([^"]+)"', expr):
        out.append((s, set(), grouping))
    return out


def check_expr(expr: str, metrics: Metrics, where: str, problems: Problems) -> None:
    selectors = promql_selectors(expr)
    if not selectors:
        problems.add(where, f"no metric found in expression {expr!r}")
    known_labels: set[str] = set(TARGET_LABELS) | {"le"}
    for name, _, _ in selectors:
        known_labels |= metrics.labels.get(name, set()) | EXTERNAL_LABELS.get(name, set())
    for name, labels, grouping in selectors:
        if name in EXTERNAL_METRICS:
            allowed = EXTERNAL_LABELS[name] | TARGET_LABELS
        elif name in metrics.names:
            allowed = metrics.labels.get(name, set()) | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
        else:
            hint = ""
            family = re.sub(r"_(bucket|sum|count|total)$", "", name)
            close = sorted(n for n in metrics.names if n.startswith(family[: max(12, len(family) - 6)]))[:3]
            if close:
                hint = f" (did you mean {', '.join(close)}?)"
            problems.add(where, f"metric {name} is not exported by securenet{hint}")
            continue
        for label in labels - {"__name__"}:
            if label not in allowed:
                problems.add(where, f"{name} has no label {label!r} (it has: {', '.join(sorted(allowed)) or 'none'})")
    if any(n not in metrics.names and n not in EXTERNAL_METRICS for n, _, _ in selectors):
        return  # already reported; its labels are unknown
    for label in set().union(*(g for _, _, g in selectors)) if selectors else set():
        if label not in known_labels:
            problems.add(where, f"grouping label {label!r} is on none of the metrics of {expr!r}")


def check_rules(doc: dict, metrics: Metrics, where: str, problems: Problems) -> int:
    n = 0
    for group in doc.get("groups") or []:
        for rule in group.get("rules") or []:
            name = rule.get("alert") or rule.get("record") or "?"
            check_expr(str(rule.get("expr", "")), metrics, f"{where} rule {name}", problems)
            n += 1
    return n


def dashboard_panels(panels: list) -> list[dict]:
    out = []
    for p in panels or []:
        out.append(p)
        out.extend(dashboard_panels(p.get("panels") or []))
    return out


def check_dashboard(path: Path, metrics: Metrics, datasource_uids: set[str], problems: Problems) -> int:
    dash = json.loads(path.read_text())
    n = 0

    def ds_uid(ds) -> str | None:
        if isinstance(ds, dict):
            return ds.get("uid")
        return ds

    for var in (dash.get("templating") or {}).get("list") or []:
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if var.get("type") == "query" and q:
            uid = ds_uid(var.get("datasource"))
            if uid and uid not in datasource_uids:
                problems.add(f"{path} variable {var.get('name')}", f"datasource uid {uid!r} is not provisioned")
            m = re.match(r"\s*label_values\((.*),\s*(\w+)\)\s*$", q)
            check_expr(m.group(1) if m else q, metrics, f"{path} variable {var.get('name')}", problems)
    for p in dashboard_panels(dash.get("panels") or []):
        if p.get("type") == "row":
            continue
        title = p.get("title", "?")
        targets = p.get("targets") or []
        if not targets:
            problems.add(f"{path} panel {title!r}", "has no query")
        for t in targets:
            uid = ds_uid(t.get("datasource") or p.get("datasource"))
            if uid not in datasource_uids:
                problems.add(f"{path} panel {title!r}", f"datasource uid {uid!r} is not provisioned (have: {', '.join(sorted(datasource_uids))})")
            if "expr" not in t:
                problems.add(f"{path} panel {title!r}", "target without a PromQL expr")
                continue
            check_expr(t["expr"], metrics, f"{path} panel {title!r}", problems)
            n += 1
    return n


# ---------------------------------------------------------------- deploy files


@dataclass
class Container:
    """What one securenet container would run with."""
    where: str
    argv: list[str]
    env: dict[str, str]
    config_text: str | None  # the file behind --config / SECURENET_CONFIG


def load_yaml_files(root: Path, problems: Problems) -> dict[Path, list]:
    docs: dict[Path, list] = {}
    for path in sorted(list(root.rglob("*.yml")) + list(root.rglob("*.yaml"))):
        try:
            docs[path] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            problems.add(str(path), f"invalid YAML: {e}")
    for path in sorted(root.rglob("*.json")):
        try:
            json.loads(path.read_text())
        except json.JSONDecodeError as e:
            problems.add(str(path), f"invalid JSON: {e}")
    return docs


@dataclass
class Image:
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    files: dict[str, Path]  # path in the image -> file in the repository


def parse_dockerfile(path: Path, repo: Path, problems: Problems) -> Image:
    text = re.sub(r"\\\n", " ", path.read_text())
    image = Image([], [], {}, {})
    stage_final = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            # Only the last stage is the image.
            stage_final = True
            image = Image([], [], {}, {})
        if not stage_final:
            continue
        if word in ("ENTRYPOINT", "CMD"):
            try:
                value = json.loads(rest)
            except json.JSONDecodeError:
                value = shlex.split(rest)
            if word == "ENTRYPOINT":
                image.entrypoint = value
            else:
                image.cmd = value
        elif word == "ENV":
            for tok in shlex.split(rest):
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    image.env[k] = v
        elif word == "COPY" and "--from" not in rest:
            parts = shlex.split(rest)
            srcs, dest = parts[:-1], parts[-1]
            for s in srcs:
                src = repo / s
                if not src.exists():
                    problems.add(str(path), f"COPY source {s} does not exist")
                elif src.is_file():
                    target = dest if not dest.endswith("/") else dest + src.name
                    image.files[target] = src
    if image.entrypoint[:1] != ["securenet"]:
        problems.add(str(path), f"ENTRYPOINT is {image.entrypoint}, expected [\"securenet\"]")
    return image


def interpolate(value: str, where: str, problems: Problems) -> str:
    """Compose `${VAR:-default}` / `${VAR:?err}` / `$VAR` as deploy time would."""

    def repl(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if op in (":-", "-"):
            return arg or ""
        return f"${{{name}}}"  # required / plain: a deploy-time value

    return re.sub(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}", repl, str(value))


def compose_env(env, where: str, problems: Problems) -> dict[str, str]:
    if env is None:
        return {}
    if isinstance(env, list):
        out = {}
        for item in env:
            k, _, v = str(item).partition("=")
            out[k] = v
        env = out
    return {str(k): interpolate("" if v is None else str(v), where, problems) for k, v in env.items()}


def compose_containers(path: Path, doc: dict, image: Image, problems: Problems) -> list[Container]:
    out = []
    for name, svc in (doc.get("services") or {}).items():
        build = svc.get("build")
        dockerfile = (build or {}).get("dockerfile", "") if isinstance(build, dict) else ""
        ours = dockerfile.endswith("deploy/Dockerfile") or "securenet" in str(svc.get("image", ""))
        if not ours:
            continue
        where = f"{path} service {name}"
        entry = svc.get("entrypoint", image.entrypoint)
        cmd = svc.get("command", image.cmd)
        entry = shlex.split(entry) if isinstance(entry, str) else list(entry)
        cmd = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        argv = entry + cmd
        env = dict(image.env)
        env.update(compose_env(svc.get("environment"), where, problems))
        config_text = None
        cfg = config_arg(argv) or env.get("SECURENET_CONFIG")
        if cfg:
            mounted = None
            for vol in svc.get("volumes") or []:
                if isinstance(vol, str) and vol.count(":") >= 1:
                    src, dest = vol.split(":")[:2]
                    if dest == cfg and (src.startswith(".") or src.startswith("/")):
                        mounted = (path.parent / src).resolve()
            if mounted:
                if not mounted.is_file():
                    problems.add(where, f"config file {mounted} mounted at {cfg} does not exist")
                else:
                    config_text = mounted.read_text()
            elif cfg in image.files:
                config_text = image.files[cfg].read_text()
            else:
                problems.add(where, f"config file {cfg} is neither mounted nor in the image")
        out.append(Container(where, argv, env, config_text))
    return out


def config_arg(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a in ("--config", "-c") and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


K8S_WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "Pod", "ReplicaSet"}


def pod_spec(doc: dict) -> dict | None:
    kind = doc.get("kind")
    if kind == "Pod":
        return doc.get("spec")
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind in K8S_WORKLOADS:
        return ((doc.get("spec") or {}).get("template") or {}).get("spec")
    return None


def k8s_containers(docs: list[tuple[Path, dict]], image: Image, problems: Problems) -> list[Container]:
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for _, d in docs if d.get("kind") == "ConfigMap"}
    secrets = {}
    for _, d in docs:
        if d.get("kind") == "Secret":
            data = dict(d.get("stringData") or {})
            secrets[d["metadata"]["name"]] = data
    out = []
    for path, d in docs:
        spec = pod_spec(d)
        if not spec:
            continue
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            if "securenet" not in str(c.get("image", "")).split(":")[0].split("/")[-1]:
                continue
            where = f"{path} {d['kind']} {d['metadata']['name']} container {c['name']}"
            argv = list(c.get("command") or image.entrypoint) + list(c.get("args") or ([] if c.get("command") else image.cmd))
            env = dict(image.env)
            for src in c.get("envFrom") or []:
                if "configMapRef" in src:
                    name = src["configMapRef"]["name"]
                    if name not in configmaps:
                        problems.add(where, f"envFrom ConfigMap {name} is not defined under deploy/")
                    env.update({src.get("prefix", "") + k: str(v) for k, v in configmaps.get(name, {}).items()})
                if "secretRef" in src:
                    name = src["secretRef"]["name"]
                    if name not in secrets:
                        problems.add(where, f"envFrom Secret {name} is not defined under deploy/ (not even as an example)")
                    env.update({src.get("prefix", "") + k: str(v) for k, v in secrets.get(name, {}).items()})
            for e in c.get("env") or []:
                if "value" in e:
                    env[e["name"]] = str(e["value"])
                elif "valueFrom" in e:
                    vf = e["valueFrom"]
                    ref = vf.get("secretKeyRef") or vf.get("configMapKeyRef")
                    store = secrets if "secretKeyRef" in vf else configmaps
                    if ref:
                        if ref["name"] not in store or ref["key"] not in store[ref["name"]]:
                            problems.add(where, f"{e['name']}: {ref['name']}/{ref['key']} is not defined under deploy/ (not even as an example)")
                        env[e["name"]] = str(store.get(ref["name"], {}).get(ref["key"], ""))
                    else:
                        env[e["name"]] = ""
            config_text = None
            cfg = config_arg(argv) or env.get("SECURENET_CONFIG")
            if cfg:
                mounted = False
                for m in c.get("volumeMounts") or []:
                    vol = volumes.get(m["name"], {})
                    mp = m["mountPath"].rstrip("/")
                    if cfg == mp or cfg.startswith(mp + "/"):
                        mounted = True
                        if "configMap" not in vol:
                            problems.add(where, f"{cfg} is on volume {m['name']}, which is not a ConfigMap")
                            continue
                        key = m.get("subPath") or cfg[len(mp) + 1:]
                        cm = vol["configMap"]["name"]
                        if key not in configmaps.get(cm, {}):
                            problems.add(where, f"{cfg}: ConfigMap {cm} has no key {key}")
                        else:
                            config_text = configmaps[cm][key]
                if not mounted:
                    if cfg in image.files:
                        config_text = image.files[cfg].read_text()
                    else:
                        problems.add(where, f"config file {cfg} is neither mounted from a ConfigMap nor in the image")
            out.append(Container(where, argv, env, config_text))
            check_probes(c, config_text, env, where, problems)
    return out


def http_port(config_file: Path | None) -> int:
    """The port of http.listen in a TOML file (8080, the default's, if unset)."""
    if config_file is None:
        return 8080
    listen = (tomllib.loads(config_file.read_text()).get("http") or {}).get("listen", "127.0.0.1:8080")
    return int(str(listen).rsplit(":", 1)[1])


def check_probes(c: dict, config_text: str | None, env: dict[str, str], where: str, problems: Problems) -> None:
    port = 8080
    listen = env.get("SECURENET_HTTP__LISTEN")
    if not listen and config_text:
        try:
            listen = (tomllib.loads(config_text).get("http") or {}).get("listen")
        except tomllib.TOMLDecodeError:
            listen = None
    if listen:
        port = int(str(listen).rsplit(":", 1)[1])
    names = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    if port not in names.values():
        problems.add(where, f"http.listen port {port} is not a containerPort ({sorted(v for v in names.values() if v)})")
    for probe in ("livenessProbe", "readinessProbe"):
        p = c.get(probe)
        if not p:
            problems.add(where, f"no {probe}")
            continue
        get = p.get("httpGet") or {}
        if get.get("path") != HEALTH_PATH:
            problems.add(where, f"{probe} path is {get.get('path')!r}, expected {HEALTH_PATH}")
        pp = get.get("port")
        if names.get(pp, pp) != port:
            problems.add(where, f"{probe} port {pp!r} is not the HTTP port {port}")
    if not (c.get("resources") or {}).get("requests"):
        problems.add(where, "no resource requests (the HPA's utilization needs them)")


def check_k8s_structure(docs: list[tuple[Path, dict]], problems: Problems) -> None:
    workloads = {(d.get("kind"), d["metadata"]["name"]): d for _, d in docs if d.get("kind") in K8S_WORKLOADS}
    pod_labels = [((d.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {} for d in workloads.values()]

    def selects(selector: dict) -> bool:
        return any(all(labels.get(k) == v for k, v in selector.items()) for labels in pod_labels)

    for path, d in docs:
        kind, name = d.get("kind"), (d.get("metadata") or {}).get("name")
        where = f"{path} {kind} {name}"
        if kind == "Service" and d["spec"].get("selector") and not selects(d["spec"]["selector"]):
            problems.add(where, "selects no pod template")
        if kind == "PodDisruptionBudget" and not selects(d["spec"]["selector"].get("matchLabels") or {}):
            problems.add(where, "selects no pod template")
        if kind == "HorizontalPodAutoscaler":
            ref = d["spec"]["scaleTargetRef"]
            if (ref["kind"], ref["name"]) not in workloads:
                problems.add(where, f"scales {ref['kind']} {ref['name']}, which is not defined")
        if kind in ("Deployment", "StatefulSet"):
            sel = d["spec"]["selector"].get("matchLabels") or {}
            labels = d["spec"]["template"]["metadata"].get("labels") or {}
            if any(labels.get(k) != v for k, v in sel.items()):
                problems.add(where, "selector does not match its own pod template")


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", help="the securenet binary")
    ap.add_argument("metrics", nargs="+", help="/metrics exposition(s) of running securenet processes")
    ap.add_argument("--deploy-dir", default=str(Path(__file__).resolve().parent.parent / "deploy"))
    args = ap.parse_args()

    deploy = Path(args.deploy_dir).resolve()
    repo = deploy.parent
    problems = Problems()
    binary = Binary(args.binary)
    metrics = Metrics.load(args.metrics)
    docs = load_yaml_files(deploy, problems)
    image = parse_dockerfile(deploy / "Dockerfile", repo, problems)
    counts = {"invocations": 0, "variables": 0, "rules": 0, "panels": 0, "configs": 0}

    containers: list[Container] = [Container(f"{deploy / 'Dockerfile'} (CMD)", image.entrypoint + image.cmd, dict(image.env),
                                             image.files[image.env["SECURENET_CONFIG"]].read_text() if image.env.get("SECURENET_CONFIG") in image.files else None)]
    if image.env.get("SECURENET_CONFIG") and image.env["SECURENET_CONFIG"] not in image.files:
        problems.add(str(deploy / "Dockerfile"), f"SECURENET_CONFIG={image.env['SECURENET_CONFIG']} but no file is copied there")
    k8s_docs: list[tuple[Path, dict]] = []
    for path, ds in docs.items():
        for d in ds:
            if not isinstance(d, dict):
                continue
            if "services" in d and path.name.startswith("docker-compose"):
                containers += compose_containers(path, d, image, problems)
            elif "apiVersion" in d and "kind" in d and "metadata" in d:
                k8s_docs.append((path, d))
            elif "groups" in d:
                counts["rules"] += check_rules(d, metrics, str(path), problems)
    containers += k8s_containers(k8s_docs, image, problems)
    check_k8s_structure(k8s_docs, problems)

    # Every ConfigMap TOML the binary would read.
    for path, d in k8s_docs:
        if d.get("kind") == "ConfigMap":
            for key, text in (d.get("data") or {}).items():
                if key.endswith(".toml"):
                    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
                        f.write(text)
                        f.flush()
                        err = binary.check_config({}, f.name)
                    counts["configs"] += 1
                    if err:
                        problems.add(f"{path} ConfigMap {d['metadata']['name']} {key}", err)

    for c in containers:
        check_invocation(binary, c.argv[1:] if c.argv[:1] == ["securenet"] else c.argv, c.where, problems)
        counts["invocations"] += 1
        for var, value in c.env.items():
            if var.startswith("SECURENET_"):
                check_env_name(binary, var, value, c.where, problems)
                counts["variables"] += 1
        # The whole configuration, as the container's process would load it.
        env = {k: (v if "${" not in v else placeholder(binary, ".".join(config_path_of(k) or [])))
               for k, v in c.env.items() if k.startswith("SECURENET_") and k != "SECURENET_CONFIG"}
        cfg_file = None
        try:
            if c.config_text is not None:
                cfg_file = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
                cfg_file.write(c.config_text)
                cfg_file.close()
            err = binary.check_config(env, cfg_file.name if cfg_file else None)
            counts["configs"] += 1
            if err:
                problems.add(c.where, f"`securenet config` rejects this container's configuration: {err}")
        finally:
            if cfg_file:
                os.unlink(cfg_file.name)

    # Prometheus scrapes what compose runs, on the port the roles listen on.
    compose_services: set[str] = set()
    for path, ds in docs.items():
        if path.name == "docker-compose.yml":
            for d in ds:
                compose_services |= set((d.get("services") or {}).keys())
    image_port = http_port(image.files.get(image.env.get("SECURENET_CONFIG", ""), None))
    for path, ds in docs.items():
        for d in ds:
            if isinstance(d, dict) and "scrape_configs" in d and compose_services:
                for job in d["scrape_configs"]:
                    targets = [(h, p) for sd in job.get("dns_sd_configs") or [] for h in sd.get("names") or [] for p in [sd.get("port")]]
                    targets += [tuple(t.rsplit(":", 1)) for sc in job.get("static_configs") or [] for t in sc.get("targets") or []]
                    for host, port in targets:
                        if host not in compose_services and host != "localhost":
                            problems.add(f"{path} job {job.get('job_name')}", f"scrapes {host}, which is not a service of docker-compose.yml")
                        elif job.get("job_name", "").startswith("securenet") and int(port) != image_port:
                            problems.add(f"{path} job {job.get('job_name')}", f"scrapes port {port}, but the roles listen on {image_port}")

    # kustomize renders the manifests (when kubectl is installed).
    kustomization = deploy / "k8s" / "kustomization.yaml"
    if kustomization.exists() and shutil.which("kubectl"):
        out = subprocess.run(["kubectl", "kustomize", str(kustomization.parent)], capture_output=True, text=True)
        if out.returncode != 0:
            problems.add(str(kustomization), f"`kubectl kustomize` fails: {out.stderr.strip()}")

    # Grafana: datasources, then every dashboard.
    uids: set[str] = set()
    for path, ds in docs.items():
        for d in ds:
            if isinstance(d, dict) and "datasources" in d:
                uids |= {x.get("uid") for x in d["datasources"] if x.get("uid")}
    for path in sorted((deploy / "grafana").rglob("*.json")) if (deploy / "grafana").exists() else []:
        counts["panels"] += check_dashboard(path, metrics, uids, problems)

    if problems.items:
        print(f"check_deploy: {len(problems.items)} problem(s):", file=sys.stderr)
        for p in problems.items:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print("check_deploy: ok — {invocations} securenet invocations, {variables} SECURENET_* variables, "
          "{configs} configurations loaded by `securenet config`, {rules} rules and {panels} panel queries "
          "checked against {n} exported metric names".format(n=len(metrics.names), **counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
