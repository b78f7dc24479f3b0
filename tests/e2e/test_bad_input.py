"""Every malformed request gets a precise 4xx, and the server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from conftest import RunningServer, TabularModels, register, served

ROW = [0.1] * 32


def good(**overrides: object) -> dict[str, object]:
    tensor: dict[str, object] = {"name": "X", "shape": [1, 32], "datatype": "FP32", "data": ROW}
    tensor.update(overrides)
    return {"inputs": [tensor]}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("bad-input")
    setup = lambda r: register(r, "tabular", tabular.onnx)  # noqa: E731
    with served(tmp, setup, "--max-body-bytes", "65536") as srv:
        yield srv


CASES: list[tuple[str, str, bytes | dict[str, object], dict[str, str], int, str]] = [
    ("malformed JSON", "tabular", b'{"inputs": [', {}, 400, "not valid JSON"),
    ("non-UTF-8", "tabular", b'{"inputs": "\xff\xfe"}', {}, 400, "JSON"),
    (
        "NaN literal",
        "tabular",
        b'{"inputs": [{"name": "X", "shape": [1, 1], "datatype": "FP32", "data": [NaN]}]}',
        {},
        400,
        "JSON",
    ),
    (
        "Infinity literal",
        "tabular",
        b'{"inputs": [{"name": "X", "shape": [1], "datatype": "FP32", "data": [Infinity]}]}',
        {},
        400,
        "JSON",
    ),
    ("wrong shape", "tabular", good(shape=[1, 31], data=ROW[:31]), {}, 400, "shape"),
    ("count mismatch", "tabular", good(shape=[2, 32]), {}, 400, ""),
    ("wrong datatype", "tabular", good(datatype="FP64"), {}, 400, "datatype"),
    ("unknown datatype", "tabular", good(datatype="FLOAT"), {}, 400, "datatype"),
    ("wrong input name", "tabular", good(name="nope"), {}, 400, "unknown input"),
    ("strings as floats", "tabular", good(data=["a"] * 32), {}, 400, ""),
    ("absurd shape", "tabular", good(shape=[1_000_000_000, 1_000_000_000]), {}, 4, ""),
    ("negative dim", "tabular", good(shape=[-1, 32]), {}, 400, "shape"),
    ("no inputs", "tabular", {"inputs": []}, {}, 400, ""),
    ("unknown output", "tabular", {**good(), "outputs": [{"name": "zzz"}]}, {}, 400, "output"),
    ("batch too large", "tabular", good(shape=[129, 32], data=ROW * 129), {}, 413, "batch size"),
    ("deep nesting", "tabular", b"[" * 5000 + b"]" * 5000, {}, 400, ""),
    ("body over limit", "tabular", b"{" + b" " * 70000 + b"}", {}, 413, "limit"),
    (
        "pickle body",
        "tabular",
        b"\x80\x04K\x01.",
        {"content-type": "application/python-pickle"},
        415,
        "pickle",
    ),
    ("unknown model", "nosuch", good(), {}, 404, "unknown model"),
    ("bad header length", "tabular", good(), {"inference-header-content-length": "99999"}, 400, ""),
]


@pytest.mark.parametrize(
    ("case", "model", "body", "headers", "status", "words"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_request_gets_precise_4xx(
    server: RunningServer,
    case: str,
    model: str,
    body: bytes | dict[str, object],
    headers: dict[str, str],
    status: int,
    words: str,
) -> None:
    url = f"{server.url}/v2/models/{model}/infer"
    if isinstance(body, bytes):
        reply = httpx.post(url, content=body, headers=headers)
    else:
        reply = httpx.post(url, json=body, headers=headers)
    if status == 4:
        assert 400 <= reply.status_code < 500, reply.text
    else:
        assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert words.lower() in error.lower()
    assert "/" not in error or "application/" in error or "v2/" in error  # no file paths leak
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    assert httpx.post(url.replace(model, "tabular"), json=good()).status_code == 200


def test_unknown_version_and_route(server: RunningServer) -> None:
    reply = httpx.post(f"{server.url}/v2/models/tabular/versions/v9.9.9/infer", json=good())
    assert reply.status_code == 404 and "v9.9.9" in reply.json()["error"]
    assert httpx.get(f"{server.url}/v3/whatever").status_code == 404
    assert httpx.get(f"{server.url}/v2/models/nosuch").status_code == 404


def test_names_cannot_inject_log_lines(server: RunningServer) -> None:
    reply = httpx.post(f"{server.url}/v2/models/evil%0Aforged%20line/infer", json=good())
    assert reply.status_code == 404
    assert "\n" not in reply.json()["error"]
    assert not any(line.startswith("forged") for line in server.log().splitlines())
