"""Deployments: specs, the policies routing serves them by, endpoint revisions, rollback."""

from servion.deploy.plans import policy_of
from servion.deploy.spec import Arm, DeploymentSpec, Sticky, json_schema, parse_spec
from servion.deploy.store import Deployments, EndpointNotFound, Revision

__all__ = [
    "Arm",
    "DeploymentSpec",
    "Deployments",
    "EndpointNotFound",
    "Revision",
    "Sticky",
    "json_schema",
    "parse_spec",
    "policy_of",
]
