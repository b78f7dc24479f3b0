"""Spec fields that keep an endpoint answering: cache, bulkhead, fallback, breaker, retries."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from servion.deploy._fields import _Strict
from servion.registry.naming import NAME_RE, VERSION_RE


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


class Retries(_Strict):
    """Ask again when an arm fails (5xx), within a budget so that retries cannot pile up."""

    attempts: int = Field(default=1, ge=1, le=5, description="Extra tries per request.")
    budget: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Retries at most this share of the endpoint's recent requests.",
    )
