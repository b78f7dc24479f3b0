"""Models' drift in the OpenAPI document: the admin routes that answer a model's last judged
windows, and the answer's schema."""

from __future__ import annotations

from typing import Any

from servion.server._openapi_paths import json_body, operation, param
from servion.server._openapi_schemas import (
    BOOL,
    INT,
    NUM,
    STR,
    Schema,
    array_of,
    obj,
    ref,
)


def drift_report() -> Schema:
    """What ``GET /v2/admin/models/{m}/drift`` answers: ``Control.drift``."""
    shares = array_of(NUM)
    histogram = {
        "description": "Reference and window shares over the reference's bins (numeric:"
        " edges, one more than the bins) or top categories and the rest (categorical).",
        "oneOf": [
            obj({"edges": array_of(NUM), "reference": shares, "live": shares}),
            obj({"labels": array_of(STR), "reference": shares, "live": shares}),
        ],
    }
    feature = obj(
        {
            "feature": STR,
            "source": {"enum": ["input", "output"]},
            "kind": {"enum": ["numeric", "categorical"]},
            "psi": NUM,
            "pvalue": NUM,
            "drifted": BOOL,
            "rows": INT,
            "histogram": histogram,
        },
        optional=("histogram",),
        description="A feature's verdict; the window's six highest-PSI features carry their"
        " histogram.",
    )
    window = obj(
        {
            "model": STR,
            "version": STR,
            "time": NUM,
            "worker": STR,
            "rows": INT,
            "reference": STR,
            "thresholds": obj({"psi": NUM, "alpha": NUM}),
            "features": array_of(feature),
        }
    )
    return obj({"model": STR, "versions": array_of(window)})


def drift_paths() -> dict[str, Any]:
    answer = json_body(ref("DriftReport"), "Per version, the freshest window of any worker.")
    summary = "The last judged drift window of each version of a model, feature by feature"
    model, version = "/v2/admin/models/{model}", "/v2/admin/models/{model}/versions/{version}"
    return {
        f"{model}/drift": {
            "parameters": [param("model")],
            "get": operation("modelDrift", summary, "admin", answer, (404,), role="viewer"),
        },
        f"{version}/drift": {
            "parameters": [param("model"), param("version")],
            "get": operation("versionDrift", summary, "admin", answer, (404,), role="viewer"),
        },
    }
