"""SLO defaults and verdicts, percentiles, and which engine runs a spec."""

from __future__ import annotations

import shutil

import pytest

from servion.bench import LatencySummary, LoadResult, LoadSpec, Slo, check_slo, choose_engine
from servion.errors import ConfigError, InvalidInput


def result(requests: int = 5000, p99_ms: float = 20.0, errors: int = 0) -> LoadResult:
    latency = LatencySummary(p99_ms / 4, p99_ms / 2, p99_ms, p99_ms / 3, p99_ms * 2)
    return LoadResult("python", "closed", 8, None, 2.0, requests, {"read": errors}, latency)


def test_defaults_follow_the_load_mode() -> None:
    assert Slo.for_run(None) == Slo(100.0, 1000.0, 0.0)
    assert Slo.for_run(200.0).min_rps == pytest.approx(190.0)
    assert Slo.for_run(200.0, p99_ms=5, min_rps=10, max_error_rate=0.5) == Slo(5, 10, 0.5)


def test_verdict_names_each_missed_objective() -> None:
    assert check_slo(result(), Slo()).met
    missed = check_slo(result(requests=1000, p99_ms=150, errors=3), Slo())
    assert [c.name for c in missed.checks if not c.met] == ["p99_ms", "rps", "error_rate"]
    assert missed.to_dict()["met"] is False
    assert check_slo(result(errors=3), Slo(max_error_rate=0.01)).met
    assert not check_slo(result(requests=0), Slo(min_rps=0)).met


def test_percentiles() -> None:
    summary = LatencySummary.from_ns([i * 1_000_000 for i in range(1, 101)])
    assert summary.p50_ms == pytest.approx(50.5)
    assert summary.p99_ms == pytest.approx(99.01)
    assert summary.max_ms == 100.0
    assert LatencySummary.from_ns([]) == LatencySummary(0, 0, 0, 0, 0)


def test_specs_and_engine_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInput, match="not both"):
        LoadSpec(concurrency=2, rate=3.0)
    with pytest.raises(InvalidInput):
        LoadSpec(concurrency=0)
    assert LoadSpec().connections == 64 and LoadSpec().mode == "closed"
    assert choose_engine(LoadSpec(rate=5.0)) == "python"
    assert choose_engine(LoadSpec(engine="python")) == "python"
    if shutil.which("wrk"):
        assert choose_engine(LoadSpec()) == "wrk"
    monkeypatch.setenv("PATH", "")
    assert choose_engine(LoadSpec()) == "python"
    with pytest.raises(ConfigError, match="not installed"):
        choose_engine(LoadSpec(engine="wrk"))
