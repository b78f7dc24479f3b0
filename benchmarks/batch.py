"""Batch prediction against raw onnxruntime over the same file.

Writes a Parquet file of 5 million rows of the tests' tabular features (32 float32
columns from scikit-learn's make_classification; uncompressed row groups of 1 Mi rows, no
dictionaries), registers the tabular model (a StandardScaler + LogisticRegression pipeline
converted to ONNX, as the tests' ``tabular`` fixture makes it), and measures:

- the job: ``servion batch run`` with its defaults (a worker per core, partitions of
  100,000 rows, batches of 4,096, Parquet output). Its rows/s is the summary's: rows over
  the job's time from the moment it runs (worker processes started, the model loaded in
  each, every row read, predicted and written, checksums and the manifest). The command's
  wall time, interpreter start and planning included, is printed beside it;
- raw: as many processes as the job has workers, each already started with the model
  loaded, reading its share of the row groups with pyarrow (batches of 4,096) and running
  the same onnxruntime session options (one intra-op thread, as servion's workers) on
  every batch; nothing written. Its rows/s is rows over the time from all processes ready
  to the last one done.

The bar: job rows/s at least 0.8 x raw. Each round also times one raw in-process loop (one
process, onnxruntime's default threads), what a script over the file would do alone.

With ``--ray``, each round also runs the same job with ``--engine ray`` on a Ray head
this script starts on loopback (``ray start --head``, as many CPUs as cores), so that
the cluster's own start-up is not the job's; the job's actors start, load the model and
run within the job's time. Its bar: Ray job rows/s at least 0.6 x the local job's.

    PYTHONPATH=src python benchmarks/batch.py [--rows 5000000] [--ray] [--keep DIR]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

BAR = 0.8
RAY_BAR = 0.6
BATCH = 4096
GROUP = 1 << 20
N_FEATURES = 32


def make_model(folder: Path) -> Path:
    from skl2onnx import to_onnx
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = make_classification(n_samples=600, n_features=N_FEATURES, random_state=0)
    x = x.astype(np.float32)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(x, y)
    onx = to_onnx(pipe, x[:1], options={"zipmap": False}, target_opset=17)
    path = folder / "model.onnx"
    path.write_bytes(onx.SerializeToString())
    return path


def make_data(path: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import make_classification

    names = [f"X[{j}]" for j in range(N_FEATURES)]
    schema = pa.schema([(n, pa.float32()) for n in names])
    with pq.ParquetWriter(path, schema, compression="none", use_dictionary=False) as out:
        for seed, start in enumerate(range(0, rows, GROUP)):
            n = min(GROUP, rows - start)
            x, _ = make_classification(n_samples=n, n_features=N_FEATURES, random_state=seed)
            x = x.astype(np.float32)
            out.write_table(pa.table({c: x[:, j] for j, c in enumerate(names)}))


def _servion(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "servion.cli.main", "--home", str(home), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def run_job(home: Path, data: Path, out: Path, *extra: str) -> dict[str, Any]:
    """One ``servion batch run`` with its defaults; its summary, the command's wall time,
    and from the stored partitions: the start-up (job running to the first partition
    handed out), the partitions' own span, and the end (last partition to job finished)."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    done = _servion(
        home, "batch", "run", "tabular", "--input", str(data), "--output", str(out), "--json",
        *extra,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"servion batch run failed ({done.returncode}): {done.stderr}")
    summary: dict[str, Any] = json.loads(done.stdout)
    status = json.loads(_servion(home, "batch", "status", summary["job"], "--json").stdout)
    parts = status["partitions"]
    began = min(_seconds(p["started_at"]) for p in parts)
    ended = max(_seconds(p["finished_at"]) for p in parts)
    summary["wall_s"] = wall
    summary["startup_s"] = began - _seconds(status["job"]["started_at"])
    summary["partitions_s"] = ended - began
    summary["end_s"] = _seconds(status["job"]["finished_at"]) - ended
    summary["steady_rows_per_s"] = summary["rows_in"] / (ended - began)
    summary["worker_busy_s"] = sum(p["seconds"] for p in parts)
    return summary


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _raw_worker(
    model: str, data: str, groups: list[int], ready: Any, go: Any, out: Any, threads: int
) -> None:
    import onnxruntime as ort
    import pyarrow.parquet as pq

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    file = pq.ParquetFile(data, buffer_size=64 << 10, pre_buffer=False)
    session.run(None, {"X": np.zeros((1, N_FEATURES), np.float32)})
    ready.release()
    go.wait()
    rows = 0
    for batch in file.iter_batches(batch_size=BATCH, row_groups=groups, use_threads=False):
        session.run(None, {"X": np.asarray(batch.to_tensor())})
        rows += batch.num_rows
    out.put(rows)


def run_raw(model: Path, data: Path, processes: int, threads: int = 1) -> dict[str, Any]:
    """``processes`` raw processes, each with ``threads`` onnxruntime threads (0: its
    default, one per core)."""
    import pyarrow.parquet as pq

    groups = list(range(pq.ParquetFile(data).metadata.num_row_groups))
    shares = [groups[i::processes] for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    ready, go, out = context.Semaphore(0), context.Event(), context.Queue()
    workers = [
        context.Process(
            target=_raw_worker, args=(str(model), str(data), s, ready, go, out, threads)
        )
        for s in shares
    ]
    for w in workers:
        w.start()
    for _ in workers:
        ready.acquire()
    started = time.perf_counter()
    go.set()
    rows = sum(out.get() for _ in workers)
    seconds = time.perf_counter() - started
    for w in workers:
        w.join()
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "processes": processes}


