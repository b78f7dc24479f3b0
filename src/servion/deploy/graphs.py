"""Spec fields that run several models for one request: cascades and ensembles."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from servion.deploy._fields import _Ref, _Strict


class Stage(_Ref):
    """A model version a cascade escalates to."""

    min_confidence: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Rows this stage answers with less confidence go on (the last stage: none).",
    )


class Cascade(_Strict):
    """Rows the chosen arm answers with low confidence are asked again of bigger models."""

    output: str = Field(
        min_length=1,
        max_length=256,
        description="Output whose largest value in a row is that row's confidence.",
    )
    min_confidence: float = Field(gt=0, le=1, description="The arm's own threshold.")
    then: list[Stage] = Field(min_length=1, max_length=8)

    @model_validator(mode="after")
    def _last_takes_all(self) -> Cascade:
        for stage in self.then[:-1]:
            if stage.min_confidence is None:
                raise ValueError(f"then: {stage.label} needs min_confidence (it is not the last)")
        if self.then[-1].min_confidence is not None:
            raise ValueError("then: the last stage answers every row it gets: no min_confidence")
        return self


_SOURCE_RE = re.compile(r"^(\$request|[A-Za-z0-9_\-]{1,64})\.[^\s.]{1,256}$")


class EnsembleStep(_Ref):
    """One model of an ensemble and where each of its inputs comes from."""

    name: str = Field(description="The step's name; later steps read its outputs as NAME.OUTPUT.")
    inputs: dict[str, str] = Field(
        min_length=1,
        description="Model input -> $request.INPUT or STEP.OUTPUT of an earlier step.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", value) or value == "$request":
            raise ValueError("must be 1-64 letters, digits, '_' or '-'")
        return value


class Ensemble(_Strict):
    """A graph of models served as one: outputs of steps feed inputs of later ones."""

    steps: list[EnsembleStep] = Field(min_length=1, max_length=16)
    outputs: dict[str, str] = Field(min_length=1, description="Endpoint output -> STEP.OUTPUT.")

    @model_validator(mode="after")
    def _graph(self) -> Ensemble:
        done: set[str] = set()
        for index, step in enumerate(self.steps):
            if step.name in done:
                raise ValueError(f"steps[{index}]: the name {step.name!r} is used twice")
            for model_input, source in step.inputs.items():
                _check_source(source, done, f"steps[{index}].inputs.{model_input}", True)
            done.add(step.name)
        for name, source in self.outputs.items():
            _check_source(source, done, f"outputs.{name}", False)
        return self


def _check_source(source: str, done: set[str], where: str, request_ok: bool) -> None:
    if not _SOURCE_RE.fullmatch(source):
        raise ValueError(f"{where}: {source!r} is not $request.INPUT or STEP.OUTPUT")
    step = source.split(".", 1)[0]
    if step == "$request":
        if not request_ok:
            raise ValueError(f"{where}: outputs come from steps, not from $request")
        return
    if step not in done:
        raise ValueError(f"{where}: step {step!r} is not an earlier step")
