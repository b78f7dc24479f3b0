"""One batch of rows through the model, bad rows set aside instead of failing the batch.

Rows with a missing value, and (for models that take finite numbers only) NaN or
infinite ones, are found at once, column by column. A batch that cannot be converted,
or that the model refuses (``InvalidInput``, ``RuntimeFailure``, a ``ValueError``), is
split in halves until the rows at fault are alone; the others are predicted. The
runtime is the registry's, called as the server calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from servion.datatypes import NUMPY_OF
from servion.errors import InvalidInput, RuntimeFailure, printable, quoted
from servion.jobs.columns import ARROW_OF
from servion.jobs.spec import InputFeed
from servion.runtime import Runtime
from servion.types import Arrays

REFUSED = (InvalidInput, RuntimeFailure, ValueError)
"""What a row (rather than the job) is blamed for; pyarrow's ArrowInvalid is a ValueError."""


@dataclass(frozen=True, slots=True)
class Refused:
    """One row set aside: its position in the batch and why."""

    ordinal: int
    error: str


@dataclass(frozen=True, slots=True)
class Predicted:
    """The rows predicted (positions in the batch, ascending), their outputs, and the
    rows refused."""

    ordinals: np.ndarray
    outputs: Arrays
    refused: list[Refused]


class Stopped(Exception):
    """The job is stopping (cancelled, interrupted, failed elsewhere), or its runner died."""


def _message(exc: BaseException) -> str:
    return printable(getattr(exc, "message", None) or str(exc) or type(exc).__name__, 300)


