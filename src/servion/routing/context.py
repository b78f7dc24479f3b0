"""What a transport tells the data plane about one request besides its tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from servion.errors import InvalidInput

PIN_HEADER = b"x-servion-version"
"""Clients pin an arm with this header (``v1.3.0`` or ``model:v1.3.0``): a feature flag."""
TIMEOUT_HEADER = b"x-servion-timeout-ms"
"""A request's own time budget, overriding the endpoint's ``timeout_ms``."""
PROBE_HEADER = b"x-servion-probe"
"""Marks checking traffic (``servion verify``): never answered from the cache, and kept out
of the arm counters that canary gates read."""


def _no_headers(_: bytes) -> bytes | None:
    return None


@dataclass(slots=True)
class RequestContext:
    """Protocol-neutral facts about one request: headers or gRPC metadata, read once.

    >>> RequestContext(timeout_s=0.5).timeout_s
    0.5
    """

    header: Callable[[bytes], bytes | None] = _no_headers
    """A lower-case header (or metadata key) to its value: the sticky key is read through it."""
    pin: bytes | None = None
    timeout_s: float | None = None
    principal: str | None = None
    request_id: str | None = None
    probe: bool = False
    arm: str | None = None
    """Set by routing: the label of the arm chosen (what payload logs name an error by)."""
    cached: bool = False
    """Set by routing when the response cache answered."""


def parse_timeout_ms(value: bytes | None) -> float | None:
    """Seconds from an ``X-Servion-Timeout-Ms`` value; None when it was not sent."""
    if value is None:
        return None
    try:
        ms = float(value)
    except ValueError:
        ms = -1.0
    if not 0 < ms <= 600_000:
        raise InvalidInput("X-Servion-Timeout-Ms must be a number of milliseconds in (0, 600000]")
    return ms / 1e3


def request_context(
    header: Callable[[bytes], bytes | None], principal: str | None = None
) -> RequestContext:
    """The context a transport builds from a header (or metadata) lookup."""
    return RequestContext(
        header,
        header(PIN_HEADER),
        parse_timeout_ms(header(TIMEOUT_HEADER)),
        principal,
        probe=header(PROBE_HEADER) is not None,
    )
