"""Bad rows and bad input: rows a model cannot take go to dead-letter files and the rest
are predicted; past --max-failed-rows the job fails naming its partitions; a partition that
fails for another reason is retried, then fails the job by name; input refused before any
work exits 2 with no job created."""

from __future__ import annotations

import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from batch_files import (
    csv_rows,
    dead_letters,
    job,
    jobs,
    names,
    read_parts,
    run,
    summary_of,
    write_csv,
    write_parquet,
)

from conftest import N_FEATURES, BatchHome, cli

BAD = {5: (3, "abc"), 17: (4, ""), 33: (5, "nan"), 90: (2, "1e999")}
"""Row -> (CSV field, text): not a number, empty, NaN, and infinity (after parsing)."""


def _bad_csv(where: BatchHome) -> tuple[str, np.ndarray]:
    x = where.tabular.x[:120]
    rows = csv_rows(x, [f"r{i:03d}" for i in range(len(x))])
    for row, (field, text) in BAD.items():
        rows[row][field] = text
    rows[60] = rows[60][:10]  # a line of the wrong width
    header = ["id", *(f"f{j}" for j in range(N_FEATURES))]
    return str(write_csv(where.files / "bad.csv", rows, header)), x


def test_bad_rows_go_to_dead_letter_files(batch_home: BatchHome) -> None:
    source, x = _bad_csv(batch_home)
    out = batch_home.files / "bad-out"
    # tabsk is scikit-learn: NaN and infinity are refused as the server refuses them.
    done = run(
        batch_home, "tabsk", "--input", source, "--output", str(out), "--id-column", "id",
        "--partition-rows", "40", "--workers", "1", "--max-failed-rows", "5", "--format", "csv",
        "--json",
    )  # fmt: skip

    summary = summary_of(done)
    assert done.returncode == 0, done.stderr
    assert (summary["rows_in"], summary["rows_out"], summary["failed_rows"]) == (120, 115, 5)
    dead = dead_letters(out)
    assert [d["row"] for d in dead] == [5, 17, 33, 60, 90]
    by_row = {d["row"]: d for d in dead}
    assert by_row[5]["id"] == "r005" and by_row[5]["input"]["f2"] == "abc"
    assert "column 'f2'" in by_row[5]["error"] and "abc" in by_row[5]["error"]
    assert by_row[17]["error"] == "no value in column 'f3'"
    assert "finite" in by_row[33]["error"] and "finite" in by_row[90]["error"]
    assert by_row[60]["error"] == "expected 33 columns, got 10" and "text" in by_row[60]
    assert sorted(p.name for p in (out / "dead-letter").iterdir()) == [
        "part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl",
    ]  # fmt: skip
    table = read_parts(out, "csv")
    kept = [i for i in range(120) if i not in (5, 17, 33, 60, 90)]
    assert table.column("id").to_pylist() == [f"r{i:03d}" for i in kept]
    pipeline = batch_home.tabular.pipeline
    assert np.array_equal(table.column("label").to_numpy(), pipeline.predict(x[kept]))  # type: ignore[attr-defined]


def test_past_the_budget_the_job_fails_naming_its_partitions(batch_home: BatchHome) -> None:
    source, _ = _bad_csv(batch_home)
    out = batch_home.files / "over-out"
    done = run(
        batch_home, "tabsk", "--input", source, "--output", str(out), "--id-column", "id",
        "--partition-rows", "40", "--workers", "1", "--max-failed-rows", "0.02", "--json",
    )  # fmt: skip

    assert done.returncode == 1
    summary = summary_of(done)
    assert summary["state"] == "failed"
    assert "more than --max-failed-rows allows (2: 0.02 of 120 rows)" in done.stderr
    assert "part-00000.parquet: 3 (" in done.stderr and "abc" in done.stderr
    assert not (out / "manifest.json").exists()
    status = cli(batch_home.home, "batch", "status", summary["job"])
    assert "failed" in status.stdout and "part-00000.parquet" in status.stdout


def test_refused_input_exits_2_and_creates_no_job(batch_home: BatchHome) -> None:
    before = len(jobs(batch_home.home))
    x = batch_home.tabular.x[:10]
    narrow = write_parquet(batch_home.files / "narrow.parquet", x[:, :31], names()[:31])
    good = write_parquet(batch_home.files / "good.parquet", x, names())
    out = batch_home.files / "never"
    cases = {
        "unknown model 'nope'": ("nope", "--input", str(good)),
        "no such input file or folder": ("tabular", "--input", str(batch_home.files / "gone.csv")),
        "no column 'X' nor X[0]..X[31]": ("tabular", "--input", str(narrow)),
        "Invalid value for '--format'": ("tabular", "--input", str(good), "--format", "xlsx"),
        "Invalid value for '--partition-rows'": (
            "tabular", "--input", str(good), "--partition-rows", "0",
        ),
    }  # fmt: skip
    for message, args in cases.items():
        done = run(batch_home, *args, "--output", str(out))
        assert done.returncode == 2, (message, done.stdout, done.stderr)
        assert message in done.stderr, (message, done.stderr)
        assert not out.exists(), message
    taken = batch_home.files / "taken"
    taken.mkdir()
    (taken / "x.txt").write_text("mine")
    done = run(batch_home, "tabular", "--input", str(good), "--output", str(taken))
    assert done.returncode == 2 and "is not empty" in done.stderr
    assert len(jobs(batch_home.home)) == before


def test_a_failing_partition_is_retried_then_fails_the_job_by_name(
    batch_home: BatchHome,
) -> None:
    x = batch_home.tabular.x[:200].astype(object)
    x[3, 0] = None  # row 3 has no value: with no budget, the job fails after partition 0
    table = pa.table({c: pa.array(x[:, j], pa.float32()) for j, c in enumerate(names())})
    source = batch_home.files / "broken.parquet"
    pq.write_table(table, source, row_group_size=50, compression="none", use_dictionary=False)
    out = batch_home.files / "broken-out"
    first = run(
        batch_home, "tabular", "--input", str(source), "--output", str(out),
        "--workers", "1", "--partition-rows", "50", "--max-failed-rows", "0", "--json",
    )  # fmt: skip
    job_id = summary_of(first)["job"]
    assert first.returncode == 1 and "part-00000.parquet: 1 (no value in column 'X[0]')" in (
        first.stderr
    )
    # The last row group (never begun: a worker holds two partitions at most) is damaged
    # behind the job's back, the file's size and time kept: reading it fails (and reading
    # up to it: a worker reads a few MiB ahead, across row groups), is retried, and fails
    # the job, naming the partition.
    stat = source.stat()
    group = pq.ParquetFile(source).metadata.row_group(3)
    start = group.column(0).data_page_offset
    end = group.column(31).data_page_offset + group.column(31).total_compressed_size
    data = bytearray(source.read_bytes())
    data[start:end] = b"\xff" * (end - start)
    source.write_bytes(bytes(data))
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    resumed = run(batch_home, "--resume", job_id, "--max-failed-rows", "5", "--retries", "1")

    assert resumed.returncode == 1
    named = re.search(
        rf"error: {job_id} failed: part-(\d+).parquet failed after 2 attempts:", resumed.stderr
    )
    assert named is not None, resumed.stderr
    _, partitions = job(batch_home.home, job_id)
    failed = partitions[int(named.group(1))]
    assert failed.index >= 1 and failed.state == "failed" and failed.attempts >= 2
    assert "deserialize" in (failed.error or "") and partitions[0].state == "succeeded"
