"""Re-checking a derived version's accuracy later (after a rollback to it, an upgrade of
the runtime libraries): its validation file, found by the path its lineage recorded and
refused unless its SHA-256 is the recorded one, is scored again through the version's
runtime and held to the same gate as when it was made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servion.errors import InvalidInput, ModelNotFound, ServionError, quoted
from servion.optimize.data import ValidationSet, load_validation
from servion.optimize.measure import feeder
from servion.optimize.scoring import expected_answers, judged_output, predict_all, score
from servion.registry import Lineage, ModelRegistry, ModelVersion, parse_ref
from servion.runtime import Signature

_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Recheck:
    """A derived version's score now against the one recorded when it was made."""

    label: str
    metric: str
    recorded: float
    """The version's score when it was registered."""
    source: float
    """The source's score then: the gate's reference."""
    max_accuracy_drop: float
    now: float | None
    failure: str | None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.label,
            "metric": self.metric,
            "recorded": self.recorded,
            "source": self.source,
            "max_accuracy_drop": self.max_accuracy_drop,
            "now": self.now,
            "ok": self.ok,
            "failure": self.failure,
        }


def recheck(registry: ModelRegistry, name: str, version: str) -> Recheck:
    """Score ``name:version`` on its recorded validation data again.

    >>> recheck(registry, "tabular", "v1.1.0").ok   # doctest: +SKIP
    True
    """
    mv = registry.get(name, version)
    lineage = registry.lineage.get(name, version)
    if lineage is None:
        raise InvalidInput(f"{mv.label} was not made by servion optimize: no data to re-check")
    report = lineage.report
    stages = report["stages"]
    result = Recheck(
        mv.label,
        str(report["metric"]),
        float(stages[-1]["score"]),
        float(stages[0]["score"]),
        float(report["max_accuracy_drop"]),
        None,
        None,
    )
    try:
        now = _score_again(registry, mv, lineage)
    except ServionError as exc:
        return _with(result, None, exc.message)
    failure = None
    if result.source - now > result.max_accuracy_drop + _TOLERANCE:
        failure = (
            f"{result.metric} is {now:.4f} now, {result.source - now:.4f} below the source's"
            f" {result.source:.4f} (recorded {result.recorded:.4f}), more than the"
            f" {result.max_accuracy_drop:g} allowed"
        )
    return _with(result, now, failure)


def _with(result: Recheck, now: float | None, failure: str | None) -> Recheck:
    return Recheck(
        result.label,
        result.metric,
        result.recorded,
        result.source,
        result.max_accuracy_drop,
        now,
        failure,
    )


def _score_again(registry: ModelRegistry, mv: ModelVersion, lineage: Lineage) -> float:
    data = _validation(mv, lineage)
    judged = judged_output(mv.signature)
    runtime = registry.open_runtime(mv)
    try:
        feed = feeder(mv.signature, runtime.signature())
        decisions = judged.decisions(predict_all(runtime.predict, data, feed))
    finally:
        runtime.unload()
    if data.target is not None:
        return score(judged, decisions, expected_answers(data, judged, decisions))
    return score(judged, decisions, _source_answers(registry, lineage, data, mv.signature))


def _validation(mv: ModelVersion, lineage: Lineage) -> ValidationSet:
    recorded = lineage.validation
    path = Path(str(recorded["path"]))
    if not path.is_file():
        raise InvalidInput(f"the validation file of {mv.label}, {path}, is gone")
    data = load_validation(path, mv.signature, recorded.get("target"))
    if data.sha256 != recorded["sha256"]:
        raise InvalidInput(
            f"the validation file of {mv.label}, {path}, changed since it was registered"
            f" (sha256 {data.sha256[:12]}..., recorded {str(recorded['sha256'])[:12]}...)"
        )
    return data


def _source_answers(
    registry: ModelRegistry, lineage: Lineage, data: ValidationSet, data_signature: Signature
) -> Any:
    """Without a target, the score is agreement with the source: it must still be there."""
    name, version = parse_ref(lineage.derived_from)
    try:
        source = registry.get(name, version)
    except ModelNotFound:
        raise InvalidInput(
            f"the validation data has no target and the source {quoted(lineage.derived_from)}"
            " is no longer registered: nothing to agree with"
        ) from None
    judged = judged_output(source.signature)
    runtime = registry.open_runtime(source)
    try:
        feed = feeder(data_signature, runtime.signature())
        return judged.decisions(predict_all(runtime.predict, data, feed))
    finally:
        runtime.unload()
