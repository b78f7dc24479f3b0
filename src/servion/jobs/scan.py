"""Rows of a text input counted in one streaming pass, and the byte offsets partitions
start at, so that each worker reads its own window of the file and no more.

A row is a line that is not blank: for CSV, blank is empty (pyarrow skips such lines);
for JSON Lines, only white space (pyarrow's JSON reader skips those). A value may not
span lines in either format, as pyarrow reads them by default.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHUNK_BYTES = 4 << 20
"""Read at a time: memory stays near a few times this whatever the file's size."""
_NL, _CR, _SPACE, _TAB = 10, 13, 32, 9


@dataclass(frozen=True, slots=True)
class RowScan:
    """How many rows a text file holds from some offset, and where partitions start."""

    rows: int
    starts: tuple[int, ...]
    """Byte offset of rows 0, every, 2 x every...: one per partition."""
    end: int


def _line_spans(path: Path, offset: int) -> Iterator[tuple[int, bytes, np.ndarray]]:
    """Complete lines from ``offset`` in chunks: (offset of the chunk, its bytes, the
    positions of its newlines). A last line without a newline gets one here."""
    with path.open("rb") as fh:
        fh.seek(offset)
        carry = b""
        while True:
            block = fh.read(CHUNK_BYTES)
            data = carry + block
            if not block:
                if data:
                    data += b"\n"
                    yield offset, data, np.flatnonzero(np.frombuffer(data, np.uint8) == _NL)
                return
            newlines = np.flatnonzero(np.frombuffer(data, np.uint8) == _NL)
            if len(newlines) == 0:
                carry = data  # a line longer than a chunk: keep reading
                continue
            cut = int(newlines[-1]) + 1
            yield offset, data[:cut], newlines
            offset += cut
            carry = data[cut:]


def _row_starts(data: bytes, newlines: np.ndarray, blank_ws: bool) -> np.ndarray:
    """Relative offsets of the lines in ``data`` that are rows."""
    raw = np.frombuffer(data, np.uint8)
    starts = np.concatenate(([0], newlines[:-1] + 1))
    lengths = newlines - starts
    if blank_ws:
        ink = ~((raw == _SPACE) | (raw == _TAB) | (raw == _CR) | (raw == _NL))
        total = np.concatenate(([0], np.cumsum(ink, dtype=np.int64)))
        keep = total[newlines] - total[starts] > 0
    else:
        first = raw[np.minimum(starts, len(raw) - 1)]
        keep = ~((lengths == 0) | ((lengths == 1) & (first == _CR)))
    kept: np.ndarray = starts[keep]
    return kept


def scan_rows(path: Path, offset: int, every: int, blank_ws: bool) -> RowScan:
    """Count rows from byte ``offset`` and note where every ``every``-th one starts.

    ``blank_ws``: lines of only white space are blank (JSON Lines), else only empty ones
    (CSV).
    """
    rows = 0
    starts: list[int] = []
    for base, data, newlines in _line_spans(path, offset):
        found = _row_starts(data, newlines, blank_ws)
        numbers = np.arange(rows, rows + len(found))
        starts.extend(int(base + s) for s in found[numbers % every == 0])
        rows += len(found)
    return RowScan(rows, tuple(starts), path.stat().st_size)


def first_line(path: Path, blank_ws: bool) -> tuple[bytes, int] | None:
    """The first row's bytes (without its line end) and the offset just after it."""
    for base, data, newlines in _line_spans(path, 0):
        found = _row_starts(data, newlines, blank_ws)
        if len(found):
            start = int(found[0])
            end = int(newlines[np.searchsorted(newlines, start)])
            return data[start:end].rstrip(b"\r"), base + end + 1
    return None


def iter_rows(path: Path, start: int, end: int, blank_ws: bool) -> Iterator[bytes]:
    """The rows between two byte offsets, one ``bytes`` each (line end removed)."""
    with path.open("rb") as fh:
        fh.seek(start)
        remaining = end - start
        carry = b""
        while remaining > 0 or carry:
            block = fh.read(min(CHUNK_BYTES, remaining)) if remaining > 0 else b""
            remaining -= len(block)
            data = carry + block
            if not block:
                data += b"\n"
            newlines = np.flatnonzero(np.frombuffer(data, np.uint8) == _NL)
            if len(newlines) == 0:
                carry = data
                continue
            cut = int(newlines[-1]) + 1
            for s in _row_starts(data[:cut], newlines, blank_ws):
                stop = data.index(b"\n", int(s))
                yield data[int(s) : stop].rstrip(b"\r")
            carry = data[cut:]
            if not block:
                return
