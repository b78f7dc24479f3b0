"""The REST API's machine-readable description: an OpenAPI 3.1 document of the data plane
and the admin API, served at ``GET /v2/openapi.json`` and published as ``docs/openapi.json``.

The document is built from code (the routes' schemas in ``_openapi_schemas.py``, the paths
in ``_openapi_paths.py`` and ``_openapi_admin.py``), and ``tests/e2e/test_openapi.py``
checks a running server's real answers against it, so it cannot drift from what is served.

    python -m servion.server.openapi docs/openapi.json
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

from servion._version import __version__
from servion.server._openapi_admin import ACTION_PARAMETER, admin_paths, admin_schemas
from servion.server._openapi_paths import ERROR_RESPONSES, data_plane_paths
from servion.server._openapi_schemas import data_plane_schemas, ref
from servion.server.tokens import PREFIX

_DESCRIPTION = """\
servion's REST API: the Open Inference Protocol (KServe V2) with Triton's binary tensor,
model repository, statistics and model configuration extensions; KServe V1; and the admin API
for deployments. The same server answers gRPC (`inference.GRPCInferenceService`), which this
document does not describe.

Every error answer is the error object, `{"error": "<reason>"}`. A path called with a method it
does not list is answered 405 with `Allow` (model routes) or 404."""

_ERROR_TEXT: dict[int, str] = {
    400: "The request is malformed or does not fit the model (the message names the field).",
    401: "No valid token, where one is required.",
    403: "The token's role does not allow the operation, or a change comes from another"
    " origin (Origin, Sec-Fetch-Site).",
    404: "No such model, version, endpoint or revision.",
    405: "The path takes another method (named in Allow).",
    413: "The body, a batch or a tensor is over the server's limit.",
    415: "A body of a type servion does not decode (JSON, the binary extension's"
    " application/octet-stream on inference, YAML on the admin API); pickles never.",
    421: "The Host names a server this one is not: on a loopback bind only loopback names"
    " (and --allowed-hosts) are answered.",
    431: "The request line and headers are over 64 KiB.",
    500: "The server or the model failed; the message names a request id to find the log line.",
    503: "Not ready: loading, unloaded or draining; or a full queue (with Retry-After).",
    504: "The request's deadline passed while it was queued; it was not run.",
}

_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "required": True,
            "schema": {"type": "string"},
            "description": 'Bearer realm="servion"',
        }
    },
    405: {"Allow": {"required": True, "schema": {"type": "string"}}},
    503: {
        "Retry-After": {
            "schema": {"type": "integer", "minimum": 1},
            "description": "Sent when a queue is full: seconds to wait before retrying.",
        }
    },
}


def _responses() -> dict[str, Any]:
    """One named response per error status, each the error object."""
    responses: dict[str, Any] = {}
    for code, name in ERROR_RESPONSES.items():
        response: dict[str, Any] = {
            "description": _ERROR_TEXT[code],
            "content": {"application/json": {"schema": ref("Error")}},
        }
        if code in _HEADERS:
            response["headers"] = _HEADERS[code]
        responses[name] = response
    return responses


def _path_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


def _schemas() -> dict[str, Any]:
    data_plane, admin = data_plane_schemas(), admin_schemas()
    clash = data_plane.keys() & admin.keys()
    if clash:  # the spec's names come from pydantic: a model added there could take one
        raise ValueError(f"two OpenAPI schemas are named {sorted(clash)}")
    return {**data_plane, **admin}


def _components() -> dict[str, Any]:
    return {
        "schemas": _schemas(),
        "responses": _responses(),
        "parameters": {
            "model": _path_parameter("model", "A model's name, or an endpoint's."),
            "version": _path_parameter(
                "version", "A version (v1.2.0); for an endpoint, the arm to pin."
            ),
            "endpoint": _path_parameter("endpoint", "An endpoint's name."),
            "revision": {
                **_path_parameter("revision", "A revision number."),
                "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"},
            },
            "action": ACTION_PARAMETER,
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": f"`Authorization: Bearer TOKEN`: a `{PREFIX}...` token from"
                " `servion tokens create --role viewer|deployer|admin` (each role may do what"
                " the ones before it may), or the server's `--admin-token` (admin). Tokens are"
                " required once one exists or an admin token is set (listening beyond loopback"
                " needs one); inference needs one only with SERVION_SERVER_INFERENCE_AUTH.",
            }
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI document, as a new dict.

    >>> document()["paths"]["/v2/health/live"]["get"]["operationId"]
    'serverLive'
    """
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "servion",
            "version": __version__,
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": name}
            for name in (
                "health",
                "server",
                "models",
                "inference",
                "repository",
                "kserve-v1",
                "admin",
            )
        ],
        "paths": {**data_plane_paths(), **admin_paths()},
        "components": _components(),
    }


def render() -> str:
    """The document as published: indented, keys sorted, one trailing newline."""
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


@functools.cache
def served() -> bytes:
    """The body of ``GET /v2/openapi.json``, built on the first request, not at start-up."""
    return render().encode()


def main(argv: list[str] | None = None) -> int:
    """Write the document to the path given, or to standard output."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1:
        print("usage: python -m servion.server.openapi [PATH]", file=sys.stderr)
        return 2
    if args:
        Path(args[0]).write_text(render())
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
