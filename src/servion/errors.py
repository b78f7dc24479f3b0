"""The one error hierarchy of servion.

Errors carry domain data (model name, version, limit), never transport codes;
``protocol/errors.py`` maps each class to an HTTP status and gRPC code in one
table, and the CLI maps them to exit codes.

    ServionError
    ├── InvalidInput            a client sent something malformed or out of bounds
    │   ├── PayloadTooLarge     the body or a tensor exceeds a configured limit
    │   └── UnsupportedMediaType  a body type servion refuses to parse (pickle)
    ├── ModelNotFound           no such model or version
    ├── ModelNotReady           known, but not loaded (yet)
    ├── Unauthorized            no or bad credentials
    ├── Forbidden               credentials lack the needed role
    ├── Overloaded              queue or concurrency bound reached
    ├── DeadlineExceeded        the request's deadline passed while it waited
    ├── RegistryError           a registration or registry operation was refused
    │   ├── ValidationFailed    name, version, path, size or format rule broken
    │   ├── DuplicateVersion    name + version already registered
    │   ├── ChecksumMismatch    stored or expected digest differs from the bytes
    │   └── UnsafeArtifact      the artifact would run code or escape its folder
    ├── ConfigError             a setting or spec is invalid
    └── RuntimeFailure          the model itself failed (load, probe, predict)
        └── ModelFailed         a model raised while answering (its words stay in the log)
"""

from __future__ import annotations


def printable(text: str, limit: int = 200) -> str:
    """User or file text made safe for a message or a log line.

    Control and other unprintable characters are escaped (a name cannot forge
    a log line) and the length is bounded.

    >>> printable("a\nb")
    'a\\nb'
    """
    out = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )
    return out[:limit] + "..." if len(out) > limit else out


def quoted(text: str, limit: int = 80) -> str:
    """``printable`` in single quotes, for naming a value inside a sentence."""
    return f"'{printable(text, limit)}'"


class ServionError(Exception):
    """Base of every error servion raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(ServionError):
    """A request or argument is malformed, of the wrong type, or out of bounds."""


class PayloadTooLarge(InvalidInput):
    """A body, batch or tensor is larger than the configured limit."""

    def __init__(self, message: str, *, limit: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit


class UnsupportedMediaType(InvalidInput):
    """The request body's content type is one servion refuses to decode."""


class ModelNotFound(ServionError):
    """The named model, or the named version of it, does not exist here."""

    def __init__(self, model: str, version: str | None = None, reason: str | None = None) -> None:
        what = f"model {quoted(model)}"
        if version is not None:
            what = f"version {quoted(version)} of {what}"
        super().__init__(f"{what} {reason}" if reason else f"unknown {what}")
        self.model = model
        self.version = version


class ModelNotReady(ServionError):
    """The model exists but cannot answer yet (loading, unloaded, draining)."""

    def __init__(self, model: str, version: str | None = None, reason: str = "not loaded") -> None:
        label = model if version is None else f"{model}:{version}"
        super().__init__(f"model {quoted(label)} is not ready: {reason}")
        self.model = model
        self.version = version


class Unauthorized(ServionError):
    """No credentials, or credentials that do not match."""


class Forbidden(ServionError):
    """Valid credentials whose role does not allow the operation."""


class MisdirectedRequest(Forbidden):
    """The request names a host this server does not answer for (DNS rebinding)."""


class Overloaded(ServionError):
    """A bounded queue or concurrency limit is full; retry after ``retry_after`` s."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(ServionError):
    """A request's deadline passed before it could run; it was not run."""

    def __init__(self, message: str, *, waited_s: float) -> None:
        super().__init__(message)
        self.waited_s = waited_s


class RegistryError(ServionError):
    """A registry operation was refused."""


class ValidationFailed(RegistryError):
    """A name, version, path, size or format rule was broken."""


class DuplicateVersion(RegistryError):
    """The name and version are already registered."""


class ChecksumMismatch(RegistryError):
    """The artifact's bytes do not match the expected or recorded SHA-256."""


class UnsafeArtifact(RegistryError):
    """The artifact would execute code, reference an untrusted global, or escape its folder."""


class ConfigError(ServionError):
    """A setting or specification is invalid."""


class RuntimeFailure(ServionError):
    """The model failed to load, probe or predict."""


class ModelFailed(RuntimeFailure):
    """A model raised while answering a request. The caller hears only that; ``cause``
    (the model's own exception, which may hold data or paths) goes to the log once the
    request's id is known, and the caller then hears the id (``batching.reported``)."""

    def __init__(self, label: str, cause: BaseException) -> None:
        super().__init__(f"model '{label}' failed")
        self.label = label
        self.cause = cause


__all__ = [
    "ChecksumMismatch",
    "ConfigError",
    "DeadlineExceeded",
    "DuplicateVersion",
    "Forbidden",
    "InvalidInput",
    "MisdirectedRequest",
    "ModelFailed",
    "ModelNotFound",
    "ModelNotReady",
    "Overloaded",
    "PayloadTooLarge",
    "RegistryError",
    "RuntimeFailure",
    "ServionError",
    "Unauthorized",
    "UnsafeArtifact",
    "UnsupportedMediaType",
    "ValidationFailed",
    "printable",
    "quoted",
]
