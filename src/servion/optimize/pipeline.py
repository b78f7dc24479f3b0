"""An optimization from start to end: check the request, measure the source, run each
step and check what it gave, and register the result only if every check held.

Everything a step writes goes to a temporary folder that is removed whatever happens;
the registry sees one ``register`` at the end (with its own validation, probe and
checksum), so a refused optimization leaves nothing behind.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from servion.errors import (
    DuplicateVersion,
    InvalidInput,
    ModelNotFound,
    RuntimeFailure,
    ServionError,
    quoted,
)
from servion.optimize.data import ValidationSet, load_validation
from servion.optimize.measure import feeder, time_model
from servion.optimize.report import Report, Stage
from servion.optimize.scoring import (
    Judged,
    equivalence,
    expected_answers,
    judged_output,
    predict_all,
    score,
)
from servion.optimize.steps import Step, StepInput, default_recipe, plan
from servion.registry import (
    Lineage,
    ModelRegistry,
    ModelVersion,
    RegisterRequest,
    parse_ref,
    parse_version,
)
from servion.runtime import Signature, entrypoint, make_runtime
from servion.types import Arrays

_TOLERANCE = 1e-9
"""Float noise in a score difference that is not a drop (0.9 - 0.9 need not be 0)."""


@dataclass(frozen=True)
class OptimizeRequest:
    """What ``servion optimize`` asks for.

    >>> OptimizeRequest("tabular:v1.0.0", "v1.1.0", Path("val.csv"), ("onnx",), "y")
    ... # doctest: +SKIP
    """

    source: str
    """``NAME:VERSION`` of the version to start from."""
    to_version: str
    validate: Path
    steps: tuple[str, ...] = ()
    """Step names in order; empty: ``onnx`` for a model that is not ONNX, else ``graph``."""
    target: str | None = None
    """The column (or ``.npz`` array) of expected outputs; None: agreement with the source."""
    max_accuracy_drop: float = 0.01
    max_score_diff: float = 1e-3
    """Faithful steps: the most any score may move (relative above 1)."""
    min_label_agreement: float = 0.999
    """Faithful steps: the least share of rows whose label must stay the same."""
    calibration_rows: int = 256
    sparsity: float = 0.5
    """The share ``prune`` and ``prune-structured`` remove."""
    measure_s: float = 1.0
    """Time spent timing each model (shared between the batch sizes)."""
    user: str | None = None

    def recipe(self, steps: list[str]) -> dict[str, Any]:
        return {
            "steps": steps,
            "max_accuracy_drop": self.max_accuracy_drop,
            "max_score_diff": self.max_score_diff,
            "min_label_agreement": self.min_label_agreement,
            "calibration_rows": self.calibration_rows,
            "sparsity": self.sparsity,
        }


@dataclass(frozen=True)
class OptimizeResult:
    """The report, and the registered version when every check held."""

    report: Report
    registered: ModelVersion | None

    @property
    def accepted(self) -> bool:
        return self.registered is not None


@dataclass
class _Plan:
    request: OptimizeRequest
    source: ModelVersion
    steps: list[Step]
    data: ValidationSet
    judged: Judged


def optimize(
    registry: ModelRegistry,
    request: OptimizeRequest,
    on_step: Callable[[str], None] | None = None,
) -> OptimizeResult:
    """Run ``request`` against ``registry``; ``on_step`` hears each stage as it starts.

    Refused input raises a ``ServionError`` before any work; a step that fails its
    checks gives a result that is not ``accepted`` and registers nothing.
    """
    step = on_step or (lambda _: None)
    step("checking the source, the recipe and the validation data")
    prepared = _prepare(registry, request)
    with tempfile.TemporaryDirectory(prefix="servion-optimize-") as tmp:
        report, final, feed = _run(registry, prepared, Path(tmp), step)
        if not report.passed:
            return OptimizeResult(report, None)
        name = prepared.source.name
        registered = registry.register(
            RegisterRequest(
                name,
                final,
                request.to_version,
                format="onnx",
                # Real rows for the smoke inference rather than made-up ones.
                sample=feed({k: v[:4] for k, v in prepared.data.inputs.items()}),
                user=request.user,
                lineage=Lineage(
                    prepared.source.label,
                    request.recipe([s.name for s in prepared.steps]),
                    prepared.data.describe(),
                    report.to_dict(),
                ),
            ),
            on_step=lambda text: step(f"registering {name}:{request.to_version}: {text}"),
        )
    return OptimizeResult(report, registered)


def _prepare(registry: ModelRegistry, request: OptimizeRequest) -> _Plan:
    name, version = parse_ref(request.source)
    if version is None:
        raise InvalidInput(f"name the version to optimize: {name}:VERSION")
    parse_version(request.to_version)
    _check_numbers(request)
    if not registry.list_versions(name):
        raise ModelNotFound(name)
    source = registry.get(name, version)
    try:
        registry.get(name, request.to_version)
    except ModelNotFound:
        pass
    else:
        raise DuplicateVersion(
            f"{name}:{request.to_version} is already registered: choose another --to-version"
        )
    steps = plan(list(request.steps) or default_recipe(source.format), source.format)
    judged = judged_output(source.signature)
    data = load_validation(request.validate, source.signature, request.target)
    return _Plan(request, source, steps, data, judged)


def _check_numbers(request: OptimizeRequest) -> None:
    shares = {
        "--max-accuracy-drop": request.max_accuracy_drop,
        "--min-label-agreement": request.min_label_agreement,
    }
    for option, value in shares.items():
        if not 0.0 <= value <= 1.0:
            raise InvalidInput(f"{option} {value:g}: a share, from 0 to 1")
    if not request.max_score_diff >= 0.0:
        raise InvalidInput(f"--max-score-diff {request.max_score_diff:g}: not below 0")
    if request.calibration_rows < 1:
        raise InvalidInput(f"--calibration-rows {request.calibration_rows}: at least 1")
    if not 0.0 < request.sparsity < 1.0:
        raise InvalidInput(f"--sparsity {request.sparsity:g}: a share, above 0 and below 1")
    if not request.measure_s > 0:
        raise InvalidInput(f"--measure-seconds {request.measure_s:g}: more than 0")


def _run(
    registry: ModelRegistry, prepared: _Plan, tmp: Path, step: Callable[[str], None]
) -> tuple[Report, Path, Callable[[Arrays], Arrays]]:
    """The report, the last model's file, and how to feed it the validation inputs."""
    request, source, data = prepared.request, prepared.source, prepared.data
    step(f"measuring {source.label} on {data.rows} validation rows")
    first, outputs, expected = _measure_source(registry, prepared)
    report = _new_report(prepared, first)
    path = entrypoint(
        registry.store.verify(source.artifact, source.sha256, source.label), source.format
    )
    fmt = source.format
    feed: Callable[[Arrays], Arrays] = _same
    calibration = data.sample(request.calibration_rows)
    for index, current in enumerate(prepared.steps, start=1):
        target = tmp / f"{index}-{current.name}" / "model.onnx"
        target.parent.mkdir()
        step(f"{current.name}: {current.summary}")
        given = StepInput(
            path,
            target,
            fmt,
            source.signature,
            registry.settings.runtime,
            calibration,
            data.inputs,
            request.sparsity,
        )
        notes = _apply(current, given)
        step(f"{current.name}: checking on {data.rows} rows and timing")
        stage, outputs, feed = _evaluate(
            registry, prepared, current, target, outputs, expected, first
        )
        if notes:
            stage = replace(stage, notes=(*notes, *stage.notes))
        report.stages.append(stage)
        if stage.failure:
            break
        path, fmt = target, "onnx"
    return report, path, feed


