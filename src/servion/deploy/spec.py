"""The deployment spec: what an endpoint serves and how traffic is split.

Written as YAML (or JSON), checked here with a message per problem that names
the field (``models[1].weight: must be at most 100``), and published as a JSON
Schema (``servion deploy --schema``) for editors and CI.

```yaml
endpoint: fraud
environment: production
description: "v1.3.0 on 10 % of users"
models:
  - model: fraud
    version: v1.2.0
    weight: 90
  - model: fraud
    version: v1.3.0
    weight: 10
sticky:
  header: x-user-id
shadows:
  - model: fraud
    version: v2.0.0
    sample: 0.5
cache: {max_entries: 4096, ttl_s: 30}
concurrency: {limit: 32, queue: 64}
```
"""

from __future__ import annotations

import difflib
import itertools
import json
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from servion.deploy._fields import Arm, Shadow, Sticky, _Strict
from servion.deploy.graphs import Cascade, Ensemble, EnsembleStep, Stage
from servion.deploy.payload_log import PayloadLog
from servion.deploy.resilience import (
    Cache,
    CircuitBreaker,
    Concurrency,
    Fallback,
    Retries,
    StaticOutput,
)
from servion.errors import InvalidInput
from servion.registry.naming import NAME_RE
from servion.routing import ModelRef
from servion.routing.policies import RefRole

__all__ = [
    "Arm",
    "Batching",
    "Cache",
    "Cascade",
    "CircuitBreaker",
    "Concurrency",
    "DeploymentSpec",
    "Ensemble",
    "EnsembleStep",
    "Fallback",
    "Gates",
    "PayloadLog",
    "Resources",
    "Retries",
    "Rollout",
    "Shadow",
    "Stage",
    "StaticOutput",
    "Sticky",
    "json_schema",
    "parse_spec",
    "said",
    "spec_from_dict",
]


class Gates(_Strict):
    """What a canary must show at each step, against the stable version, to go on.

    The requests both arms served during the step are the samples. A gate fails only when
    the evidence is strong at level ``alpha``: a busy machine that slows a few requests of
    either arm is noise, not a verdict.
    """

    max_error_rate_increase: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Canary error rate minus stable's, at most: the step fails when a"
        " confidence bound shows more.",
    )
    max_median_ratio: float = Field(
        default=1.5,
        gt=0,
        le=1000,
        description="Canary median latency over stable's, at most (plus p99_slack_ms).",
    )
    max_p99_ratio: float = Field(
        default=1.5,
        gt=0,
        le=1000,
        description="Canary p99 latency over stable's, at most (plus p99_slack_ms).",
    )
    p99_slack_ms: float = Field(
        default=1.0,
        ge=0,
        le=60_000,
        description="Latency differences under this are noise, whatever the ratio: it is"
        " added to the median's allowance and the p99's.",
    )
    min_requests: int = Field(
        default=50,
        ge=1,
        le=10_000_000,
        description="Requests of each arm a step waits for (up to max_wait_s) before it is"
        " judged; latencies are compared only over at least this many of each.",
    )
    alpha: float = Field(
        default=0.01,
        gt=0,
        le=0.2,
        description="Evidence a gate needs to fail a step: the significance of the tests and"
        " one minus the confidence of the bounds. A canary as good as stable fails a step"
        " by chance at most about this often.",
    )


def said(spec: BaseModel) -> set[str]:
    """The fields a spec sets to something other than their defaults. A spec read back
    from storage has every default written out, so "given" alone would say too much."""
    fields = type(spec).model_fields
    return {
        name
        for name in spec.model_fields_set
        if getattr(spec, name) != fields[name].get_default(call_default_factory=True)
    }


class Rollout(_Strict):
    """How a new revision takes over: ``blue_green`` switches all traffic at once once every
    worker has loaded and smoke-tested it (what a plain deploy does); ``canary`` moves
    traffic to this spec's one version in steps, judging each."""

    strategy: Literal["canary", "blue_green"] = "canary"
    steps: list[float] = Field(
        default_factory=lambda: [5.0, 25.0, 50.0, 100.0],
        min_length=1,
        max_length=20,
        description="Canary percentages, increasing, ending at 100.",
    )
    interval_s: float = Field(default=60.0, gt=0, le=86_400, description="Time at each step.")
    max_wait_s: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="Longest a step may wait for min_requests: with fewer canary requests by"
        " then the rollout is rolled back; with fewer stable ones latency goes unjudged.",
    )
    gates: Gates = Field(default_factory=Gates)

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[float]) -> list[float]:
        if any(not 0 < v <= 100 for v in value):
            raise ValueError("each step is a percentage in (0, 100]")
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("steps must increase")
        if value[-1] != 100:
            raise ValueError("the last step must be 100")
        return value

    @model_validator(mode="after")
    def _canary_fields_for_canaries(self) -> Rollout:
        if self.strategy == "blue_green":
            given = sorted(said(self) - {"strategy"})
            if given:
                raise ValueError(
                    f"{', '.join(given)}: canary settings; a blue_green rollout switches at once"
                )
        return self


