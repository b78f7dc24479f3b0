"""protocol/errors.py: the one table from servion errors to HTTP and gRPC codes."""

from __future__ import annotations

import pytest

from servion import errors
from servion.protocol import grpc_code_for, http_status_for, public_message

CASES: list[tuple[BaseException, int, str]] = [
    (errors.InvalidInput("bad"), 400, "INVALID_ARGUMENT"),
    (errors.PayloadTooLarge("big", limit=10), 413, "RESOURCE_EXHAUSTED"),
    (errors.UnsupportedMediaType("pickle"), 415, "INVALID_ARGUMENT"),
    (errors.ModelNotFound("m"), 404, "NOT_FOUND"),
    (errors.ModelNotFound("m", "2"), 404, "NOT_FOUND"),
    (errors.ModelNotReady("m"), 503, "UNAVAILABLE"),
    (errors.Unauthorized("no token"), 401, "UNAUTHENTICATED"),
    (errors.Forbidden("viewer"), 403, "PERMISSION_DENIED"),
    (errors.MisdirectedRequest("attacker.example"), 421, "PERMISSION_DENIED"),
    (errors.Overloaded("queue full"), 503, "UNAVAILABLE"),
    (errors.DeadlineExceeded("too late", waited_s=0.2), 504, "DEADLINE_EXCEEDED"),
    (errors.RegistryError("refused"), 400, "INVALID_ARGUMENT"),
    (errors.ValidationFailed("bad name"), 400, "INVALID_ARGUMENT"),
    (errors.DuplicateVersion("m:1 exists"), 409, "ALREADY_EXISTS"),
    (errors.ChecksumMismatch("digest"), 400, "INVALID_ARGUMENT"),
    (errors.UnsafeArtifact("pickle global"), 400, "INVALID_ARGUMENT"),
    (errors.ConfigError("bad setting"), 400, "INVALID_ARGUMENT"),
    (errors.RuntimeFailure("predict crashed"), 500, "INTERNAL"),
    (errors.ModelFailed("m:v1.0.0", ValueError("bad row")), 500, "INTERNAL"),
    (errors.ServionError("generic"), 500, "INTERNAL"),
    (ValueError("not ours"), 500, "INTERNAL"),
    (KeyboardInterrupt(), 500, "INTERNAL"),
]


@pytest.mark.parametrize(
    ("exc", "http", "grpc"), CASES, ids=[type(exc).__name__ for exc, _, _ in CASES]
)
def test_every_error_maps_to_its_http_status_and_grpc_code(
    exc: BaseException, http: int, grpc: str
) -> None:
    status, headers = http_status_for(exc)
    assert status == http
    assert grpc_code_for(exc) == grpc
    if isinstance(exc, errors.Unauthorized):
        assert headers == {"WWW-Authenticate": 'Bearer realm="servion"'}
    elif not isinstance(exc, errors.Overloaded):
        assert headers == {}


def test_every_servion_error_class_has_a_deliberate_mapping() -> None:
    mapped = {type(exc) for exc, _, _ in CASES}
    classes = {getattr(errors, name) for name in errors.__all__}
    assert {c for c in classes if isinstance(c, type)} <= mapped


def test_subclasses_inherit_their_parents_mapping() -> None:
    class ShapeMismatch(errors.InvalidInput):
        pass

    class VersionGone(errors.ModelNotFound):
        pass

    assert http_status_for(ShapeMismatch("x")) == (400, {})
    assert grpc_code_for(VersionGone("m", "1")) == "NOT_FOUND"


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(1.0, "1"), (2.5, "3"), (0.01, "1"), (0.0, "1"), (30, "30"), (float("inf"), "1")],
)
def test_overloaded_sends_retry_after_in_whole_seconds(retry_after: float, header: str) -> None:
    exc = errors.Overloaded("queue full", retry_after=retry_after)
    assert http_status_for(exc) == (503, {"Retry-After": header})


def test_public_message_hides_unexpected_exceptions() -> None:
    assert public_message(errors.ModelNotFound("m")) == "unknown model 'm'"
    assert public_message(RuntimeError("db password is hunter2")) == "internal server error"
