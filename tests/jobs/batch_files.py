"""What the batch job tests share: input files written by pyarrow and the csv module, the
output folder read back, the model's own answers, and the job store read directly to
follow a running job."""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conftest import N_FEATURES, BatchHome, cli
from servion.config import Settings
from servion.jobs import Job, JobStore, PartitionRecord
from servion.registry import ModelRegistry


def run(where: BatchHome, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``servion batch run ARGS`` in ``where``'s home."""
    return cli(where.home, "batch", "run", *args, timeout=timeout)


@contextmanager
def job_store(home: Path) -> Iterator[JobStore]:
    registry = ModelRegistry(Settings.load(home=home))
    try:
        yield JobStore(registry)
    finally:
        registry.close()


def jobs(home: Path) -> list[Job]:
    with job_store(home) as store:
        return store.recent(1000)


def job(home: Path, job_id: str) -> tuple[Job, list[PartitionRecord]]:
    with job_store(home) as store:
        return store.get(job_id), store.partitions(job_id)


def expected(where: BatchHome, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's own answers: onnxruntime on the ONNX file, no servion in between."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(where.tabular.onnx), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"X": x})
    return np.asarray(label), np.asarray(probabilities)


def names(prefix: str = "X") -> list[str]:
    return [f"{prefix}[{j}]" for j in range(N_FEATURES)]


def write_parquet(
    path: Path,
    x: np.ndarray,
    columns: Sequence[str],
    ids: Sequence[Any] | None = None,
    row_group_size: int | None = None,
) -> Path:
    data: dict[str, Any] = {} if ids is None else {"id": pa.array(list(ids))}
    data.update({c: x[:, j] for j, c in enumerate(columns)})
    pq.write_table(pa.table(data), path, row_group_size=row_group_size)
    return path


def write_csv(path: Path, rows: Sequence[Sequence[Any]], header: Sequence[str]) -> Path:
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(header)
        out.writerows(rows)
    return path


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def csv_rows(x: np.ndarray, ids: Sequence[Any]) -> list[list[Any]]:
    return [[i, *(repr(float(v)) for v in row)] for i, row in zip(ids, x, strict=True)]


def read_parts(folder: Path, fmt: str = "parquet") -> pa.Table:
    """Every part file of an output folder, in order, as one table."""
    parts = sorted(folder.glob(f"part-*.{fmt}"))
    if fmt == "parquet":
        return pa.concat_tables([pq.read_table(p) for p in parts])
    if fmt == "csv":
        import pyarrow.csv as pa_csv

        options = pa_csv.ConvertOptions(column_types={"id": pa.string()})
        return pa.concat_tables([pa_csv.read_csv(p, convert_options=options) for p in parts])
    lines = [json.loads(line) for p in parts for line in p.read_text().splitlines()]
    return pa.Table.from_pylist(lines)


def summary_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The summary a ``--json`` run printed."""
    assert done.returncode in (0, 1), done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def dead_letters(folder: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted((folder / "dead-letter").glob("part-*.jsonl"))
        for line in path.read_text().splitlines()
    ]
