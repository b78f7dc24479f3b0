"""Canary steps and step deltas on their own."""

from __future__ import annotations

import bisect

from servion.deploy import parse_spec
from servion.deploy.rollout import combine, delta, step_spec
from servion.deploy.spec import spec_from_dict
from servion.routing import BUCKETS_MS


def counts(requests: int, errors: int, latency_ms: float) -> dict[str, object]:
    latency = [0] * (len(BUCKETS_MS) + 1)
    latency[bisect.bisect_left(BUCKETS_MS, latency_ms)] = requests
    return {"requests": requests, "errors": errors, "latency": latency}


STABLE = parse_spec(
    "endpoint: ep1\nmodels: [{model: m1m, version: v1.0.0, weight: 60},"
    " {model: m1m, version: v1.1.0, weight: 40}]\nsticky: {header: x-user}\n"
    "cache: {max_entries: 10}\ntimeout_ms: 200\nshadows: [{model: m1m, version: v2.0.0}]"
)
CANARY = parse_spec(
    "endpoint: ep1\nmodels: [{model: m1m, version: v2.0.0}]\n"
    "rollout: {steps: [10, 50, 100], interval_s: 5}"
)


def test_steps_scale_the_stable_arms_and_keep_the_rest_of_the_spec() -> None:
    step = step_spec(STABLE, CANARY, 10)
    assert [(a.label, round(a.weight, 6)) for a in step.models] == [
        ("m1m:v1.0.0", 54.0),
        ("m1m:v1.1.0", 36.0),
        ("m1m:v2.0.0", 10.0),
    ]
    assert step.rollout is None  # a step is a plain revision
    # The stable revision's settings carry over; the canary stops being a shadow of itself.
    assert step.sticky == STABLE.sticky and step.cache == STABLE.cache
    assert step.timeout_ms == 200 and step.shadows == []
    promoted = step_spec(STABLE, CANARY, 100)
    assert [(a.label, a.weight) for a in promoted.models] == [("m1m:v2.0.0", 100.0)]
    assert promoted.cache == STABLE.cache and promoted.timeout_ms == 200
    assert promoted.rollout is None
    # A canary spec read back from storage (every default written out) changes nothing more.
    stored = spec_from_dict(CANARY.to_dict())
    assert step_spec(STABLE, stored, 50).cache == STABLE.cache
    assert step_spec(STABLE, stored, 50).shadows == []  # only the canary's own shadow went
    production = parse_spec(STABLE.to_yaml() + "environment: production\n")
    assert step_spec(production, stored, 100).environment == "production"
    # What the canary spec sets, it sets.
    faster = parse_spec(CANARY.to_yaml() + "timeout_ms: 50\n")
    assert step_spec(STABLE, faster, 100).timeout_ms == 50
    odd = step_spec(STABLE, CANARY, 33.3)
    assert abs(sum(a.weight for a in odd.models) - 100) < 1e-9


def test_deltas_and_sums() -> None:
    before = counts(10, 1, 2.0)
    now = combine([counts(30, 2, 2.0), counts(5, 0, 2.0)])
    seen = delta(now, before)
    assert seen["requests"] == 25 and seen["errors"] == 1
    assert sum(seen["latency"]) == 25
    assert delta(now, None) == now


def test_steps_keep_the_stable_payload_log() -> None:
    logged = parse_spec(STABLE.to_yaml() + "payload_log: {sample: 0.5, sink: 'file:///x.jsonl'}\n")
    for percent in (10, 100):
        assert step_spec(logged, CANARY, percent).payload_log == logged.payload_log
    quieter = parse_spec(CANARY.to_yaml() + "payload_log: {sample: 0.1, sink: 'http://c/e'}\n")
    assert step_spec(logged, quieter, 50).payload_log == quieter.payload_log
