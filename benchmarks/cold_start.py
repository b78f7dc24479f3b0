"""Cold start of a model scaled to zero, and what scale to zero costs a loaded one.

Registers ``--models`` copies of a small ONNX model (a StandardScaler + LogisticRegression
pipeline over 32 float32 features, as the tests' tabular model) and starts two servers of
one worker each on loopback: one with ``--scale-to-zero-after 1``, one without. Then, in
``--rounds`` rounds:

- cold: every model is left to sleep (the repository index says so), then each gets one
  request; its latency (the client's, keep-alive connection) is a cold start: the request
  arrives, the model is not loaded, it is loaded, warmed up and answers;
- hits: ``--hits`` requests to a model just woken, and as many to the same model on the
  server without scale to zero, alternating, one at a time.

    PYTHONPATH=src python benchmarks/cold_start.py [--models 20] [--rounds 3] [--json out.json]

With ``--density N``, instead: N copies registered, one server of one worker with
``--model-memory`` (default 16MiB), and ``--requests`` requests one at a time, each to a
model of a working set of ``--working-set`` (default 20) chosen at random, or, for a
``--miss-share`` of them (default 0.02), to one of the others: hits and misses are timed
apart, and the loads' own times read from the server's log. The bar: hits under 100 ms at
p99 with the working set held in the budget.

    PYTHONPATH=src python benchmarks/cold_start.py --density 200 [--requests 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

N_FEATURES = 32
BAR_MS = 200.0
HIT_BAR_MS = 100.0


def make_model(folder: Path) -> Path:
    from skl2onnx import to_onnx
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = make_classification(n_samples=600, n_features=N_FEATURES, random_state=0)
    x = x.astype(np.float32)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(x, y)
    path = folder / "model.onnx"
    path.write_bytes(to_onnx(pipe, x[:1], options={"zipmap": False}).SerializeToString())
    return path


def serve(home: Path, folder: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port_file = folder / f"port-{time.monotonic_ns()}"
    log = (folder / f"server-{time.monotonic_ns()}.log").open("wb")
    command = [
        sys.executable, "-m", "servion.cli.main", "--home", str(home), "serve", "--port", "0",
        "--port-file", str(port_file), "--no-grpc", "--workers", "1", "--drain-delay", "0",
        *args,
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server did not start: see {log.name}")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port_file.read_text().strip()}"
    while not _ready(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server did not become ready: see {log.name}")
        time.sleep(0.05)
    return proc, url


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready").status_code == 200
    except httpx.TransportError:
        return False


def body() -> dict[str, Any]:
    row = [0.25] * N_FEATURES
    return {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, N_FEATURES], "data": row}]}


def timed(client: httpx.Client, url: str, name: str) -> float:
    started = time.perf_counter()
    reply = client.post(f"{url}/v2/models/{name}/infer", json=body())
    took = (time.perf_counter() - started) * 1000
    if reply.status_code != 200:
        raise SystemExit(f"{name}: {reply.status_code} {reply.text}")
    return took


def asleep(client: httpx.Client, url: str) -> bool:
    index = client.post(f"{url}/v2/repository/index", json={}).json()
    return all(entry["reason"].startswith("scaled to zero") for entry in index)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def density(args: argparse.Namespace) -> dict[str, Any]:
    """Many models in a memory budget: a working set served from it, the rest loaded on
    demand."""
    import random

    from servion.config import Settings
    from servion.registry import ModelRegistry, RegisterRequest

    folder = Path(tempfile.mkdtemp(prefix="servion-density-"))
    home = folder / "home"
    model = make_model(folder)
    names = [f"dense-{i:03d}" for i in range(args.density)]
    registry = ModelRegistry(Settings.load(home=home))
    for name in names:
        registry.register(RegisterRequest(name, model, "v1.0.0"))
    registry.close()
    proc, url = serve(home, folder, "--model-memory", args.model_memory)
    chooser = random.Random(0)
    working, others = names[: args.working_set], names[args.working_set :]
    hits: list[float] = []
    misses: list[float] = []
    try:
        with httpx.Client() as client:
            for name in working:  # the working set loaded once
                timed(client, url, name)
            for _ in range(args.requests):
                if others and chooser.random() < args.miss_share:
                    misses.append(timed(client, url, chooser.choice(others)))
                else:
                    hits.append(timed(client, url, chooser.choice(working)))
            index = client.post(f"{url}/v2/repository/index", json={}).json()
    finally:
        proc.terminate()
        proc.wait(30)
    log = "".join(p.read_text() for p in folder.glob("server-*.log"))
    loads = [float(m) for m in re.findall(r'"model_woken".*?"load_s":([0-9.]+)', log)]
    footprints = [int(m) for m in re.findall(r'"model_evicted".*?"memory_bytes":([0-9]+)', log)]
    return {
        "models": args.density,
        "working_set": args.working_set,
        "model_memory": args.model_memory,
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "loaded_at_end": sum(1 for e in index if e["reason"] == ""),
        "evictions": len(footprints),
        "evicted_footprint_bytes_p50": statistics.median(footprints) if footprints else None,
        "hit_ms": {"n": len(hits), "p50": pct(hits, 0.5), "p99": pct(hits, 0.99)},
        "miss_ms": {"n": len(misses), "p50": pct(misses, 0.5), "p99": pct(misses, 0.99)}
        if misses
        else None,
        "load_ms_p50": 1000 * statistics.median(loads) if loads else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hits", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--density", type=int, default=None, help="Many models, a budget.")
    parser.add_argument("--working-set", type=int, default=20)
    parser.add_argument("--model-memory", default="16MiB")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--miss-share", type=float, default=0.02)
    args = parser.parse_args()
    if args.density is not None:
        found = density(args)
        print(json.dumps(found, indent=2))
        verdict = "meets" if found["hit_ms"]["p99"] < HIT_BAR_MS else "misses"
        print(f"hits p99 {found['hit_ms']['p99']:.1f} ms: {verdict} the {HIT_BAR_MS:.0f} ms bar")
        if args.json:
            args.json.write_text(json.dumps(found, indent=2))
        return
    folder = Path(tempfile.mkdtemp(prefix="servion-cold-"))
    home = folder / "home"
    model = make_model(folder)
    names = [f"cold-{i:03d}" for i in range(args.models)]
    for name in names:
        done = subprocess.run(
            [sys.executable, "-m", "servion.cli.main", "--home", str(home), "register", name,
             str(model), "--version", "v1.0.0"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(done.stderr)
    sleepy, sleepy_url = serve(home, folder, "--scale-to-zero-after", "1")
    plain, plain_url = serve(home, folder)
    cold: list[float] = []
    hits: list[float] = []
    pinned: list[float] = []
    try:
        with httpx.Client() as client:
            for _ in range(args.rounds):
                deadline = time.monotonic() + 120
                while not asleep(client, sleepy_url):
                    if time.monotonic() > deadline:
                        raise SystemExit("the models did not scale to zero")
                    time.sleep(0.2)
                cold += [timed(client, sleepy_url, name) for name in names]
                for _ in range(args.hits):
                    hits.append(timed(client, sleepy_url, names[0]))
                    pinned.append(timed(client, plain_url, names[0]))
    finally:
        for proc in (sleepy, plain):
            proc.terminate()
            proc.wait(30)
    loads = [
        float(m)
        for path in folder.glob("server-*.log")
        for m in re.findall(r'"model_woken".*?"load_s":([0-9.]+)', path.read_text())
    ]
    result = {
        "models": args.models,
        "rounds": args.rounds,
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "cold_ms": {"p50": pct(cold, 0.5), "p99": pct(cold, 0.99), "max": max(cold)},
        "woken_load_ms": {"p50": 1000 * statistics.median(loads), "max": 1000 * max(loads)},
        "hit_ms": {"p50": pct(hits, 0.5), "p99": pct(hits, 0.99)},
        "pinned_hit_ms": {"p50": pct(pinned, 0.5), "p99": pct(pinned, 0.99)},
    }
    print(json.dumps(result, indent=2))
    verdict = "meets" if result["cold_ms"]["p99"] < BAR_MS else "misses"
    print(f"cold start p99 {result['cold_ms']['p99']:.1f} ms: {verdict} the {BAR_MS:.0f} ms bar")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