@contextlib.contextmanager
def ray_head(root: Path) -> Iterator[str]:
    """A Ray head on 127.0.0.1 for the run (its token in this process's environment)."""
    import secrets

    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
         f"--port={port}", "--node-ip-address=127.0.0.1", f"--num-cpus={os.cpu_count()}",
         "--include-dashboard=false", f"--temp-dir={temp}"],
        stdout=(root / "ray-head.log").open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the Ray head did not start: see ray-head.log") from None
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait(30)
        shutil.rmtree(temp, ignore_errors=True)


def _report(result: dict[str, Any]) -> None:
    print(f"rows {result['rows']:,} ({result['file_bytes'] / 1e6:.0f} MB), {result['cores']} cores")
    print(
        f"load average before {result['load_before'][0]:.2f}, after {result['load_after'][0]:.2f}"
    )
    for n, (job, raw) in enumerate(zip(result["jobs"], result["raws"], strict=True), 1):
        print(
            f"run {n}: job {job['rows_per_s']:,.0f} rows/s in {job['duration_s']:.2f} s"
            f" (start-up {job['startup_s']:.2f} s, partitions {job['partitions_s']:.2f} s at"
            f" {job['steady_rows_per_s']:,.0f} rows/s, end {job['end_s']:.2f} s; command"
            f" {job['wall_s']:.2f} s); raw {raw['rows_per_s']:,.0f} rows/s"
            f" in {raw['seconds']:.2f} s"
        )
    for n, job in enumerate(result["ray_jobs"], 1):
        print(
            f"run {n}: ray job {job['rows_per_s']:,.0f} rows/s in {job['duration_s']:.2f} s"
            f" (start-up {job['startup_s']:.2f} s, partitions {job['partitions_s']:.2f} s at"
            f" {job['steady_rows_per_s']:,.0f} rows/s; command {job['wall_s']:.2f} s)"
        )
    if result["ray_jobs"]:
        verdict = "meets" if result["ray_ratio"] >= RAY_BAR else "misses"
        print(
            f"median ray job / local job = {result['ray_ratio']:.2f}: {verdict} the {RAY_BAR}x bar"
        )
    verdict = "meets" if result["ratio"] >= BAR else "misses"
    print(f"median job / raw = {result['ratio']:.2f}: {verdict} the {BAR}x bar")
    print(f"median partitions span / raw = {result['ratio_steady']:.2f}")
    rates = ", ".join(f"{r['rows_per_s']:,.0f}" for r in result["singles"])
    print(f"one raw in-process loop (onnxruntime's default threads): {rates} rows/s;")
    print(f"  median job / that = {result['ratio_single']:.2f}")
    print(f"median command wall / raw = {result['ratio_wall']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="Job and raw, alternately.")
    parser.add_argument("--keep", type=Path, default=None, help="Work here and keep it.")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--ray", action="store_true", help="Also the job on Ray.")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="servion-batch-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        home, data = root / "home", root / "features.parquet"
        model = make_model(root)
        if not data.exists():
            make_data(data, args.rows)
        if not (home / "registry.db").exists():
            done = _servion(home, "register", "tabular", str(model), "--version", "v1.0.0")
            if done.returncode != 0:
                raise SystemExit(done.stderr)
        with contextlib.ExitStack() as stack:
            address = stack.enter_context(ray_head(root)) if args.ray else None
            load = os.getloadavg()
            jobs, raws, ray_jobs, singles = [], [], [], []
            for _ in range(args.repeat):
                jobs.append(run_job(home, data, root / "out"))
                raws.append(run_raw(model, data, jobs[-1]["workers"]))
                singles.append(run_raw(model, data, 1, 0))
                if address is not None:
                    ray = ("--engine", "ray", "--ray-address", address)
                    ray_jobs.append(run_job(home, data, root / "out", *ray))
        raw_rate = statistics.median(r["rows_per_s"] for r in raws)
        local_rate = statistics.median(j["rows_per_s"] for j in jobs)
        result = {
            "rows": args.rows,
            "file_bytes": data.stat().st_size,
            "cores": os.cpu_count(),
            "load_before": load,
            "load_after": os.getloadavg(),
            "jobs": jobs,
            "raws": raws,
            "singles": singles,
            "ratio_single": local_rate / statistics.median(r["rows_per_s"] for r in singles),
            "ratio": local_rate / raw_rate,
            "ray_jobs": ray_jobs,
            "ray_ratio": (
                statistics.median(j["rows_per_s"] for j in ray_jobs) / local_rate
                if ray_jobs
                else None
            ),
            "ratio_steady": statistics.median(j["steady_rows_per_s"] for j in jobs) / raw_rate,
            "ratio_wall": statistics.median(args.rows / j["wall_s"] for j in jobs) / raw_rate,
        }
        _report(result)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