class Batching(_Strict):
    """Dynamic batching for this endpoint's arms (their own queues; the models'
    settings from ``servion models batching`` apply to everything else)."""

    dynamic: bool | None = None
    max_batch_size: int | None = Field(default=None, ge=1, le=65_536)
    max_queue_delay_us: int | None = Field(default=None, ge=0, le=10_000_000)
    preferred_batch_sizes: list[int] | None = Field(default=None, max_length=32)
    max_queue_size: int | None = Field(default=None, ge=1, le=1_000_000)
    latency_budget_us: int | None = Field(default=None, ge=0, le=600_000_000)
    default_timeout_us: int | None = Field(default=None, ge=0, le=600_000_000)
    default_priority: int | None = Field(default=None, ge=1, le=1_000)
    execution: Literal["auto", "inline", "thread"] | None = None

    def settings(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Resources(_Strict):
    """What each replica of the endpoint asks for (bounded by SERVION_DEPLOY_* settings)."""

    replicas: int = Field(default=1, ge=0)
    memory_gb: float | None = Field(default=None, gt=0)
    gpus: int = Field(default=0, ge=0)


class DeploymentSpec(_Strict):
    """One endpoint: the model versions it serves and how requests are split among them."""

    endpoint: str = Field(description="Name clients call: /v2/models/{endpoint}/infer.")
    environment: Literal["dev", "staging", "production"] = "dev"
    description: str = Field(default="", max_length=500)
    models: list[Arm] = Field(default_factory=list, max_length=16)
    sticky: Sticky | None = None
    shadows: list[Shadow] = Field(default_factory=list, max_length=8)
    cache: Cache | None = None
    concurrency: Concurrency | None = None
    timeout_ms: float | None = Field(
        default=None,
        gt=0,
        le=600_000,
        description="Per request; X-Servion-Timeout-Ms overrides it. Past it: fallback or 504.",
    )
    fallback: Fallback | None = None
    circuit_breaker: CircuitBreaker | None = None
    rollout: Rollout | None = None
    cascade: Cascade | None = None
    retries: Retries | None = None
    ensemble: Ensemble | None = None
    batching: Batching | None = None
    resources: Resources | None = None
    payload_log: PayloadLog | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError("must be 3-64 letters, digits, '_' or '-'")
        return value

    @model_validator(mode="after")
    def _arms(self) -> DeploymentSpec:
        if self.ensemble is not None:
            arm_only = ("models", "sticky", "shadows", "rollout", "cascade")
            given = [f for f in arm_only if getattr(self, f)]
            if given:
                raise ValueError(f"ensemble: an ensemble endpoint has no {', '.join(given)}")
            return self
        if not self.models:
            raise ValueError("models: List should have at least 1 item")
        # Every problem at once: a spec fixed one complaint at a time wastes a deploy each.
        problems: list[str] = []
        seen: set[str] = set()
        for arm in self.models:
            if arm.label in seen:
                problems.append(f"models: {arm.label} appears more than once")
            seen.add(arm.label)
        for shadow in self.shadows:
            if shadow.label in seen:
                problems.append(f"shadows: {shadow.label} is already an arm or a shadow")
            seen.add(shadow.label)
        if self.rollout is not None and self.rollout.strategy == "canary" and len(self.models) != 1:
            problems.append("rollout: a canary spec names exactly one model version in models")
        total = sum(arm.weight for arm in self.models)
        if abs(total - 100.0) > 1e-6:
            problems.append(f"models: the weights sum to {total:g}, not 100")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def model_refs(self) -> list[tuple[RefRole, ModelRef]]:
        """Every model version the endpoint names: arms, shadows, cascade stages,
        ensemble steps and the fallback, each with the part it plays."""
        from servion.deploy.plans import policy_of  # plans builds on this module

        return policy_of(self).model_refs()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def written(self) -> dict[str, Any]:
        """The spec as someone would write it: no defaults, whole numbers without ``.0``."""
        doc = self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        doc = {"endpoint": self.endpoint, **doc}
        return _whole_numbers(doc)  # type: ignore[no-any-return]

    def to_yaml(self) -> str:
        return str(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _whole_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def parse_spec(text: str | bytes, source: str = "spec") -> DeploymentSpec:
    """Parse and check a YAML or JSON spec; ``InvalidInput`` lists every problem found."""
    raw, problems = read_spec(text, source)
    if problems:
        raise InvalidInput(f"{source}: " + "; ".join(problems))
    return spec_from_dict(raw, source)


def read_spec(text: str | bytes, source: str = "spec") -> tuple[Any, list[str]]:
    """The parsed document (None when it is not YAML) and every problem of its fields."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        return None, [f"{problem}{where}"]
    if not isinstance(raw, dict):
        return None, ["a deployment spec is a mapping (endpoint:, models:, ...)"]
    try:
        DeploymentSpec.model_validate(raw)
    except ValidationError as exc:
        return raw, _problems(exc)
    return raw, []


def spec_from_dict(raw: Any, source: str = "spec") -> DeploymentSpec:
    if not isinstance(raw, dict):
        raise InvalidInput(f"{source}: a deployment spec is a mapping (endpoint:, models:, ...)")
    try:
        return DeploymentSpec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(f"{source}: " + "; ".join(_problems(exc))) from None


def _problems(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False):
        path = ""
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field" + _did_you_mean(error["loc"], error.get("input"))
        if not path:  # a whole-spec check names its fields itself, several at once
            problems += message.split("; ")
            continue
        problems.append(f"{path}: {message}")
    return problems


def _did_you_mean(loc: tuple[Any, ...], value: Any) -> str:
    """A hint for an unknown field: a near spelling at its level, or, when it holds
    fields of its level (``routing: {sticky: ...}``), to move them up."""
    model: Any = DeploymentSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model is not None else None
        model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return ""
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if isinstance(value, dict):
        inner = [k for k in value if k in known]
        if inner:
            return f" (did you mean {inner[0]!r}, at this level?)"
    return ""


def _model_in(annotation: Any) -> Any:
    """The pydantic model a field holds (itself, in a list, or optional), if any."""
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        for inner in (candidate, *typing.get_args(candidate)):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def json_schema() -> str:
    """The spec's JSON Schema, as published in docs/deployment-spec.schema.json."""
    schema = DeploymentSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://servion.dev/schemas/deployment-spec.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
