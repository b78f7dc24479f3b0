"""The data plane's paths in the OpenAPI document: health, metadata, inference, statistics,
the model repository and KServe V1; and the helper every operation is built with.

The routes are the ones ``server/app.py`` and ``server/v1.py`` answer; each operation
lists every status it can answer with, so a test can refuse any other.
"""

from __future__ import annotations

from typing import Any

from servion.routing.context import PIN_HEADER, PROBE_HEADER, TIMEOUT_HEADER
from servion.server._openapi_schemas import Schema, ref

Operation = dict[str, Any]

RESPONSES = "#/components/responses/"
PARAMETERS = "#/components/parameters/"

ERROR_RESPONSES: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    421: "MisdirectedRequest",
    431: "HeadersTooLarge",
    500: "InternalError",
    503: "Unavailable",
    504: "DeadlineExceeded",
}
"""Each error status and the name of its entry in ``components/responses``."""

ANY_ROUTE = (400, 413, 415, 421, 431, 500)
"""What the HTTP layer may answer on any route, before it is even chosen: malformed HTTP,
a body or headers over the limits, a body type servion does not decode, a foreign Host;
and an unexpected failure."""


def json_body(schema: Schema, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def operation(
    operation_id: str,
    summary: str,
    tag: str,
    ok: dict[str, Any],
    errors: tuple[int, ...] = (),
    *,
    role: str | None = None,
    description: str = "",
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    others: dict[str, Any] | None = None,
    security: list[dict[str, list[str]]] | None = None,
) -> Operation:
    """One operation: ``ok`` is its 200, ``errors`` the error statuses of its own (those of
    ``ANY_ROUTE`` and of its ``role`` are added); ``others`` are answers of other shapes."""
    codes = set(errors) | set(ANY_ROUTE)
    op: Operation = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if description:
        op["description"] = description
    if role is not None:
        # 403 only above the lowest role: any valid token holds viewer.
        codes |= {401, 403} if role != "viewer" else {401}
        op["security"] = [{"bearer": []}]
        op["x-servion-role"] = role
        op["description"] = (
            f"Needs the {role} role when tokens are required. {description}".rstrip()
        )
    if security is not None:
        op["security"] = security
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    responses: dict[str, Any] = {"200": ok, **(others or {})}
    for code in sorted(codes):
        responses.setdefault(str(code), {"$ref": RESPONSES + ERROR_RESPONSES[code]})
    op["responses"] = responses
    return op


def param(name: str) -> dict[str, str]:
    return {"$ref": PARAMETERS + name}


def _header(name: bytes, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name.decode(), "in": "header", "schema": schema, "description": description}


_INFER_HEADERS = [
    _header(
        b"inference-header-content-length",
        {"type": "integer", "minimum": 1},
        "Binary tensor extension: the length of the JSON part of the body; the binary"
        " tensors follow it.",
    ),
    _header(PIN_HEADER, {"type": "string"}, "Endpoints: the arm to answer (v1.3.0 or m:v1.3.0)."),
    _header(
        TIMEOUT_HEADER,
        {"type": "number", "exclusiveMinimum": 0, "maximum": 600_000},
        "Endpoints: this request's time budget in milliseconds.",
    ),
    _header(PROBE_HEADER, {"type": "string"}, "Endpoints: checking traffic, never cached."),
]

_INFER_BODY = {
    "required": True,
    "description": "The request as JSON; or, with the binary tensor extension, the JSON"
    " request (its length in Inference-Header-Content-Length) followed by the raw"
    " little-endian tensors its inputs' binary_data_size parameters announce.",
    "content": {
        "application/json": {"schema": ref("InferenceRequest")},
        "application/octet-stream": {},
    },
}

_INFER_OK = {
    "description": "The outputs; with binary outputs, the JSON response (its length in"
    " Inference-Header-Content-Length) followed by their raw bytes.",
    "headers": {
        "Inference-Header-Content-Length": {
            "schema": {"type": "integer"},
            "description": "Sent when any output is binary: the length of the JSON part.",
        }
    },
    "content": {
        "application/json": {"schema": ref("InferenceResponse")},
        "application/octet-stream": {},
    },
}


_MODEL_READS = {
    # path suffix: operation id, summary, answer, its description, error statuses
    "": (
        "modelMetadata",
        "Metadata of {}",
        "ModelMetadata",
        "Versions, platform, inputs and outputs.",
        (404, 503),
    ),
    "/ready": ("modelReady", "Whether {} answers now", "ModelReady", "Ready.", (404, 503)),
    "/config": (
        "modelConfig",
        "Configuration of {} (an endpoint's: its first arm's)",
        "ModelConfig",
        "Triton's model configuration subset.",
        (404, 503),
    ),
    "/stats": (
        "modelStatistics",
        "Statistics of {}, summed over the workers",
        "Statistics",
        "Triton's statistics extension.",
        (404,),
    ),
}


def _model_paths(prefix: str, suffix: str, parameters: list[dict[str, str]]) -> dict[str, Any]:
    """A model's (or endpoint's) routes under ``prefix``; ``suffix`` tells their ids apart."""
    what = "a model version" if suffix else "a model or an endpoint"
    paths: dict[str, Any] = {
        prefix + action: {
            "parameters": parameters,
            "get": operation(
                op_id + suffix, summary.format(what), "models", json_body(ref(answer), text), errors
            ),
        }
        for action, (op_id, summary, answer, text, errors) in _MODEL_READS.items()
    }
    paths[f"{prefix}/infer"] = {
        "parameters": parameters,
        "post": operation(
            f"modelInfer{suffix}",
            f"Inference on {what}",
            "inference",
            _INFER_OK,
            (401, 404, 503, 504),
            description="A token (any role) is needed only when the server requires one"
            " for inference (SERVION_SERVER_INFERENCE_AUTH). 503 with Retry-After when the"
            " model's queue is full; 504 when the request's deadline passed before it ran.",
            body=_INFER_BODY,
            parameters=_INFER_HEADERS,
            security=[{}, {"bearer": []}],
        ),
    }
    return paths


def data_plane_paths() -> dict[str, Any]:
    """Every route of the Open Inference Protocol, its extensions, and KServe V1."""
    not_ready = {
        "503": json_body(ref("Ready"), "Not ready: models still loading, or the server draining.")
    }
    return {
        "/v2": {
            "get": operation(
                "serverMetadata",
                "Server name, version and protocol extensions",
                "server",
                json_body(ref("ServerMetadata"), "Server metadata."),
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus metrics of every worker, added up (absent with --no-metrics)",
                "health",
                {
                    "description": "The Prometheus text exposition format, version 0.0.4.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                (404,),
            )
        },
        "/v2/health/live": {
            "get": operation(
                "serverLive",
                "Liveness: 200 while the process answers",
                "health",
                json_body(ref("Live"), "Live."),
            )
        },
        "/v2/health/ready": {
            "get": operation(
                "serverReady",
                "Readiness: every model that should be served is loaded",
                "health",
                json_body(ref("Ready"), "Ready."),
                others=not_ready,
            )
        },
        "/v2/openapi.json": {
            "get": operation(
                "openapi",
                "This document",
                "server",
                json_body({"type": "object"}, "The OpenAPI 3.1 description of the REST API."),
            )
        },
        "/v2/models/stats": {
            "get": operation(
                "statistics",
                "Statistics of every served model version, summed over the workers",
                "models",
                json_body(ref("Statistics"), "Triton's statistics extension."),
            )
        },
        **_model_paths("/v2/models/{model}", "", [param("model")]),
        **_model_paths(
            "/v2/models/{model}/versions/{version}", "Version", [param("model"), param("version")]
        ),
        **_repository_paths(),
        **_v1_paths(),
    }


def _repository_paths() -> dict[str, Any]:
    control = {
        action: operation(
            f"repositoryModel{action.title()}",
            f"{action.title()} a model in every worker",
            "repository",
            {"description": "Done: every live worker has applied it."},
            errors,
            role="deployer",
            description=description,
        )
        for action, errors, description in (
            ("load", (404, 503), "503 when a version fails to load."),
            ("unload", (404,), ""),
        )
    }
    return {
        "/v2/repository/index": {
            "post": operation(
                "repositoryIndex",
                "Every registered version with its state",
                "repository",
                json_body(ref("RepositoryIndex"), "One entry per version."),
                body={"required": False, **json_body(ref("RepositoryIndexRequest"), "Filter.")},
            )
        },
        "/v2/repository/models/{model}/load": {
            "parameters": [param("model")],
            "post": control["load"],
        },
        "/v2/repository/models/{model}/unload": {
            "parameters": [param("model")],
            "post": control["unload"],
        },
    }


def _v1_paths() -> dict[str, Any]:
    return {
        "/v1/models": {
            "get": operation(
                "v1Models",
                "KServe V1: the names of the served models and endpoints",
                "kserve-v1",
                json_body(ref("V1Models"), "Names."),
            )
        },
        "/v1/models/{model}": {
            "parameters": [param("model")],
            "get": operation(
                "v1ModelReady",
                "KServe V1: whether a model answers",
                "kserve-v1",
                json_body(ref("V1ModelReady"), "Readiness."),
                (404,),
            ),
        },
        "/v1/models/{model}:predict": {
            "parameters": [param("model")],
            "post": operation(
                "v1Predict",
                "KServe V1 prediction on a single-input model or endpoint",
                "kserve-v1",
                json_body(ref("V1PredictResponse"), "Predictions."),
                (401, 404, 503, 504),
                description="A token (any role) is needed only when the server requires one"
                " for inference (SERVION_SERVER_INFERENCE_AUTH), as for V2 inference.",
                body={"required": True, **json_body(ref("V1PredictRequest"), "Instances.")},
                security=[{}, {"bearer": []}],
            ),
        },
    }
