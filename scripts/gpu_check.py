"""Serve ResNet-50 and a MiniLM-L6-sized encoder through servion on a GPU and compare with the
raw model in the same run: served/raw throughput, GPU utilisation (NVML) and p99.

For a machine with a GPU, never CI. Both models have random weights (the speed does not
depend on them); they are exported with torch.export, registered with ``device`` and
``precision`` options, served by ``servion serve`` and loaded by ``servion bench`` with binary
tensors. The raw figure is the same program, in this process, on the same device and
precision, with its inputs already on the device: the ceiling servion's overhead is
measured against.

    scripts/gpu_check.sh                      # cuda:0, fp16, the full sizes
    python scripts/gpu_check.py --tiny --device cpu --precision fp32   # a CPU smoke run

Bars (the issue's): served >= 80 % of raw at the batch size the batcher reaches, GPU
utilisation above 80 % under load, p99 under 100 ms. The exit code is 1 when one is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import torch
from torch import nn

HERE = Path(__file__).resolve().parent.parent


class Bottleneck(nn.Module):
    def __init__(self, inputs: int, width: int, stride: int) -> None:
        super().__init__()
        out = width * 4
        self.body = nn.Sequential(
            nn.Conv2d(inputs, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out),
        )  # fmt: skip
        self.skip = (
            nn.Sequential(nn.Conv2d(inputs, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            if stride != 1 or inputs != out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def resnet(depths: tuple[int, ...] = (3, 4, 6, 3)) -> nn.Module:
    """ResNet-50's layout (torchvision's, v1.5: stride on the 3x3), 1000 classes."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
    ]  # fmt: skip
    inputs = 64
    for stage, depth in enumerate(depths):
        width = 64 * 2**stage
        for block in range(depth):
            layers.append(Bottleneck(inputs, width, 2 if block == 0 and stage > 0 else 1))
            inputs = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inputs, 1000)]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """MiniLM-L6's sizes: 6 layers, hidden 384, 12 heads, FFN 1536, BERT's vocabulary."""

    def __init__(self, layers: int = 6, hidden: int = 384, vocab: int = 30522) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, hidden)
        self.positions = nn.Embedding(512, hidden)
        layer = nn.TransformerEncoderLayer(hidden, 12, hidden * 4, activation="gelu",
                                           batch_first=True)  # fmt: skip
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        hidden = self.layers(self.tokens(input_ids) + self.positions(positions))
        pooled: torch.Tensor = hidden.mean(dim=1)
        return pooled


def build(args: argparse.Namespace, folder: Path) -> dict[str, dict[str, Any]]:
    """Export both models; give each one's example input, batch sizes and request rows."""
    side, seq = (64, 16) if args.tiny else (224, args.seq)
    models: dict[str, dict[str, Any]] = {
        "resnet50": {
            "net": resnet((1, 1, 1, 1) if args.tiny else (3, 4, 6, 3)),
            "example": torch.randn(2, 3, side, side),
            "batches": (8, 16) if args.tiny else (64, 128, 256),
        },
        "minilm": {
            "net": Encoder(layers=1 if args.tiny else 6),
            "example": torch.randint(0, 30522, (2, seq)),
            "batches": (8, 16) if args.tiny else (128, 256, 512),
        },
    }
    for name, model in models.items():
        net = model["net"].eval()
        dims = ({0: torch.export.Dim("batch", max=4096)},)
        program = torch.export.export(net, (model["example"],), dynamic_shapes=dims)
        model["path"] = folder / f"{name}.pt2"
        torch.export.save(program, model["path"])
    return models


