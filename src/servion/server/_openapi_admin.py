"""The admin API in the OpenAPI document: endpoints (deployments), their revisions,
reports, verification and canary rollouts, and models' drift (``_openapi_drift.py``), as
``server/admin.py`` routes and answers them."""

from __future__ import annotations

from typing import Any

from servion.deploy import DeploymentSpec
from servion.server._openapi_drift import drift_paths, drift_report
from servion.server._openapi_paths import json_body, operation, param
from servion.server._openapi_schemas import (
    BOOL,
    INT,
    NUM,
    REF,
    STR,
    Schema,
    array_of,
    map_of,
    nullable,
    obj,
    ref,
)
from servion.server.admin import CHANGE_TICKET_HEADER, ROLLOUT_ACTIONS


def _admin_schemas() -> dict[str, Schema]:
    revision = {
        "endpoint": STR,
        "revision": {**INT, "minimum": 1},
        "action": {"type": "string", "enum": ["deploy", "rollback", "failed"]},
        "source_revision": nullable(INT),
        "created_at": STR,
        "created_by": STR,
        "spec": ref("DeploymentSpec"),
    }
    return {
        "Revision": obj(revision),
        "AppliedRevision": obj({**revision, "applied_ms": NUM}),
        "EndpointState": obj({**revision, "ready": BOOL}),
        "EndpointList": obj({"endpoints": array_of(ref("EndpointState")), "cost": ref("Cost")}),
        "Cost": obj(
            {
                "configured": BOOL,
                "currency": STR,
                "per_hour": nullable(NUM),
                "per_hour_by_resource": map_of(NUM),
                "gpus": INT,
                "requests_per_s": nullable(NUM),
                "per_1000_requests": nullable(NUM),
                "window_s": NUM,
            },
            description="The configured price of this replica per hour (by resource: replica,"
            " gpu), and per 1,000 of the requests its workers answered over the window; null"
            " without a price or without a request.",
        ),
        "History": obj({"endpoint": STR, "revisions": array_of(ref("Revision"))}),
        "Undeployed": obj({"endpoint": STR, "deployed": {"const": False}}),
        "RolloutState": obj(
            {
                "endpoint": STR,
                "state": {
                    "type": "string",
                    "enum": [
                        "running",
                        "paused",
                        "promoted",
                        "rolled_back",
                        "aborted",
                        "superseded",
                    ],
                },
                "canary": STR,
                "steps": array_of(NUM),
                "step": INT,
                "percent": NUM,
                "base_revision": INT,
                "reason": STR,
                "updated_at": STR,
                "created_by": STR,
                "driver": nullable(STR),
            }
        ),
        "RollbackRequest": obj(
            {"to": {**INT, "minimum": 1, "description": "Default: the last good revision."}},
            optional=("to",),
        ),
        "Verification": obj(
            {
                "endpoint": STR,
                "revision": INT,
                "ok": BOOL,
                "arms": array_of(
                    obj(
                        {"arm": STR, "checksum": STR, "smoke": STR, "smoke_ms": NUM},
                        optional=("smoke_ms",),
                    )
                ),
            }
        ),
        "EndpointReport": _report(),
        "DriftReport": drift_report(),
    }


def _report() -> Schema:
    """What ``GET .../report`` answers: ``Control.endpoint_report``."""
    latency = {"p50_ms": nullable(NUM), "p99_ms": nullable(NUM)}
    counts = nullable(map_of(INT))
    return obj(
        {
            "endpoint": STR,
            "revision": INT,
            "arms": array_of(
                obj(
                    {
                        "arm": STR,
                        "weight": NUM,
                        "requests": INT,
                        "errors": INT,
                        "error_rate": NUM,
                        **latency,
                    }
                )
            ),
            "shadows": array_of(
                obj(
                    {
                        "shadow": STR,
                        "sample": NUM,
                        "requests": INT,
                        "errors": INT,
                        "dropped": INT,
                        "agreement": nullable(NUM),
                        "mean_max_abs_diff": nullable(NUM),
                        **latency,
                    }
                )
            ),
            "cache": counts,
            "bulkhead": counts,
            "retries": counts,
            "payload_log": counts,
            "breakers": map_of(
                obj(
                    {
                        "state": {"type": "string", "enum": ["closed", "half_open", "open"]},
                        "opened": INT,
                        "rejected": INT,
                    }
                )
            ),
            "fallbacks": map_of(INT),
            "cascade": map_of(INT),
        }
    )


def admin_schemas() -> dict[str, Schema]:
    """The schemas of the admin API's requests and answers, the deployment spec's among them."""
    spec = DeploymentSpec.model_json_schema(ref_template=REF + "{model}")
    found: dict[str, Schema] = spec.pop("$defs", {})
    return {**_admin_schemas(), **found, "DeploymentSpec": spec}


_TICKET = {
    "name": CHANGE_TICKET_HEADER.decode(),
    "in": "header",
    "schema": {"type": "string", "maxLength": 128},
    "description": "The change ticket a production endpoint's changes need (audited).",
}

