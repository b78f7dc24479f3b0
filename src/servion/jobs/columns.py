"""Which columns of an input file feed which input of the model, decided when the job is
planned, by the rules servion reads tables by everywhere (drift references, validation
files):

- ``--columns C1,C2,...``: those columns, in that order, are the model's single input;
- else each input by its own name: a column named as an input with one value per row,
  or its elements ``name[0]``, ``name[1]``... (row-major for inputs of more dimensions);
- else, for a model with a single input, every column but the id column, in file order,
  when there are exactly as many as the input is wide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from servion.errors import InvalidInput, quoted
from servion.jobs.spec import InputFeed, OutputColumn
from servion.runtime import Signature, TensorSpec

ARROW_OF: dict[str, Any] = {
    "BOOL": pa.bool_(),
    "UINT8": pa.uint8(),
    "UINT16": pa.uint16(),
    "UINT32": pa.uint32(),
    "UINT64": pa.uint64(),
    "INT8": pa.int8(),
    "INT16": pa.int16(),
    "INT32": pa.int32(),
    "INT64": pa.int64(),
    "FP16": pa.float16(),
    "FP32": pa.float32(),
    "FP64": pa.float64(),
    "BYTES": pa.binary(),
}
"""The Arrow type each tensor datatype is read as."""

OUTPUT_ARROW_OF: dict[str, Any] = {
    **ARROW_OF,
    # CSV and JSON have no half floats, and text reads better than bytes in every format.
    "FP16": pa.float32(),
    "BYTES": pa.string(),
}


def _width(spec: TensorSpec) -> int | None:
    """Values per row (None: any number, for a 2-D input)."""
    inner = spec.shape[1:]
    if any(d < 0 for d in inner):
        if len(inner) == 1:
            return None
        raise InvalidInput(
            f"input {spec.describe()} has dimensions of any size besides the batch: a batch"
            " job cannot tell its shape from columns"
        )
    return math.prod(inner)


def _elements(name: str, width: int | None, names: Sequence[str]) -> list[str] | None:
    if width is None:
        found: list[str] = []
        while f"{name}[{len(found)}]" in names:
            found.append(f"{name}[{len(found)}]")
        return found or None
    wanted = [f"{name}[{j}]" for j in range(width)]
    return wanted if all(w in names for w in wanted) else None


def plan_feeds(
    names: Sequence[str],
    signature: Signature,
    columns: Sequence[str] | None,
    id_column: str | None,
    file: str,
) -> tuple[InputFeed, ...]:
    """The feeds of ``signature``'s inputs from a file with columns ``names``; refuses
    (``InvalidInput``) naming the file and what is missing."""
    if not signature.batched:
        raise InvalidInput("the model takes no batch dimension: it cannot predict rows")
    if id_column is not None and id_column not in names:
        raise InvalidInput(f"{file} has no id column {quoted(id_column)}")
    if columns is not None:
        return (_listed(names, signature, columns, id_column, file),)
    candidates = [n for n in names if n != id_column]
    feeds = []
    for spec in signature.inputs:
        width = _width(spec)
        if len(spec.shape) <= 1 and spec.name in candidates:
            chosen: list[str] | None = [spec.name]
        else:
            chosen = _elements(spec.name, width, candidates)
        single = len(signature.inputs) == 1
        if chosen is None and single and (width is None or len(candidates) == width):
            chosen = list(candidates)
        if not chosen:
            raise InvalidInput(_no_columns(spec, width, file, len(signature.inputs) == 1))
        feeds.append(InputFeed(spec.name, spec.datatype, spec.shape, tuple(chosen)))
    return tuple(feeds)


def _listed(
    names: Sequence[str],
    signature: Signature,
    columns: Sequence[str],
    id_column: str | None,
    file: str,
) -> InputFeed:
    if len(signature.inputs) != 1:
        wanted = ", ".join(s.name for s in signature.inputs)
        raise InvalidInput(
            f"--columns feeds a model with one input; this one takes {wanted}: name each"
            " input's columns name[0], name[1]... instead"
        )
    spec = signature.inputs[0]
    width = _width(spec)
    if width is not None and len(columns) != width:
        raise InvalidInput(
            f"--columns names {len(columns)} columns; input {spec.describe()} takes {width}"
        )
    missing = [c for c in columns if c not in names]
    if missing:
        raise InvalidInput(f"{file} has no column {', '.join(quoted(c) for c in missing[:5])}")
    if id_column is not None and id_column in columns:
        raise InvalidInput(f"the id column {quoted(id_column)} is also in --columns")
    return InputFeed(spec.name, spec.datatype, spec.shape, tuple(columns))


def _no_columns(spec: TensorSpec, width: int | None, file: str, single: bool) -> str:
    elements = f"{spec.name}[0]..{spec.name}[{width - 1}]" if width else f"{spec.name}[0].."
    text = f"{file} has no column {quoted(spec.name)} nor {elements} for input {spec.describe()}"
    if single:
        count = "the columns" if width is None else f"exactly {width} columns"
        text += f", nor {count} besides the id column; name them with --columns"
    return text


def check_types(schema: pa.Schema, feeds: Sequence[InputFeed], file: str) -> None:
    """Refuse, before any work, columns no row of which could feed the model."""
    for feed in feeds:
        for name in feed.columns:
            kind = schema.field(name).type
            if not _castable(kind, feed.datatype):
                raise InvalidInput(
                    f"{file}: column {quoted(name)} holds {kind}, which cannot feed input"
                    f" {quoted(feed.name)} ({feed.datatype})"
                )


def _castable(kind: Any, datatype: str) -> bool:
    types = pa.types
    checks = [types.is_string, types.is_large_string]
    if datatype == "BYTES":
        checks += [types.is_binary, types.is_large_binary]
    else:
        checks += [types.is_integer, types.is_floating, types.is_boolean, types.is_decimal]
    return any(bool(check(kind)) for check in [*checks, types.is_null])


def output_columns(signature: Signature) -> tuple[OutputColumn, ...]:
    """The columns a job writes for a model's outputs: each output with one value per row
    is one column; a wider one is one column per element, ``name[0]``, ``name[1]``...
    (flattened row-major), the way servion names the columns of a 2-D input."""
    columns: list[OutputColumn] = []
    for spec in signature.outputs:
        if not spec.shape or spec.shape[0] >= 0:
            continue  # not one value (or row) per input row: nothing to put beside a row
        inner = spec.shape[1:]
        if any(d < 0 for d in inner):
            raise InvalidInput(
                f"output {spec.describe()} has dimensions of any size besides the batch: a"
                " batch job writes a fixed set of columns"
            )
        width = math.prod(inner)
        if not inner:
            columns.append(OutputColumn(spec.name, spec.name, spec.datatype))
        else:
            columns.extend(
                OutputColumn(spec.name, f"{spec.name}[{j}]", spec.datatype, j) for j in range(width)
            )
    if not columns:
        raise InvalidInput("the model has no output with one value per input row")
    return tuple(columns)
