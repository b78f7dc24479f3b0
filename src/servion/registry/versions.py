"""What the registry records of a model version, and what a registration asks for."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servion.registry.lineage import Lineage
from servion.registry.naming import Version, parse_version
from servion.runtime import Signature
from servion.types import Arrays


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model, as recorded."""

    name: str
    version: str
    format: str
    sha256: str
    size_bytes: int
    artifact: str
    signature: Signature
    environment: dict[str, Any]
    options: dict[str, Any]
    registered_at: str
    registered_by: str
    source_name: str
    large_reason: str | None = None
    held: str | None = None
    """Why ``latest:N`` policies do not serve it yet (a signature change to confirm)."""
    semver: Version = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "semver", parse_version(self.version))

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def mlflow(self) -> dict[str, Any] | None:
        """The MLflow run and flavor it was registered from (``environment["mlflow"]``)."""
        found = self.environment.get("mlflow")
        return found if isinstance(found, dict) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "format": self.format,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "signature": self.signature.to_dict(),
            "environment": self.environment,
            "options": self.options,
            "registered_at": self.registered_at,
            "registered_by": self.registered_by,
            "source_name": self.source_name,
            "large_reason": self.large_reason,
            "held": self.held,
        }


@dataclass(frozen=True)
class RegisterRequest:
    """What ``servion register`` asks for; everything here is user input."""

    name: str
    path: Path
    version: str
    format: str | None = None
    checksum: str | None = None
    sample: Arrays | None = None
    large_reason: str | None = None
    trust_code: bool = False
    user: str | None = None
    allow_signature_change: bool = False
    """Serve it under ``latest:N`` even if its signature differs from the version served."""
    lineage: Lineage | None = None
    """Where a derived version came from (``servion optimize``), recorded with it."""
    runtime_options: dict[str, str] = field(default_factory=dict)
    """``--option KEY=VALUE`` pairs for the format's runtime (PyTorch: device, precision)."""


def row_to_version(row: Any) -> ModelVersion:
    return ModelVersion(
        name=row.name,
        version=row.version,
        format=row.format,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        artifact=row.artifact,
        signature=Signature.from_dict(row.signature),
        environment=row.environment,
        options=row.options,
        registered_at=row.registered_at,
        registered_by=row.registered_by,
        source_name=row.source_name,
        large_reason=row.large_reason,
        held=row.held,
    )
