"""The one table from servion's errors to HTTP statuses and gRPC status codes.

Errors carry domain data; only this module knows transport codes. Lookups walk
the exception's MRO, so a new subclass inherits its parent's mapping until it
gets its own row. Exceptions servion did not raise on purpose map to 500 and
must not leak their text: use :func:`public_message` for the body.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, NamedTuple

from servion.errors import (
    ConfigError,
    DeadlineExceeded,
    DuplicateVersion,
    Forbidden,
    InvalidInput,
    MisdirectedRequest,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    RegistryError,
    RuntimeFailure,
    ServionError,
    Unauthorized,
    UnsupportedMediaType,
)


class Status(NamedTuple):
    """How one error class is reported on each transport."""

    http: int
    grpc: str


_INTERNAL: Final = Status(500, "INTERNAL")

STATUS_OF: Final[Mapping[type[BaseException], Status]] = MappingProxyType(
    {
        InvalidInput: Status(400, "INVALID_ARGUMENT"),
        PayloadTooLarge: Status(413, "RESOURCE_EXHAUSTED"),
        UnsupportedMediaType: Status(415, "INVALID_ARGUMENT"),
        ModelNotFound: Status(404, "NOT_FOUND"),
        ModelNotReady: Status(503, "UNAVAILABLE"),
        Unauthorized: Status(401, "UNAUTHENTICATED"),
        Forbidden: Status(403, "PERMISSION_DENIED"),
        MisdirectedRequest: Status(421, "PERMISSION_DENIED"),
        # UNAVAILABLE, not RESOURCE_EXHAUSTED: gRPC clients retry UNAVAILABLE.
        Overloaded: Status(503, "UNAVAILABLE"),
        DeadlineExceeded: Status(504, "DEADLINE_EXCEEDED"),
        # ValidationFailed, ChecksumMismatch, UnsafeArtifact: the caller's artifact is bad.
        RegistryError: Status(400, "INVALID_ARGUMENT"),
        DuplicateVersion: Status(409, "ALREADY_EXISTS"),
        ConfigError: Status(400, "INVALID_ARGUMENT"),
        RuntimeFailure: _INTERNAL,
        ServionError: _INTERNAL,
    }
)
"""Error class → status. Anything not found along the MRO is ``_INTERNAL``."""


def status_for(exc: BaseException) -> Status:
    """The status of the nearest class in ``exc``'s MRO that has a row.

    >>> status_for(ModelNotFound("m"))
    Status(http=404, grpc='NOT_FOUND')
    """
    for cls in type(exc).__mro__:
        status = STATUS_OF.get(cls)
        if status is not None:
            return status
    return _INTERNAL


def http_status_for(exc: BaseException) -> tuple[int, dict[str, str]]:
    """HTTP status code and any extra response headers for ``exc``.

    >>> http_status_for(Overloaded("queue full", retry_after=2.5))
    (503, {'Retry-After': '3'})
    """
    status = status_for(exc).http
    if isinstance(exc, Overloaded):
        # Retry-After takes whole seconds; round up so clients never retry early.
        delay = exc.retry_after
        seconds = math.ceil(delay) if math.isfinite(delay) else 1
        return status, {"Retry-After": str(max(1, seconds))}
    if isinstance(exc, Unauthorized):  # RFC 9110: a 401 names the scheme it wants
        return status, {"WWW-Authenticate": 'Bearer realm="servion"'}
    return status, {}


def grpc_code_for(exc: BaseException) -> str:
    """Name of the ``grpc.StatusCode`` member for ``exc`` (grpc is not imported).

    >>> grpc_code_for(ValueError("boom"))
    'INTERNAL'
    """
    return status_for(exc).grpc


def public_message(exc: BaseException) -> str:
    """Text safe to send to a client: servion's own message, or a generic one.

    >>> public_message(KeyError("secret"))
    'internal server error'
    """
    return exc.message if isinstance(exc, ServionError) else "internal server error"


__all__ = [
    "STATUS_OF",
    "Status",
    "grpc_code_for",
    "http_status_for",
    "public_message",
    "status_for",
]