def _new_report(prepared: _Plan, first: Stage) -> Report:
    request, data = prepared.request, prepared.data
    return Report(
        prepared.source.label,
        f"{prepared.source.name}:{request.to_version}",
        _metric_name(prepared),
        f"target {quoted(data.target_name)}" if data.target_name else "the source's answers",
        request.max_accuracy_drop,
        {
            "max_score_diff": request.max_score_diff,
            "min_label_agreement": request.min_label_agreement,
        },
        data.describe(),
        [first],
    )


def _apply(current: Step, given: StepInput) -> tuple[str, ...]:
    """Run one step and give its notes; a tool that fails in its own way is reported as
    the step's failure."""
    try:
        notes = current.run(given) or ()
    except ServionError:
        raise
    except Exception as exc:  # converters and quantizers raise anything
        raise RuntimeFailure(
            f"step {quoted(current.name)} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not given.target.is_file():
        raise RuntimeFailure(f"step {quoted(current.name)} wrote no model")
    return notes


def _metric_name(prepared: _Plan) -> str:
    if prepared.judged.metric == "r2":
        return "r2"
    return "accuracy" if prepared.data.target is not None else "agreement"


def _measure_source(registry: ModelRegistry, prepared: _Plan) -> tuple[Stage, Arrays, Any]:
    source, data, judged = prepared.source, prepared.data, prepared.judged
    runtime = registry.open_runtime(source)
    try:
        outputs = predict_all(runtime.predict, data, _same)
        decisions = judged.decisions(outputs)
        expected = expected_answers(data, judged, decisions)
        latency = time_model(runtime.predict, data, _same, prepared.request.measure_s)
    finally:
        runtime.unload()
    value = score(judged, decisions, expected)
    return Stage("source", source.format, source.size_bytes, latency, value, 0.0), outputs, expected


def _same(inputs: Arrays) -> Arrays:
    return inputs


def _evaluate(
    registry: ModelRegistry,
    prepared: _Plan,
    current: Step,
    target: Path,
    before: Arrays,
    expected: Any,
    first: Stage,
) -> tuple[Stage, Arrays, Callable[[Arrays], Arrays]]:
    request, judged = prepared.request, prepared.judged
    runtime = make_runtime("onnx", target, registry.settings.runtime)
    runtime.load()
    try:
        signature = runtime.signature()
        feed = feeder(prepared.source.signature, signature)
        outputs = predict_all(runtime.predict, prepared.data, feed)
        moved = equivalence(judged, before, outputs)
        value = score(judged, judged.decisions(outputs), expected)
        drop = first.score - value
        failure = _verdict(prepared, current, moved, value, drop)
        latency = (
            () if failure else time_model(runtime.predict, prepared.data, feed, request.measure_s)
        )
    finally:
        runtime.unload()
    size = sum(p.stat().st_size for p in target.parent.iterdir() if p.is_file())
    notes = _signature_notes(prepared.source.signature, signature)
    stage = Stage(
        current.name, "onnx", size, latency, value, drop, moved, current.faithful, failure, notes
    )
    return stage, outputs, feed


def _verdict(prepared: _Plan, current: Step, moved: Any, value: float, drop: float) -> str | None:
    request, rows = prepared.request, prepared.data.rows
    agree = ""
    if moved.label_agreement is not None:
        agree = f"; labels agree on {moved.label_agreement:.2%} of {rows} rows"
    if current.faithful:
        if moved.max_score_diff is not None and moved.max_score_diff > request.max_score_diff:
            return (
                f"step {quoted(current.name)} changed the answers: {quoted(moved.worst_output)}"
                f" differs by up to {moved.max_score_diff:.3g} from the model before it"
                f" (--max-score-diff {request.max_score_diff:g}){agree}"
            )
        if (
            moved.label_agreement is not None
            and moved.label_agreement < request.min_label_agreement
        ):
            return (
                f"step {quoted(current.name)} changed the answers{agree}"
                f" (--min-label-agreement {request.min_label_agreement:g})"
            )
    if drop > request.max_accuracy_drop + _TOLERANCE:
        first = value + drop
        return (
            f"step {quoted(current.name)} costs {drop:.4f} of {_metric_name(prepared)}"
            f" ({first:.4f} -> {value:.4f}), more than --max-accuracy-drop"
            f" {request.max_accuracy_drop:g}"
        )
    return None


def _signature_notes(source: Signature, model: Signature) -> tuple[str, ...]:
    notes = []
    for problem in (source.input_difference(model), source.output_difference(model)):
        if problem is not None:
            notes.append(f"clients must change: the optimized model {problem}")
    return tuple(notes)
