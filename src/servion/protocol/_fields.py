"""Structural checks shared by the V2 and V1 codecs: JSON loading, depth,
parameters and shapes. Each raises ``InvalidInput`` with a message that names
the offending field, because the message goes straight back to the client."""

from __future__ import annotations

from typing import Any, Final

import orjson

from servion.errors import InvalidInput, PayloadTooLarge
from servion.protocol.limits import Limits
from servion.protocol.types import Parameters, Shape

_JSON_TYPE: Final[dict[type, str]] = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    dict: "object",
    list: "array",
    type(None): "null",
}
_SCALARS: Final = frozenset({str, int, float, bool})


def describe(value: object) -> str:
    """A client's JSON value for an error message: its type, then its text.

    >>> describe(-1), describe("fp32"), describe(None), describe([1, 2])
    ('integer -1', 'string "fp32"', 'null', 'an array')
    """
    kind = _JSON_TYPE.get(type(value), type(value).__name__)
    if type(value) in (dict, list):
        return f"an {kind}"
    if value is None:
        return "null"
    return f"{kind} {json_text(value)}"


def json_text(value: object) -> str:
    """A scalar's JSON text, shortened to 40 characters.

    >>> json_text("BF16"), json_text(2**70)
    ('"BF16"', '1180591620717411303424')
    """
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # integers past 64 bits
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_body_size(body: bytes, limits: Limits) -> None:
    """Refuse a body over ``limits.max_body_bytes`` with 413."""
    if len(body) > limits.max_body_bytes:
        raise body_too_large(len(body), limits)


def body_too_large(size: int, limits: Limits) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body is {size} bytes, more than the limit of {limits.max_body_bytes}",
        limit=limits.max_body_bytes,
    )


def load_json(data: bytes | memoryview, limits: Limits) -> Any:
    """Parse JSON with orjson (strict: UTF-8 only, no NaN/Infinity, no BOM)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise InvalidInput(
                f"request JSON is nested deeper than {limits.max_json_depth} levels"
            ) from None
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None


def check_depth(value: object, depth: int, limits: Limits, where: str) -> None:
    """Refuse ``value`` (found at nesting ``depth``) if it nests past the limit.

    Iterative, so no Python recursion; used only on values the codec does
    not otherwise walk, since walked fields are bounded by their own checks.
    """
    stack = [(value, depth)]
    while stack:
        item, level = stack.pop()
        children: Any
        if type(item) is dict:
            children = item.values()
        elif type(item) is list:
            children = item
        else:
            continue
        if level > limits.max_json_depth:
            raise InvalidInput(f"{where} is nested deeper than {limits.max_json_depth} levels")
        stack.extend((child, level + 1) for child in children if type(child) in (dict, list))


def parse_parameters(raw: object, where: str, name: str | None = None) -> Parameters:
    """Check a ``parameters`` object: string keys, scalar values. Returns it.

    ``where`` (with ``name``, as ``input 'x'``) locates it in error messages;
    the two are joined only on error, to keep f-strings off the hot path.
    """
    if raw is None:
        return {}
    if type(raw) is not dict:
        where = where if name is None else f"{where} '{name}'"
        raise InvalidInput(f"{where}: parameters must be an object, got {describe(raw)}")
    if not _SCALARS.issuperset(map(type, raw.values())):
        where = where if name is None else f"{where} '{name}'"
        for key, value in raw.items():
            if type(value) not in _SCALARS:
                raise InvalidInput(
                    f"{where}: parameter '{key}' must be a string, number or boolean,"
                    f" got {describe(value)}"
                )
    return raw


def pop_bool(params: Parameters, key: str, where: str) -> bool | None:
    """Remove and return a boolean parameter, refusing any other type."""
    value = params.pop(key, None)
    if value is not None and type(value) is not bool:
        raise InvalidInput(f"{where}: parameter '{key}' must be a boolean, got {describe(value)}")
    return value


def parse_shape(raw: object, name: str, limits: Limits) -> tuple[Shape, int]:
    """Check a shape and return it as a tuple with its element count."""
    if type(raw) is not list:
        if raw is None:
            raise InvalidInput(f"input '{name}' has no shape")
        raise InvalidInput(
            f"input '{name}': shape must be an array of integers, got {describe(raw)}"
        )
    if len(raw) > limits.max_dims:
        raise InvalidInput(
            f"input '{name}': shape has {len(raw)} dimensions, more than the limit of"
            f" {limits.max_dims}"
        )
    count = 1
    for dim in raw:
        # type() rather than isinstance(): JSON true/false must not pass as 1/0.
        if type(dim) is not int or dim < 0:
            raise InvalidInput(
                f"input '{name}': shape dimensions must be non-negative integers,"
                f" got {describe(dim)}"
            )
        if dim > limits.max_elements:
            raise PayloadTooLarge(
                f"input '{name}': shape dimension {dim} is more than the limit of"
                f" {limits.max_elements} elements",
                limit=limits.max_elements,
            )
        count *= dim
    if count > limits.max_elements:
        raise PayloadTooLarge(
            f"input '{name}': shape {raw} has {count} elements, more than the limit of"
            f" {limits.max_elements}",
            limit=limits.max_elements,
        )
    return tuple(raw), count


def parse_header_length(value: str | None) -> int | None:
    """Parse the ``Inference-Header-Content-Length`` header value.

    >>> parse_header_length(" 42 ")
    42
    """
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or not text.isascii() or len(text) > 19:
        raise InvalidInput(
            f"Inference-Header-Content-Length must be a non-negative integer, got {value!r}"
        )
    return int(text)
