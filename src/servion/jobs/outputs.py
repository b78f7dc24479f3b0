"""Writing a partition's output and its dead-letter rows.

Each file is written under a hidden temporary name beside its final one and renamed
into place when complete, so a file under its final name is always whole. The bytes
depend only on the rows: Parquet files carry no timestamps, use one compression and
cut row groups at a fixed number of rows whatever the batches were, so a partition
redone after an interruption is byte for byte the one an uninterrupted run writes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from servion.jobs.columns import OUTPUT_ARROW_OF
from servion.jobs.spec import OutputColumn
from servion.types import Arrays

GROUP_BYTES = 8 << 20
"""About how much a Parquet row group holds: rows per group follow from the row width."""
MAX_GROUP_ROWS = 65536
COMPRESSION = "snappy"


def output_schema(
    columns: Sequence[OutputColumn], id_column: str | None, id_type: Any
) -> pa.Schema:
    """The id column (if any), then one column per output element."""
    fields = [(id_column, id_type)] if id_column is not None else []
    fields += [(c.name, OUTPUT_ARROW_OF[c.datatype]) for c in columns]
    return pa.schema(fields)


def output_table(
    schema: pa.Schema, columns: Sequence[OutputColumn], ids: pa.Array | None, outputs: Arrays
) -> pa.Table:
    """The rows to write, from the id values and the model's outputs."""
    arrays: list[pa.Array] = [] if ids is None else [ids]
    for column in columns:
        value = outputs[column.output]
        value = value.reshape(len(value), -1)[:, column.index or 0]
        arrays.append(_arrow(value, OUTPUT_ARROW_OF[column.datatype]))
    return pa.Table.from_arrays(arrays, schema=schema)


def _arrow(values: np.ndarray, target: pa.DataType) -> pa.Array:
    if pa.types.is_string(target):
        return pa.array([_text(v) for v in values.tolist()], type=target)
    return pa.array(np.ascontiguousarray(values).astype(target.to_pandas_dtype(), copy=False))


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def group_rows(schema: pa.Schema) -> int:
    """Rows per Parquet row group: a fixed number for a given set of columns."""
    width = sum(f.type.byte_width if pa.types.is_primitive(f.type) else 16 for f in schema)
    return max(1, min(MAX_GROUP_ROWS, GROUP_BYTES // max(width, 1)))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class PartWriter:
    """One partition's output file, in ``fmt``, committed atomically."""

    def __init__(self, path: Path, fmt: str, schema: pa.Schema) -> None:
        self.path = path
        self.temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self.fmt = fmt
        self.schema = schema
        self.rows = 0
        self._group = group_rows(schema)
        self._buffered: list[pa.Table] = []
        self._buffered_rows = 0
        self._file: BinaryIO | None = None
        self._writer: Any = None
        target = str(self.temporary)
        if fmt == "parquet":
            # Dictionaries and min/max statistics pay for labels and ids; a column of
            # scores rarely repeats a value nor is filtered on, and hashing each value
            # cost as much as the rest of the job.
            exact = [f.name for f in schema if not pa.types.is_floating(f.type)]
            self._writer = pq.ParquetWriter(
                target,
                schema,
                compression=COMPRESSION,
                use_dictionary=exact,
                write_statistics=exact,
            )
        elif fmt == "csv":
            self._writer = pa_csv.CSVWriter(target, schema)
        else:
            self._file = self.temporary.open("wb")

    def write(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        if self.fmt == "parquet":
            self._buffered.append(table)
            self._buffered_rows += table.num_rows
            if self._buffered_rows >= self._group:
                self._flush(final=False)
        elif self.fmt == "csv":
            self._writer.write_table(table)
        else:
            assert self._file is not None
            self._file.write(_json_lines(table))

    def _flush(self, final: bool) -> None:
        if not self._buffered:
            return
        table = pa.concat_tables(self._buffered)
        whole = table.num_rows if final else table.num_rows - table.num_rows % self._group
        for start in range(0, whole, self._group):
            self._writer.write_table(table.slice(start, self._group), row_group_size=self._group)
        rest = table.slice(whole)
        self._buffered = [rest] if rest.num_rows else []
        self._buffered_rows = rest.num_rows

    def commit(self) -> str:
        """Close, rename into place and return the file's SHA-256."""
        if self.fmt == "parquet":
            self._flush(final=True)
        if self._writer is not None:
            self._writer.close()
        if self._file is not None:
            self._file.close()
        os.replace(self.temporary, self.path)
        return sha256_of(self.path)

    def abort(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception:  # a half-written file is deleted whatever its writer says
            pass
        if self._file is not None:
            self._file.close()
        self.temporary.unlink(missing_ok=True)


def _json_lines(table: pa.Table) -> bytes:
    names = table.column_names
    columns = [_json_values(table.column(i)) for i in range(table.num_columns)]
    rows = zip(*columns, strict=True)
    return b"".join(orjson.dumps(dict(zip(names, row, strict=True))) + b"\n" for row in rows)


def _json_values(column: Any) -> list[Any]:
    if pa.types.is_float32(column.type) or pa.types.is_float16(column.type):
        # Shortest text of the float32 value (0.1, not 0.10000000149011612), read back
        # as the double that prints the same.
        values = column.to_numpy(zero_copy_only=False)
        return values.astype(str).astype(np.float64).tolist()  # type: ignore[no-any-return]
    return column.to_pylist()  # type: ignore[no-any-return]


def write_dead_letter(path: Path, entries: Sequence[dict[str, Any]]) -> str | None:
    """The refused rows as JSON lines, ordered by row; None (and no file) when there are
    none."""
    if not entries:
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    ordered = sorted(entries, key=lambda e: int(e["row"]))
    with temporary.open("wb") as fh:
        for entry in ordered:
            fh.write(orjson.dumps(entry, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    os.replace(temporary, path)
    return sha256_of(path)
