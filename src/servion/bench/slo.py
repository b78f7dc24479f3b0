"""Service-level objectives a load run must meet: tail latency, throughput, errors.

The verdict is a list of named checks rather than one boolean so a report can
say which objective was missed and by how much.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from servion.bench.stats import LoadResult

DEFAULT_P99_MS: Final = 100.0
DEFAULT_RPS: Final = 1000.0
OPEN_LOOP_KEEP_UP: Final = 0.95
"""Share of the offered rate an open-loop run must achieve when no --slo-rps is given."""


@dataclass(frozen=True, slots=True)
class Slo:
    """Objectives: p99 under ``p99_ms``, more than ``min_rps``, at most ``max_error_rate``.

    >>> Slo.for_run(rate=200.0).min_rps
    190.0
    """

    p99_ms: float = DEFAULT_P99_MS
    min_rps: float = DEFAULT_RPS
    max_error_rate: float = 0.0

    @classmethod
    def for_run(
        cls,
        rate: float | None,
        p99_ms: float | None = None,
        min_rps: float | None = None,
        max_error_rate: float | None = None,
    ) -> Slo:
        """Fill unset objectives with defaults.

        An open-loop run cannot exceed its offered rate, so a fixed 1,000 req/s
        objective would fail every slower rate by construction; there the
        default asks instead that the server kept up (95% of the rate).
        """
        if min_rps is None:
            min_rps = DEFAULT_RPS if rate is None else rate * OPEN_LOOP_KEEP_UP
        return cls(
            DEFAULT_P99_MS if p99_ms is None else p99_ms,
            min_rps,
            0.0 if max_error_rate is None else max_error_rate,
        )


@dataclass(frozen=True, slots=True)
class SloCheck:
    """One objective, what was measured, and whether it was met."""

    name: str
    objective: str
    measured: float
    met: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "objective": self.objective,
            "measured": round(self.measured, 6),
            "met": self.met,
        }


@dataclass(frozen=True, slots=True)
class SloVerdict:
    checks: tuple[SloCheck, ...]

    @property
    def met(self) -> bool:
        return all(check.met for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"met": self.met, "checks": [c.to_dict() for c in self.checks]}


def check_slo(result: LoadResult, slo: Slo) -> SloVerdict:
    """Compare a run with its objectives; a run that answered nothing meets none."""
    answered = result.requests > 0
    p99 = result.latency.p99_ms
    return SloVerdict(
        (
            SloCheck("p99_ms", f"< {slo.p99_ms:,.10g} ms", p99, answered and p99 < slo.p99_ms),
            SloCheck("rps", f"> {slo.min_rps:,.10g} req/s", result.rps, result.rps > slo.min_rps),
            SloCheck(
                "error_rate",
                f"<= {slo.max_error_rate:,.10g}",
                result.error_rate,
                answered and result.error_rate <= slo.max_error_rate,
            ),
        )
    )
