"""Load runs against a probed endpoint: what to run (``LoadSpec``) and which engine runs it.

Two engines report the same ``LoadResult``: wrk (closed loop only, cheap per
request: preferred whenever it is installed) and the Python asyncio generator
(open loop at a fixed rate, and closed loop when wrk is absent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from servion.bench import _python_engine
from servion.bench._wrk_engine import run_wrk, wrk_path
from servion.bench.body import InferTarget
from servion.bench.stats import LoadResult
from servion.errors import ConfigError, InvalidInput

Engine = Literal["auto", "wrk", "python"]
ENGINES: Final[tuple[Engine, ...]] = ("auto", "wrk", "python")
DEFAULT_CONCURRENCY: Final = 64


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """A closed loop at ``concurrency`` or an open loop at ``rate`` req/s, never both.

    >>> LoadSpec(rate=200.0, duration_s=2.0).mode
    'open'
    """

    concurrency: int | None = None
    """Connections, each sending its next request when the last returns (default 64)."""
    rate: float | None = None
    """Requests per second sent on schedule, however slowly the server answers."""
    duration_s: float = 10.0
    timeout_s: float = 10.0
    """A request unanswered this long counts as a timeout error."""
    engine: Engine = "auto"
    max_connections: int = 256
    """Open loop: most connections opened; beyond, requests queue (and the wait counts)."""

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.rate is not None:
            raise InvalidInput("give a concurrency or a rate, not both")
        if self.concurrency is not None and self.concurrency < 1:
            raise InvalidInput("concurrency must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise InvalidInput("rate must be positive")
        if self.duration_s <= 0 or self.timeout_s <= 0:
            raise InvalidInput("duration and timeout must be positive")
        if self.engine not in ENGINES:
            raise InvalidInput(f"engine must be one of {', '.join(ENGINES)}")

    @property
    def mode(self) -> str:
        return "closed" if self.rate is None else "open"

    @property
    def connections(self) -> int:
        return DEFAULT_CONCURRENCY if self.concurrency is None else self.concurrency


def choose_engine(spec: LoadSpec) -> str:
    """wrk for a closed loop when installed (or asked for), else the Python generator."""
    if spec.engine == "python":
        return "python"
    if spec.mode == "open":
        if spec.engine == "wrk":
            raise ConfigError("wrk cannot send at a fixed rate: use --engine python with --rate")
        return "python"
    if wrk_path() is not None:
        return "wrk"
    if spec.engine == "wrk":
        raise ConfigError("wrk is not installed (not on PATH): use --engine python")
    return "python"


def run_load(target: InferTarget, spec: LoadSpec) -> LoadResult:
    """Run ``spec`` against ``target`` and summarise it.

    >>> target = prepare_target("http://127.0.0.1:8080", "tabular", False, None)  # doctest: +SKIP
    >>> run_load(target, LoadSpec(duration_s=2)).rps  # doctest: +SKIP
    """
    engine = choose_engine(spec)
    if engine == "wrk":
        wrk = wrk_path()
        assert wrk is not None
        return run_wrk(wrk, target, spec.connections, spec.duration_s, spec.timeout_s)
    request = target.all_request_bytes()
    if spec.rate is not None:
        coro = _python_engine.open_loop(
            target.endpoint,
            request,
            spec.rate,
            spec.duration_s,
            spec.timeout_s,
            spec.max_connections,
        )
        return _python_engine.run(coro)
    closed = _python_engine.closed_loop(
        target.endpoint, request, spec.connections, spec.duration_s, spec.timeout_s
    )
    return _python_engine.run(closed)
