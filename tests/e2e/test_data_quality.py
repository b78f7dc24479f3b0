"""Data quality on a real server: a version registered with its training data as reference
has every request's inputs checked against the reference's ranges. The default policy
counts what fails; ``servion drift quality`` switches a model to flagging (the response
names the findings, over REST and gRPC alike) or refusing (a 400 naming them), and the
server follows within a second. Requests the signature refuses are counted too. A version
without a reference is not range-checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from conftest import RunningServer, TabularModels, cli, start_server, wait_until
from servion.audit import read_events

MODEL = "scored"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[tuple[RunningServer, Path]]:
    tmp = tmp_path_factory.mktemp("quality")
    home = tmp / "home"
    np.savez(tmp / "train.npz", X=tabular.x)
    onnx = str(tabular.onnx)
    reference = ["--reference", str(tmp / "train.npz")]
    assert cli(home, "register", MODEL, onnx, "--version", "v1.0.0", *reference).returncode == 0
    assert cli(home, "register", "unchecked", onnx, "--version", "v1.0.0").returncode == 0
    env = {"SERVION_DRIFT_ENABLED": "false"}  # nothing learns a reference for "unchecked"
    server = start_server(home, tmp, "--workers", "1", env=env)
    yield server, home
    server.stop()


def body(x: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }


class Reply(NamedTuple):
    status: int
    parameters: dict[str, Any]
    error: str = ""


def infer(server: RunningServer, model: str, x: np.ndarray) -> Reply:
    """Infer with the binary tensor extension (JSON cannot carry NaN)."""
    client = th.InferenceServerClient(server.url.removeprefix("http://"))
    tensor = th.InferInput("X", list(x.shape), "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(x, np.float32), binary_data=True)
    try:
        result = client.infer(model, [tensor])
    except InferenceServerException as exc:
        return Reply(int(str(exc.status())), {}, exc.message())
    return Reply(200, result.get_response().get("parameters", {}))


def series(server: RunningServer, name: str) -> list[tuple[dict[str, str], float]]:
    """Each sample of ``name``: its labels and value."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return [
        (dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def findings(server: RunningServer, model: str) -> dict[tuple[str, str], float]:
    return {
        (labels["feature"], labels["check"]): v
        for labels, v in series(server, "servion_data_quality_findings_total")
        if labels["model"] == model
    }


def screened(server: RunningServer, model: str) -> dict[str, float]:
    return {
        labels["action"]: v
        for labels, v in series(server, "servion_data_quality_requests_total")
        if labels["model"] == model
    }


def bad_rows(tabular: TabularModels) -> np.ndarray:
    """Two rows: X[0] NaN and X[5] far outside its range in the first, X[9] infinite in
    the second."""
    x = np.array(tabular.x[:2], dtype=np.float32)
    x[0, 0] = np.nan
    x[0, 5] = tabular.x[:, 5].max() + 100
    x[1, 9] = np.inf
    return x


def set_policy(home: Path, policy: str, *extra: str) -> None:
    done = cli(home, "drift", "quality", MODEL, "--policy", policy, *extra)
    assert done.returncode == 0, done.stderr


def test_clean_rows_pass_unflagged_and_uncounted(
    served: tuple[RunningServer, Path], tabular: TabularModels
) -> None:
    server, _ = served
    reply = infer(server, MODEL, tabular.x[:50])
    assert reply.status == 200
    assert "servion_data_quality" not in reply.parameters
    assert findings(server, MODEL) == {}


def test_accept_counts_each_feature_and_check(
    served: tuple[RunningServer, Path], tabular: TabularModels
) -> None:
    server, _ = served
    before = screened(server, MODEL).get("accepted", 0)
    reply = infer(server, MODEL, bad_rows(tabular))
    assert reply.status == 200, reply.error
    assert "servion_data_quality" not in reply.parameters
    wait_until(
        lambda: screened(server, MODEL).get("accepted", 0) == before + 1, 10, "counted request"
    )
    found = findings(server, MODEL)
    assert found[("X[0]", "nan")] >= 1
    assert found[("X[5]", "range")] >= 1
    assert found[("X[9]", "inf")] >= 1
    assert not {f for f, _ in found} - {"X[0]", "X[5]", "X[9]"}


def test_flag_names_findings_over_rest_and_grpc(
    served: tuple[RunningServer, Path], tabular: TabularModels
) -> None:
    server, home = served
    set_policy(home, "flag")

    def flagged() -> bool:
        return "servion_data_quality" in infer(server, MODEL, bad_rows(tabular)).parameters

    wait_until(flagged, 15, "the flag policy applied")
    said = infer(server, MODEL, bad_rows(tabular)).parameters["servion_data_quality"]
    assert set(said.split(",")) == {"X[0]:nan=1", "X[5]:range=1", "X[9]:inf=1"}
    assert infer(server, MODEL, tabular.x[:3]).parameters == {}

    tensor = tg.InferInput("X", list(bad_rows(tabular).shape), "FP32")
    tensor.set_data_from_numpy(bad_rows(tabular))
    with tg.InferenceServerClient(server.grpc_url) as client:
        response = client.infer(MODEL, [tensor]).get_response(as_json=True)
    assert response["parameters"]["servion_data_quality"]["string_param"] == said
    assert screened(server, MODEL).get("flagged", 0) >= 2


def test_refuse_answers_400_naming_the_findings_and_keeps_serving(
    served: tuple[RunningServer, Path], tabular: TabularModels
) -> None:
    server, home = served
    set_policy(home, "refuse")
    wait_until(
        lambda: infer(server, MODEL, bad_rows(tabular)).status == 400,
        15,
        "the refuse policy applied",
    )
    error = infer(server, MODEL, bad_rows(tabular)).error
    assert "data quality" in error and "X[0]:nan=1" in error and "X[5]:range=1" in error
    far = tabular.x[:1].copy()
    far[0, 5] = 1e6  # JSON can carry this one
    reply = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=body(far), timeout=30)
    assert reply.status_code == 400
    assert reply.json()["error"].startswith(
        f"data quality: model '{MODEL}' version v1.0.0 refuses X[5]:range=1 ("
    )
    assert infer(server, MODEL, tabular.x[:10]).status == 200
    assert screened(server, MODEL).get("refused", 0) >= 2


