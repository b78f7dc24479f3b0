"""Version policies: which registered versions of a model are served (as in Triton)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from servion.errors import ValidationFailed, quoted
from servion.registry.naming import parse_version


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """``latest:N`` (default ``latest:1``), ``all``, or ``specific:v1.0.0,v1.2.0``.

    >>> VersionPolicy.parse("latest:2").select(["v1.0.0", "v1.1.0", "v2.0.0"])
    ['v1.1.0', 'v2.0.0']
    """

    kind: str
    count: int = 1
    versions: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        kind, _, arg = text.partition(":")
        if kind == "all" and not arg:
            return cls("all")
        if kind == "latest":
            if not arg:
                return cls("latest", 1)
            if arg.isdigit() and 0 < int(arg) <= 1000:
                return cls("latest", int(arg))
        if kind == "specific" and arg:
            versions = tuple(v.strip() for v in arg.split(","))
            for v in versions:
                parse_version(v)
            return cls("specific", versions=versions)
        raise ValidationFailed(
            f"invalid version policy {quoted(text)}: use latest[:N], all, or specific:vX.Y.Z[,...]"
        )

    def select(self, ordered: list[str], held: Collection[str] = ()) -> list[str]:
        """Pick from versions ordered oldest to newest. ``latest`` passes over ``held``
        versions (a signature change not yet confirmed); explicit policies do not."""
        if self.kind == "all":
            return list(ordered)
        if self.kind == "latest":
            return [v for v in ordered if v not in held][-self.count :]
        return [v for v in ordered if v in self.versions]

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest:{self.count}"
        if self.kind == "all":
            return "all"
        return "specific:" + ",".join(self.versions)