def raw_rows_per_s(model: dict[str, Any], args: argparse.Namespace, batch: int) -> float:
    """The program alone: inputs on the device, no copies, no server."""
    device = torch.device(args.device)
    net = torch.export.load(str(model["path"])).module().to(device)
    example = model["example"]
    x = example[:1].repeat(batch, *([1] * (example.dim() - 1))).to(device)
    if args.precision != "fp32":
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
        net = net.to(dtype)
        x = x.to(dtype) if x.is_floating_point() else x
    with torch.inference_mode():
        for _ in range(3):
            net(x)
        _sync(device)
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < args.raw_seconds:
            net(x)
            calls += 1
        _sync(device)
    return batch * calls / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def servion(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "servion.cli.main", "--home", str(home), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise SystemExit(f"servion {' '.join(args)} failed:\n{done.stderr}")
    return done


class Utilisation:
    """GPU utilisation sampled by NVML every 100 ms while the load runs."""

    def __init__(self, device: str) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._handle: Any = None
        if device.startswith("cuda"):
            import pynvml

            pynvml.nvmlInit()
            index = int(device.split(":")[1]) if ":" in device else 0
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import pynvml

        while not self._stop.wait(0.1):
            self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def __enter__(self) -> Utilisation:
        if self._handle is not None:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()

    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def batch_sizes(url: str, name: str) -> tuple[float, float]:
    """servion_model_batch_size's sum and count for ``name``, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    total = count = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.labels.get("model") != name:
                continue
            if sample.name == "servion_model_batch_size_sum":
                total += sample.value
            elif sample.name == "servion_model_batch_size_count":
                count += sample.value
    return total, count


def register(home: Path, models: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    for name, model in models.items():
        warmup = ",".join(str(b) for b in model["batches"])
        options = [f"device={args.device}", f"precision={args.precision}", f"warmup={warmup}"]
        flags = [part for option in options for part in ("--option", option)]
        servion(home, "register", name, str(model["path"]), "--version", "v1.0.0", *flags)
        largest = str(max(model["batches"]))
        servion(home, "models", "batching", name, "--max-batch-size", largest,
                "--max-queue-delay-us", "2000")  # fmt: skip


@contextlib.contextmanager
def serving(home: Path, folder: Path, workers: int) -> Iterator[str]:
    port, log = 18080, folder / "server.log"
    command = [sys.executable, "-m", "servion.cli.main", "--home", str(home), "serve",
               "--port", str(port), "--workers", str(workers), "--no-grpc"]  # fmt: skip
    env = {**os.environ, "SERVION_BATCHING_MAX_BATCH_SIZE": "4096"}
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while not _ready(url):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"the server did not become ready:\n{log.read_text()}")
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        server.wait(60)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready").status_code == 200
    except httpx.HTTPError:
        return False


def measure(url: str, home: Path, name: str, model: dict[str, Any], args: argparse.Namespace
            ) -> dict[str, Any]:  # fmt: skip
    before = batch_sizes(url, name)
    flags = ["--concurrency", str(args.concurrency), "--batch-size", str(args.request_rows),
             "--duration", str(args.duration)]  # fmt: skip
    flags += ["--slo-rps", "0.001", "--slo-p99-ms", "1e9"]  # judged here, not by bench
    with Utilisation(args.device) as util:
        done = servion(home, "bench", url, "--model", name, "--binary", "--json", *flags,
                       check=False)  # fmt: skip
    after = batch_sizes(url, name)
    load = json.loads(done.stdout)
    reached = (after[0] - before[0]) / max(after[1] - before[1], 1)
    served = load["rps"] * args.request_rows
    nearest = min(model["batches"], key=lambda b: abs(b - reached))
    raw = model["raw"][nearest]
    return {
        "model": name,
        "served_rows_per_s": served,
        "p99_ms": load["latency_ms"]["p99"],
        "errors": load["error_count"],
        "batch_reached": reached,
        "raw_batch": nearest,
        "raw_rows_per_s": raw,
        "served_over_raw": served / raw,
        "raw_by_batch": model["raw"],
        "gpu_utilisation": util.mean(),
    }


def missed(row: dict[str, Any]) -> bool:
    util = row["gpu_utilisation"]
    return row["served_over_raw"] < 0.8 or row["p99_ms"] >= 100 or (util is not None and util <= 80)


def report(results: list[dict[str, Any]]) -> str:
    head = f"{'model':<10} {'served/s':>10} {'raw/s':>10} {'ratio':>6} {'batch':>6}"
    lines = [f"{head} {'GPU %':>6} {'p99 ms':>7}  bars"]
    for r in results:
        util = "-" if r["gpu_utilisation"] is None else f"{r['gpu_utilisation']:.0f}"
        lines.append(
            f"{r['model']:<10} {r['served_rows_per_s']:>10,.0f} {r['raw_rows_per_s']:>10,.0f}"
            f" {r['served_over_raw']:>6.2f} {r['batch_reached']:>6.1f} {util:>6}"
            f" {r['p99_ms']:>7.1f}  {'missed' if missed(r) else 'met'}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--workers", type=int, default=4, help="HTTP worker processes")
    parser.add_argument("--concurrency", type=int, default=64, help="connections of the load")
    parser.add_argument("--request-rows", type=int, default=16, help="rows per request")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per model")
    parser.add_argument("--raw-seconds", type=float, default=5.0)
    parser.add_argument("--seq", type=int, default=128, help="the encoder's sequence length")
    parser.add_argument("--tiny", action="store_true", help="small models, for a CPU smoke run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home, folder = Path(tmp) / "home", Path(tmp)
        models = build(args, folder)
        for model in models.values():  # before the server holds the device
            model["raw"] = {b: raw_rows_per_s(model, args, b) for b in model["batches"]}
        register(home, models, args)
        with serving(home, folder, args.workers) as url:
            results = [measure(url, home, name, m, args) for name, m in models.items()]
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if any(missed(r) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
