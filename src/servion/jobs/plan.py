"""Planning a job before any work: the input files in order, each checked against the
model's signature, counted, and cut into partitions of at most ``partition_rows`` rows
that never span two files. Anything wrong is refused here, before a job exists.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from servion.errors import InvalidInput, printable, quoted
from servion.jobs.columns import check_types, output_columns, plan_feeds
from servion.jobs.scan import first_line, scan_rows
from servion.jobs.spec import (
    INPUT_FORMATS,
    InputFeed,
    InputSource,
    JobOptions,
    JobPlan,
    id_schema_text,
)
from servion.runtime import Signature


@dataclass(frozen=True, slots=True)
class PartitionPlan:
    """One partition: a row range of one input file (and its bytes, for text files)."""

    index: int
    input: int
    start_row: int
    rows: int
    byte_start: int | None = None
    byte_end: int | None = None


@dataclass(frozen=True, slots=True)
class Planned:
    plan: JobPlan
    partitions: tuple[PartitionPlan, ...]

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.plan.inputs)


def find_inputs(text: str) -> list[Path]:
    """The files ``text`` names: one file, every file under a folder (hidden ones and
    ``_``-prefixed ones such as ``_SUCCESS`` aside), or a glob; in sorted order."""
    path = Path(text).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(
            (p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path))),
            key=lambda p: p.relative_to(path).as_posix(),
        )
    elif any(c in text for c in "*?["):
        files = sorted(p for p in (Path(s) for s in _glob(text)) if p.is_file())
    else:
        raise InvalidInput(f"no such input file or folder: {quoted(text)}")
    if not files:
        raise InvalidInput(f"no input files in {quoted(text)}")
    for file in files:
        if file.suffix.lower() not in INPUT_FORMATS:
            raise InvalidInput(
                f"{quoted(str(file))} is not a file batch jobs read: use .parquet, .csv or"
                " .jsonl (JSON Lines: one object per line), uncompressed"
            )
    return [f.absolute() for f in files]


def _glob(pattern: str) -> list[str]:
    import glob

    return glob.glob(os.path.expanduser(pattern), recursive=True)


def _hidden(relative: Path) -> bool:
    return any(part.startswith((".", "_")) for part in relative.parts)


def plan_job(
    files: Sequence[Path],
    signature: Signature,
    options: JobOptions,
    on_step: Callable[[str], None] = lambda _: None,
) -> Planned:
    """Check every file against ``signature`` and cut it into partitions."""
    outputs = output_columns(signature)
    if options.id_column is not None and any(c.name == options.id_column for c in outputs):
        raise InvalidInput(
            f"the id column {quoted(options.id_column)} has the name of an output column"
        )
    sources: list[InputSource] = []
    partitions: list[PartitionPlan] = []
    id_type: Any = None
    for number, path in enumerate(files):
        fmt = INPUT_FORMATS[path.suffix.lower()]
        on_step(f"reading {path.name}" if fmt == "parquet" else f"counting the rows of {path.name}")
        try:
            source, starts, kind = _plan_file(path, fmt, signature, options)
        except OSError as exc:
            raise InvalidInput(f"cannot read {quoted(str(path))}: {exc.strerror or exc}") from None
        except (pa.ArrowException, ValueError) as exc:
            raise InvalidInput(f"cannot read {quoted(str(path))}: {printable(str(exc))}") from None
        id_type = id_type if id_type is not None else kind
        sources.append(source)
        partitions.extend(_cut(source, number, starts, len(partitions), options.partition_rows))
    schema = id_schema_text(options.id_column, id_type) if options.id_column else None
    plan = JobPlan(tuple(sources), outputs, options.id_column, schema)
    return Planned(plan, tuple(partitions))


@dataclass(frozen=True, slots=True)
class _Layout:
    """What a file's first bytes (or its Parquet footer) tell of it."""

    names: list[str]
    schema: pa.Schema | None
    id_type: Any
    rows: int | None = None
    header: tuple[str, ...] | None = None
    offset: int = 0


def _plan_file(
    path: Path, fmt: str, signature: Signature, options: JobOptions
) -> tuple[InputSource, tuple[int, ...] | None, Any]:
    """The file as planned, where its partitions start (text files) and its id type."""
    stat = path.stat()
    label = quoted(str(path))
    layout = _LAYOUTS[fmt](path, label, options.id_column)
    feeds: tuple[InputFeed, ...] = ()
    if layout.names or layout.rows != 0:
        feeds = plan_feeds(layout.names, signature, options.columns, options.id_column, label)
    if layout.schema is not None:
        check_types(layout.schema, feeds, label)
    starts = None
    rows = layout.rows
    if rows is None:
        scan = scan_rows(path, layout.offset, options.partition_rows, blank_ws=fmt == "jsonl")
        rows, starts = scan.rows, (*scan.starts, scan.end)
    source = InputSource(
        str(path), fmt, stat.st_size, stat.st_mtime_ns, rows, feeds, layout.header, layout.offset
    )
    return source, starts, layout.id_type


def _parquet(path: Path, label: str, id_column: str | None) -> _Layout:
    meta = pq.ParquetFile(path)
    schema = meta.schema_arrow
    id_type = schema.field(id_column).type if id_column in schema.names else None
    return _Layout(schema.names, schema, id_type, rows=meta.metadata.num_rows)


def _csv(path: Path, label: str, id_column: str | None) -> _Layout:
    found = first_line(path, blank_ws=False)
    if found is None:
        raise InvalidInput(f"{label} is empty: a CSV file needs a header")
    header = tuple(next(csv.reader([found[0].decode("utf-8-sig")])))
    # Every column is read as text, and converted where a row's value is known bad or
    # good: a CSV id keeps its exact text (leading zeros and all).
    schema = pa.schema([(n, pa.string()) for n in dict.fromkeys(header)])
    return _Layout(list(header), schema, pa.string(), header=header, offset=found[1])


def _jsonl(path: Path, label: str, id_column: str | None) -> _Layout:
    found = first_line(path, blank_ws=True)
    if found is None:
        return _Layout([], None, None, rows=0)
    first = orjson.loads(found[0])
    if not isinstance(first, dict):
        raise InvalidInput(f"{label}: a JSON Lines row must be an object")
    id_type = _json_type(first.get(id_column)) if id_column else None
    return _Layout(list(first), None, id_type)


_LAYOUTS: dict[str, Callable[[Path, str, str | None], _Layout]] = {
    "parquet": _parquet,
    "csv": _csv,
    "jsonl": _jsonl,
}


def _json_type(value: Any) -> Any:
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


def _cut(
    source: InputSource, number: int, starts: tuple[int, ...] | None, first: int, size: int
) -> list[PartitionPlan]:
    out = []
    for k, start in enumerate(range(0, source.rows, size)):
        rows = min(size, source.rows - start)
        if starts is None:
            out.append(PartitionPlan(first + k, number, start, rows))
        else:
            out.append(PartitionPlan(first + k, number, start, rows, starts[k], starts[k + 1]))
    return out
