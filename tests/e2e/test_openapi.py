"""The OpenAPI document against a real server: every answer below, success or error, must
have its status declared for its path and method and its body must validate against the
declared schema (openapi-core), so the document cannot drift from what is served."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.templating.paths.finders import APICallPathFinder
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.testing import MockRequest, MockResponse
from openapi_core.validation.request.exceptions import InvalidRequestBody
from openapi_core.validation.response.exceptions import InvalidData

from conftest import RunningServer, TabularModels, register, start_server
from servion.config import Settings
from servion.registry import ModelRegistry
from servion.server.openapi import document
from servion.server.tokens import create_token

ROW = [0.25] * 32
INFER = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": ROW}]}
HOST = "http://servion.test"


@dataclass(frozen=True)
class Call:
    """One request and the status it must get."""

    method: str
    path: str
    status: int
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    """A role whose token to send, or ``forged``."""


def get(path: str, status: int = 200, token: str | None = None) -> Call:
    return Call("GET", path, status, token=token)


def post(path: str, status: int = 200, body: Any = None, **kwargs: Any) -> Call:
    return Call("POST", path, status, json=body, **kwargs)


def spec(endpoint: str, *versions: str, **extra: Any) -> dict[str, Any]:
    weight = 100 / len(versions)
    arms = [{"model": "tabular", "version": v, "weight": weight} for v in versions]
    return {"endpoint": endpoint, "models": arms, **extra}


def binary_infer() -> Call:
    header = {
        "inputs": [
            {
                "name": "X",
                "datatype": "FP32",
                "shape": [1, 32],
                "parameters": {"binary_data_size": 128},
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header).encode()
    return post(
        "/v2/models/tabular/infer",
        content=head + struct.pack("<32f", *ROW),
        headers={
            "inference-header-content-length": str(len(head)),
            "content-type": "application/octet-stream",
        },
    )


MODEL = "/v2/models/tabular"
MODEL_READS = ("", "/ready", "/config", "/stats")
A_VERSION = "/v2/models/tabular/versions/v1.0.0"
ENDPOINT = "/v2/admin/endpoints"
CANARY = {"steps": [50, 100], "interval_s": 600, "gates": {"p99_slack_ms": 1000}}

SCENARIOS: dict[str, list[Call]] = {
    "server": [
        get("/v2"),
        get("/v2/health/live"),
        get("/v2/health/ready"),
        get("/v2/openapi.json"),
        get("/metrics"),
    ],
    "models": [
        *(get(base + action) for base in (MODEL, A_VERSION) for action in MODEL_READS),
        *(get(f"/v2/models/front{action}") for action in MODEL_READS),
        get("/v2/models/stats"),
        *(get(f"/v2/models/nosuch{action}", 404) for action in MODEL_READS),
        get("/v2/models/tabular/versions/v9.9.9", 404),
        get("/v2/models/tabular/versions/v9.9.9/stats", 404),
    ],
    "inference": [
        post(f"{MODEL}/infer", body=INFER),
        post(f"{MODEL}/infer", body={**INFER, "id": "r1", "outputs": [{"name": "label"}]}),
        post(f"{A_VERSION}/infer", body=INFER),
        binary_infer(),
        post("/v2/models/front/infer", body=INFER),
        post("/v2/models/front/versions/v1.1.0/infer", body=INFER),
        post(f"{MODEL}/infer", 400, {"inputs": [{**INFER["inputs"][0], "datatype": "INT32"}]}),
        post(f"{MODEL}/infer", 400, content=b"{not json"),
        post(f"{MODEL}/infer", 400, {**INFER, "parameters": {"timeout": -1}}),
        post("/v2/models/front/infer", 400, INFER, headers={"x-servion-version": "v9.9.9"}),
        post("/v2/models/front/infer", 400, INFER, headers={"x-servion-timeout-ms": "soon"}),
        post("/v2/models/nosuch/infer", 404, INFER),
        post("/v2/models/tabular/versions/v9.9.9/infer", 404, INFER),
    ],
    "limits of the HTTP layer": [
        post(f"{MODEL}/infer", 413, content=b" " * 70_000),
        post(
            f"{MODEL}/infer",
            415,
            content=b"\x80\x04K\x01.",
            headers={"content-type": "application/x-pickle"},
        ),
        Call("GET", "/v2/health/live", 431, headers={"x-padding": "p" * 70_000}),
    ],
    "routes the document does not have": [
        get(f"{MODEL}/infer", 405),
        post(MODEL, 405, {}),
        post(f"{A_VERSION}/ready", 405),
        Call("PUT", ENDPOINT, 404),
        Call("DELETE", "/v2/health/live", 404),
        get("/v2/nosuch", 404),
        get("/v3", 404),
    ],
    "model repository": [
        post("/v2/repository/index"),
        post("/v2/repository/index", body={"ready": True}),
        post("/v2/repository/index", 400, {"ready": "yes"}),
        post("/v2/repository/models/spare/unload", 401),
        post("/v2/repository/models/spare/unload", 403, token="viewer"),
        post("/v2/repository/models/spare/unload", token="deployer"),
        get("/v2/models/spare/ready", 503),
        post("/v2/repository/models/spare/load", token="deployer"),
        get("/v2/models/spare/ready"),
        post("/v2/repository/models/nosuch/load", 404, token="deployer"),
        post("/v2/repository/models/nosuch/unload", 404, token="deployer"),
    ],
    "KServe V1": [
        get("/v1/models"),
        get("/v1/models/tabular"),
        get("/v1/models/front"),
        get("/v1/models/nosuch", 404),
        post("/v1/models/tabular:predict", body={"instances": [ROW, ROW]}),
        post("/v1/models/front:predict", body={"instances": [ROW]}),
        post("/v1/models/tabular:predict", 400, {"instances": [[1, 2], [3]]}),
        post("/v1/models/nosuch:predict", 404, {"instances": [ROW]}),
    ],
    "admin reads": [
        get("/v2/admin/schema", token="viewer"),
        get("/v2/admin/schema", 401),
        get("/v2/admin/schema", 401, token="forged"),
        get(ENDPOINT, token="viewer"),
        get(f"{ENDPOINT}/front", token="viewer"),
        get(f"{ENDPOINT}/front", 401),
        get(f"{ENDPOINT}/nosuch", 404, token="viewer"),
        get(f"{ENDPOINT}/front/history", token="viewer"),
        get(f"{ENDPOINT}/nosuch/history", 404, token="viewer"),
        get(f"{ENDPOINT}/front/revisions/1", token="viewer"),
        get(f"{ENDPOINT}/front/revisions/first", 400, token="viewer"),
        get(f"{ENDPOINT}/nosuch/revisions/1", 404, token="viewer"),
        get(f"{ENDPOINT}/front/report", token="viewer"),
        get(f"{ENDPOINT}/nosuch/report", 404, token="viewer"),
        post(f"{ENDPOINT}/front/verify", token="viewer"),
        post(f"{ENDPOINT}/nosuch/verify", 404, token="viewer"),
        get(f"{ENDPOINT}/front/rollout", 404, token="viewer"),
        get("/v2/admin/models/tabular/drift", token="viewer"),
        get("/v2/admin/models/tabular/versions/v1.0.0/drift", token="viewer"),
        get("/v2/admin/models/nosuch/drift", 404, token="viewer"),
        get("/v2/admin/models/tabular/drift", 401),
    ],
    "admin changes": [
        post(ENDPOINT, 401, spec("blue", "v1.0.0")),
        post(ENDPOINT, 403, spec("blue", "v1.0.0"), token="viewer"),
        post(ENDPOINT, 400, spec("blue", "v7.0.0"), token="deployer"),
        post(ENDPOINT, body=spec("blue", "v1.0.0"), token="deployer"),
        Call(
            "POST",
            ENDPOINT,
            200,
            content=b"endpoint: yaml\nmodels: [{model: tabular, version: v1.1.0}]\n",
            headers={"content-type": "application/yaml"},
            token="deployer",
        ),
        post(ENDPOINT, 400, spec("prod", "v1.0.0", environment="production"), token="deployer"),
        post(
            ENDPOINT,
            body=spec("prod", "v1.0.0", environment="production"),
            headers={"x-servion-change-ticket": "CHG-1"},
            token="deployer",
        ),
        post(f"{ENDPOINT}/front/rollback", 403, token="viewer"),
        post(f"{ENDPOINT}/front/rollback", 400, {"to": 0}, token="deployer"),
        post(f"{ENDPOINT}/front/rollback", body={"to": 1}, token="deployer"),
        post(f"{ENDPOINT}/nosuch/rollback", 404, token="deployer"),
        Call("DELETE", f"{ENDPOINT}/doomed", 403, token="viewer"),
        Call("DELETE", f"{ENDPOINT}/doomed", 200, token="deployer"),
        Call("DELETE", f"{ENDPOINT}/nosuch", 404, token="deployer"),
    ],
    "canary rollout": [
        post(ENDPOINT, body=spec("canaried", "v1.0.0"), token="deployer"),
        post(ENDPOINT, body=spec("canaried", "v1.1.0", rollout=CANARY), token="deployer"),
        get(f"{ENDPOINT}/canaried/rollout", token="viewer"),
        post(f"{ENDPOINT}/canaried/rollout/pause", token="deployer"),
        post(f"{ENDPOINT}/canaried/rollout/pause", 400, token="deployer"),
        post(f"{ENDPOINT}/canaried/rollout/resume", token="deployer"),
        post(f"{ENDPOINT}/canaried/rollout/abort", 403, token="viewer"),
        post(f"{ENDPOINT}/canaried/rollout/abort", token="deployer"),
        post(f"{ENDPOINT}/canaried/rollout/abort", 400, token="deployer"),
        post(f"{ENDPOINT}/canaried/rollout/bogus", 404, token="deployer"),
        post(f"{ENDPOINT}/nosuch/rollout/pause", 404, token="deployer"),
    ],
}


def closed(node: Any) -> Any:
    """``node`` with every object that lists its properties closed to others: the published
    document leaves answers open for fields added later, but an answer with a field the
    document does not name must fail here."""
    if isinstance(node, list):
        return [closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: closed(value) for key, value in node.items()}
    if "properties" in out and out.get("type") == "object":
        out.setdefault("additionalProperties", False)
    return out


@pytest.fixture(scope="module")
def api() -> OpenAPI:
    # Deployment specs may be sent as YAML, which openapi-core does not read by itself.
    yaml_too = Config(extra_media_type_deserializers={"application/yaml": yaml.safe_load})
    return OpenAPI.from_dict(closed(document()), config=yaml_too)


@pytest.fixture(scope="module")
def tokens_and_server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[tuple[dict[str, str], RunningServer]]:
    tmp = tmp_path_factory.mktemp("openapi")
    settings = Settings.load(home=tmp / "home")
    registry = ModelRegistry(settings)
    for version in ("v1.0.0", "v1.1.0"):
        register(registry, "tabular", tabular.onnx, version)
    register(registry, "spare", tabular.onnx)
    tokens = {
        role: create_token(registry, role, f"{role}-bot")[1] for role in ("viewer", "deployer")
    }
    tokens["forged"] = "svt_forged"
    registry.close()
    server = start_server(settings.home, tmp, "--workers", "1", "--max-body-bytes", "65536")
    # What the scenarios read: an endpoint with two revisions, and one to undeploy.
    auth = {"authorization": f"Bearer {tokens['deployer']}"}
    for doc in (
        spec("front", "v1.0.0"),
        spec("front", "v1.0.0", "v1.1.0"),
        spec("doomed", "v1.0.0"),
    ):
        reply = httpx.post(f"{server.url}{ENDPOINT}", json=doc, headers=auth, timeout=60)
        assert reply.status_code == 200, reply.text
    yield tokens, server
    server.stop()


def send(server: RunningServer, tokens: dict[str, str], call: Call) -> httpx.Response:
    headers = dict(call.headers)
    if call.token is not None:
        headers["authorization"] = f"Bearer {tokens[call.token]}"
    return httpx.request(
        call.method,
        server.url + call.path,
        json=call.json,
        content=call.content,
        headers=headers,
        timeout=60,
    )


ERROR = closed(document()["components"]["schemas"]["Error"])


def check(api: OpenAPI, method: str, path: str, reply: httpx.Response) -> None:
    """Raise unless ``reply`` is an answer the document declares for ``method`` ``path``."""
    request = MockRequest(HOST, method, path)
    content_type = reply.headers.get("content-type", "")
    response = MockResponse(reply.content, reply.status_code, dict(reply.headers), content_type)
    try:
        api.validate_response(request, response)
    except (PathNotFound, OperationNotFound):
        # Not a route of the document: the error object, 404, or 405 naming a method the
        # document lists for the path.
        assert reply.status_code in (404, 405), reply.status_code
        if reply.status_code == 405:
            APICallPathFinder(api.spec).find(reply.headers["allow"].lower(), HOST + path)
        jsonschema.validate(reply.json(), ERROR)


def check_request(api: OpenAPI, call: Call, sent: httpx.Request) -> None:
    """Raise unless the document accepts ``sent``, a request the server answered with 200."""
    content_type = sent.headers.get("content-type", "application/json")
    request = MockRequest(
        HOST,
        call.method,
        call.path,
        headers=dict(sent.headers),
        data=sent.content or None,
        content_type=content_type,
    )
    api.validate_request(request)


@pytest.mark.parametrize("scenario", list(SCENARIOS), ids=list(SCENARIOS))
def test_real_answers_match_the_document(
    api: OpenAPI, tokens_and_server: tuple[dict[str, str], RunningServer], scenario: str
) -> None:
    tokens, server = tokens_and_server
    for call in SCENARIOS[scenario]:
        reply = send(server, tokens, call)
        where = f"{call.method} {call.path} -> {reply.status_code}: {reply.text[:300]}"
        assert reply.status_code == call.status, where
        try:
            check(api, call.method, call.path, reply)
            if call.status == 200:
                check_request(api, call, reply.request)
        except Exception as exc:
            raise AssertionError(f"{where}\n{exc!r}") from exc


def test_the_served_document_is_the_published_one(
    tokens_and_server: tuple[dict[str, str], RunningServer],
) -> None:
    _, server = tokens_and_server
    published = Path(__file__).parents[2] / "docs" / "openapi.json"
    served = httpx.get(f"{server.url}/v2/openapi.json")
    assert served.headers["content-type"] == "application/json"
    assert served.content == published.read_bytes()


def test_every_operation_is_exercised(api: OpenAPI) -> None:
    """The scenarios above call every operation of the document, successfully at least once."""
    finder = APICallPathFinder(api.spec)
    answered: set[str] = set()
    for calls in SCENARIOS.values():
        for call in calls:
            if call.status == 200:
                found = finder.find(call.method.lower(), HOST + call.path)
                answered.add(found.operation["operationId"])
    operations = {
        op["operationId"]
        for item in document()["paths"].values()
        for method, op in item.items()
        if method != "parameters"
    }
    assert operations - answered == set()


@pytest.mark.parametrize(
    ("path", "status"), [("/v2/health/live", 418), ("/v2/admin/schema", 403), ("/v2", 404)]
)
def test_a_status_the_document_does_not_declare_fails_the_check(
    api: OpenAPI, path: str, status: int
) -> None:
    undeclared = httpx.Response(status, json={"error": "not declared for this route"})
    with pytest.raises(ResponseNotFound):
        check(api, "GET", path, undeclared)


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/v2/health/live", 200, {"live": "yes"}),
        ("/v2/models/m/ready", 404, {"error": "unknown model 'm'", "request_id": "x"}),
        ("/v2/models/m", 200, {"name": "m", "versions": ["v1"]}),
    ],
    ids=["wrong-type", "undocumented-error-field", "missing-field"],
)
def test_a_body_off_the_schema_fails_the_check(
    api: OpenAPI, path: str, status: int, body: Any
) -> None:
    with pytest.raises(InvalidData):
        check(api, "GET", path, httpx.Response(status, json=body))


def test_a_request_off_the_schema_fails_the_check(api: OpenAPI) -> None:
    call = post(f"{MODEL}/infer", body={"inputs": [{"name": "X", "shape": [1]}]})
    sent = httpx.Request("POST", HOST + call.path, json=call.json)
    with pytest.raises(InvalidRequestBody, match="datatype"):
        check_request(api, call, sent)
