"""Canary gates on synthetic step counts: evidence fails a step, noise does not."""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np
import pytest

from servion.deploy._statistics import mann_whitney_p, rate_increase_bound
from servion.deploy.gates import judge
from servion.deploy.spec import Gates, spec_from_dict
from servion.routing import BUCKETS_MS, percentile


def arm(latencies_ms: dict[float, int], errors: int = 0) -> dict[str, Any]:
    """One arm's step: ``{latency in ms: requests}``, binned as workers bin them."""
    latency = [0] * (len(BUCKETS_MS) + 1)
    for ms, n in latencies_ms.items():
        latency[bisect.bisect_left(BUCKETS_MS, ms)] += n
    return {"requests": sum(latency), "errors": errors, "latency": latency}


# Sub-millisecond answers, a few of them slowed by a busy machine.
BODY = {0.15: 20, 0.19: 60, 0.24: 120, 0.3: 90, 0.37: 10}
STABLE = arm({**BODY, 5.4: 1})


def slower(body: dict[float, int], factor: float) -> dict[float, int]:
    return {ms * factor: n for ms, n in body.items()}


def test_a_healthy_canary_with_noisy_tails_goes_on() -> None:
    # The shape of a step that used to fail: a few canary requests caught by the busy
    # machine make its p99 ten times the stable one's, over the same quick body.
    canary = arm({0.15: 5, 0.19: 18, 0.24: 40, 0.3: 30, 0.37: 4, 1.8: 1, 4.3: 2})
    c_p99, s_p99 = percentile(canary["latency"], 0.99), percentile(STABLE["latency"], 0.99)
    assert c_p99 is not None and s_p99 is not None and c_p99 > 1.5 * s_p99 + 1
    verdict = judge(canary, STABLE, Gates())
    assert verdict.go_on, verdict.reason
    assert "p99 4.34 ms (stable 0.37 ms)" in verdict.reason
    assert (
        "median 0.30 ms (stable 0.30 ms)" in verdict.reason and "Mann-Whitney p=" in verdict.reason
    )
    # Slower by less than the slack is noise too, whatever the ratio.
    assert judge(arm(slower(BODY, 3)), STABLE, Gates()).go_on


def test_a_canary_three_times_slower_is_caught() -> None:
    stable = arm(slower(BODY, 10))  # 1.5 to 3.7 ms
    canary = arm(slower(BODY, 30))
    verdict = judge(canary, stable, Gates())
    assert not verdict.go_on
    assert verdict.reason.startswith("canary median 8.47 ms vs stable 2.78 ms: 3.1x, at least")
    assert "at 99 % confidence (allowed 1.5x + 1 ms), Mann-Whitney p=" in verdict.reason
    assert verdict.reason.endswith("over 300/300 requests")
    assert judge(canary, stable, Gates()) == verdict  # the same counts, the same verdict
    # What the gates allow, they allow.
    assert judge(canary, stable, Gates(max_median_ratio=4, max_p99_ratio=4)).go_on
    # A slowdown of one request in ten shows in the p99 once there are enough requests.
    tail = {ms: 10 * n for ms, n in slower(BODY, 10).items()}
    slow_tail = arm({**{ms: n * 9 // 10 for ms, n in tail.items()}, 40.0: 300})
    verdict = judge(slow_tail, arm(tail), Gates())
    assert not verdict.go_on and verdict.reason.startswith("canary p99 40.39 ms vs stable 4.34 ms")


def test_latency_is_compared_only_over_enough_requests_of_each_arm() -> None:
    stable = arm(slower(BODY, 10))
    few = arm({7.0: 20})
    verdict = judge(few, stable, Gates(min_requests=50))
    assert verdict.go_on
    assert "latency not compared over 20/300 canary/stable requests" in verdict.reason
    assert "(the gate needs 50 of each)" in verdict.reason
    assert not judge(few, stable, Gates(min_requests=20)).go_on
    # No stable traffic in the step: only the error gate can judge.
    assert judge(arm(slower(BODY, 30)), arm({}), Gates()).go_on


def test_a_canary_failing_every_request_is_caught() -> None:
    failing = arm({0.2: 50}, errors=50)
    verdict = judge(failing, arm(BODY, errors=2), Gates())
    assert not verdict.go_on
    assert verdict.reason.startswith("canary error rate 100.00 % vs stable 0.67 % over 50/300")
    assert "at 99 % confidence, allowed +1.00)" in verdict.reason
    assert not judge(failing, arm({}), Gates()).go_on  # nothing to compare with but 0
    assert not judge(arm({0.2: 10}, errors=10), arm(BODY), Gates()).go_on
    some = judge(arm({5.0: 100}, errors=10), arm({5.0: 1000}, errors=5), Gates())
    assert not some.go_on and "canary error rate 10.00 % vs stable 0.50 %" in some.reason


def test_a_small_error_difference_goes_on_unless_it_is_clearly_too_big() -> None:
    assert judge(arm({0.2: 100}, errors=2), arm({0.2: 100}, errors=1), Gates()).go_on
    # Large samples show a real increase of one point, which the default allows ...
    many = (arm({0.2: 20_000}, errors=400), arm({0.2: 20_000}, errors=200))
    assert judge(*many, Gates()).go_on
    # ... and a stricter gate does not.
    assert not judge(*many, Gates(max_error_rate_increase=0.002)).go_on


def test_the_statistics_agree_with_the_textbooks() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    for _ in range(5):
        x = rng.integers(0, 30, 67) * (rng.random(67) < 0.3)
        y = rng.integers(0, 30, 67) * (rng.random(67) < 0.3)
        expected = stats.mannwhitneyu(
            np.repeat(np.arange(67), x),
            np.repeat(np.arange(67), y),
            alternative="greater",
            method="asymptotic",
        ).pvalue
        assert mann_whitney_p(list(x), list(y)) == pytest.approx(expected, rel=1e-9)
    # Newcombe (1998), example (a): 56/70 vs 48/80, 95 % interval 0.0524 to 0.3339.
    assert rate_increase_bound(56, 70, 48, 80, 0.025) == pytest.approx(0.0524, abs=5e-5)


def test_specs_stored_before_the_new_gates_still_read() -> None:
    stored = {
        "endpoint": "ep1",
        "models": [{"model": "m1m", "version": "v2.0.0", "weight": 100}],
        "rollout": {
            "steps": [50, 100],
            "gates": {
                "max_error_rate_increase": 0.02,
                "max_p99_ratio": 2.0,
                "p99_slack_ms": 5.0,
                "min_requests": 20,
            },
        },
    }
    spec = spec_from_dict(stored, "rollout")
    assert spec.rollout is not None
    gates = spec.rollout.gates
    assert (gates.max_p99_ratio, gates.p99_slack_ms, gates.min_requests) == (2.0, 5.0, 20)
    assert (gates.alpha, gates.max_median_ratio) == (0.01, 1.5)
