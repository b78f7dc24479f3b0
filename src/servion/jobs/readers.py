"""Reading one partition's rows, streaming: Parquet by row groups with buffered page reads,
CSV with ``pyarrow.csv.open_csv`` and JSON Lines with ``pyarrow.json.open_json`` over the
partition's own window of bytes. Memory stays near one block or batch, whatever the size
of the file.

Each reader yields record batches of at most ``batch_size`` rows of the columns the job
uses, with every row's position in its file, and collects the rows it could not read
at all (a CSV line of the wrong width, a line that is not JSON) with their text.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from servion.errors import printable
from servion.jobs.columns import ARROW_OF
from servion.jobs.scan import iter_rows
from servion.jobs.spec import InputSource

BLOCK_BYTES = 4 << 20
"""Bytes parsed at a time from text files; about what a Parquet block holds too. What is
paid per block in Python (checks, conversion, the output's arrays) is then a few percent
of the block's time; memory grows by a few times this."""
MAX_BLOCK_ROWS = 65536
PAGE_BUFFER_BYTES = 64 << 10
"""Read buffer per Parquet column: without one, pyarrow reads a row group's whole column
chunks at once (memory following the row group's size); with 1 MiB, a file of 32 columns
still holds 32 MiB. 64 KiB keeps a 32-column read under 5 MiB at the same speed."""

# JSON has no half floats nor bytes: those inputs are read as what JSON holds, then cast.
_JSON_ARROW_OF = {**ARROW_OF, "FP16": pa.float32(), "BYTES": pa.string()}


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A row no reader could make a row of."""

    row: int
    text: str
    error: str


@dataclass
class PartitionReader:
    """The rows of one partition; iterate for ``(block, rows)`` pairs, where ``rows``
    holds each row's 0-based position among its file's data rows. A block is about
    ``BLOCK_BYTES`` of rows, never fewer than a batch (the last one aside)."""

    source: InputSource
    start_row: int
    rows: int
    byte_start: int | None
    byte_end: int | None
    columns: list[str]
    batch_size: int
    id_column: str | None = None
    cursor: ParquetCursor | None = None
    """A Parquet reader left where the previous partition ended: used when this one starts
    there, and left where this one ends."""
    unreadable: list[Unreadable] = field(default_factory=list)
    read: int = 0
    """Rows met so far, readable or not: at the end it must equal ``rows``."""

    def __iter__(self) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        blocks = {"parquet": self._parquet, "csv": self._csv, "jsonl": self._jsonl}
        return blocks[self.source.format]()

    @property
    def _block_rows(self) -> int:
        """Rows read at a time: about ``BLOCK_BYTES`` of them, and at least a batch."""
        width = 8 * max(1, len(self.columns))
        return max(self.batch_size, min(MAX_BLOCK_ROWS, BLOCK_BYTES // width))

    # -- Parquet ----------------------------------------------------------------------

    def _parquet(self) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        path, start = self.source.path, self.start_row
        cursor = self.cursor
        if cursor is None or not cursor.fits(path, start, self.columns, self._block_rows):
            cursor = self.cursor = ParquetCursor(path, start, self.columns, self._block_rows)
        for batch, rows in cursor.rows(start, start + self.rows):
            self.read += batch.num_rows
            yield batch, rows

    # -- CSV --------------------------------------------------------------------------

    def _csv(self) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        invalid: list[int] = []

        def skip(row: Any) -> str:
            # Line numbers count the window's non-empty lines from 1.
            line = int(row.number) - 1
            invalid.append(line)
            error = f"expected {row.expected_columns} columns, got {row.actual_columns}"
            self.unreadable.append(Unreadable(self.start_row + line, row.text, error))
            return "skip"

        header = list(self.source.header or ())
        reader = pa_csv.open_csv(
            self._window(),
            read_options=pa_csv.ReadOptions(
                use_threads=False, block_size=BLOCK_BYTES, column_names=header
            ),
            parse_options=pa_csv.ParseOptions(invalid_row_handler=skip),
            # Text first, numbers later: a bad value then costs its row, not its block.
            # Only an empty cell is missing ("NaN" is a number to a model that takes it).
            convert_options=pa_csv.ConvertOptions(
                include_columns=self.columns,
                column_types={c: pa.string() for c in self.columns},
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
            ),
        )
        line = 0
        with reader:
            for batch in reader:
                # Lines skipped as unreadable are reported before their block is yielded.
                pending = np.arange(line, line + batch.num_rows + len(invalid))
                lines = pending[~np.isin(pending, invalid)][: batch.num_rows]
                line = int(lines[-1]) + 1 if len(lines) else line
                self.read += batch.num_rows
                yield batch, self.start_row + lines
        self.read += len(invalid)

    # -- JSON Lines -------------------------------------------------------------------

    def _jsonl(self) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        options = self._json_options()
        done = 0
        try:
            reader = pa_json.open_json(
                self._window(),
                read_options=pa_json.ReadOptions(use_threads=False, block_size=BLOCK_BYTES),
                parse_options=options,
            )
            for batch in reader:
                rows = np.arange(self.start_row + done, self.start_row + done + batch.num_rows)
                done += batch.num_rows
                self.read += batch.num_rows
                yield batch, rows
            return
        except pa.ArrowInvalid:
            pass  # a line pyarrow refused: read the rest line by line, chunk by chunk
        yield from self._jsonl_lines(done, options)

    def _jsonl_lines(self, skip: int, options: Any) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        assert self.byte_start is not None and self.byte_end is not None
        lines = iter_rows(Path(self.source.path), self.byte_start, self.byte_end, blank_ws=True)
        chunk: list[bytes] = []
        row = self.start_row
        for number, line in enumerate(lines):
            if number < skip:
                continue
            chunk.append(line)
            if len(chunk) == self._block_rows:
                yield from self._parse_lines(chunk, row, options)
                row += len(chunk)
                chunk = []
        if chunk:
            yield from self._parse_lines(chunk, row, options)

    def _parse_lines(
        self, lines: list[bytes], row: int, options: Any
    ) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        """Parse lines as one JSON Lines document; when pyarrow refuses it, split it in
        halves until the refused lines are found alone."""
        try:
            table = pa_json.read_json(
                pa.BufferReader(b"\n".join(lines)),
                read_options=pa_json.ReadOptions(use_threads=False),
                parse_options=options,
            )
            if table.num_rows != len(lines):
                raise ValueError(f"{len(lines)} lines hold {table.num_rows} JSON objects")
        except (pa.ArrowInvalid, ValueError) as exc:
            if len(lines) == 1:
                self.read += 1
                text = lines[0].decode("utf-8", "replace")
                self.unreadable.append(Unreadable(row, text, printable(str(exc), 300)))
                return
            half = len(lines) // 2
            yield from self._parse_lines(lines[:half], row, options)
            yield from self._parse_lines(lines[half:], row + half, options)
            return
        self.read += len(lines)
        yield table.combine_chunks().to_batches()[0], np.arange(row, row + len(lines))

    def _json_options(self) -> Any:
        fields = {c: _JSON_ARROW_OF[f.datatype] for f in self.source.feeds for c in f.columns}
        if self.id_column is not None:
            own = self.source.json_id
            fields[self.id_column] = pa.type_for_alias(own) if own else pa.string()
        schema = pa.schema([(c, fields[c]) for c in self.columns])
        return pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")

    # -- shared -----------------------------------------------------------------------

    def _window(self) -> io.RawIOBase:
        assert self.byte_start is not None and self.byte_end is not None
        return _Window(Path(self.source.path), self.byte_start, self.byte_end)


class ParquetCursor:
    """A Parquet file read forward by one reader, from the start of the row group that
    holds some row. Consecutive partitions of a row group continue where the previous one
    stopped instead of reading the row group again from its start (Parquet cannot start
    within one), so a row group cut in ten partitions is read once, not five times over.
    """

    def __init__(self, path: str, start: int, columns: list[str], block_rows: int) -> None:
        file = pq.ParquetFile(path, buffer_size=PAGE_BUFFER_BYTES, pre_buffer=False)
        meta = file.metadata
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        begins = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)))[:-1]
        first = max(int(np.searchsorted(begins, start, side="right")) - 1, 0)
        self.key = (path, columns, block_rows)
        self.position = int(begins[first]) if sizes else 0
        """The next row this cursor gives."""
        self._read = self.position
        self._held: tuple[pa.RecordBatch, int] | None = None
        self._batches: Iterator[pa.RecordBatch] = iter(())
        if sizes:
            self._batches = file.iter_batches(
                batch_size=block_rows,
                row_groups=range(first, len(sizes)),
                columns=columns,
                use_threads=False,
            )

    def fits(self, path: str, start: int, columns: list[str], block_rows: int) -> bool:
        """Whether a partition of these rows and columns can continue from here."""
        return start == self.position and self.key == (path, columns, block_rows)

    def rows(self, start: int, stop: int) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        """Rows ``start`` (at or after the position) to ``stop``; what a block holds past
        ``stop`` is kept for the next partition."""
        while self.position < stop:
            taken = self._take()
            if taken is None:
                return
            batch, first = taken
            lo = max(start - first, 0)
            hi = min(stop - first, batch.num_rows)
            if hi < batch.num_rows:
                self._held = (batch.slice(hi), first + hi)
            self.position = first + hi
            if hi > lo:
                yield batch.slice(lo, hi - lo), np.arange(first + lo, first + hi)

    def _take(self) -> tuple[pa.RecordBatch, int] | None:
        if self._held is not None:
            held, self._held = self._held, None
            return held
        batch = next(self._batches, None)
        if batch is None:
            return None
        first = self._read
        self._read += batch.num_rows
        return batch, first


class _Window(io.RawIOBase):
    """A file seen from one byte offset to another, as a stream a reader can consume."""

    def __init__(self, path: Path, start: int, end: int) -> None:
        super().__init__()
        self._file = path.open("rb")
        self._file.seek(start)
        self._left = end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), self._left)
        if size <= 0:
            return 0
        got = self._file.readinto(memoryview(buffer)[:size]) or 0
        self._left -= got
        return got

    def close(self) -> None:
        self._file.close()
        super().close()
