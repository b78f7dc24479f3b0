"""Drift on a real server: a version registered with its training data as reference, live
rows sampled from every request, judged every second; unshifted traffic raises nothing,
two features shifted by three standard deviations are flagged, and only they, in
``servion drift report``, ``/metrics`` and the log. A version registered without a
reference learns one from its first sampled rows."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import RunningServer, TabularModels, cli, start_server, wait_until
from servion.audit import read_events

SHIFTED = (3, 7)
ROWS_PER_REQUEST = 100


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[tuple[RunningServer, Path]]:
    tmp = tmp_path_factory.mktemp("drift")
    home = tmp / "home"
    np.savez(tmp / "train.npz", X=tabular.x)
    onnx = str(tabular.onnx)
    registered = cli(
        home,
        "register",
        "tabular",
        onnx,
        "--version",
        "v1.0.0",
        "--reference",
        str(tmp / "train.npz"),
    )
    assert registered.returncode == 0, registered.stderr
    assert cli(home, "register", "learner", onnx, "--version", "v1.0.0").returncode == 0
    env = {
        "SERVION_DRIFT_WINDOW_S": "1",
        "SERVION_DRIFT_SAMPLE_EVERY": "1",
        "SERVION_DRIFT_MAX_SAMPLES_PER_S": "100000",  # keep every request, however fast
        "SERVION_DRIFT_REFERENCE_ROWS": "300",
    }
    server = start_server(home, tmp, "--workers", "1", "--no-grpc", env=env)
    yield server, home
    server.stop()


def rows(tabular: TabularModels, seed: int, shift: float) -> np.ndarray:
    """Rows drawn from the training data, features ``SHIFTED`` moved by ``shift`` stds."""
    rng = np.random.default_rng(seed)
    x = tabular.x[rng.integers(0, len(tabular.x), ROWS_PER_REQUEST)].copy()
    for j in SHIFTED:
        x[:, j] += shift * tabular.x[:, j].std()
    return x


def sender(url: str, model: str, tabular: TabularModels, shift: float) -> Callable[[], None]:
    seeds = iter(range(10**6))

    def send() -> None:
        for _ in range(3):  # distinct rows each time: a learnt reference must see variety
            x = rows(tabular, next(seeds), shift)
            data = x.ravel().tolist()
            body = {
                "inputs": [{"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": data}]
            }
            assert httpx.post(f"{url}/v2/models/{model}/infer", json=body).status_code == 200

    return send


def report(server: RunningServer, home: Path, ref: str) -> dict[str, Any]:
    done = cli(home, "drift", "report", ref, "--url", server.url, "--json")
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def flagged_inputs(window: dict[str, Any]) -> set[str]:
    return {f["feature"] for f in window["features"] if f["drifted"] and f["source"] == "input"}


def judged_after(
    server: RunningServer, home: Path, send: Callable[[], None], since: float
) -> dict[str, Any]:
    """The first window judged after ``since`` (wall clock), sending traffic meanwhile."""
    found: dict[str, Any] = {}

    def fresh() -> bool:
        send()
        versions = report(server, home, "tabular:v1.0.0")["versions"]
        if versions and versions[0]["time"] > since and versions[0]["rows"] >= 200:
            found.update(versions[0])
            return True
        return False

    wait_until(fresh, 20, "a judged drift window")
    return found


def test_unshifted_traffic_raises_nothing_and_shifted_features_are_flagged(
    served: tuple[RunningServer, Path], tabular: TabularModels
) -> None:
    server, home = served
    steady = judged_after(server, home, sender(server.url, "tabular", tabular, 0.0), time.time())
    assert steady["reference"] == "file:train.npz"
    assert flagged_inputs(steady) == set()
    assert len([f for f in steady["features"] if f["source"] == "input"]) == 32

    shift = sender(server.url, "tabular", tabular, 3.0)
    began = time.time()
    judged_after(server, home, shift, began)  # may straddle the change
    window = judged_after(server, home, shift, time.time())
    assert flagged_inputs(window) == {f"X[{j}]" for j in SHIFTED}

    table = cli(home, "drift", "report", "tabular", "--url", server.url)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].startswith("FEATURE")
    flagged = [line.split()[0] for line in lines if line.rstrip().endswith("DRIFT")]
    assert {"X[3]", "X[7]"} <= set(flagged)
    assert lines[3].split()[0] in ("X[3]", "X[7]")  # sorted by PSI, highest first

    metrics = httpx.get(f"{server.url}/metrics").text
    samples = {
        (s.name, s.labels.get("feature", "")): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name.startswith("servion_drift") and s.labels.get("model") == "tabular"
    }
    assert samples[("servion_drift_detected", "X[3]")] == 1.0
    assert samples[("servion_drift_detected", "X[7]")] == 1.0
    assert samples[("servion_drift_detected", "X[0]")] == 0.0
    assert samples[("servion_drift_psi", "X[3]")] > 0.2
    assert samples[("servion_drift_ks_pvalue", "X[3]")] < 0.01
    assert samples[("servion_drift_features_drifted", "")] >= 2
    assert samples[("servion_drift_window_rows", "")] >= 200
    events = [json.loads(line) for line in server.log().splitlines() if "drift_detected" in line]
    assert {e["feature"] for e in events if e["model"] == "tabular"} >= {"X[3]", "X[7]"}
    assert not {e["feature"] for e in events if e["model"] == "tabular"} & {"X[0]", "X[1]"}

    # Per-model thresholds: nothing reaches a PSI of 1000.
    done = cli(home, "drift", "thresholds", "tabular", "--psi", "1000", "--alpha", "0.01")
    assert done.returncode == 0, done.stderr
    audited = [e for e in read_events(home / "audit") if e["operation"] == "drift_thresholds"]
    assert [e["outcome"] for e in audited] == ["started", "success"]
    assert audited[-1]["resources"] == {"psi": 1000.0, "alpha": 0.01}
    relaxed = judged_after(server, home, shift, time.time())
    assert relaxed["thresholds"]["psi"] == 1000 and flagged_inputs(relaxed) == set()


def test_a_version_without_reference_learns_one_from_live_rows(
    served: tuple[RunningServer, Path], tabular: TabularModels
) -> None:
    server, home = served
    send = sender(server.url, "learner", tabular, 0.0)

    def learnt() -> bool:
        send()
        versions = report(server, home, "learner")["versions"]
        return bool(versions) and versions[0]["reference"] == "live"

    wait_until(learnt, 20, "a reference learnt from live rows")
    (window,) = report(server, home, "learner:v1.0.0")["versions"]
    assert flagged_inputs(window) == set()


def test_a_reference_that_does_not_fit_the_signature_exits_2(
    tmp_path: Path, tabular: TabularModels
) -> None:
    (tmp_path / "narrow.csv").write_text("a,b\n1,2\n")
    home = tmp_path / "home"
    done = cli(
        home,
        "register",
        "narrow",
        str(tabular.onnx),
        "--version",
        "v1.0.0",
        "--reference",
        str(tmp_path / "narrow.csv"),
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: narrow:v1.0.0 is registered, but its drift reference")
    done = cli(home, "drift", "reference", "narrow:v1.0.0", str(tmp_path / "narrow.csv"))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "no columns X[0]..X[31]" in done.stderr
    (refused,) = [e for e in read_events(home / "audit") if e["outcome"] == "failure"]
    assert (refused["operation"], refused["model_version"]) == ("drift_reference", "v1.0.0")
