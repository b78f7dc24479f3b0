"""Deploy-time checks that need the registry: what cannot work is refused before it serves.

- Every model an endpoint answers with (arms, cascade stages, the fallback version) takes the
  same inputs as its first arm and produces at least its outputs; shadows take the same
  inputs. Otherwise some share of the traffic would fail as the caller's error.
- Fixed fallback outputs are one row of every output the arms produce, with their datatypes.
- An endpoint does not take a registered model's name, unless it serves only that model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from servion.batching import BatchingConfig
from servion.config import DeploySettings
from servion.deploy.spec import DeploymentSpec, Stage
from servion.errors import ConfigError, InvalidInput, quoted
from servion.routing import ModelRef
from servion.runtime import Signature

Signatures = Callable[[ModelRef], Signature]
Problems = Iterator[str]

FIELDS = {
    "arm": "models",
    "shadow": "shadows",
    "stage": "cascade.then",
    "step": "ensemble.steps",
    "fallback": "fallback",
}
"""Where in a spec each part of an endpoint is written."""


def where(role: str, index: int) -> str:
    return FIELDS[role] if role == "fallback" else f"{FIELDS[role]}[{index}]"


def signature_problems(spec: DeploymentSpec, signature_of: Signatures) -> Problems:
    """Arms, stages, shadows and a fallback version that the first arm's callers could
    not use, each with its first difference."""
    refs = [(role, ref) for role, ref in spec.model_refs() if role != "step"]
    if not refs:
        return
    reference = refs[0][1]
    expected = signature_of(reference)
    seen: dict[str, int] = {}
    for role, ref in refs:
        index = seen.get(role, 0)
        seen[role] = index + 1
        if ref == reference:
            continue
        got = signature_of(ref)
        problem = expected.input_difference(got)
        if problem is None and role != "shadow":
            problem = expected.output_difference(got)
        if problem is not None:
            yield (
                f"{where(role, index)}: {quoted(ref.label)} {problem}, unlike"
                f" {quoted(reference.label)} (models[0]): every model of an endpoint must"
                " answer the same requests"
            )


def fixed_output_problems(spec: DeploymentSpec, signature_of: Signatures) -> Problems:
    """Fixed fallback outputs: one row (first dimension 1) of every output the first arm
    gives, with its datatype and row shape; the answer repeats it for every request row."""
    fallback = spec.fallback
    if fallback is None or fallback.outputs is None or not spec.models:
        return
    first = spec.models[0]
    signature = signature_of(ModelRef(first.model, first.version))
    given = {o.name: o for o in fallback.outputs}
    for tensor in signature.outputs:
        fixed = given.pop(tensor.name, None)
        field = f"fallback.outputs.{tensor.name}"
        if fixed is None:
            yield (
                f"fallback.outputs: no {quoted(tensor.name)}; the arms answer"
                f" {', '.join(t.name for t in signature.outputs)}, and so must the fallback"
            )
            continue
        if fixed.datatype != tensor.datatype:
            yield f"{field}: {fixed.datatype}, but the arms give {tensor.datatype}"
        row = [1, *tensor.shape[1:]] if signature.batched else list(tensor.shape)
        if len(fixed.shape) != len(row) or any(
            want >= 0 and have != want for have, want in zip(fixed.shape, row, strict=True)
        ):
            yield (
                f"{field}: shape {fixed.shape}; one row of it is {row} (-1: any size),"
                " repeated for every row of the request"
            )
    for name in given:
        yield f"fallback.outputs.{name}: the arms give no such output"


def name_problems(spec: DeploymentSpec, registered: set[str]) -> Problems:
    """An endpoint may take a registered model's name only to serve that model's versions."""
    if spec.endpoint not in registered:
        return
    others = sorted({ref.model for _, ref in spec.model_refs()} - {spec.endpoint})
    if others:
        yield (
            f"endpoint: {quoted(spec.endpoint)} is a registered model's name; an endpoint of"
            f" that name may serve only its versions, not {quoted(others[0])}"
            " (/v1 and /versions calls would reach the model, /v2 calls the endpoint)"
        )


def registry_problems(
    spec: DeploymentSpec, registered: dict[tuple[str, str], Signature], bounds: DeploySettings
) -> list[str]:
    """Every problem of a parsed spec against the registry and the deploy bounds, so that
    one ``deploy --check`` (or one refused deploy) names them all."""
    from servion.deploy.plans import policy_of  # plans builds on the spec, as this does

    problems: list[str] = []
    seen: dict[str, int] = {}
    missing = False
    for role, ref in spec.model_refs():
        index = seen.get(role, 0)
        seen[role] = index + 1
        if (ref.model, ref.version) not in registered:
            missing = True
            problems.append(
                f"{where(role, index)}: {quoted(ref.label)} is not a registered model version"
                + _known_versions(ref.model, registered)
            )
    try:
        policy_of(spec)
    except InvalidInput as exc:
        problems.append(exc.message)
    problems += name_problems(spec, {name for name, _ in registered})
    problems += resource_problems(spec, bounds)
    if spec.batching is not None:
        try:
            BatchingConfig.from_dict(spec.batching.settings())
        except ConfigError as exc:
            problems.append(f"batching: {exc.message}")
    if missing:
        return problems  # signatures of what is not registered cannot be compared

    def signature_of(ref: ModelRef) -> Signature:
        return registered[(ref.model, ref.version)]

    problems += signature_problems(spec, signature_of)
    problems += fixed_output_problems(spec, signature_of)
    problems += cascade_problems(spec, signature_of)
    problems += ensemble_problems(spec, signature_of)
    return problems


def _known_versions(name: str, registered: dict[tuple[str, str], Signature]) -> str:
    versions = sorted(v for n, v in registered if n == name)
    if not versions:
        return f" (no model {quoted(name)} is registered)"
    return f" ({name} has {', '.join(versions[-5:])})"


def raw_problems(raw: Any, registered: dict[tuple[str, str], Signature]) -> list[str]:
    """What can still be said of a spec whose fields did not parse: the weights' sum and
    the model versions it names, so that the first problem found does not hide the rest."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        return problems
    arms = raw.get("models")
    if isinstance(arms, list) and raw.get("ensemble") is None:
        weights = [a.get("weight", 100.0) for a in arms if isinstance(a, dict)]
        numbers = [w for w in weights if isinstance(w, int | float) and not isinstance(w, bool)]
        if arms and len(numbers) == len(arms) and abs(sum(numbers) - 100.0) > 1e-6:
            problems.append(f"models: the weights sum to {sum(numbers):g}, not 100")
    for field in ("models", "shadows"):
        entries = raw.get(field)
        if not isinstance(entries, list):
            continue
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            model, version = entry.get("model"), entry.get("version")
            named = isinstance(model, str) and isinstance(version, str)
            if named and (model, version) not in registered:
                problems.append(
                    f"{field}[{index}]: {quoted(f'{model}:{version}')} is not a registered"
                    " model version" + _known_versions(str(model), registered)
                )
    return problems


