"""The report of an optimization: the source and each step's size, latency, throughput,
score and distance from the model before it, and the verdict. It is stored as JSON with
the version it produced, and printed as a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from servion.optimize.measure import THROUGHPUT_BATCH, Latency
from servion.optimize.scoring import Equivalence

HEADERS = (
    "STEP",
    "FORMAT",
    "SIZE",
    "P50 B1 ms",
    "P99 B1 ms",
    "P50 B32 ms",
    "P99 B32 ms",
    "ROWS/S B32",
    "SCORE",
    "DROP",
    "MAX DIFF",
    "LABELS SAME",
    "RESULT",
)


@dataclass(frozen=True)
class Stage:
    """The model as the source was, or as one step left it."""

    step: str
    """``source`` or the step's name."""
    format: str
    size_bytes: int
    latency: tuple[Latency, ...]
    score: float
    drop: float
    """The source's score minus this one (positive: worse)."""
    equivalence: Equivalence | None = None
    """Against the model before the step (None for the source)."""
    checked: bool = False
    """The step is faithful: its equivalence was held to the thresholds."""
    failure: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def rows_per_s(self) -> float | None:
        found = [t for t in self.latency if t.batch_size == THROUGHPUT_BATCH]
        return found[0].rows_per_s if found else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "format": self.format,
            "size_bytes": self.size_bytes,
            "latency": [t.to_dict() for t in self.latency],
            "rows_per_s": None if self.rows_per_s is None else round(self.rows_per_s, 1),
            "score": self.score,
            "drop": self.drop,
            "equivalence": None if self.equivalence is None else self.equivalence.to_dict(),
            "equivalence_checked": self.checked,
            "failure": self.failure,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Report:
    """Every stage, and whether the last one is registered."""

    source: str
    target: str
    metric: str
    """``accuracy`` (against the target), ``agreement`` (with the source's labels) or
    ``r2`` (of a regressor, against the target or the source's values)."""
    against: str
    max_accuracy_drop: float
    thresholds: dict[str, float]
    validation: dict[str, Any]
    stages: list[Stage] = field(default_factory=list)
    """The source first; a step's stage joins as the step is checked."""

    @property
    def failure(self) -> str | None:
        return next((s.failure for s in self.stages if s.failure), None)

    @property
    def passed(self) -> bool:
        return self.failure is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "metric": self.metric,
            "against": self.against,
            "max_accuracy_drop": self.max_accuracy_drop,
            "thresholds": self.thresholds,
            "validation": self.validation,
            "stages": [s.to_dict() for s in self.stages],
            "passed": self.passed,
            "failure": self.failure,
            "summary": self.summary(),
        }

    def rows(self) -> list[tuple[str, ...]]:
        """One row of display text per stage, under ``HEADERS``."""
        return [_row(stage) for stage in self.stages]

    def summary(self) -> str:
        """One line: the last stage against the source."""
        first, last = self.stages[0], self.stages[-1]
        speed = ""
        if first.rows_per_s and last.rows_per_s:
            speed = f", {last.rows_per_s / first.rows_per_s:.1f}x the rows/s at batch 32"
        size = f"{last.size_bytes / max(first.size_bytes, 1):.2f}x the size"
        return (
            f"{self.metric} {last.score:.4f} (source {first.score:.4f}, drop {last.drop:+.4f},"
            f" limit {self.max_accuracy_drop:g}), {size}{speed}"
        )


def _row(stage: Stage) -> tuple[str, ...]:
    times = {t.batch_size: t for t in stage.latency}
    b1, b32 = times.get(1), times.get(THROUGHPUT_BATCH)
    eq = stage.equivalence
    return (
        stage.step,
        stage.format,
        _size(stage.size_bytes),
        _ms(b1.p50_ms if b1 else None),
        _ms(b1.p99_ms if b1 else None),
        _ms(b32.p50_ms if b32 else None),
        _ms(b32.p99_ms if b32 else None),
        "-" if stage.rows_per_s is None else f"{stage.rows_per_s:,.0f}",
        f"{stage.score:.4f}",
        "-" if stage.step == "source" else f"{stage.drop:+.4f}",
        "-" if eq is None or eq.max_score_diff is None else f"{eq.max_score_diff:.2e}",
        "-" if eq is None or eq.label_agreement is None else f"{eq.label_agreement:.2%}",
        "failed" if stage.failure else "ok",
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
