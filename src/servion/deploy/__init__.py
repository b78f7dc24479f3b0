"""Deployments: specs, the policies routing serves them by, endpoint revisions, rollback."""

from servion.deploy.canary import CanaryDriver
from servion.deploy.fleet import Fleet
from servion.deploy.plans import policy_of
from servion.deploy.service import Change, DeployService
from servion.deploy.spec import (
    Arm,
    DeploymentSpec,
    Sticky,
    json_schema,
    parse_spec,
    spec_from_dict,
)
from servion.deploy.store import Deployments, EndpointNotFound, Revision

__all__ = [
    "Arm",
    "CanaryDriver",
    "Change",
    "DeployService",
    "DeploymentSpec",
    "Deployments",
    "EndpointNotFound",
    "Fleet",
    "Revision",
    "Sticky",
    "json_schema",
    "parse_spec",
    "policy_of",
    "spec_from_dict",
]
