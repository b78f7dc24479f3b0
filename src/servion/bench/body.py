"""The request a load run repeats, and the checks made before the run starts.

The body is built once from the model's metadata (one row of every input,
deterministic values) or read from a file, then probed: a run against a
request the server refuses would only measure how fast it says no.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from servion.bench._http import Endpoint, ProtocolViolation, encode_request, fetch
from servion.datatypes import NUMPY_OF
from servion.errors import InvalidInput, RuntimeFailure, printable, quoted
from servion.runtime import Signature, sample_inputs
from servion.types import JSON, Array

JSON_TYPE: Final = "application/json"
BINARY_TYPE: Final = "application/octet-stream"
_NO_JSON_FORM: Final = frozenset({"FP16", "BF16"})


@dataclass(frozen=True, slots=True)
class RequestBody:
    """An inference body and the headers that describe it."""

    content: bytes
    content_type: str
    header_length: int | None = None
    """``Inference-Header-Content-Length`` (binary tensor extension only)."""
    extra: tuple[tuple[str, str], ...] = ()
    """Headers sent with every request besides those describing the body."""

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        headers: tuple[tuple[str, str], ...] = (("Content-Type", self.content_type),)
        if self.header_length is not None:
            headers += (("Inference-Header-Content-Length", str(self.header_length)),)
        return headers + self.extra


@dataclass(frozen=True, slots=True)
class InferTarget:
    """A probed model endpoint and the body to send it."""

    endpoint: Endpoint
    model: str
    body: RequestBody
    variants: tuple[RequestBody, ...] = ()
    """Further bodies with other input values, sent in turn with ``body``."""

    @property
    def path(self) -> str:
        return self.endpoint.infer_path(self.model)

    @property
    def url(self) -> str:
        return self.endpoint.url(self.path)

    def request_bytes(self, body: RequestBody | None = None) -> bytes:
        body = body or self.body
        return encode_request(self.endpoint, "POST", self.path, body.content, body.headers)

    def all_request_bytes(self) -> list[bytes]:
        return [self.request_bytes(b) for b in (self.body, *self.variants)]


def build_body(metadata: JSON, binary: bool, batch_size: int = 1, seed: int = 0) -> RequestBody:
    """``batch_size`` rows of each input in a model's V2 metadata (other dynamic
    dimensions become 1).

    >>> meta = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [-1, 2]}], "outputs": []}
    >>> build_body(meta, binary=False).content[:40]
    b'{"inputs":[{"name":"x","datatype":"INT32'
    """
    try:
        signature = Signature.from_dict({"outputs": [], **metadata})
    except (KeyError, TypeError, ValueError):
        raise InvalidInput("the model metadata does not describe its inputs") from None
    for spec in signature.inputs:
        if spec.datatype not in NUMPY_OF:
            raise InvalidInput(f"input {quoted(spec.name)} has unknown datatype {spec.datatype}")
        if not binary and spec.datatype in _NO_JSON_FORM:
            raise InvalidInput(f"input {quoted(spec.name)} is {spec.datatype}: use --binary")
    arrays = sample_inputs(signature, batch_size=batch_size, seed=seed)
    specs = {spec.name: spec.datatype for spec in signature.inputs}
    return _binary_body(arrays, specs) if binary else _json_body(arrays, specs)


def _json_body(arrays: dict[str, Array], datatypes: dict[str, str]) -> RequestBody:
    inputs = [
        {"name": name, "datatype": datatypes[name], "shape": list(arr.shape), "data": _data(arr)}
        for name, arr in arrays.items()
    ]
    return RequestBody(
        orjson.dumps({"inputs": inputs}, option=orjson.OPT_SERIALIZE_NUMPY), JSON_TYPE
    )


def _data(arr: Array) -> Any:
    if arr.dtype == object:
        return [bytes(v).decode("utf-8", "replace") for v in arr.reshape(-1)]
    return np.ascontiguousarray(arr.reshape(-1))


def _binary_body(arrays: dict[str, Array], datatypes: dict[str, str]) -> RequestBody:
    raws = {name: raw_bytes(arr, datatypes[name]) for name, arr in arrays.items()}
    inputs = [
        {
            "name": name,
            "datatype": datatypes[name],
            "shape": list(arr.shape),
            "parameters": {"binary_data_size": len(raws[name])},
        }
        for name, arr in arrays.items()
    ]
    # Outputs come back binary too: what a binary client (tritonclient) asks for.
    header = orjson.dumps({"parameters": {"binary_data_output": True}, "inputs": inputs})
    return RequestBody(header + b"".join(raws.values()), BINARY_TYPE, len(header))


def raw_bytes(arr: Array, datatype: str) -> bytes:
    """Row-major little-endian bytes; BYTES elements get a 4-byte length prefix."""
    if datatype == "BYTES":
        items = [bytes(v) for v in arr.reshape(-1)]
        return b"".join(len(v).to_bytes(4, "little") + v for v in items)
    return np.ascontiguousarray(arr, dtype=NUMPY_OF[datatype]).tobytes()


def body_from_file(path: Path, binary: bool) -> RequestBody:
    """A body given by the user; with ``binary`` its JSON header ends where the JSON does."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read --body {quoted(str(path))}: {exc.strerror}") from None
    try:
        # latin-1 maps each byte to one character, so the index where the JSON
        # value ends is the byte length of the JSON header.
        _, end = json.JSONDecoder().raw_decode(content.decode("latin-1"))
    except ValueError:
        raise InvalidInput(f"--body {quoted(path.name)} does not start with JSON") from None
    if binary:
        return RequestBody(content, BINARY_TYPE, end)
    if content[end:].strip():
        raise InvalidInput(f"--body {quoted(path.name)} has bytes after its JSON: use --binary")
    return RequestBody(content, JSON_TYPE)


