"""Deployments: specs, endpoint revisions, rollback."""

from servion.deploy.spec import PIN_HEADER, Arm, DeploymentSpec, Sticky, json_schema, parse_spec
from servion.deploy.store import Deployments, EndpointNotFound, Revision

__all__ = [
    "PIN_HEADER",
    "Arm",
    "DeploymentSpec",
    "Deployments",
    "EndpointNotFound",
    "Revision",
    "Sticky",
    "json_schema",
    "parse_spec",
]
