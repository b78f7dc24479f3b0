"""The OpenAPI document itself: valid OpenAPI 3.1, published as generated, every error
answer the error object, and no catch-all answer that would hide an undeclared status.
(``tests/e2e/test_openapi.py`` checks a running server's answers against it.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from servion.server.openapi import document, main, render

PUBLISHED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
ERROR = {"$ref": "#/components/schemas/Error"}


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method != "parameters"
    ]


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1")
    validate(doc, cls=OpenAPIV31SpecValidator)
    doc["paths"]["/v2"]["get"]["parameters"] = [{"name": "x"}]  # where does it go?
    with pytest.raises(OpenAPIValidationError, match="'in' is a required property"):
        validate(doc, cls=OpenAPIV31SpecValidator)


def test_the_published_document_is_current() -> None:
    assert PUBLISHED.read_text() == render(), (
        f"regenerate it: python -m servion.server.openapi {PUBLISHED}"
    )


def test_the_command_writes_the_document(tmp_path: Path) -> None:
    target = tmp_path / "openapi.json"
    assert main([str(target)]) == 0
    assert target.read_text() == render()
    assert main(["one", "two"]) == 2


def test_every_error_answer_is_the_error_object() -> None:
    doc = document()
    named = doc["components"]["responses"]
    checked = 0
    for path, method, op in operations(doc):
        assert "default" not in op["responses"], f"{method} {path}: a status must be declared"
        for code, response in op["responses"].items():
            if int(code) < 400:
                continue
            if "$ref" in response:
                response = named[response["$ref"].rsplit("/", 1)[1]]
            schema = response["content"]["application/json"]["schema"]
            if (path, method, code) == ("/v2/health/ready", "get", "503"):
                # The protocol's readiness answer, the same shape as its 200.
                assert schema == {"$ref": "#/components/schemas/Ready"}
                continue
            assert schema == ERROR, f"{method} {path} {code}"
            checked += 1
    assert checked > 100


def test_operations_are_named_once_and_control_operations_need_a_token() -> None:
    ops = operations(document())
    ids = [op["operationId"] for _, _, op in ops]
    assert len(ids) == len(set(ids))
    for path, method, op in ops:
        changes = path.startswith("/v2/admin") or path.startswith("/v2/repository/models")
        if changes:
            assert op["security"] == [{"bearer": []}], f"{method} {path}"
            assert "401" in op["responses"]
        elif "security" in op:
            assert {} in op["security"], f"{method} {path}: a read needs no token"
