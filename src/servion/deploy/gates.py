"""Canary gates: judging one rollout step from what both arms did during it.

Over one step the canary and the stable arms answer the same traffic on the same workers,
so a busy machine slows both; what differs between them by chance is noise. A gate fails
only on evidence at level ``gates.alpha``: a confidence bound on the error-rate increase,
and for latency a Mann-Whitney test that the canary is slower together with a bootstrap
bound showing the slowdown is larger than allowed. One p99 of a few hundred requests
against another is mostly luck and never fails a step on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from servion.deploy._statistics import (
    Resampled,
    mann_whitney_p,
    quantile,
    rate_increase_bound,
)
from servion.deploy.spec import Gates

SEED = 20240611
"""Fixed, so that the same counts always get the same verdict."""


@dataclass(frozen=True, slots=True)
class Verdict:
    go_on: bool
    reason: str


def judge(canary: dict[str, Any], stable: dict[str, Any], gates: Gates) -> Verdict:
    """Judge one step from the canary's and the stable arms' ``{"requests", "errors",
    "latency"}`` during it; the reason says what was measured either way.

    >>> fast = [0] * 67; fast[20] = 300  # 300 requests in the 4.3 ms bin
    >>> slow = [0] * 67; slow[25] = 300  # and in the 13 ms one
    >>> judge({"requests": 300, "errors": 0, "latency": slow},
    ...       {"requests": 300, "errors": 0, "latency": fast}, Gates()).go_on
    False
    """
    failed = _error_gate(canary, stable, gates)
    if failed is not None:
        return Verdict(False, failed)
    errors = f"error rate {_rate(canary)} (stable {_rate(stable)})"
    n1, n2 = sum(canary["latency"]), sum(stable["latency"])
    if min(n1, n2) < gates.min_requests:
        return Verdict(
            True,
            f"{errors}; latency not compared over {n1}/{n2} canary/stable requests"
            f" (the gate needs {gates.min_requests} of each)",
        )
    p = mann_whitney_p(canary["latency"], stable["latency"])
    if p < gates.alpha:
        failed = _slowdown(canary["latency"], stable["latency"], gates)
        if failed is not None:
            return Verdict(False, f"{failed}, Mann-Whitney p={p:.2g} over {n1}/{n2} requests")
    return Verdict(True, f"{errors}; {_latencies(canary, stable)}, Mann-Whitney p={p:.2g}")


def _error_gate(canary: dict[str, Any], stable: dict[str, Any], gates: Gates) -> str | None:
    if not canary["requests"]:
        return None
    bound = rate_increase_bound(
        canary["errors"], canary["requests"], stable["errors"], stable["requests"], gates.alpha
    )
    if bound <= gates.max_error_rate_increase:
        return None
    return (
        f"canary error rate {_rate(canary)} vs stable {_rate(stable)}"
        f" over {canary['requests']}/{stable['requests']} requests"
        f" (at least +{100 * bound:.2f} points at {_confidence(gates)} confidence,"
        f" allowed +{100 * gates.max_error_rate_increase:.2f})"
    )


def _slowdown(canary: list[int], stable: list[int], gates: Gates) -> str | None:
    """Whether the canary's median or p99 is beyond its allowance with confidence.

    Each resample is judged as the gate judges the measured values, so the slack counts
    as it does there; the ratio's own bound is given for the reader.
    """
    rng = np.random.default_rng(SEED)
    c, s = Resampled(canary, rng), Resampled(stable, rng)
    for name, q, allowed in (
        ("median", 0.5, gates.max_median_ratio),
        ("p99", 0.99, gates.max_p99_ratio),
    ):
        c_q, s_q = c.quantile(q), s.quantile(q)
        excess = np.quantile(c_q - allowed * s_q - gates.p99_slack_ms, gates.alpha)
        if excess <= 0:
            continue
        measured_c, measured_s = quantile(canary, q), quantile(stable, q)
        return (
            f"canary {name} {measured_c:.2f} ms vs stable {measured_s:.2f} ms:"
            f" {measured_c / measured_s:.1f}x, at least"
            f" {float(np.quantile(c_q / s_q, gates.alpha)):.1f}x at {_confidence(gates)}"
            f" confidence (allowed {allowed:g}x + {gates.p99_slack_ms:g} ms)"
        )
    return None


def _latencies(canary: dict[str, Any], stable: dict[str, Any]) -> str:
    c, s = canary["latency"], stable["latency"]
    return (
        f"median {quantile(c, 0.5):.2f} ms (stable {quantile(s, 0.5):.2f} ms),"
        f" p99 {quantile(c, 0.99):.2f} ms (stable {quantile(s, 0.99):.2f} ms)"
    )


def _rate(counts: dict[str, Any]) -> str:
    requests: int = counts["requests"]
    return f"{100 * counts['errors'] / requests if requests else 0.0:.2f} %"


def _confidence(gates: Gates) -> str:
    return f"{100 * (1 - gates.alpha):g} %"
