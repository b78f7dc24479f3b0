"""What ``servion top`` computes from two scrapes: rates over the interval, error shares,
and quantiles interpolated as Prometheus' histogram_quantile does."""

from __future__ import annotations

import math
from typing import Any

from servion.monitoring import Row, Scrape, between, quantile
from servion.server.metrics_export import render


def snapshot(ok: int, failed: int, fast: int, slow: int, queued: int) -> dict[str, Any]:
    """One worker's snapshot (the shape ``serving/metrics`` writes) for model ``m`` and
    endpoint ``e``: ``fast`` requests under 25 µs, ``slow`` between 1 and 2.5 ms."""
    latency = [fast, 0, 0, 0, 0, 0, slow, *[0] * 11]
    latency += [0, fast * 10_000 + slow * 2_000_000]
    batch = [ok + failed, *[0] * 12, ok + failed]
    empty = [0] * 19
    return {
        "worker": "w1",
        "time": 0,
        "requests": [
            ["rest", "m", "2xx", ok],
            ["rest", "m", "5xx", failed],
            ["grpc", "e", "2xx", 4 * ok],
        ],
        "latency": [["rest", "m", latency]],
        "models": [
            {
                "model": "m",
                "version": "v1",
                "success": ok,
                "failures": {"model_error": failed, "invalid_input": 3},
                "rows": ok,
                "executions": ok + failed,
                "queue": empty,
                "compute": empty,
                "batch": batch,
                "queued": queued,
            }
        ],
        "endpoints": {"e": {"arms": {"m:v1": {"requests": 4 * ok, "errors": ok}}}},
        "process": {"cpu_seconds": 1.0, "resident_bytes": 1, "started": 0.0},
    }


def scrape(at: float, **counts: int) -> Scrape:
    return Scrape.parse(render([snapshot(**counts)], now=0).decode(), at)


def test_quantiles_interpolate_inside_the_bucket_like_histogram_quantile() -> None:
    buckets = [(0.001, 0.0), (0.002, 50.0), (0.004, 100.0), (math.inf, 100.0)]
    assert quantile(0.5, buckets) == 0.002
    assert quantile(0.25, buckets) == 0.0015
    assert quantile(0.99, buckets) == 0.002 + 0.002 * 49 / 50
    # Past the highest finite bound: that bound, as Prometheus answers.
    assert quantile(0.99, [(0.001, 10.0), (math.inf, 100.0)]) == 0.001
    # The first bucket starts at zero.
    assert quantile(0.5, [(0.004, 10.0), (math.inf, 10.0)]) == 0.002
    assert quantile(0.5, [(0.001, 0.0), (math.inf, 0.0)]) is None


def test_rows_are_the_differences_over_the_interval() -> None:
    before = scrape(10.0, ok=100, failed=0, fast=100, slow=0, queued=0)
    after = scrape(12.0, ok=190, failed=10, fast=100, slow=100, queued=7)
    rows = {(r.target, r.version): r for r in between(before, after)}
    assert list(rows) == [("e", ""), ("", "m:v1"), ("m", ""), ("", "v1")]
    model = rows[("m", "")]
    assert model.rps == 50.0  # 100 requests in 2 s
    assert model.error_ratio == 0.1
    # Every request of the interval took 1 to 2.5 ms: the fast ones came before it.
    assert model.p50_s == 0.00175 and model.p99_s is not None and 0.001 < model.p99_s < 0.0025
    assert model.batch == 1.0 and model.queue == 7
    version = rows[("", "v1")]
    assert version.rps == 50.0 and version.error_ratio == 0.1  # invalid input is not an error
    endpoint = rows[("e", "")]
    assert endpoint.rps == 180.0 and endpoint.error_ratio == 0.0
    assert endpoint.batch is None and endpoint.p50_s is None  # no latency series for it here
    assert rows[("", "m:v1")] == Row("", "m:v1", 180.0, 0.25, None, None, None, None)


def test_a_restarted_server_reads_as_no_traffic_rather_than_negative() -> None:
    before = scrape(0.0, ok=500, failed=5, fast=500, slow=0, queued=0)
    after = scrape(1.0, ok=3, failed=0, fast=3, slow=0, queued=0)
    model = {(r.target, r.version): r for r in between(before, after)}[("m", "")]
    assert model.rps == 0.0 and model.error_ratio is None and model.p99_s is None


def test_drift_is_what_the_last_window_flagged_per_version_and_model() -> None:
    features = [
        {"feature": f"X[{j}]", "psi": 0.5, "pvalue": 1e-6, "drifted": j < 3} for j in range(8)
    ]
    judged = snapshot(ok=10, failed=0, fast=10, slow=0, queued=0)
    judged["drift"] = {
        "m:v1": {"model": "m", "version": "v1", "time": 1.0, "rows": 500, "features": features}
    }
    before = scrape(0.0, ok=0, failed=0, fast=0, slow=0, queued=0)
    unjudged = scrape(1.0, ok=10, failed=0, fast=10, slow=0, queued=0)
    rows = {(r.target, r.version): r for r in between(before, unjudged)}
    assert rows[("m", "")].drifted is None and rows[("", "v1")].drifted is None  # no window
    after = Scrape.parse(render([judged], now=0).decode(), 1.0)
    rows = {(r.target, r.version): r for r in between(before, after)}
    assert rows[("m", "")].drifted == 3 and rows[("", "v1")].drifted == 3
    assert rows[("e", "")].drifted is None and rows[("", "m:v1")].drifted is None
