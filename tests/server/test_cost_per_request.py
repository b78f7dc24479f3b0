"""The cost of a replica: the configured price per hour of what runs, spread over the
requests every live worker answered in its window; and how bad prices are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from servion.cli.endpoints import cost_line
from servion.config import CostSettings, Settings
from servion.errors import ConfigError
from servion.server.cost_export import Cost, Pricing, cost_of, cost_summary, request_rate
from servion.server.metrics_export import render


def worker(name: str, requests: int, seconds: float, at: float = 0.0) -> dict[str, Any]:
    """A worker's snapshot with only what the cost reads (and what every render needs)."""
    return {
        "worker": name,
        "time": at,
        "recent": {"requests": requests, "seconds": seconds},
        "process": {"cpu_seconds": 0.0, "resident_bytes": 0, "started": 0.0},
    }


def cost_series(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if s.name.startswith("servion_cost_")
    }


def test_the_rate_is_every_live_workers_rate_added_up() -> None:
    # Two workers of different ages: each one's requests over its own window.
    live = [worker("a", 600, 60.0), worker("b", 100, 10.0)]
    assert request_rate(live) == 20.0
    assert request_rate([]) is None  # metrics off, or no live worker: unknown, not zero
    assert request_rate([worker("new", 0, 0.0)]) is None


def test_cost_per_1000_requests_is_the_price_per_hour_over_the_hourly_requests() -> None:
    pricing = Pricing(replica_hour=2.0, gpu_hour=1.5)
    cost = cost_of(pricing, [worker("a", 600, 60.0), worker("b", 600, 60.0)], gpus=2)
    assert cost.per_hour == {"replica": 2.0, "gpu": 3.0}
    assert cost.total_per_hour == 5.0
    assert cost.requests_per_s == 20.0
    # 5 an hour over 72,000 requests an hour.
    assert cost.per_1000_requests == pytest.approx(5.0 / 72_000 * 1000)


def test_no_price_or_no_request_gives_no_cost_per_request() -> None:
    assert Cost({}, requests_per_s=10.0).per_1000_requests is None
    assert Cost({"replica": 2.0}, requests_per_s=0.0).per_1000_requests is None
    assert Cost({"replica": 2.0}, requests_per_s=None).per_1000_requests is None
    # A free replica costs nothing per request: zero, not absent.
    assert Cost({"replica": 0.0}, requests_per_s=5.0).per_1000_requests == 0.0


def test_the_series_are_absent_until_a_price_is_configured() -> None:
    live = [worker("a", 600, 60.0)]
    assert cost_series(render(live, now=0.0)) == {}
    priced = cost_series(render(live, now=0.0, pricing=Pricing(replica_hour=3.6)))
    assert priced == {
        ("servion_cost_per_hour", (("resource", "replica"),)): 3.6,
        ("servion_cost_per_1000_requests", ()): pytest.approx(0.1),
    }


def test_idle_and_dead_workers_give_no_cost_per_request() -> None:
    pricing = Pricing(replica_hour=3.6)
    idle = cost_series(render([worker("a", 0, 60.0)], now=0.0, pricing=pricing))
    assert list(idle) == [("servion_cost_per_hour", (("resource", "replica"),))]
    # A snapshot older than LIVE_S is a dead worker's: its window describes no present.
    dead = cost_series(render([worker("a", 600, 60.0, at=0.0)], now=10.0, pricing=pricing))
    assert ("servion_cost_per_1000_requests", ()) not in dead


def test_a_gpu_price_counts_the_gpus_nvml_sees() -> None:
    # No GPU on the test machines: a GPU price adds nothing, and says so.
    summary = cost_summary(Pricing(replica_hour=1.0, gpu_hour=2.5), [worker("a", 60, 60.0)])
    assert summary["gpus"] == 0
    assert summary["per_hour_by_resource"] == {"replica": 1.0, "gpu": 0.0}
    assert summary["per_hour"] == 1.0
    assert summary["per_1000_requests"] == pytest.approx(1.0 / 3600 * 1000)


def test_pricing_comes_from_the_settings_the_supervisor_passes_as_json(tmp_path: Path) -> None:
    settings = Settings.load(home=tmp_path)
    settings = settings.model_copy(update={"cost": CostSettings(replica_hour=2.0)})
    pricing = Pricing.from_config(settings.model_dump(mode="json")["cost"])
    assert pricing == Pricing(replica_hour=2.0, gpu_hour=None, currency="USD", window_s=60.0)
    assert pricing.configured and not Pricing().configured


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "SERVION_COST_REPLICA_HOUR",
            "-1",
            "SERVION_COST_REPLICA_HOUR=-1: Input should be greater than or equal to 0",
        ),
        (
            "SERVION_COST_GPU_HOUR",
            "two",
            "SERVION_COST_GPU_HOUR=two: Input should be a valid number",
        ),
        ("SERVION_COST_GPU_HOUR", "inf", "SERVION_COST_GPU_HOUR=inf: Input should be a finite"),
        ("SERVION_COST_CURRENCY", "dollars", "SERVION_COST_CURRENCY=dollars: String should"),
    ],
)
def test_a_bad_price_in_the_environment_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as refused:
        Settings.load(home=tmp_path)
    assert refused.value.message.startswith(message), refused.value.message


def test_the_status_line() -> None:
    base = {"configured": True, "currency": "USD", "per_hour": 2.4, "gpus": 0, "window_s": 60}
    assert cost_line({**base, "requests_per_s": 812.4, "per_1000_requests": 0.000821}) == (
        "cost: $0.000821 per 1,000 requests at 812 req/s ($2.40/hour)"
    )
    assert cost_line({**base, "gpus": 2, "requests_per_s": 0.5, "per_1000_requests": 1.33}) == (
        "cost: $1.33 per 1,000 requests at 0.5 req/s ($2.40/hour with 2 GPUs)"
    )
    euros = {**base, "currency": "EUR", "requests_per_s": 0.0, "per_1000_requests": None}
    assert cost_line(euros) == "cost: 2.40 EUR/hour, no request in the last 60 s"
    off = {**base, "requests_per_s": None, "per_1000_requests": None}
    assert cost_line(off) == "cost: $2.40/hour (no request rate: metrics are off)"
    assert cost_line({"configured": False}) == (
        "cost: not configured (--cost-per-replica-hour, --cost-per-gpu-hour)"
    )
