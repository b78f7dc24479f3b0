"""``servion batch run --engine ray`` on a Ray instance the test starts on loopback (Ray's
own ``ray start --head``, two CPUs, its own temp folder and token): a job cancelled on Ray
and resumed there writes the same bytes as the local engine; a partition that fails is
retried in a later round and then fails the job by name; a job moves between engines
when resumed; and addresses that cannot work are refused before any job exists."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_files import (
    csv_rows,
    job,
    job_store,
    jobs,
    names,
    summary_of,
    write_csv,
    write_parquet,
)

from conftest import N_FEATURES, BatchHome, cli, free_port, wait_until
from servion.jobs import JobStore

pytest.importorskip("ray.data")


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head on 127.0.0.1 and the environment that reaches it (its token)."""
    # Short: Ray's socket paths live under it, and a Unix socket path has 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    env = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    port = free_port()
    log = (root / "head.log").open("w")
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
         f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         "--object-store-memory=200000000", "--include-dashboard=false",
         f"--temp-dir={root / 'tmp'}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, **env}, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: _answers(port) or head.poll() is not None, 120, "Ray's head")
        assert head.poll() is None, (root / "head.log").read_text()
        yield f"127.0.0.1:{port}", env
    finally:
        # Ray's own stop waits on every process it started, tens of seconds here; its
        # processes share the head's session, and nothing of them is kept.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait(30)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
    except OSError:
        return False
    return True