ACTION_PARAMETER = {
    "name": "action",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": list(ROLLOUT_ACTIONS)},
    "description": "What to do with the rollout.",
}

_SPEC_BODY = {
    "required": True,
    "description": "A deployment spec, as JSON or YAML.",
    "content": {
        "application/json": {"schema": ref("DeploymentSpec")},
        "application/yaml": {"schema": ref("DeploymentSpec")},
    },
}


def _endpoints() -> dict[str, Any]:
    return {
        "get": operation(
            "listEndpoints",
            "Every deployed endpoint's current revision",
            "admin",
            json_body(ref("EndpointList"), "The endpoints."),
            role="viewer",
        ),
        "post": operation(
            "deploy",
            "Deploy a spec: a new revision, or the start of a canary rollout",
            "admin",
            json_body(
                {"anyOf": [ref("AppliedRevision"), ref("RolloutState")]},
                "The revision every worker now serves, or the rollout just started.",
            ),
            (400, 503),
            role="deployer",
            description="400 when the spec is invalid or names what is not registered; 503"
            " when an arm fails to load (the previous revision keeps serving).",
            body=_SPEC_BODY,
            parameters=[_TICKET],
        ),
    }


def _endpoint() -> dict[str, Any]:
    return {
        "parameters": [param("endpoint")],
        "get": operation(
            "getEndpoint",
            "An endpoint's current revision and whether every worker serves it",
            "admin",
            json_body(ref("EndpointState"), "The endpoint."),
            (404,),
            role="viewer",
        ),
        "delete": operation(
            "undeploy",
            "Undeploy an endpoint",
            "admin",
            json_body(ref("Undeployed"), "Undeployed."),
            (400, 404),
            role="deployer",
            parameters=[_TICKET],
        ),
    }


def _reads() -> dict[str, Any]:
    """What a viewer reads about one endpoint."""
    base = "/v2/admin/endpoints/{endpoint}"
    reads: dict[str, Any] = {
        f"{base}/history": (
            "endpointHistory",
            "Every revision of an endpoint",
            ref("History"),
            (404,),
        ),
        f"{base}/report": (
            "endpointReport",
            "Requests, errors and latency per arm and shadow, summed over the workers",
            ref("EndpointReport"),
            (404,),
        ),
        f"{base}/rollout": (
            "rolloutStatus",
            "The endpoint's canary rollout",
            ref("RolloutState"),
            (404,),
        ),
    }
    paths: dict[str, Any] = {
        path: {
            "parameters": [param("endpoint")],
            "get": operation(
                op_id, summary, "admin", json_body(schema, summary), errors, role="viewer"
            ),
        }
        for path, (op_id, summary, schema, errors) in reads.items()
    }
    paths[f"{base}/revisions/{{revision}}"] = {
        "parameters": [param("endpoint"), param("revision")],
        "get": operation(
            "getRevision",
            "One revision of an endpoint",
            "admin",
            json_body(ref("Revision"), "The revision."),
            (400, 404),
            role="viewer",
        ),
    }
    paths[f"{base}/verify"] = {
        "parameters": [param("endpoint")],
        "post": operation(
            "verifyEndpoint",
            "Re-check each arm's artifact checksum and run a smoke inference on it",
            "admin",
            json_body(ref("Verification"), "Per arm: what was checked; ok when all passed."),
            (404,),
            role="viewer",
        ),
    }
    return paths


def _changes() -> dict[str, Any]:
    """What a deployer changes about one endpoint."""
    base = "/v2/admin/endpoints/{endpoint}"
    return {
        f"{base}/rollback": {
            "parameters": [param("endpoint")],
            "post": operation(
                "rollback",
                "Serve an earlier revision again (default: the last good one)",
                "admin",
                json_body(ref("AppliedRevision"), "The new revision, served by every worker."),
                (400, 404),
                role="deployer",
                body={"required": False, **json_body(ref("RollbackRequest"), "The target.")},
                parameters=[_TICKET],
            ),
        },
        f"{base}/rollout/{{action}}": {
            "parameters": [param("endpoint"), param("action")],
            "post": operation(
                "rolloutAction",
                "Pause, resume or abort the endpoint's canary rollout",
                "admin",
                json_body(ref("RolloutState"), "The rollout after the action."),
                (400, 404),
                role="deployer",
                description="Abort restores the stable revision.",
                parameters=[_TICKET],
            ),
        },
    }


def admin_paths() -> dict[str, Any]:
    """Every route of the admin API."""
    return {
        "/v2/admin/schema": {
            "get": operation(
                "deploymentSpecSchema",
                "The deployment spec's JSON Schema",
                "admin",
                json_body({"type": "object"}, "A JSON Schema (draft 2020-12)."),
                role="viewer",
            )
        },
        **drift_paths(),
        "/v2/admin/endpoints": _endpoints(),
        "/v2/admin/endpoints/{endpoint}": _endpoint(),
        **_reads(),
        **_changes(),
    }