class BatchPredictor:
    """Converts record batches to a model's inputs and predicts them.

    A block of rows (as read: thousands) is checked and converted at once, then handed to
    the model ``batch_size`` rows at a time: what costs per block in Arrow is paid once
    per block, whatever the batch size.

    >>> BatchPredictor(runtime, ["label"], 4096).run(block, feeds)   # doctest: +SKIP
    """

    def __init__(
        self,
        runtime: Runtime,
        outputs: Sequence[str],
        batch_size: int,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.runtime = runtime
        self.outputs = list(outputs)
        self.batch_size = batch_size
        self.finite_only = runtime.finite_inputs
        self.stopping = stopping
        """Asked between two model calls; True ends the block with ``Stopped``."""

    def run(self, batch: pa.RecordBatch, feeds: Sequence[InputFeed]) -> Predicted:
        refused: list[Refused] = []
        ordinals = np.arange(batch.num_rows)
        missing = _missing(batch, feeds)
        if missing is not None:
            mask, named = missing
            refused += [Refused(int(o), f"no value in column {named[o]}") for o in ordinals[mask]]
            ordinals = ordinals[~mask]
            batch = batch.filter(pa.array(~mask))
        results: list[tuple[np.ndarray, Arrays]] = []
        for rows, cast in self._convert(batch, feeds, ordinals, refused):
            # Stacked a batch at a time, right before the model reads it: a block's
            # worth of stacked rows would have left the cache by then.
            for start in range(0, len(rows), self.batch_size):
                if self.stopping():
                    raise Stopped
                piece = {n: b.slice(start, self.batch_size) for n, b in cast.items()}
                arrays = {f.name: _stack(piece[f.name], f) for f in feeds}
                picked = rows[start : start + self.batch_size]
                if self.finite_only:
                    picked, arrays = self._finite(picked, arrays, refused)
                results += self._predict(picked, arrays, refused)
        refused.sort(key=_ordinal)
        if not results:
            return Predicted(np.empty(0, np.int64), {}, refused)
        if len(results) == 1:
            return Predicted(results[0][0], results[0][1], refused)
        outputs = {n: np.concatenate([r[n] for _, r in results]) for n in self.outputs}
        return Predicted(np.concatenate([o for o, _ in results]), outputs, refused)

    def _convert(
        self,
        batch: pa.RecordBatch,
        feeds: Sequence[InputFeed],
        ordinals: np.ndarray,
        refused: list[Refused],
    ) -> list[tuple[np.ndarray, dict[str, pa.RecordBatch]]]:
        """Each feed's columns cast to its input's type, in runs of rows that convert."""
        if batch.num_rows == 0:
            return []
        try:
            return [(ordinals, {f.name: _cast_feed(batch, f) for f in feeds})]
        except REFUSED as exc:
            if batch.num_rows == 1:
                refused.append(Refused(int(ordinals[0]), _message(exc)))
                return []
        half = batch.num_rows // 2
        head = self._convert(batch.slice(0, half), feeds, ordinals[:half], refused)
        return head + self._convert(batch.slice(half), feeds, ordinals[half:], refused)

    def _finite(
        self, ordinals: np.ndarray, arrays: Arrays, refused: list[Refused]
    ) -> tuple[np.ndarray, Arrays]:
        good = np.ones(len(ordinals), bool)
        for name, value in arrays.items():
            if value.dtype.kind not in "fc":
                continue
            finite = np.isfinite(value.reshape(len(value), -1)).all(axis=1)
            error = (
                f"input {quoted(name)} holds NaN or infinite values;"
                " the model takes finite numbers only"
            )
            refused += [Refused(int(o), error) for o in ordinals[good & ~finite]]
            good &= finite
        if good.all():
            return ordinals, arrays
        return ordinals[good], {k: v[good] for k, v in arrays.items()}

    def _predict(
        self, ordinals: np.ndarray, arrays: Arrays, refused: list[Refused]
    ) -> list[tuple[np.ndarray, Arrays]]:
        rows = len(ordinals)
        if rows == 0:
            return []
        try:
            return [(ordinals, self.run_arrays(arrays))]
        except REFUSED as exc:
            if rows == 1:
                refused.append(Refused(int(ordinals[0]), _message(exc)))
                return []
        half = rows // 2
        head = self._predict(ordinals[:half], {k: v[:half] for k, v in arrays.items()}, refused)
        tail = {k: v[half:] for k, v in arrays.items()}
        return head + self._predict(ordinals[half:], tail, refused)

    def run_arrays(self, arrays: Arrays) -> Arrays:
        """Predict inputs already made; the outputs the job writes, checked."""
        rows = len(next(iter(arrays.values())))
        return self._checked(self.runtime.predict(arrays, self.outputs), rows)

    def _checked(self, results: Arrays, rows: int) -> Arrays:
        """The outputs the job writes; a model that leaves one out, or answers with another
        number of rows than it was given, has failed these rows."""
        out: Arrays = {}
        for name in self.outputs:
            value = results.get(name)
            if value is None:
                raise RuntimeFailure(f"the model gave no output {quoted(name)}")
            array = np.asarray(value)
            if array.ndim == 0 or len(array) != rows:
                raise RuntimeFailure(
                    f"output {quoted(name)} has shape {list(array.shape)} for {rows} rows"
                )
            out[name] = array
        return out


def _ordinal(refused: Refused) -> int:
    return refused.ordinal


def _missing(
    batch: pa.RecordBatch, feeds: Sequence[InputFeed]
) -> tuple[np.ndarray, dict[int, str]] | None:
    """Rows with no value in a column the model reads, and the first such column of each."""
    mask: np.ndarray | None = None
    named: dict[int, str] = {}
    for feed in feeds:
        for column in feed.columns:
            values = batch.column(column)
            if values.null_count == 0:
                continue
            nulls = np.asarray(pc.is_null(values))
            for o in np.flatnonzero(nulls):
                named.setdefault(int(o), quoted(column))
            mask = nulls if mask is None else mask | nulls
    return None if mask is None else (mask, named)


def _cast_feed(batch: pa.RecordBatch, feed: InputFeed) -> pa.RecordBatch:
    """A feed's columns cast to its input's type; a value that does not parse raises."""
    target = ARROW_OF[feed.datatype]
    columns = [_cast(batch.column(c), target, c) for c in feed.columns]
    return pa.RecordBatch.from_arrays(columns, [str(i) for i in range(len(columns))])


def _stack(columns: pa.RecordBatch, feed: InputFeed) -> np.ndarray:
    """One input from its cast columns: stacked row-major and shaped as the input."""
    if len(feed.shape) <= 1:
        return _numpy(columns.column(0), feed.datatype)
    if feed.datatype in ("BOOL", "BYTES"):
        stacked = np.column_stack([_numpy(c, feed.datatype) for c in columns.columns])
    else:
        stacked = np.asarray(columns.to_tensor())
    inner = tuple(d if d >= 0 else columns.num_columns for d in feed.shape[1:])
    return stacked.reshape(columns.num_rows, *inner)


def _cast(values: pa.Array, target: pa.DataType, column: str) -> pa.Array:
    if values.type == target:
        return values
    if pa.types.is_string(values.type) and pa.types.is_binary(target):
        return values.cast(pa.binary())
    try:
        # Numbers convert as numpy's astype would (float to int truncates); text must parse.
        return pc.cast(values, target, safe=False)
    except pa.ArrowInvalid as exc:
        raise InvalidInput(f"column {quoted(column)}: {exc}") from None


def _numpy(values: pa.Array, datatype: str) -> np.ndarray:
    array: np.ndarray = values.to_numpy(zero_copy_only=False)
    return array.astype(object if datatype == "BYTES" else NUMPY_OF[datatype], copy=False)