def _run(where: BatchHome, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return cli(where.home, "batch", "run", *args, "--json", timeout=300, env=env)


def _same_files(one: Path, other: Path) -> list[str]:
    names_ = sorted(
        str(p.relative_to(one)) for p in one.rglob("*") if p.is_file() and p.name[0] != "."
    )
    assert names_ == sorted(
        str(p.relative_to(other)) for p in other.rglob("*") if p.is_file() and p.name[0] != "."
    )
    for name in names_:
        if name != "manifest.json":
            assert (one / name).read_bytes() == (other / name).read_bytes(), name
    return names_


def test_a_ray_job_cancelled_and_resumed_writes_what_the_local_engine_writes(
    batch_home: BatchHome, ray_head: tuple[str, dict[str, str]]
) -> None:
    address, env = ray_head
    inputs = batch_home.files / "ray-in"
    inputs.mkdir()
    x = np.random.default_rng(11).standard_normal((100_000, N_FEATURES)).astype(np.float32)
    write_parquet(inputs / "a.parquet", x, names(), ids=range(100_000), row_group_size=5000)
    rows = csv_rows(batch_home.tabular.x[:200], range(100_000, 100_200))
    rows[7][3] = "not a number"  # a bad row: to the dead-letter file, on either engine
    write_csv(inputs / "b.csv", rows, ["id", *(f"f{j}" for j in range(N_FEATURES))])
    common = (
        "tabular", "--input", str(inputs), "--id-column", "id", "--partition-rows", "5000",
        "--batch-size", "1",  # one row per model call: slow enough to be cancelled halfway
    )  # fmt: skip
    local_out, ray_out = batch_home.files / "ray-local-out", batch_home.files / "ray-out"
    local = _run(batch_home, env, *common, "--output", str(local_out), "--workers", "2")
    assert local.returncode == 0, local.stderr

    with job_store(batch_home.home) as store:
        before = len(store.recent(1000))
        on_ray = subprocess.Popen(
            [sys.executable, "-m", "servion.cli.main", "--home", str(batch_home.home),
             "batch", "run", *common, "--output", str(ray_out), "--engine", "ray",
             "--ray-address", address, "--workers", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL, env={**os.environ, **env},
        )  # fmt: skip
        wait_until(lambda: len(store.recent(1000)) > before, 60, "the job to be created")
        job_id = store.recent(1)[0].id
        wait_until(lambda: _begun(store, job_id), 120, "a partition to begin")
    cancelled = cli(batch_home.home, "batch", "cancel", job_id, env=env)
    _, stderr = on_ray.communicate(timeout=60)

    assert cancelled.returncode == 0 and f"cancelled {job_id}" in cancelled.stdout
    assert on_ray.returncode == 1 and "was cancelled" in stderr, stderr
    stored, partitions = job(batch_home.home, job_id)
    assert stored.state == "cancelled" and "pending" in {p.state for p in partitions}
    assert {p.state for p in partitions} <= {"succeeded", "pending"}
    assert not [p for p in ray_out.iterdir() if p.name.startswith(".part-")]  # no half files

    resumed = _run(batch_home, env, "--resume", job_id, "--workers", "3")
    assert resumed.returncode == 0, resumed.stderr
    # Three workers asked, two CPUs in the cluster: two actors, and it says so.
    assert f"the Ray cluster at {address}: 2 actors (of 3 asked" in resumed.stderr
    summary = summary_of(resumed)
    assert (summary["rows_in"], summary["rows_out"], summary["failed_rows"]) == (
        100_200, 100_199, 1,
    )  # fmt: skip
    assert (summary["partitions_total"], summary["runs"], summary["engine"]) == (21, 2, "ray")
    written = _same_files(local_out, ray_out)
    assert "dead-letter/part-00020.jsonl" in written and len(written) == 21 + 2
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (local_out, ray_out)]
    assert manifests[0]["partitions"] == manifests[1]["partitions"]
    stored, partitions = job(batch_home.home, job_id)
    assert (stored.options.engine, stored.options.ray_address) == ("ray", address)
    assert all(p.state == "succeeded" and p.attempts <= 2 for p in partitions)
    assert len({p.worker_pid for p in partitions}) >= 2  # actors of each run


def _begun(store: JobStore, job_id: str) -> bool:
    return any(p.attempts for p in store.partitions(job_id))


def test_a_job_moves_between_engines_and_ray_retries_a_failing_partition(
    batch_home: BatchHome, ray_head: tuple[str, dict[str, str]]
) -> None:
    address, env = ray_head
    inputs = batch_home.files / "ray-moves"
    inputs.mkdir()
    for k, name in enumerate(("a", "b", "c")):  # a partition each: none reads another file
        x = batch_home.tabular.x[100 * k : 100 * (k + 1)].astype(object)
        if name == "a":
            x[3, 0] = None  # with no budget, the job fails after partition 0
        table = pa.table({c: pa.array(x[:, j], pa.float32()) for j, c in enumerate(names())})
        pq.write_table(table, inputs / f"{name}.parquet", row_group_size=50, compression="none")
    out = batch_home.files / "ray-moves-out"
    first = _run(
        batch_home, env, "tabular", "--input", str(inputs), "--output", str(out),
        "--workers", "1", "--max-failed-rows", "0",
    )  # fmt: skip
    job_id = summary_of(first)["job"]
    assert first.returncode == 1 and "part-00000.parquet: 1 (no value" in first.stderr

    # b.parquet's second row group damaged behind the job's back (its size and time kept):
    # on Ray, its partition fails, is retried in a second round, and fails the job by name.
    source = inputs / "b.parquet"
    whole, stat = source.read_bytes(), source.stat()
    group = pq.ParquetFile(source).metadata.row_group(1)
    start = group.column(0).data_page_offset
    end = group.column(N_FEATURES - 1).data_page_offset
    end += group.column(N_FEATURES - 1).total_compressed_size
    source.write_bytes(whole[:start] + b"\xff" * (end - start) + whole[end:])
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    on_ray = _run(
        batch_home, env, "--resume", job_id, "--engine", "ray", "--ray-address", address,
        "--max-failed-rows", "5", "--retries", "1",
    )  # fmt: skip

    assert on_ray.returncode == 1, on_ray.stderr
    assert f"error: {job_id} failed: part-00001.parquet failed after 2 attempts:" in (on_ray.stderr)
    stored, partitions = job(batch_home.home, job_id)
    assert (stored.options.engine, stored.options.ray_address) == ("ray", address)
    assert [p.state for p in partitions] == ["succeeded", "failed", "succeeded"]
    assert "deserialize" in (partitions[1].error or "")
    ray_attempts = partitions[1].attempts

    # Whole again, the job is finished by worker processes here, and its output is what
    # one uninterrupted local run writes.
    source.write_bytes(whole)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    resumed = _run(batch_home, env, "--resume", job_id, "--engine", "local")
    assert resumed.returncode == 0, resumed.stderr
    stored, partitions = job(batch_home.home, job_id)
    assert (stored.options.engine, stored.options.ray_address) == ("local", None)
    assert (stored.runs, partitions[1].attempts) == (3, ray_attempts + 1)
    assert partitions[0].attempts == partitions[2].attempts == 1
    clean = batch_home.files / "ray-moves-clean"
    again = _run(
        batch_home, env, "tabular", "--input", str(inputs), "--output", str(clean),
        "--max-failed-rows", "5",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    written = _same_files(out, clean)
    assert "dead-letter/part-00000.jsonl" in written
    labels = pq.read_table(out / "part-00001.parquet").column("label").to_numpy()
    assert len(labels) == 100 and np.isin(labels, [0, 1]).all()


def test_addresses_that_cannot_work_are_refused_before_any_job(batch_home: BatchHome) -> None:
    source = write_parquet(
        batch_home.files / "ray-refused.parquet", batch_home.tabular.x[:10], names()
    )
    out = batch_home.files / "ray-refused-out"
    before = len(jobs(batch_home.home))
    nobody = f"127.0.0.1:{free_port()}"
    cases = {
        f"no Ray cluster answers at '{nobody}'": ("--engine", "ray", "--ray-address", nobody),
        "--ray-address needs --engine ray": ("--ray-address", nobody),
        "give host:port, ray://host:port or auto": ("--engine", "ray", "--ray-address", "ray"),
        "Invalid value for '--engine'": ("--engine", "spark"),
    }
    for message, args in cases.items():
        done = cli(
            batch_home.home, "batch", "run", "tabular", "--input", str(source),
            "--output", str(out), *args,
        )  # fmt: skip
        assert done.returncode == 2, (message, done.stdout, done.stderr)
        assert message in done.stderr, (message, done.stderr)
        assert not out.exists(), message
    assert len(jobs(batch_home.home)) == before
