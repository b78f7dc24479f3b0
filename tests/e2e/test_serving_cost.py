"""The cost of serving against a real two-worker server with a price per replica-hour and
per GPU-hour: ``servion_cost_per_hour`` is the price of what runs, and
``servion_cost_per_1000_requests`` spreads it over the rate the clients actually got, from
both workers, in ``/metrics`` and in ``servion status``; bad prices never start a server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import RunningServer, TabularModels, cli, register, start_server, wait_until
from servion.config import Settings
from servion.registry import ModelRegistry

BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": [0.25] * 32}]}
REPLICA_HOUR, GPU_HOUR = 3.6, 1.25
WINDOW_S = 3.0


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("cost")
    settings = Settings.load(home=tmp / "home")
    registry = ModelRegistry(settings)
    register(registry, "tabular", tabular.onnx)
    registry.close()
    # The prices as flags, the window from the environment: both reach every worker.
    srv = start_server(
        settings.home, tmp, "--workers", "2",
        "--cost-per-replica-hour", str(REPLICA_HOUR), "--cost-per-gpu-hour", str(GPU_HOUR),
        env={"SERVION_COST_WINDOW_S": str(WINDOW_S)},
    )  # fmt: skip
    yield srv
    srv.stop()


def scrape(server: RunningServer) -> dict[str, dict[str, float]]:
    """``servion_cost_*`` and GPU series of ``/metrics``: name -> joined labels -> value."""
    text = httpx.get(f"{server.url}/metrics").text
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith(("servion_cost_", "servion_gpu_utilization")):
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                found.setdefault(s.name, {})[labels] = s.value
    return found


def per_hour(gpus: int) -> float:
    return REPLICA_HOUR + GPU_HOUR * gpus


class Traffic:
    """A client calling the model back to back on new connections (so both workers answer),
    keeping when each answer came."""

    def __init__(self, server: RunningServer) -> None:
        self.url = f"{server.url}/v2/models/tabular/infer"
        self.answered: list[float] = []
        self.failed: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        close = {"Connection": "close"}
        while not self.stop.is_set():
            status = httpx.post(self.url, json=BODY, headers=close).status_code
            self.answered.append(time.monotonic())
            if status != 200:
                self.failed.append(status)

    def rate(self, since: float, until: float) -> float:
        return sum(since <= t <= until for t in self.answered) / (until - since)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def workers_answering(server: RunningServer) -> int:
    """Workers whose metrics file has requests in its window."""
    folders = Path(tempfile.gettempdir()).glob(f"servion-metrics-{server.port}-*")
    files = [p for folder in folders for p in folder.glob("*.json")]
    return sum(json.loads(p.read_bytes())["recent"]["requests"] > 0 for p in files)


def test_cost_per_1000_requests_follows_the_price_and_the_rate(server: RunningServer) -> None:
    traffic = Traffic(server)
    try:
        started = time.monotonic()
        # A whole window of traffic behind every worker's report, from both workers.
        wait_until(
            lambda: time.monotonic() - started > WINDOW_S + 1.5 and workers_answering(server) == 2,
            30,
            "both workers answering for a whole window",
        )
        scraped_at = time.monotonic()
        series = scrape(server)
        client_rate = traffic.rate(scraped_at - WINDOW_S, scraped_at)
        status = cli(Path("unused"), "status", "--json", "--url", server.url)
        line = cli(Path("unused"), "status", "--url", server.url)
    finally:
        traffic.close()
    assert not traffic.failed
    gpus = len(series.get("servion_gpu_utilization_ratio", {}))
    assert series["servion_cost_per_hour"] == {"resource=gpu": GPU_HOUR * gpus,
                                               "resource=replica": REPLICA_HOUR}  # fmt: skip
    per_1000 = series["servion_cost_per_1000_requests"][""]
    server_rate = per_hour(gpus) / per_1000 * 1000 / 3600
    # The window ends up to a second apart across workers: a steady rate, give or take.
    assert 0.5 * client_rate < server_rate < 2 * client_rate, (server_rate, client_rate)

    assert status.returncode == 0, status.stderr
    cost = json.loads(status.stdout)["cost"]
    assert cost["configured"] and cost["currency"] == "USD" and cost["window_s"] == WINDOW_S
    assert cost["gpus"] == gpus and cost["per_hour"] == pytest.approx(per_hour(gpus))
    rate = cost["requests_per_s"]
    assert 0.5 * client_rate < rate < 2 * client_rate, (rate, client_rate)
    assert cost["per_1000_requests"] == pytest.approx(per_hour(gpus) / (rate * 3600) * 1000)

    assert line.returncode == 0, line.stderr
    found = re.search(
        r"^cost: \$([\d.e-]+) per 1,000 requests at ([\d.,]+) req/s \(\$([\d.]+)/hour", line.stdout,
        re.MULTILINE,
    )  # fmt: skip
    assert found, line.stdout
    shown_1000, shown_rate, shown_hour = (float(g.replace(",", "")) for g in found.groups())
    assert shown_hour == round(per_hour(gpus), 2)
    assert shown_1000 == pytest.approx(per_hour(gpus) / (shown_rate * 3600) * 1000, rel=0.02)


def test_an_idle_replica_has_a_price_per_hour_and_no_cost_per_request(
    server: RunningServer,
) -> None:
    # Once a window passes without a request, the cost per request is absent, not infinite.
    wait_until(
        lambda: "servion_cost_per_1000_requests" not in scrape(server), 30, "an empty window"
    )
    assert scrape(server)["servion_cost_per_hour"]["resource=replica"] == REPLICA_HOUR
    line = cli(Path("unused"), "status", "--url", server.url)
    assert line.returncode == 0, line.stderr
    assert re.search(r"^cost: \$[\d.]+/hour.*, no request in the last 3 s$", line.stdout, re.M)


def refused(home: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """``servion serve`` with ``args``: it must stop with exit code 2, and say why."""
    done = subprocess.run(
        [sys.executable, "-m", "servion.cli.main", "--home", str(home), "serve", "--port", "0",
         "--no-grpc", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    return done.stderr


def test_bad_prices_are_refused_before_serving(tmp_path: Path) -> None:
    negative = refused(tmp_path, "--cost-per-replica-hour", "-1")
    assert "Invalid value for '--cost-per-replica-hour': -1.0 is not in the range x>=0" in negative
    assert "'two' is not a valid float" in refused(tmp_path, "--cost-per-gpu-hour", "two")
    assert "nan is not a price (a finite number, 0 or more)" in refused(
        tmp_path, "--cost-per-gpu-hour", "nan"
    )
    from_env = refused(tmp_path, env={"SERVION_COST_GPU_HOUR": "-0.5"})
    assert from_env.strip() == (
        "error: SERVION_COST_GPU_HOUR=-0.5: Input should be greater than or equal to 0"
    )
