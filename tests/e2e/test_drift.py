"""Drift on a real server: a version registered with its training data as reference, live
rows sampled from every request, judged every second; unshifted traffic raises nothing,
two features shifted by three standard deviations are flagged, and only they, in
``servion drift report`` (and its plot), ``/metrics``, the log and the audit trail (once
per change). Two workers judging their own windows agree, and audit each change once. A
version registered without a reference learns one from its first sampled rows."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from jsonschema import Draft202012Validator
from prometheus_client.parser import text_string_to_metric_families
from test_openapi import closed

from conftest import RunningServer, TabularModels, cli, start_server, wait_until
from servion.audit import read_events
from servion.server.openapi import document

SHIFTED = (3, 7)
SHIFTED_NAMES = {f"X[{j}]" for j in SHIFTED}
ROWS_PER_REQUEST = 100
ENV = {
    "SERVION_DRIFT_WINDOW_S": "1",
    "SERVION_DRIFT_SAMPLE_EVERY": "1",
    "SERVION_DRIFT_MAX_SAMPLES_PER_S": "100000",  # keep every request, however fast
    "SERVION_DRIFT_REFERENCE_ROWS": "300",
}


def register_with_reference(home: Path, tabular: TabularModels) -> None:
    np.savez(home.parent / "train.npz", X=tabular.x)
    registered = cli(
        home,
        "register",
        "tabular",
        str(tabular.onnx),
        "--version",
        "v1.0.0",
        "--reference",
        str(home.parent / "train.npz"),
    )
    assert registered.returncode == 0, registered.stderr


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[tuple[RunningServer, Path]]:
    tmp = tmp_path_factory.mktemp("drift")
    home = tmp / "home"
    register_with_reference(home, tabular)
    learner = cli(home, "register", "learner", str(tabular.onnx), "--version", "v1.0.0")
    assert learner.returncode == 0, learner.stderr
    server = start_server(home, tmp, "--workers", "1", "--no-grpc", env=ENV)
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


def drift_events(home: Path, operation: str) -> list[dict[str, Any]]:
    """The audit trail's ``drift_detected`` or ``drift_cleared`` events of ``tabular``."""
    events = read_events(home / "audit")
    return [e for e in events if e["operation"] == operation and e["model_name"] == "tabular"]


def changed_inputs(event: dict[str, Any]) -> list[str]:
    """The input features an event says began (or stopped) drifting."""
    features = event["resources"]["features"]
    return [f["feature"] for f in features if f["changed"] and f["source"] == "input"]


def detected_once_each(home: Path) -> list[str]:
    """Every input feature the trail says began drifting, each written once, and the
    shifted ones among them (waits for the audit writer)."""
    found: list[str] = []

    def written() -> bool:
        found[:] = [f for e in drift_events(home, "drift_detected") for f in changed_inputs(e)]
        return set(found) >= SHIFTED_NAMES

    wait_until(written, 20, "drift_detected events for the shifted features")
    assert sorted(found) == sorted(set(found)), found  # once per change, not per window
    return found


def drift_samples(server: RunningServer) -> dict[tuple[str, str], float]:
    metrics = httpx.get(f"{server.url}/metrics").text
    return {
        (s.name, s.labels.get("feature", "")): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name.startswith("servion_drift") and s.labels.get("model") == "tabular"
    }


