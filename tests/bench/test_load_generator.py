"""The Python load generator against a stub server whose timing and framing we control."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from stub_http import Framing, StubServer

from servion.bench import InferTarget, LoadSpec, Slo, check_slo, prepare_target, run_load
from servion.errors import RuntimeFailure


def target(url: str, tmp_path: Path) -> InferTarget:
    body = tmp_path / "body.json"
    body.write_bytes(b'{"inputs":[]}')
    return prepare_target(url, "stub", binary=False, body_file=body)


@pytest.mark.parametrize("framing", ["length", "chunked", "close", "eof"])
def test_every_response_framing_is_read(framing: Framing, tmp_path: Path) -> None:
    stub = StubServer(framing)
    with stub.running() as url:
        result = run_load(
            target(url, tmp_path), LoadSpec(concurrency=4, duration_s=0.3, engine="python")
        )
    assert result.error_count == 0, result.errors
    # The probe is one request more than the run counted.
    assert result.requests == stub.requests - 1 > 20
    assert result.latency.p50_ms <= result.latency.p99_ms <= result.latency.max_ms


def test_error_statuses_are_counted_and_miss_the_slo(tmp_path: Path) -> None:
    stub = StubServer()
    with stub.running() as url:
        tgt = target(url, tmp_path)
        stub.respond(503)
        # The probe refuses a server that answers with an error.
        with pytest.raises(RuntimeFailure, match="HTTP 503"):
            target(url, tmp_path)
        result = run_load(tgt, LoadSpec(concurrency=2, duration_s=0.2, engine="python"))
    assert result.requests > 0 and result.errors["status"] == result.requests
    verdict = check_slo(result, Slo(min_rps=0))
    assert not verdict.met
    assert [c.name for c in verdict.checks if not c.met] == ["error_rate"]


def test_open_loop_measures_from_the_scheduled_time(tmp_path: Path) -> None:
    """A server that can answer 50/s, offered 100/s on one connection: the queue
    grows, and latency must show it (no coordinated omission)."""
    stub = StubServer(delay_s=0.02)
    with stub.running() as url:
        tgt = target(url, tmp_path)
        closed = run_load(tgt, LoadSpec(concurrency=1, duration_s=0.3, engine="python"))
        opened = run_load(
            tgt, LoadSpec(rate=100, duration_s=0.6, engine="python", max_connections=1)
        )
    assert closed.latency.p99_ms < 100
    assert opened.mode == "open" and opened.connections == 1
    assert opened.requests == 60 and opened.error_count == 0
    # The last request waits behind ~30 others: about 0.6 s, not 20 ms.
    assert opened.latency.max_ms > 400
    assert opened.rps < 60


def test_a_server_that_is_down(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RuntimeFailure, match="cannot talk to"):
        target(f"http://127.0.0.1:{port}", tmp_path)
    stub = StubServer()
    with stub.running() as url:
        tgt = target(url, tmp_path)
    # The stub is gone now: every attempt fails to connect.
    result = run_load(tgt, LoadSpec(concurrency=2, duration_s=0.2, engine="python"))
    assert result.requests == 0 and result.errors["connect"] > 0
    assert not check_slo(result, Slo(min_rps=0)).met
