"""The router on its own: splits, stickiness that survives small weight changes, pins,
and per-arm statistics that merge across workers."""

from __future__ import annotations

import random

import pytest

from servion.errors import InvalidInput
from servion.routing import (
    ArmPolicy,
    ArmStats,
    EndpointPolicy,
    EndpointRouter,
    ModelRef,
    PayloadLogPolicy,
    merge_arm_stats,
    sticky_point,
)


def router(weights: list[float], sticky: str | None = None, seed: int = 0) -> EndpointRouter:
    arms = tuple(ArmPolicy(ModelRef("m", f"v1.{i}.0"), w) for i, w in enumerate(weights))
    policy = EndpointPolicy("ep", 1, arms, sticky_header=sticky)
    return EndpointRouter(policy, None, random.Random(seed).random)


def no_headers(_: bytes) -> bytes | None:
    return None


def test_weighted_split_follows_the_weights() -> None:
    r = router([70, 20, 10])
    counts = {"v1.0.0": 0, "v1.1.0": 0, "v1.2.0": 0}
    for _ in range(20_000):
        counts[r.choose(no_headers, None).version] += 1
    # 20,000 draws: a share's standard deviation is under 0.33 points.
    assert abs(counts["v1.0.0"] / 200 - 70) < 1.5
    assert abs(counts["v1.1.0"] / 200 - 20) < 1.5
    assert abs(counts["v1.2.0"] / 200 - 10) < 1.5


def test_a_zero_weight_arm_gets_nothing_unless_pinned() -> None:
    r = router([100, 0])
    assert {r.choose(no_headers, None).version for _ in range(2000)} == {"v1.0.0"}
    assert r.choose(no_headers, b"v1.1.0").version == "v1.1.0"
    assert r.choose(no_headers, b" m:v1.1.0 ").version == "v1.1.0"


def test_unknown_pin_is_refused_with_the_arms() -> None:
    with pytest.raises(InvalidInput) as info:
        router([50, 50]).choose(no_headers, b"v9.0.0")
    assert "no arm 'v9.0.0' to pin: it serves m:v1.0.0, m:v1.1.0" in info.value.message


def test_sticky_callers_keep_their_arm_and_small_changes_move_few() -> None:
    users = [f"user-{i}".encode() for i in range(10_000)]
    before = router([80, 20], sticky="x-user")
    after = router([75, 25], sticky="x-user")

    def arm(r: EndpointRouter, user: bytes) -> str:
        return r.choose(lambda name: user if name == b"x-user" else None, None).version

    first = {u: arm(before, u) for u in users}
    assert all(arm(before, u) == first[u] for u in users[:500])  # same answer every time
    moved = sum(first[u] != arm(after, u) for u in users)
    # Only callers between the old and new boundary (5 % of them) change arms.
    assert 0.03 * len(users) < moved < 0.07 * len(users)
    share = sum(v == "v1.1.0" for v in first.values()) / len(users)
    assert abs(share - 0.20) < 0.02


def test_sticky_points_are_spread_evenly() -> None:
    points = [sticky_point(f"k{i}".encode()) for i in range(10_000)]
    assert all(0.0 <= p < 1.0 for p in points)
    assert abs(sum(p < 0.5 for p in points) / len(points) - 0.5) < 0.02


def test_arm_statistics_merge_across_workers() -> None:
    a, b = ArmStats(), ArmStats()
    for ms in (0.1, 0.2, 0.3, 5.0):
        a.record(ms, ok=True)
    for ms in (0.2, 40.0):
        b.record(ms, ok=False)
    merged = merge_arm_stats([a.to_dict(), b.to_dict()])
    assert merged["requests"] == 6 and merged["errors"] == 2
    assert merged["error_rate"] == pytest.approx(2 / 6)
    assert 0.2 <= merged["p50_ms"] <= 0.3 * 1.25
    assert 40.0 <= merged["p99_ms"] <= 40.0 * 1.25
    assert merge_arm_stats([])["p50_ms"] is None
    # A report is a snapshot: a canary step's latencies are the report after it minus the one
    # before it, which would always be nothing if the report were the live counts.
    before = a.to_dict()
    a.record(7.0, ok=True)
    assert sum(a.to_dict()["latency"]) - sum(before["latency"]) == 1


def test_payload_log_counters_outlive_revisions() -> None:
    arms = (ArmPolicy(ModelRef("m", "v1.0.0"), 100.0),)
    log = PayloadLogPolicy(1.0, "file:///x.jsonl", 8, 10)
    first = EndpointRouter(EndpointPolicy("ep", 1, arms, payload_log=log))
    first.payload_stats.add(written=3, dropped=1)
    assert first.stats()["payload_log"] == {"written": 3, "dropped": 1, "failed": 0}
    # Other settings, the same counters: they are Prometheus counters and never go down.
    other = PayloadLogPolicy(0.5, "http://collector/e", 8, 10)
    second = EndpointRouter(EndpointPolicy("ep", 2, arms, payload_log=other), first)
    assert second.payload_stats is first.payload_stats
    assert EndpointRouter(EndpointPolicy("ep", 3, arms), second).stats()["payload_log"] is None
