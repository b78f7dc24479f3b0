"""The JSON Schemas of the data plane in the OpenAPI document's ``components/schemas``:
tensors, metadata, statistics, KServe V1 and the one error object; and the helpers the
admin API's schemas (``_openapi_admin.py``) are written with.

Written from what the encoders emit (``protocol/codec.py``, ``serving/describe.py``,
``serving/stats.py``, ``server/v1.py``). ``tests/e2e/test_openapi.py`` checks real answers
against them with every object closed, so a field added to an answer without a line here
fails a test.
"""

from __future__ import annotations

from typing import Any

from servion.datatypes import NUMPY_OF

Schema = dict[str, Any]

REF = "#/components/schemas/"


def ref(name: str) -> Schema:
    return {"$ref": REF + name}


def obj(
    properties: dict[str, Schema], *, optional: tuple[str, ...] = (), description: str = ""
) -> Schema:
    """An object whose properties are all required but ``optional``. Others are allowed, so
    that clients ignore fields added later; the tests close it, so none goes undocumented."""
    schema: Schema = {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
    }
    if description:
        schema["description"] = description
    return schema


def array_of(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def map_of(values: Schema) -> Schema:
    return {"type": "object", "additionalProperties": values}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


INT: Schema = {"type": "integer"}
STR: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
NUM: Schema = {"type": "number"}
SCALAR: Schema = {"type": ["string", "number", "boolean"]}

_PARAMETERS: Schema = {
    **map_of(SCALAR),
    "description": "Extra settings: string keys, scalar values.",
}

_REQUEST_PARAMETERS: Schema = {
    **_PARAMETERS,
    "properties": {
        "binary_data_output": {
            **BOOL,
            "description": "Return every output in the binary tensor extension by default.",
        },
        "priority": {
            **INT,
            "minimum": 0,
            "description": "Queue priority: 1 is the highest; 0 takes the model's default.",
        },
        "timeout": {
            **INT,
            "minimum": 0,
            "description": "Deadline in microseconds: a request still queued then gets 504.",
        },
    },
}


def _tensors() -> dict[str, Schema]:
    datatype: Schema = {"type": "string", "enum": list(NUMPY_OF)}
    shape: Schema = array_of({**INT, "minimum": 0})
    return {
        "Datatype": {**datatype, "description": "A tensor datatype of the protocol."},
        "TensorData": {
            "type": "array",
            "items": {"anyOf": [ref("TensorData"), SCALAR]},
            "description": "Row-major values, flat or nested as the shape: integers for INT*"
            " and UINT*, numbers for FP*, booleans for BOOL, UTF-8 strings for BYTES.",
        },
        "RequestInput": obj(
            {
                "name": STR,
                "shape": shape,
                "datatype": ref("Datatype"),
                "parameters": {
                    **_PARAMETERS,
                    "properties": {
                        "binary_data_size": {
                            **INT,
                            "minimum": 0,
                            "description": "This tensor's bytes in the binary section;"
                            " ``data`` is then left out.",
                        }
                    },
                },
                "data": ref("TensorData"),
            },
            optional=("parameters", "data"),
        ),
        "RequestOutput": obj(
            {
                "name": STR,
                "parameters": {
                    **_PARAMETERS,
                    "properties": {
                        "binary_data": {**BOOL, "description": "Return this output in binary."}
                    },
                },
            },
            optional=("parameters",),
        ),
        "InferenceRequest": obj(
            {
                "id": {**STR, "description": "Echoed in the response."},
                "parameters": _REQUEST_PARAMETERS,
                "inputs": {**array_of(ref("RequestInput")), "minItems": 1},
                "outputs": {
                    **array_of(ref("RequestOutput")),
                    "description": "The outputs to return, in this order (default: all).",
                },
            },
            optional=("id", "parameters", "outputs"),
        ),
        "ResponseOutput": obj(
            {
                "name": STR,
                "datatype": ref("Datatype"),
                "shape": shape,
                "parameters": {
                    **_PARAMETERS,
                    "properties": {"binary_data_size": {**INT, "minimum": 0}},
                },
                "data": {
                    **array_of({"type": ["string", "number", "boolean", "null"]}),
                    "description": "Flat, row-major; non-finite floats are null (ask for"
                    " binary output to keep them). Absent for a binary output.",
                },
            },
            optional=("parameters", "data"),
        ),
        "InferenceResponse": obj(
            {
                "model_name": STR,
                "model_version": STR,
                "id": STR,
                "parameters": _PARAMETERS,
                "outputs": array_of(ref("ResponseOutput")),
            },
            optional=("model_version", "id", "parameters"),
        ),
    }


def _metadata() -> dict[str, Schema]:
    tensor = obj({"name": STR, "datatype": ref("Datatype"), "shape": array_of(INT)})
    tensor["description"] = "A tensor's name, datatype and shape (-1: any size)."
    return {
        "Error": {
            "type": "object",
            "properties": {"error": {**STR, "description": "What went wrong, for a person."}},
            "required": ["error"],
            "description": "The body of every error answer. A 500 names a request id that"
            " finds the server's log line; no internal detail reaches the client.",
        },
        "ServerMetadata": obj({"name": STR, "version": STR, "extensions": array_of(STR)}),
        "Live": obj({"live": {"const": True}}),
        "Ready": obj({"ready": BOOL}),
        "ModelReady": obj({"name": STR, "ready": {"const": True}}),
        "TensorMetadata": tensor,
        "ModelMetadata": obj(
            {
                "name": STR,
                "versions": array_of(STR),
                "platform": STR,
                "inputs": array_of(ref("TensorMetadata")),
                "outputs": array_of(ref("TensorMetadata")),
            }
        ),
        "ModelConfig": obj(
            {
                "name": STR,
                "version": STR,
                "platform": STR,
                "format": STR,
                "max_batch_size": {**INT, "description": "0: the model is not batched."},
                "dynamic_batching": nullable({"type": "object"}),
                "input": array_of(ref("TensorMetadata")),
                "output": array_of(ref("TensorMetadata")),
                "sha256": STR,
            }
        ),
        "RepositoryIndex": array_of(
            obj(
                {
                    "name": STR,
                    "version": STR,
                    "state": {**STR, "description": "READY, LOADING or UNAVAILABLE."},
                    "reason": STR,
                }
            )
        ),
        "RepositoryIndexRequest": obj({"ready": BOOL}, optional=("ready",)),
    }


def _statistics() -> dict[str, Schema]:
    duration = obj({"count": INT, "ns": INT})
    return {
        "Duration": duration,
        "ModelStatistics": obj(
            {
                "name": STR,
                "version": STR,
                "last_inference": {**INT, "description": "Milliseconds since the epoch."},
                "inference_count": INT,
                "execution_count": INT,
                "inference_stats": map_of(ref("Duration")),
                "batch_stats": array_of(
                    obj(
                        {
                            "batch_size": INT,
                            "compute_input": ref("Duration"),
                            "compute_infer": ref("Duration"),
                            "compute_output": ref("Duration"),
                        }
                    )
                ),
            }
        ),
        "Statistics": obj({"model_stats": array_of(ref("ModelStatistics"))}),
    }


def _kserve_v1() -> dict[str, Schema]:
    return {
        "V1Models": obj({"models": array_of(STR)}),
        "V1ModelReady": obj({"name": STR, "ready": BOOL}),
        "V1PredictRequest": obj(
            {"instances": {**array_of({}), "description": "One row per instance."}}
        ),
        "V1PredictResponse": obj(
            {
                "predictions": {
                    **array_of({}),
                    "description": "One per instance: the single output's value, or an"
                    " object of every output's.",
                }
            }
        ),
    }


def data_plane_schemas() -> dict[str, Schema]:
    """The schemas of the data plane's requests and answers, and the error object, by name."""
    return {**_tensors(), **_metadata(), **_statistics(), **_kserve_v1()}
