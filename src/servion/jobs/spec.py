"""What a batch job is asked to do, as plain values: its options, its error budget, the
input files as planned and how their columns feed the model, and the output columns.

All of it is stored with the job as JSON, and handed to the worker processes as is.
"""

from __future__ import annotations

import base64
import math
from dataclasses import asdict, dataclass
from typing import Any

from servion.errors import InvalidInput, quoted

OUTPUT_FORMATS = ("parquet", "csv", "jsonl")
ENGINES = ("local", "ray")
"""What runs a job's partitions: worker processes on this machine, or Ray Data actors."""
"""What a job writes: one file per partition in this format."""

INPUT_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
"""File name endings a job reads, and the reader each one gets."""

SUFFIX = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}


@dataclass(frozen=True, slots=True)
class Budget:
    """How many rows may fail before the job does: a count, or a share of all rows.

    >>> Budget.parse("0.01").rows(1000), Budget.parse("5").rows(1000)
    (10, 5)
    """

    text: str
    count: int | None
    share: float | None

    @classmethod
    def parse(cls, text: str) -> Budget:
        value = text.strip()
        if value.isdigit():
            return cls(value, int(value), None)
        try:
            share = float(value)
        except ValueError:
            share = math.nan
        if not 0 <= share < 1:
            raise InvalidInput(
                f"--max-failed-rows {quoted(text)}: give a number of rows (10) or a share"
                " of all rows below 1 (0.01)"
            )
        return cls(value, None, share)

    def rows(self, total: int) -> int:
        """The most failed rows a job of ``total`` rows may have and still succeed."""
        if self.count is not None:
            return self.count
        assert self.share is not None
        return math.floor(self.share * total)


@dataclass(frozen=True, slots=True)
class JobOptions:
    """How a job runs. Only ``workers``, ``retries``, ``max_failed_rows``, ``engine`` and
    ``ray_address`` may change when it is resumed: the others decide what is written."""

    workers: int
    partition_rows: int
    batch_size: int
    max_failed_rows: str
    retries: int
    columns: tuple[str, ...] | None = None
    id_column: str | None = None
    engine: str = "local"
    """``local`` (worker processes here) or ``ray`` (Ray Data actors)."""
    ray_address: str | None = None
    """The Ray cluster to run on; None starts a Ray instance on this machine."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["columns"] = list(self.columns) if self.columns is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobOptions:
        columns = data.get("columns")
        return cls(
            int(data["workers"]),
            int(data["partition_rows"]),
            int(data["batch_size"]),
            str(data["max_failed_rows"]),
            int(data["retries"]),
            tuple(columns) if columns is not None else None,
            data.get("id_column"),
            str(data.get("engine", "local")),
            data.get("ray_address"),
        )

    @property
    def budget(self) -> Budget:
        return Budget.parse(self.max_failed_rows)


@dataclass(frozen=True, slots=True)
class InputFeed:
    """One model input and the source columns that make it, in order."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InputSource:
    """One input file as planned: where it is, what it was then, and how it is read."""

    path: str
    format: str
    size: int
    mtime_ns: int
    rows: int
    feeds: tuple[InputFeed, ...]
    header: tuple[str, ...] | None = None
    """A CSV file's column names: every partition but the first starts mid-file."""
    data_offset: int = 0
    """Where a text file's first data row starts (after a CSV header)."""
    json_id: str | None = None
    """A JSON Lines file's id type as its first row holds it (``int64``, ``double``,
    ``bool``, ``string``): JSON is parsed so, then cast to the job's id type."""

    @property
    def used_columns(self) -> list[str]:
        """Every source column a feed reads, each once, in the order first met."""
        return list(dict.fromkeys(c for feed in self.feeds for c in feed.columns))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["feeds"] = [
            {**asdict(f), "shape": list(f.shape), "columns": list(f.columns)} for f in self.feeds
        ]
        out["header"] = list(self.header) if self.header is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSource:
        feeds = tuple(
            InputFeed(f["name"], f["datatype"], tuple(f["shape"]), tuple(f["columns"]))
            for f in data["feeds"]
        )
        header = data.get("header")
        return cls(
            str(data["path"]),
            str(data["format"]),
            int(data["size"]),
            int(data["mtime_ns"]),
            int(data["rows"]),
            feeds,
            tuple(header) if header is not None else None,
            int(data.get("data_offset", 0)),
            data.get("json_id"),
        )


@dataclass(frozen=True, slots=True)
class OutputColumn:
    """One column of the output: a model output with one value per row, or one element
    (``index``) of a wider one, flattened row-major."""

    output: str
    name: str
    datatype: str
    index: int | None = None


@dataclass(frozen=True, slots=True)
class JobPlan:
    """What every worker needs besides the model: the inputs, the id column's type
    (an Arrow schema, serialized) and the output columns."""

    inputs: tuple[InputSource, ...]
    outputs: tuple[OutputColumn, ...]
    id_column: str | None = None
    id_schema: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [asdict(c) for c in self.outputs],
            "id_column": self.id_column,
            "id_schema": self.id_schema,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobPlan:
        return cls(
            tuple(InputSource.from_dict(s) for s in data["inputs"]),
            tuple(OutputColumn(**c) for c in data["outputs"]),
            data.get("id_column"),
            data.get("id_schema"),
        )

    def id_type(self) -> Any:
        """The id column's Arrow type (None without an id column)."""
        if self.id_schema is None:
            return None
        import pyarrow as pa

        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.id_schema)))
        return schema.field(0).type


@dataclass(frozen=True, slots=True)
class Task:
    """One partition to run."""

    index: int
    input: int
    start_row: int
    rows: int
    byte_start: int | None = None
    byte_end: int | None = None


@dataclass(frozen=True, slots=True)
class TaskResult:
    """What a finished partition reports."""

    index: int
    rows_in: int
    rows_out: int
    failed_rows: int
    sha256: str
    dead_letter_sha256: str | None
    errors: tuple[str, ...]
    """The first few distinct reasons rows were refused."""
    seconds: float
    rss_start_bytes: int
    peak_rss_bytes: int
    pid: int


def id_schema_text(name: str, arrow_type: Any) -> str:
    """An id column's type as stored in a plan."""
    import pyarrow as pa

    return base64.b64encode(pa.schema([(name, arrow_type)]).serialize().to_pybytes()).decode()


def part_name(index: int, fmt: str) -> str:
    """A partition's output file name: ``part-00007.parquet``."""
    return f"part-{index:05d}{SUFFIX[fmt]}"


def dead_letter_name(index: int) -> str:
    """Where a partition's refused rows go, relative to the output directory."""
    return f"dead-letter/part-{index:05d}.jsonl"
