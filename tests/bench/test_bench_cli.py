"""``servion bench`` as a real process against a real ``servion serve``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import RunningServer, TabularModels, cli, register, served

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
# Loose objectives: these tests check the numbers are sane, not that a CI box is fast.
EASY_SLO = ("--slo-p99-ms", "2000", "--slo-rps", "20")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[RunningServer]:
    """One server for the module: starting one per test would cost more than the tests."""
    tmp = tmp_path_factory.mktemp("bench")
    with served(tmp, lambda r: register(r, "tabular", tabular.onnx)) as srv:
        yield srv


def bench(tmp_path: Path, server: RunningServer, *args: str) -> tuple[int, dict[str, Any]]:
    done = cli(tmp_path, "bench", server.url, "--model", "tabular", "--json", *args)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout else {}


def inferences(server: RunningServer) -> int:
    stats = httpx.get(f"{server.url}/v2/models/tabular/stats").json()["model_stats"]
    return int(stats[0]["inference_count"])


def assert_sane(out: dict[str, Any], engine: str) -> None:
    assert out["engine"] == engine and out["mode"] == "closed"
    assert out["error_count"] == 0, out["errors"]
    assert out["requests"] > 100 and out["rps"] > 20
    lat = out["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"] < 2000
    assert out["slo"]["met"] is True
    assert out["url"].endswith("/v2/models/tabular/infer")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_python_engine(tmp_path: Path, server: RunningServer, binary: bool) -> None:
    before = inferences(server)
    flags = ("--binary",) if binary else ()
    code, out = bench(
        tmp_path,
        server,
        *("--engine", "python", "--concurrency", "8", "--duration", "1.5"),
        *EASY_SLO,
        *flags,
    )
    assert code == 0, out
    assert_sane(out, "python")
    # Every counted response is an inference the server ran (plus the probe).
    assert inferences(server) - before == out["requests"] + 1


@needs_wrk
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_wrk_engine(tmp_path: Path, server: RunningServer, binary: bool) -> None:
    flags = ("--binary",) if binary else ()
    code, out = bench(tmp_path, server, "--engine", "wrk", "--duration", "1", *EASY_SLO, *flags)
    assert code == 0, out
    assert_sane(out, "wrk")
    assert out["connections"] == 64


def test_open_loop_holds_its_rate(tmp_path: Path, server: RunningServer) -> None:
    code, out = bench(tmp_path, server, "--rate", "200", "--duration", "2")
    assert code == 0, out
    assert out["engine"] == "python" and out["mode"] == "open" and out["rate"] == 200
    assert 380 <= out["requests"] <= 400 and out["error_count"] == 0
    assert 170 <= out["rps"] <= 210
    # With no --slo-rps, an open loop must keep up with its own rate.
    assert {c["name"]: c["objective"] for c in out["slo"]["checks"]}["rps"] == "> 190 req/s"


def test_text_report_and_missed_slo(tmp_path: Path, server: RunningServer) -> None:
    done = cli(
        tmp_path,
        "bench",
        server.url,
        "--model",
        "tabular",
        "--engine",
        "python",
        "--duration",
        "0.5",
        "--slo-rps",
        "10000000",
    )
    assert done.returncode == 1, done.stderr
    assert "REQ/S" in done.stdout and "P99 MS" in done.stdout
    assert "SLO rps > 10,000,000 req/s" in done.stdout and "MISSED" in done.stdout
    assert done.stdout.rstrip().endswith("SLO missed")


def test_unknown_model_exits_1_with_the_servers_message(
    tmp_path: Path, server: RunningServer
) -> None:
    done = cli(tmp_path, "bench", server.url, "--model", "nope", "--duration", "1")
    assert done.returncode == 1
    assert "HTTP 404" in done.stderr and "unknown model 'nope'" in done.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"inputs":[{"name":"X","datatype":"FP32","shape":[1,2],"data":[1,2]}]}')
    done = cli(tmp_path, "bench", server.url, "--model", "tabular", "--body", str(bad))
    assert done.returncode == 1
    assert "probe request" in done.stderr and "HTTP 400" in done.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--concurrency", "-3"), "--concurrency"),
        (("--concurrency", "4", "--rate", "10"), "not both"),
        (("--rate", "10", "--engine", "wrk"), "fixed rate"),
        (("--duration", "0"), "--duration"),
        (("--body", "/nonexistent/body.json"), "cannot read --body"),
    ],
)
def test_bad_arguments_exit_2(
    tmp_path: Path, server: RunningServer, args: tuple[str, ...], words: str
) -> None:
    done = cli(tmp_path, "bench", server.url, "--model", "tabular", *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert words in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_url_exits_2(tmp_path: Path) -> None:
    done = cli(tmp_path, "bench", "https://example.invalid", "--model", "tabular")
    assert done.returncode == 2 and "plain HTTP only" in done.stderr


def test_batch_size_and_grpc(tmp_path: Path, server: RunningServer) -> None:
    before = inferences(server)
    code, out = bench(
        tmp_path, server, "--engine", "python", "--batch-size", "16", "--duration", "1", *EASY_SLO
    )
    assert code == 0, out
    assert inferences(server) - before == 16 * (out["requests"] + 1)
    done = cli(
        tmp_path,
        "bench",
        f"grpc://{server.grpc_url}",
        *("--model", "tabular", "--json", "--batch-size", "64", "--concurrency", "8"),
        *("--duration", "1.5", *EASY_SLO),
    )
    assert done.returncode == 0, done.stderr
    grpc_out = json.loads(done.stdout)
    assert grpc_out["engine"] == "grpc" and grpc_out["error_count"] == 0
    assert grpc_out["requests"] > 20 and grpc_out["slo"]["met"] is True
    assert 0 < grpc_out["latency_ms"]["p50"] <= grpc_out["latency_ms"]["p99"]


@pytest.mark.parametrize(
    ("url", "args", "code", "words"),
    [
        ("grpc://nohost", (), 2, "grpc://HOST:PORT"),
        ("grpc://127.0.0.1:1", ("--rate", "5"), 2, "closed loop"),
        ("grpc://127.0.0.1:1", ("--timeout", "1"), 1, "metadata of model"),
    ],
    ids=["no-port", "rate", "nothing-listening"],
)
def test_grpc_refusals(
    tmp_path: Path, url: str, args: tuple[str, ...], code: int, words: str
) -> None:
    done = cli(tmp_path, "bench", url, "--model", "tabular", "--duration", "1", *args)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert words in done.stderr and "Traceback" not in done.stderr


def test_grpc_unknown_model_gives_the_servers_message(
    tmp_path: Path, server: RunningServer
) -> None:
    done = cli(tmp_path, "bench", f"grpc://{server.grpc_url}", "--model", "nope")
    assert done.returncode == 1
    assert "NOT_FOUND" in done.stderr and "unknown model 'nope'" in done.stderr
