"""The model registry: names, semantic versions, content-addressed artifacts,
validation at the door, and the metadata database workers read their state from.
"""

from servion.registry.lineage import Lineage
from servion.registry.naming import check_name, parse_ref, parse_version
from servion.registry.policy import VersionPolicy
from servion.registry.registry import ModelRegistry
from servion.registry.versions import ModelVersion, RegisterRequest

__all__ = [
    "Lineage",
    "ModelRegistry",
    "ModelVersion",
    "RegisterRequest",
    "VersionPolicy",
    "check_name",
    "parse_ref",
    "parse_version",
]
