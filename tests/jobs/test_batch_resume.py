"""Stopping a job and finishing it: ``batch cancel`` stops a running job within a second or
so, leaving it resumable; a job whose whole process group is killed with SIGKILL is
resumed, redoes only its unfinished partitions, and ends byte for byte as an
uninterrupted run of the same job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from batch_files import job, job_store, names, run, summary_of, write_parquet

from conftest import BatchHome, cli, wait_until
from servion.jobs import JobStore
from servion.jobs.pool import DEPTH

SLOW = ("--batch-size", "1")
"""One row per model call: runs slow enough to be caught halfway."""


def _source(where: BatchHome, name: str, rows: int) -> Path:
    x = np.random.default_rng(7).standard_normal((rows, 32)).astype(np.float32)
    return write_parquet(where.files / name, x, names(), row_group_size=4000)


def _start(where: BatchHome, *args: str) -> subprocess.Popen[str]:
    """``servion batch run`` in a process group of its own (its workers join it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "servion.cli.main", "--home", str(where.home), "batch", "run",
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def _running_job(store: JobStore, before: int) -> str:
    wait_until(lambda: len(store.recent(1000)) > before, 60, "the job to be created")
    return store.recent(1)[0].id


def _succeeded(store: JobStore, job_id: str) -> int:
    return sum(p.state == "succeeded" for p in store.partitions(job_id))


def test_cancel_stops_a_running_job_within_a_second_or_so(batch_home: BatchHome) -> None:
    source = _source(batch_home, "cancel.parquet", 240_000)
    out = batch_home.files / "cancel-out"
    with job_store(batch_home.home) as store:
        before = len(store.recent(1000))
        proc = _start(batch_home, "tabular", "--input", str(source), "--output", str(out),
                      "--workers", "1", "--partition-rows", "10000", *SLOW)  # fmt: skip
        job_id = _running_job(store, before)
        wait_until(lambda: _succeeded(store, job_id) >= 1, 60, "a partition to finish")

    asked = time.monotonic()
    cancelled = cli(batch_home.home, "batch", "cancel", job_id)
    _, stderr = proc.communicate(timeout=30)
    took = time.monotonic() - asked

    assert cancelled.returncode == 0 and f"cancelled {job_id}" in cancelled.stdout
    assert proc.returncode == 1 and "was cancelled" in stderr, stderr
    assert took < 6, took  # the cancel command's own start-up included
    stored, partitions = job(batch_home.home, job_id)
    assert stored.state == "cancelled"
    assert {p.state for p in partitions} == {"succeeded", "pending"}
    assert not [p for p in out.iterdir() if p.name.startswith(".part-")]  # no half files
    assert cli(batch_home.home, "batch", "cancel", job_id).returncode == 2


def test_a_killed_job_resumes_to_the_same_bytes(batch_home: BatchHome) -> None:
    source = _source(batch_home, "resume.parquet", 64_000)
    whole, resumed = batch_home.files / "whole", batch_home.files / "resumed"
    common = (
        "tabular",
        "--input",
        str(source),
        "--workers",
        "2",
        "--partition-rows",
        "2000",
        *SLOW,
    )
    done = run(batch_home, *common, "--output", str(whole))
    assert done.returncode == 0, done.stderr

    with job_store(batch_home.home) as store:
        before = len(store.recent(1000))
        proc = _start(batch_home, *common, "--output", str(resumed))
        job_id = _running_job(store, before)
        wait_until(lambda: _succeeded(store, job_id) >= 2, 60, "two partitions to finish")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        killed = store.partitions(job_id)
        assert store.get(job_id).shown_state == "interrupted"
    finished_before = {p.index: p.finished_at for p in killed if p.state == "succeeded"}
    assert len(finished_before) < 32, "the job finished before it could be killed"

    changed = run(batch_home, "--resume", job_id, "--partition-rows", "99")
    assert changed.returncode == 2 and "--partition-rows" in changed.stderr
    finished = run(batch_home, "--resume", job_id, "--json")
    summary = summary_of(finished)
    assert finished.returncode == 0, finished.stderr
    assert (summary["state"], summary["runs"], summary["rows_out"]) == ("succeeded", 2, 64_000)
    _, partitions = job(batch_home.home, job_id)
    # Only the partitions left unfinished ran again; those handed to a worker when it was
    # killed (the one it ran and the one queued next) count a second attempt.
    assert {p.index: p.finished_at for p in partitions if p.index in finished_before} == (
        finished_before
    )
    assert sum(p.attempts > 1 for p in partitions) <= 2 * DEPTH

    files = sorted(p.name for p in whole.glob("part-*.parquet"))
    assert files == sorted(p.name for p in resumed.glob("part-*.parquet")) and len(files) == 32
    for name in files:
        assert (whole / name).read_bytes() == (resumed / name).read_bytes(), name
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (whole, resumed)]
    assert manifests[0]["partitions"] == manifests[1]["partitions"]
    assert manifests[0]["job"] != manifests[1]["job"] == job_id
