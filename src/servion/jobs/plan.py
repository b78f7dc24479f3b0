"""Planning a job before any work: the input files in order, each checked against the
model's signature, counted, and cut into partitions of at most ``partition_rows`` rows
that never span two files. Anything wrong is refused here, before a job exists.

Parquet is read from the start of a row group, never from a row within one: partitions
of a Parquet file start at row group boundaries (small row groups go together, a large
one is cut in equal pieces), and a worker reads the pieces of a row group one after the
other with one reader, instead of reading its first rows again for every piece.
"""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
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
    skip_rows: int = 0
    """Rows read and dropped to start it afresh (its row group's rows before it)."""


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
            source, cuts, kind = _plan_file(path, fmt, signature, options)
        except OSError as exc:
            raise InvalidInput(f"cannot read {quoted(str(path))}: {exc.strerror or exc}") from None
        except (pa.ArrowException, ValueError) as exc:
            raise InvalidInput(f"cannot read {quoted(str(path))}: {printable(str(exc))}") from None
        id_type = id_type if id_type is not None else kind
        sources.append(source)
        first = len(partitions)
        partitions += [replace(c, index=first + k, input=number) for k, c in enumerate(cuts)]
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
    groups: tuple[int, ...] = ()
    """A Parquet file's row group sizes."""
    json_id: str | None = None


def _plan_file(
    path: Path, fmt: str, signature: Signature, options: JobOptions
) -> tuple[InputSource, list[PartitionPlan], Any]:
    """The file as planned, its partitions (numbered from 0) and its id type."""
    stat = path.stat()
    label = quoted(str(path))
    layout = _LAYOUTS[fmt](path, label, options.id_column)
    feeds: tuple[InputFeed, ...] = ()
    if layout.names or layout.rows != 0:
        feeds = plan_feeds(layout.names, signature, options.columns, options.id_column, label)
    if layout.schema is not None:
        check_types(layout.schema, feeds, label)
    size = options.partition_rows
    if layout.rows is None:
        scan = scan_rows(path, layout.offset, size, blank_ws=fmt == "jsonl")
        rows, cuts = scan.rows, _text_cuts(scan.rows, (*scan.starts, scan.end), size)
    else:
        rows, cuts = layout.rows, _parquet_cuts(layout.groups, size)
    source = InputSource(
        str(path), fmt, stat.st_size, stat.st_mtime_ns, rows, feeds, layout.header,
        layout.offset, layout.json_id,
    )  # fmt: skip
    return source, cuts, layout.id_type


def _parquet(path: Path, label: str, id_column: str | None) -> _Layout:
    meta = pq.ParquetFile(path)
    schema = meta.schema_arrow
    id_type = schema.field(id_column).type if id_column in schema.names else None
    groups = tuple(meta.metadata.row_group(g).num_rows for g in range(meta.num_row_groups))
    return _Layout(schema.names, schema, id_type, rows=meta.metadata.num_rows, groups=groups)


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
    return _Layout(list(first), None, id_type, json_id=str(id_type) if id_type else None)


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


def _text_cuts(rows: int, starts: tuple[int, ...], size: int) -> list[PartitionPlan]:
    """Every ``size`` rows, at the byte offsets the scan found."""
    return [
        PartitionPlan(k, 0, start, min(size, rows - start), starts[k], starts[k + 1])
        for k, start in enumerate(range(0, rows, size))
    ]


def _parquet_cuts(groups: tuple[int, ...], size: int) -> list[PartitionPlan]:
    """Whole row groups while they fit in ``size`` rows together; a larger row group in
    equal pieces of at most ``size`` rows."""
    cuts: list[PartitionPlan] = []
    start = pending = 0
    for rows in groups:
        if pending and pending + rows > size:
            cuts.append(PartitionPlan(len(cuts), 0, start - pending, pending))
            pending = 0
        if rows <= size:
            pending += rows
        else:
            pieces = -(-rows // size)
            bounds = [rows * p // pieces for p in range(pieces + 1)]
            cuts += [
                PartitionPlan(len(cuts) + p, 0, start + lo, hi - lo, skip_rows=lo)
                for p, (lo, hi) in enumerate(itertools.pairwise(bounds))
            ]
        start += rows
    if pending:
        cuts.append(PartitionPlan(len(cuts), 0, start - pending, pending))
    return cuts