def test_range_margin_widens_the_ranges(
    served: tuple[RunningServer, Path], tabular: TabularModels
) -> None:
    server, home = served
    x = tabular.x[:1].copy()
    span = tabular.x[:, 3].max() - tabular.x[:, 3].min()
    x[0, 3] = tabular.x[:, 3].max() + 0.2 * span
    set_policy(home, "refuse")
    wait_until(lambda: infer(server, MODEL, x).status == 400, 15, "the reference range")
    set_policy(home, "refuse", "--range-margin", "0.5")
    wait_until(lambda: infer(server, MODEL, x).status == 200, 15, "the wider range")
    set_policy(home, "off")
    wait_until(lambda: infer(server, MODEL, bad_rows(tabular)).status == 200, 15, "off")


def test_policy_changes_are_audited(served: tuple[RunningServer, Path]) -> None:
    _, home = served
    events = [e for e in read_events(home / "audit") if e["operation"] == "data_quality_policy"]
    assert events and events[-1]["model_name"] == MODEL
    assert events[-1]["outcome"] == "success"
    assert events[-1]["resources"] == {"policy": "off", "range_margin": 0.0}


def test_a_version_without_reference_is_not_range_checked(
    served: tuple[RunningServer, Path], tabular: TabularModels
) -> None:
    server, _ = served
    assert infer(server, "unchecked", bad_rows(tabular)).status == 200
    assert findings(server, "unchecked") == {}


def test_signature_refusals_are_counted_as_findings(
    served: tuple[RunningServer, Path], tabular: TabularModels
) -> None:
    server, _ = served
    wrong = body(tabular.x[:1])
    wrong["inputs"][0]["datatype"] = "FP64"
    assert httpx.post(f"{server.url}/v2/models/unchecked/infer", json=wrong).status_code == 400
    narrow = tabular.x[:1, :5]
    assert infer(server, "unchecked", narrow).status == 400
    found = findings(server, "unchecked")
    assert found[("X", "type")] == 1 and found[("X", "shape")] == 1
    assert screened(server, "unchecked") == {"refused": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "sometimes"], "'sometimes' is not one of"),
        (["--policy", "flag", "--range-margin", "-1"], "-1"),
        (["--policy", "flag", "--range-margin", "x"], "'x' is not a valid float"),
    ],
)
def test_bad_policies_exit_2(
    served: tuple[RunningServer, Path], args: list[str], message: str
) -> None:
    _, home = served
    done = cli(home, "drift", "quality", MODEL, *args)
    assert done.returncode == 2
    assert message in done.stderr


def test_unknown_model_exits_2(served: tuple[RunningServer, Path]) -> None:
    _, home = served
    done = cli(home, "drift", "quality", "nosuch", "--policy", "flag")
    assert done.returncode == 2
    assert "nosuch" in done.stderr
