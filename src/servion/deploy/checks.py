"""Deploy-time checks that need the registry: what cannot work is refused before it serves.

- Every model an endpoint answers with (arms, cascade stages, the fallback version) takes the
  same inputs as its first arm and produces at least its outputs; shadows take the same
  inputs. Otherwise some share of the traffic would fail as the caller's error.
- Fixed fallback outputs are one row of every output the arms produce, with their datatypes.
- An endpoint does not take a registered model's name, unless it serves only that model.
"""

from __future__ import annotations

from collections.abc import Callable

from servion.deploy.spec import DeploymentSpec
from servion.errors import InvalidInput, quoted
from servion.routing import ModelRef
from servion.runtime import Signature, TensorSpec

Signatures = Callable[[ModelRef], Signature]

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


def check_signatures(spec: DeploymentSpec, signature_of: Signatures) -> None:
    """Refuse arms, stages, shadows and a fallback version that the first arm's callers
    could not use, naming the first difference."""
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
        problem = _input_difference(expected, got)
        if problem is None and role != "shadow":
            problem = _output_difference(expected, got)
        if problem is not None:
            raise InvalidInput(
                f"{where(role, index)}: {quoted(ref.label)} {problem}, unlike"
                f" {quoted(reference.label)} (models[0]): every model of an endpoint must"
                " answer the same requests"
            )


def _input_difference(expected: Signature, got: Signature) -> str | None:
    mine = {t.name: t for t in got.inputs}
    for tensor in expected.inputs:
        other = mine.pop(tensor.name, None)
        if other is None:
            return f"has no input {quoted(tensor.name)}"
        if not _same(tensor, other):
            return f"takes input {_describe(other)} where the endpoint takes {_describe(tensor)}"
    if mine:
        return f"also needs input {quoted(next(iter(mine)))}"
    return None


def _output_difference(expected: Signature, got: Signature) -> str | None:
    mine = {t.name: t for t in got.outputs}
    for tensor in expected.outputs:
        other = mine.get(tensor.name)
        if other is None:
            return f"has no output {quoted(tensor.name)}"
        if not _same(tensor, other):
            return f"gives output {_describe(other)} where the endpoint gives {_describe(tensor)}"
    return None


def _same(a: TensorSpec, b: TensorSpec) -> bool:
    """The same datatype and shape, the batch dimension aside."""
    return a.datatype == b.datatype and a.shape[1:] == b.shape[1:]


def _describe(tensor: TensorSpec) -> str:
    return f"{quoted(tensor.name)} {tensor.datatype} {list(tensor.shape)}"


def check_fixed_outputs(spec: DeploymentSpec, signature_of: Signatures) -> None:
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
            raise InvalidInput(
                f"fallback.outputs: no {quoted(tensor.name)}; the arms answer"
                f" {', '.join(t.name for t in signature.outputs)}, and so must the fallback"
            )
        if fixed.datatype != tensor.datatype:
            raise InvalidInput(f"{field}: {fixed.datatype}, but the arms give {tensor.datatype}")
        row = [1, *tensor.shape[1:]] if signature.batched else list(tensor.shape)
        if len(fixed.shape) != len(row) or any(
            want >= 0 and have != want for have, want in zip(fixed.shape, row, strict=True)
        ):
            raise InvalidInput(
                f"{field}: shape {fixed.shape}; one row of it is {row} (-1: any size),"
                " repeated for every row of the request"
            )
    if given:
        raise InvalidInput(f"fallback.outputs.{next(iter(given))}: the arms give no such output")


def check_name(spec: DeploymentSpec, registered: set[str]) -> None:
    """An endpoint may take a registered model's name only to serve that model's versions."""
    if spec.endpoint not in registered:
        return
    others = sorted({ref.model for _, ref in spec.model_refs()} - {spec.endpoint})
    if others:
        raise InvalidInput(
            f"endpoint: {quoted(spec.endpoint)} is a registered model's name; an endpoint of"
            f" that name may serve only its versions, not {quoted(others[0])}"
            " (/v1 and /versions calls would reach the model, /v2 calls the endpoint)"
        )
