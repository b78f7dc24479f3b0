"""The shipped alerting rules and Grafana dashboard, held against a real two-worker servion
scraped by a real Prometheus: promtool accepts the rules, and every expression in the rules
and in the dashboard's panels returns data from the series a busy server exports, so a
misspelt metric, label or label value cannot pass. ``servion monitoring`` prints exactly the
shipped bytes, and ``servion top`` shows the same server's traffic and drift."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from model_sources import SHADOW_MODEL, SLOW_MODEL

from conftest import (
    Prometheus,
    RunningServer,
    TabularModels,
    cli,
    register,
    running_prometheus,
    start_server,
    wait_until,
)
from servion.cli.drift import store_reference
from servion.config import Settings
from servion.monitoring import ASSETS, asset
from servion.registry import ModelRegistry

ROOT = Path(__file__).resolve().parents[2]
BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": [0.25] * 32}]}
FAR = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": [1e6] * 32}]}
"""Far outside the reference's ranges: accepted, and counted as data quality findings."""
GPU = "servion_gpu_"
"""No GPU on the test machines: these series are absent there (not zero), so an expression
that reads nothing else is only checked to parse and evaluate."""

SET_OPERATOR = re.compile(r"\b(?:and|or|unless)\b")
COMPARISON = re.compile(r"==|!=|>=|<=|>|<")
MATCHING = re.compile(r"^(?:on|ignoring)\s*\([^)]*\)\s*")
SELECTOR = re.compile(r"\bservion_\w+(?:\{[^}]*\})?")
VARIABLE = re.compile(r"\$\{?(\w+)\}?")
DRIFT_ENV = {
    "SERVION_DRIFT_WINDOW_S": "4",
    "SERVION_DRIFT_SAMPLE_EVERY": "1",
    "SERVION_DRIFT_MAX_SAMPLES_PER_S": "100000",
}
"""Every request sampled, windows of 4 s (the 200 rows a window needs at 50 requests a
second): the traffic's constant rows are far from the training data, so the drift series
exist, and say drift, within seconds."""
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
ANNOTATION_LABEL = re.compile(r"\$labels\.(\w+)")
GRAFANA_RANGES = frozenset({"__rate_interval", "__interval", "__range"})


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(asset("rules"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    model: dict[str, Any] = json.loads(asset("dashboard"))
    return model


def panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in model["panels"]:
        yield panel
        yield from panel.get("panels", [])


def split_top_level(expr: str, operator: re.Pattern[str]) -> list[str]:
    """``expr`` cut at each match of ``operator`` outside brackets and quotes."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            quote = "" if c == quote else quote
            i += 2 if c == "\\" else 1
            continue
        if c in "\"'`":
            quote = c
        depth += (c in "([{") - (c in ")]}")
        found = operator.match(expr, i) if depth == 0 else None
        if found:
            parts.append(expr[start:i].strip())
            start = i = found.end()
            continue
        i += 1
    return [*parts, expr[start:].strip()]


def measures(expr: str) -> list[str]:
    """What an alert compares with its thresholds: ``A > 0.5 and on (x) B > 1`` gives A
    and B. Every rule is written ``<measure> <comparison> <number>`` (two joined by a set
    operator at most), so that its measure is data even on a healthy server."""
    found = []
    for part in split_top_level(expr, SET_OPERATOR):
        sides = split_top_level(MATCHING.sub("", part), COMPARISON)
        assert len(sides) == 2, f"not `<measure> <comparison> <threshold>`: {part}"
        float(sides[1])  # the threshold is a plain number, easy to tune
        found.append(sides[0])
    return found


def reads_only_gpus(expr: str) -> bool:
    return all(s.startswith(GPU) for s in SELECTOR.findall(expr))


def expect_data(prometheus: Prometheus, expr: str, labels: set[str], what: str) -> None:
    """``expr`` evaluates; unless it reads GPU series only, it returns series carrying
    ``labels``, and each of its selectors matches stored series (so a misspelt label value
    in one operand of a ratio is caught too)."""
    if reads_only_gpus(expr):
        prometheus.query(expr)  # parses and evaluates: status success, empty here
        return
    wait_until(lambda: bool(prometheus.query(expr)), 30, f"data for {what}: {expr}")
    for selector in SELECTOR.findall(expr):
        assert prometheus.series(selector), f"{what}: no series match {selector}"
    have = set(prometheus.query(expr)[0]["metric"])
    assert labels <= have, f"{what}: {sorted(labels - have)} not in the result's labels {have}"


@dataclass
class Watched:
    server: RunningServer
    prometheus: Prometheus


class Traffic:
    """Clients calling a model and three endpoints back to back until stopped."""

    def __init__(self, server: RunningServer) -> None:
        self.url = server.url
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        names = ("tabular", "scoring", "canaried", "tabular", "failing")
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.wait(0.02):
                for name in names:
                    client.post(f"/v2/models/{name}/infer", json=BODY)
                client.post("/v2/models/tabular/infer", json=FAR)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def deploy(server: RunningServer, spec: dict[str, Any]) -> None:
    reply = httpx.post(
        f"{server.url}/v2/admin/endpoints",
        content=yaml.safe_dump(spec),
        headers={"Content-Type": "application/yaml"},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text


def shed_one(server: RunningServer) -> bool:
    """Eight calls at once to a model that runs one request at a time and lets one wait:
    one of the two workers gets at least four, and refuses (503) all but two of them."""
    url = f"{server.url}/v2/models/slowpoke/infer"
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: httpx.post(url, json=BODY, timeout=30), range(8)))
    return any(r.status_code == 503 for r in replies)


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels) -> Iterator[Watched]:
    tmp = tmp_path_factory.mktemp("monitoring")
    settings = Settings.load(home=tmp / "home")
    registry = ModelRegistry(settings)
    for version in ("v1.0.0", "v1.1.0"):
        register(registry, "tabular", tabular.onnx, version)
    np.savez(tmp / "train.npz", X=tabular.x)
    # On the version plain requests for "tabular" reach (the latest).
    store_reference(registry, "tabular", "v1.1.0", tmp / "train.npz")
    failing = tmp / "failing.py"
    failing.write_text("MODE = 'fail'\n" + SHADOW_MODEL)  # raises on this test's rows
    register(registry, "failing", failing, trust_code=True)
    slow = tmp / "slowpoke.py"
    slow.write_text(SLOW_MODEL)
    register(registry, "slowpoke", slow, trust_code=True)
    # One request at a time in the model's thread and one waiting: a third is shed.
    registry.set_batching(
        "slowpoke", {"execution": "thread", "dynamic": False, "max_queue_size": 1}
    )
    registry.close()
    # Priced, so that the cost panels have their series to read.
    prices = ("--cost-per-replica-hour", "2.4", "--cost-per-gpu-hour", "1.1")
    server = start_server(settings.home, tmp, "--workers", "2", *prices, env=DRIFT_ENV)
    traffic: Traffic | None = None
    try:
        tabular_arm = [{"model": "tabular", "version": "v1.0.0"}]
        deploy(server, {
            "endpoint": "scoring", "models": tabular_arm,
            "shadows": [{"model": "tabular", "version": "v1.1.0"}],
            "cache": {"max_entries": 16}, "circuit_breaker": {}, "concurrency": {"limit": 64},
        })  # fmt: skip
        deploy(server, {"endpoint": "canaried", "models": tabular_arm})
        # A canary that holds its first step for an hour: its step and gate series exist.
        deploy(server, {
            "endpoint": "canaried", "models": [{"model": "tabular", "version": "v1.1.0"}],
            "rollout": {"steps": [10, 100], "interval_s": 3600},
        })  # fmt: skip
        wait_until(lambda: shed_one(server), 30, "a request shed by a full queue")
        traffic = Traffic(server)
        with running_prometheus(tmp / "prometheus", server.port) as prometheus:
            yield Watched(server, prometheus)
    finally:
        if traffic is not None:
            traffic.close()
        server.stop()


def test_promtool_accepts_the_shipped_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (.ci/run installs Debian's prometheus)")
    rules = tmp_path / "servion-alerts.yml"
    rules.write_bytes(asset("rules"))
    done = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_every_alert_measure_returns_data(watched: Watched) -> None:
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert len(names) == len(rules)
    for rule in rules:
        expr, name = rule["expr"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        watched.prometheus.query(expr)  # the whole condition evaluates (empty when healthy)
        named = set(ANNOTATION_LABEL.findall(" ".join(rule["annotations"].values())))
        for measure in measures(expr):
            expect_data(watched.prometheus, measure, named, name)


def test_every_dashboard_query_returns_data(watched: Watched) -> None:
    model = dashboard()
    variables = {v["name"]: v for v in model["templating"]["list"]}

    def substituted(expr: str) -> str:
        def value(found: re.Match[str]) -> str:
            name = found.group(1)
            if name in GRAFANA_RANGES:
                return "1m"
            assert name in variables, f"${name} is no variable of the dashboard"
            return ".*"  # what "All" selects

        return VARIABLE.sub(value, expr)

    for name, variable in variables.items():
        if variable["type"] != "query":
            continue
        found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
        assert found, variable["definition"]
        query = f"count by ({found[2]}) ({substituted(found[1])})"
        expect_data(watched.prometheus, query, {found[2]}, f"variable {name}")
    targets = [(p["title"], t) for p in panels(model) for t in p.get("targets", [])]
    assert len(targets) > 20
    for title, target in targets:
        legend = set(LEGEND_LABEL.findall(target.get("legendFormat", "")))
        expect_data(watched.prometheus, substituted(target["expr"]), legend, f"panel {title!r}")


def test_the_dashboard_is_a_grafana_model_on_a_chosen_prometheus() -> None:
    model = dashboard()
    assert model["schemaVersion"] >= 39 and model["uid"] and model["title"]
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"target", "model"} <= set(variables)
    source = {"type": "prometheus", "uid": "${datasource}"}
    every = list(panels(model))
    assert len({p["id"] for p in every}) == len(every)
    for panel in every:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == source, panel["title"]
        assert all(t["datasource"] == source for t in panel["targets"]), panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_the_cli_prints_the_shipped_bytes(tmp_path: Path) -> None:
    for kind, file_name in ASSETS.items():
        shipped = (ROOT / "src" / "servion" / "monitoring" / file_name).read_bytes()
        done = subprocess.run(
            [sys.executable, "-m", "servion.cli.main", "monitoring", kind],
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == shipped == asset(kind)


def test_the_docs_point_at_the_shipped_files_rather_than_copy_them() -> None:
    folder = ROOT / "docs" / "monitoring"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md"]
    text = (folder / "README.md").read_text()
    for file_name in ASSETS.values():
        assert f"](../../src/servion/monitoring/{file_name})" in text


def table_rows(text: str) -> list[dict[str, str]]:
    """A plain table of ``servion top`` as one dict per row, cut at the headers' columns."""
    header, _, *lines = text.splitlines()
    names = ["TARGET", "VERSION", "REQ/S", "ERR %", "P50", "P99", "BATCH", "QUEUE", "DRIFT"]
    starts = [header.index(name) for name in names]
    assert starts == sorted(starts), header
    ends = [*starts[1:], None]
    return [
        {n: line[a:b].strip() for n, a, b in zip(names, starts, ends, strict=True)}
        for line in lines
    ]


def versions_of(rows: list[dict[str, str]], target: str) -> dict[str, dict[str, str]]:
    """The rows under ``target``'s own, by version."""
    found: dict[str, dict[str, str]] = {}
    current = ""
    for row in rows:
        current = row["TARGET"] or current
        if current == target and not row["TARGET"]:
            found[row["VERSION"]] = row
    return found


def test_top_shows_each_target_with_its_rate(watched: Watched) -> None:
    rows: list[dict[str, str]] = []

    def judged() -> bool:
        """One table, taken once tabular v1.0.0 has a judged drift window, in a second the
        traffic reached tabular (a loaded machine can stall the sender for a second)."""
        url = watched.server.url
        done = cli(Path("unused"), "top", "--once", "--interval", "1", "--url", url)
        assert done.returncode == 0, done.stderr
        rows[:] = table_rows(done.stdout)
        moving = [r for r in rows if r["TARGET"] == "tabular" and r["REQ/S"] not in ("-", "0.0")]
        return bool(moving) and (
            versions_of(rows, "tabular").get("v1.1.0", {}).get("DRIFT", "-") != "-"
        )

    wait_until(judged, 30, "a drift window of tabular v1.1.0 in servion top")
    targets = {r["TARGET"]: r for r in rows if r["TARGET"]}
    assert {"tabular", "failing", "scoring", "canaried", "slowpoke"} <= set(targets)
    tabular = targets["tabular"]
    assert float(tabular["REQ/S"]) > 0 and tabular["ERR %"] == "0.0", tabular
    assert tabular["P99"] != "-" and float(tabular["BATCH"]) >= 1, tabular
    # Every request sends the same row: each feature is one spike against the reference.
    judged_version = versions_of(rows, "tabular")["v1.1.0"]
    assert re.fullmatch(r"\d+ drifted", judged_version["DRIFT"]), judged_version
    assert int(judged_version["DRIFT"].split()[0]) >= 32, judged_version
    assert int(tabular["DRIFT"].split()[0]) >= 32, tabular  # its versions' together
    assert targets["failing"]["DRIFT"] == "-"  # no reference, no answers to learn one from
    assert targets["scoring"]["DRIFT"] == "-"  # an endpoint: its models' rows say it
    assert targets["failing"]["ERR %"] == "100.0", targets["failing"]
    versions = [r for r in rows if not r["TARGET"]]
    assert any(r["VERSION"] == "v1.0.0" and float(r["REQ/S"]) > 0 for r in versions), versions
    arms = [r["VERSION"] for r in versions]
    assert "tabular:v1.0.0" in arms, arms  # the endpoints' arms


def test_top_says_when_it_cannot_reach_the_server() -> None:
    done = cli(Path("unused"), "top", "--once", "--url", "http://127.0.0.1:9")
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot reach http://127.0.0.1:9")