def resource_problems(spec: DeploymentSpec, bounds: DeploySettings) -> Problems:
    resources = spec.resources
    if resources is None:
        return
    if not bounds.min_replicas <= resources.replicas <= bounds.max_replicas:
        yield (
            f"resources.replicas: {resources.replicas} is outside"
            f" {bounds.min_replicas}..{bounds.max_replicas} (SERVION_DEPLOY_MAX_REPLICAS)"
        )
    if resources.gpus > bounds.max_gpus:
        yield (
            f"resources.gpus: {resources.gpus} per replica is more than"
            f" {bounds.max_gpus} (SERVION_DEPLOY_MAX_GPUS)"
        )
    if resources.memory_gb is not None and resources.memory_gb > bounds.max_memory_gb:
        yield (
            f"resources.memory_gb: {resources.memory_gb:g} GB per replica is more than"
            f" {bounds.max_memory_gb:g} (SERVION_DEPLOY_MAX_MEMORY_GB)"
        )


def ensemble_problems(spec: DeploymentSpec, signature_of: Signatures) -> Problems:
    """Each step's inputs are its model's inputs; every source names a real output."""
    ensemble = spec.ensemble
    if ensemble is None:
        return
    produced: dict[str, list[str]] = {}
    for index, step in enumerate(ensemble.steps):
        signature = signature_of(ModelRef(step.model, step.version))
        wanted = sorted(t.name for t in signature.inputs)
        if sorted(step.inputs) != wanted:
            yield (
                f"ensemble.steps[{index}].inputs: {quoted(step.label)} takes"
                f" {', '.join(wanted)}, the step gives {', '.join(sorted(step.inputs))}"
            )
        for model_input, source in step.inputs.items():
            yield from _output_problems(
                source, produced, f"ensemble.steps[{index}].inputs.{model_input}"
            )
        produced[step.name] = [t.name for t in signature.outputs]
    for name, source in ensemble.outputs.items():
        yield from _output_problems(source, produced, f"ensemble.outputs.{name}")


def _output_problems(source: str, produced: dict[str, list[str]], field: str) -> Problems:
    step, _, output = source.partition(".")
    if step != "$request" and output not in produced.get(step, [output]):
        yield (
            f"{field}: step {quoted(step)} has no output {quoted(output)}"
            f" (it has {', '.join(produced[step])})"
        )


def cascade_problems(spec: DeploymentSpec, signature_of: Signatures) -> Problems:
    """Every arm and stage must produce the confidence output, batch-first."""
    cascade = spec.cascade
    if cascade is None:
        return
    refs: list[tuple[str, Any]] = [("models", a) for a in spec.models]
    refs += [("cascade.then", s) for s in cascade.then]
    for field, ref in refs:
        stage: Stage = ref
        signature = signature_of(ModelRef(stage.model, stage.version))
        names = [o.name for o in signature.outputs]
        if cascade.output not in names:
            yield (
                f"{field}: {quoted(stage.label)} has no output {quoted(cascade.output)}"
                f" (it has {', '.join(names)})"
            )
        elif not signature.batched:
            yield f"{field}: {quoted(stage.label)} has no batch dimension: a cascade splits rows"
