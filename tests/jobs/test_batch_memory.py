"""Memory stays bounded whatever the size of the input: a worker streams its partition a
block at a time, so what a partition adds to a loaded worker is a few MiB for a file of
200 MB and partitions of 51 MB each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_files import job, names, run, summary_of

from conftest import BatchHome

ROWS = 1_600_000
"""32 float32 columns: 205 MB of Parquet, uncompressed and without dictionaries."""
MIB = 1 << 20
GROWTH_BOUND = 48 * MIB
"""Most a partition may add to its worker: the reader's page buffers and one block, the
model's batch, the output's row group (a few MiB), and the allocators' slack."""
PEAK_BOUND = 320 * MIB
"""A loaded worker is ~180 MiB before any row (measured: Python and numpy 25, pyarrow and
its kernels 80, onnxruntime 20, the registry's sqlalchemy and pydantic 30, the model);
this only catches a worker that holds the file, or a row group, or a partition."""


@pytest.fixture(scope="module")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("large") / "large.parquet"
    rng = np.random.default_rng(0)
    schema = pa.schema([(n, pa.float32()) for n in names()])
    group = 200_000
    with pq.ParquetWriter(path, schema, compression="none", use_dictionary=False) as out:
        for _ in range(ROWS // group):
            x = rng.standard_normal((group, 32), dtype=np.float32)
            out.write_table(pa.table({n: x[:, j] for j, n in enumerate(names())}))
    return path


def test_workers_stream_a_file_far_larger_than_their_memory(
    batch_home: BatchHome, large_file: Path
) -> None:
    assert large_file.stat().st_size > 200 * 1000**2
    out = batch_home.files / "large-out"
    done = run(
        batch_home, "tabular", "--input", str(large_file), "--output", str(out),
        "--partition-rows", "400000", "--batch-size", "2048", "--workers", "2", "--json",
    )  # fmt: skip

    summary = summary_of(done)
    assert done.returncode == 0, done.stderr
    assert summary["rows_out"] == ROWS
    _, partitions = job(batch_home.home, summary["job"])
    for p in partitions:
        assert p.peak_rss_bytes is not None and p.rss_start_bytes is not None
        grew = p.peak_rss_bytes - p.rss_start_bytes
        assert grew < GROWTH_BOUND, (p.index, grew / MIB)
        assert p.peak_rss_bytes < PEAK_BOUND, (p.index, p.peak_rss_bytes / MIB)
    # Output row groups are cut at a fixed size, whatever the batches were.
    groups = pq.ParquetFile(out / "part-00000.parquet").metadata
    sizes = {groups.row_group(g).num_rows for g in range(groups.num_row_groups - 1)}
    assert sizes == {65536}
