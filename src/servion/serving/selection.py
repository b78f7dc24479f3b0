"""Which versions of each model the version policies select for serving."""

from __future__ import annotations

from servion.registry import ModelVersion, VersionPolicy

Key = tuple[str, str]
"""A model version: (name, version)."""


def selected(
    versions: list[ModelVersion], policies: dict[str, tuple[VersionPolicy, bool]]
) -> dict[Key, ModelVersion]:
    """The versions each model's policy selects (none of a model unloaded on request);
    ``versions`` ordered oldest to newest, as the registry lists them."""
    by_name: dict[str, list[ModelVersion]] = {}
    for mv in versions:
        by_name.setdefault(mv.name, []).append(mv)
    wanted: dict[Key, ModelVersion] = {}
    for name, mvs in by_name.items():
        policy, loaded = policies.get(name, (VersionPolicy("latest"), True))
        if not loaded:
            continue
        held = {mv.version for mv in mvs if mv.held}
        chosen = set(policy.select([mv.version for mv in mvs], held))
        wanted.update({(name, mv.version): mv for mv in mvs if mv.version in chosen})
    return wanted