def prepare_target(
    url: str,
    model: str,
    binary: bool,
    body_file: Path | None,
    timeout_s: float = 10.0,
    batch_size: int = 1,
    headers: tuple[tuple[str, str], ...] = (),
    variants: int = 1,
) -> InferTarget:
    """Read the model's metadata (unless a body is given), build the body, and probe it.
    With ``variants`` above 1, as many bodies with different input values are built (a
    load that must reach the model, never a response cache).

    Raises ``InvalidInput`` for a bad URL or body and ``RuntimeFailure`` with
    the server's own error when the server cannot be reached or refuses.
    """
    endpoint = Endpoint.parse(url)
    if body_file is not None:
        body = body_from_file(body_file, binary)
    else:
        meta_path = endpoint.infer_path(model).removesuffix("/infer")
        status, reply = _call(endpoint, encode_request(endpoint, "GET", meta_path), timeout_s)
        if status != 200:
            raise RuntimeFailure(f"metadata of model {quoted(model)}: {_describe(status, reply)}")
        metadata = orjson.loads(reply)
        body = build_body(metadata, binary, batch_size)
        others = tuple(
            replace(build_body(metadata, binary, batch_size, seed), extra=headers)
            for seed in range(1, variants)
        )
    target = InferTarget(endpoint, model, replace(body, extra=headers))
    if body_file is None:
        target = replace(target, variants=others)
    status, reply = _call(endpoint, target.request_bytes(), timeout_s)
    if status != 200:
        raise RuntimeFailure(f"probe request to {target.url} failed: {_describe(status, reply)}")
    return target


def _call(endpoint: Endpoint, request: bytes, timeout_s: float) -> tuple[int, bytes]:
    try:
        return asyncio.run(fetch(endpoint, request, timeout_s))
    except TimeoutError:
        raise RuntimeFailure(f"no answer from {endpoint.url('')} in {timeout_s:g} s") from None
    except (OSError, EOFError, ValueError, asyncio.LimitOverrunError, ProtocolViolation) as exc:
        raise RuntimeFailure(f"cannot talk to {endpoint.url('')}: {exc}") from None


def _describe(status: int, reply: bytes) -> str:
    """``HTTP 404: unknown model 'x'`` from a server's ``{"error": ...}`` reply."""
    try:
        message = orjson.loads(reply).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        message = None
    text = message if isinstance(message, str) else reply[:200].decode("utf-8", "replace")
    return f"HTTP {status}: {printable(text)}"
