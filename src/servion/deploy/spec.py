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

import itertools
import json
import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from servion.errors import InvalidInput
from servion.registry.naming import NAME_RE, VERSION_RE
from servion.routing import ModelRef
from servion.routing.policies import RefRole

_HEADER_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Ref(_Strict):
    model: str = Field(description="A registered model name.")
    version: str = Field(description="One of its registered versions, vMAJOR.MINOR.PATCH.")

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError("must be 3-64 letters, digits, '_' or '-'")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not VERSION_RE.fullmatch(value):
            raise ValueError("must be vMAJOR.MINOR.PATCH, e.g. v1.0.0")
        return value

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version}"


class Arm(_Ref):
    """One model version behind the endpoint and its share of the traffic."""

    weight: float = Field(
        default=100.0,
        ge=0,
        le=100,
        description="Percent of requests this arm answers; the weights sum to 100.",
    )


class Shadow(_Ref):
    """A model version that receives a copy of live traffic; its answers are only compared."""

    sample: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Share of requests copied to this shadow (1 = all).",
    )


class Sticky(_Strict):
    """Route each value of a request header to the same arm (consistent hashing)."""

    header: str = Field(description="Header whose value keeps a caller on one arm.")

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not _HEADER_RE.fullmatch(value):
            raise ValueError("must be an HTTP header name (letters, digits, '-')")
        return value.lower()


class Cache(_Strict):
    """Answer repeated identical requests from memory (per worker, LRU with a TTL)."""

    max_entries: int = Field(default=1024, ge=1, le=1_000_000)
    ttl_s: float = Field(default=60.0, gt=0, le=86_400, description="Seconds an answer is kept.")


class Concurrency(_Strict):
    """A bulkhead: requests this endpoint may run at once per worker, and wait beyond that."""

    limit: int = Field(ge=1, le=100_000, description="Requests running at once, per worker.")
    queue: int = Field(
        default=0, ge=0, le=1_000_000, description="Requests waiting beyond the limit; more: 503."
    )


class StaticOutput(_Strict):
    name: str = Field(min_length=1, max_length=256)
    datatype: Literal[
        "BOOL",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "FP32",
        "FP64",
        "BYTES",
    ]
    shape: list[int] = Field(max_length=16)
    data: list[Any] = Field(max_length=10_000)


class Fallback(_Strict):
    """Who answers when the chosen arm fails (5xx), times out, or its circuit is open."""

    model: str | None = None
    version: str | None = None
    outputs: list[StaticOutput] | None = Field(
        default=None, description="A fixed answer, when no model should be asked."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Fallback:
        as_model = self.model is not None or self.version is not None
        if as_model == (self.outputs is not None):
            raise ValueError("give either model and version, or outputs")
        if as_model:
            if not (self.model and NAME_RE.fullmatch(self.model)):
                raise ValueError("model must be 3-64 letters, digits, '_' or '-'")
            if not (self.version and VERSION_RE.fullmatch(self.version)):
                raise ValueError("version must be vMAJOR.MINOR.PATCH")
        return self

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version}" if self.model else "static outputs"


class CircuitBreaker(_Strict):
    """Per arm: stop sending it requests while its recent error rate is too high."""

    error_rate: float = Field(default=0.5, gt=0, le=1, description="Open at or above this rate.")
    window_s: float = Field(default=10.0, gt=0, le=3600)
    min_requests: int = Field(default=20, ge=1, le=1_000_000)
    open_s: float = Field(
        default=5.0, gt=0, le=3600, description="Then one probe request (half-open)."
    )


class Gates(_Strict):
    """What a canary must show at each step, against the stable version, to go on."""

    max_error_rate_increase: float = Field(
        default=0.01, ge=0, le=1, description="Canary error rate minus stable's, at most."
    )
    max_p99_ratio: float = Field(
        default=1.5, gt=0, le=1000, description="Canary p99 over stable p99, at most."
    )
    p99_slack_ms: float = Field(
        default=1.0,
        ge=0,
        le=60_000,
        description="p99 differences under this are noise, whatever the ratio.",
    )
    min_requests: int = Field(
        default=50, ge=1, le=10_000_000, description="Canary requests needed to judge a step."
    )


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
        description="Longest a step may wait for min_requests before the rollout is aborted.",
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


class Retries(_Strict):
    """Ask again when an arm fails (5xx), within a budget so that retries cannot pile up."""

    attempts: int = Field(default=1, ge=1, le=5, description="Extra tries per request.")
    budget: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Retries at most this share of the endpoint's recent requests.",
    )


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
        seen: set[str] = set()
        for arm in self.models:
            if arm.label in seen:
                raise ValueError(f"models: {arm.label} appears more than once")
            seen.add(arm.label)
        for shadow in self.shadows:
            if shadow.label in seen:
                raise ValueError(f"shadows: {shadow.label} is already an arm or a shadow")
            seen.add(shadow.label)
        if self.rollout is not None and self.rollout.strategy == "canary" and len(self.models) != 1:
            raise ValueError("rollout: a canary spec names exactly one model version in models")
        total = sum(arm.weight for arm in self.models)
        if abs(total - 100.0) > 1e-6:
            raise ValueError(f"models: the weights sum to {total:g}, not 100")
        return self

    def model_refs(self) -> list[tuple[RefRole, ModelRef]]:
        """Every model version the endpoint names: arms, shadows, cascade stages,
        ensemble steps and the fallback, each with the part it plays."""
        from servion.deploy.plans import policy_of  # plans builds on this module

        return policy_of(self).model_refs()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def to_yaml(self) -> str:
        return str(yaml.safe_dump(self.to_dict(), sort_keys=False))


def parse_spec(text: str | bytes, source: str = "spec") -> DeploymentSpec:
    """Parse and check a YAML or JSON spec; ``InvalidInput`` lists every problem found."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise InvalidInput(f"{source}: {problem}{where}") from None
    return spec_from_dict(raw, source)


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
            message = "unknown field"
        problems.append(f"{path}: {message}" if path else message)
    return problems


def json_schema() -> str:
    """The spec's JSON Schema, as published in docs/deployment-spec.schema.json."""
    schema = DeploymentSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://servion.dev/schemas/deployment-spec.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