def png_size(path: Path) -> tuple[int, int]:
    """The width and height a PNG's header gives (its signature and IHDR checked)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", head
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


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
    served: tuple[RunningServer, Path], tabular: TabularModels, tmp_path: Path
) -> None:
    server, home = served
    steady = judged_after(server, home, sender(server.url, "tabular", tabular, 0.0), time.time())
    assert steady["reference"] == "file:train.npz"
    assert flagged_inputs(steady) == set()
    assert len([f for f in steady["features"] if f["source"] == "input"]) == 32
    assert not [f for e in drift_events(home, "drift_detected") for f in changed_inputs(e)]

    shift = sender(server.url, "tabular", tabular, 3.0)
    began = time.time()
    judged_after(server, home, shift, began)  # may straddle the change
    window = judged_after(server, home, shift, time.time())
    assert flagged_inputs(window) == SHIFTED_NAMES
    # The six highest-PSI features carry histograms: the shifted ones, moved past the
    # reference's top decile.
    drawn = {f["feature"]: f["histogram"] for f in window["features"] if "histogram" in f}
    assert len(drawn) == 6 and set(drawn) >= SHIFTED_NAMES
    # What the OpenAPI document says of the answer, and nothing more (histograms included).
    answer = report(server, home, "tabular:v1.0.0")
    Draft202012Validator(closed(document()["components"]["schemas"]["DriftReport"])).validate(
        answer
    )
    shape = drawn["X[3]"]
    assert len(shape["edges"]) == len(shape["reference"]) + 1 == len(shape["live"]) + 1
    assert shape["reference"][-1] < 0.2 and shape["live"][-1] > 0.8

    table = cli(home, "drift", "report", "tabular", "--url", server.url)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].startswith("FEATURE")
    flagged = [line.split()[0] for line in lines if line.rstrip().endswith("DRIFT")]
    assert {"X[3]", "X[7]"} <= set(flagged)
    assert lines[3].split()[0] in ("X[3]", "X[7]")  # sorted by PSI, highest first

    samples = drift_samples(server)
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
    assert set(detected_once_each(home)) == SHIFTED_NAMES
    (first, *_) = drift_events(home, "drift_detected")
    assert first["outcome"] == "success" and first["model_version"] == "v1.0.0"
    assert all(f["psi"] > 0.2 and f["pvalue"] < 0.01 for f in first["resources"]["features"])
    assert first["resources"]["rows"] >= 50 and first["resources_affected"] == [
        "model:tabular:v1.0.0"
    ]

    png = tmp_path / "drift.png"
    plotted = cli(
        home, "drift", "report", "tabular:v1.0.0", "--url", server.url, "--plot", str(png)
    )
    assert plotted.returncode == 0, plotted.stderr
    assert f"wrote {png}: reference and live histograms of 6 features" in plotted.stdout
    assert png_size(png) == (1260, 600)  # three panels a row, two rows, at 100 dpi
    assert png.stat().st_size > 20_000
    with contextlib.suppress(ImportError):  # Pillow comes with matplotlib, but is not ours
        from PIL import Image

        with Image.open(png) as image:
            image.verify()

    # Per-model thresholds: nothing reaches a PSI of 1000.
    done = cli(home, "drift", "thresholds", "tabular", "--psi", "1000", "--alpha", "0.01")
    assert done.returncode == 0, done.stderr
    audited = [e for e in read_events(home / "audit") if e["operation"] == "drift_thresholds"]
    assert [e["outcome"] for e in audited] == ["started", "success"]
    assert audited[-1]["resources"] == {"psi": 1000.0, "alpha": 0.01}
    relaxed = judged_after(server, home, shift, time.time())
    assert relaxed["thresholds"]["psi"] == 1000 and flagged_inputs(relaxed) == set()
    wait_until(lambda: bool(drift_events(home, "drift_cleared")), 20, "a drift_cleared event")
    (cleared,) = drift_events(home, "drift_cleared")
    assert set(changed_inputs(cleared)) >= SHIFTED_NAMES


def test_two_workers_each_judge_their_window_and_agree_on_the_shifted_features(
    tmp_path: Path, tabular: TabularModels
) -> None:
    """Each worker judges the rows it answered; the admin API and /metrics show the freshest
    window, whichever worker judged it, and the audit trail has each change once."""
    home = tmp_path / "home"
    register_with_reference(home, tabular)
    server = start_server(home, tmp_path, "--workers", "2", "--no-grpc", env=ENV)
    try:
        send = sender(server.url, "tabular", tabular, 3.0)  # new connections: both workers
        flagged: dict[str, list[set[str]]] = {}

        def both_judged() -> bool:
            send()
            path = "/v2/admin/models/tabular/versions/v1.0.0/drift"
            for window in httpx.get(server.url + path).json()["versions"]:
                flagged.setdefault(window["worker"], []).append(flagged_inputs(window))
            return len(flagged) == 2

        wait_until(both_judged, 30, "windows judged by each of the two workers")
        assert all(found == SHIFTED_NAMES for seen in flagged.values() for found in seen)
        samples = drift_samples(server)
        detected = {f for (name, f), v in samples.items() if name.endswith("_detected") and v}
        assert {f for f in detected if f.startswith("X[")} == SHIFTED_NAMES
        window = report(server, home, "tabular:v1.0.0")["versions"][0]
        assert flagged_inputs(window) == SHIFTED_NAMES
        assert set(detected_once_each(home)) == SHIFTED_NAMES
    finally:
        server.stop()


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
