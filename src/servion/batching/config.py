"""Dynamic batching settings of one model version."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from servion.errors import ConfigError, InvalidInput


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    """How requests to one model version are merged into executions.

    ``max_batch_size`` caps the rows of one request (larger: 413) and of one
    execution; ``dynamic`` False runs every request on its own. ``max_queue_delay_us`` is the
    longest a request waits for a fuller batch, and it is only spent when the
    recent load says more requests are coming, never at concurrency 1; the
    ``latency_budget_us`` caps it further. ``max_queue_size`` bounds the
    waiting requests (beyond it: 503 with Retry-After). ``default_timeout_us``
    (0: none) is the deadline of requests that name none: a request still
    queued at its deadline is answered 504 and never run. ``priority`` 1 is the
    highest; requests without one get ``default_priority``.

    >>> BatchingConfig.from_dict({"max_batch_size": 16}).max_batch_size
    16
    """

    dynamic: bool = True
    max_batch_size: int = 128
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = field(default=())
    max_queue_size: int = 1024
    latency_budget_us: int = 0
    default_timeout_us: int = 0
    default_priority: int = 2
    execution: str = "auto"
    """``inline`` on the event loop, ``thread`` (one per model version), or ``auto``:
    inline while an execution averages under a millisecond, threaded above."""

    def __post_init__(self) -> None:
        checks = (
            (self.max_batch_size >= 1, "max_batch_size must be at least 1"),
            (self.max_batch_size <= 65_536, "max_batch_size must be at most 65536"),
            (self.max_queue_delay_us >= 0, "max_queue_delay_us must not be negative"),
            (self.max_queue_delay_us <= 10_000_000, "max_queue_delay_us must be at most 10 s"),
            (self.max_queue_size >= 1, "max_queue_size must be at least 1"),
            (self.latency_budget_us >= 0, "latency_budget_us must not be negative"),
            (self.default_timeout_us >= 0, "default_timeout_us must not be negative"),
            (1 <= self.default_priority <= 1000, "default_priority must be 1..1000"),
            (
                self.execution in ("auto", "inline", "thread"),
                "execution must be auto, inline or thread",
            ),
            (
                all(1 <= p <= self.max_batch_size for p in self.preferred_batch_sizes),
                "preferred_batch_sizes must lie between 1 and max_batch_size",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"batching: {message}")

    @property
    def enabled(self) -> bool:
        return self.dynamic and self.max_batch_size > 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preferred_batch_sizes"] = list(self.preferred_batch_sizes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: BatchingConfig | None = None) -> BatchingConfig:
        """Overlay ``data`` (a model's stored settings) on ``base``; unknown keys are refused."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"batching: unknown setting(s) {unknown}; known: {sorted(known)}")
        values = dict(data)
        if "preferred_batch_sizes" in values:
            values["preferred_batch_sizes"] = tuple(sorted(set(values["preferred_batch_sizes"])))
        for key, value in values.items():
            if key == "execution":
                if value not in ("auto", "inline", "thread"):
                    raise ConfigError("batching: execution must be auto, inline or thread")
            elif key == "dynamic":
                if type(value) is not bool:
                    raise ConfigError("batching: dynamic must be true or false")
            elif key == "preferred_batch_sizes":
                if any(type(v) is not int for v in value):
                    raise ConfigError("batching: preferred_batch_sizes must be integers")
            elif type(value) is not int:
                raise ConfigError(f"batching: {key} must be an integer")
        return replace(base or cls(), **values)


def request_scheduling(parameters: dict[str, Any]) -> tuple[int, int]:
    """The ``priority`` and ``timeout`` (µs) request parameters, checked."""
    priority = parameters.get("priority", 0)
    timeout = parameters.get("timeout", 0)
    for key, value in (("priority", priority), ("timeout", timeout)):
        if type(value) is not int or not 0 <= value <= 2**40:
            raise InvalidInput(f"request parameter '{key}' must be a non-negative integer")
    return priority, timeout
