"""What the ONNX optimization steps buy: file size, accuracy and latency, before and after.

Trains three small models on scikit-learn's handwritten digits (8x8, upsampled to
28x28): an MLP 784-512-256-10, a CNN (two 3x3 convolutions of 16 and 32 channels with
pooling, then 1568-128-10) and the same CNN twice as wide (32 and 64 channels). Exports
each with torch.onnx.export, runs every ONNX step of ``servion.optimize`` on it (structured
pruning at 50 % and 75 % of the hidden units, where the model has MLP layers), and measures
each variant the way a servion worker runs it: servion's ONNX runtime, one intra-op
thread, in-process. Latency is sampled in rounds that alternate the variants,
so a burst of load elsewhere on the machine falls on all of them alike.

Needs torch (a CPU build), scikit-learn and onnxconverter-common:

    PYTHONPATH=src python benchmarks/optimize.py [--rounds 5] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from servion.config import RuntimeSettings
from servion.optimize.onnx_steps import optimize_graph, to_fp16
from servion.optimize.prune import find_layers, prune_structured
from servion.optimize.quantize import quantize_dynamic_int8, quantize_static_int8
from servion.runtime import make_runtime

SEED = 0
BATCHES = (1, 32)
ACCURACY_BAR_PP = 1.0
SHRINK_BAR = 3.5
SPEEDUP_BAR = 1.5


@dataclass
class Variant:
    """One model file and what was measured on it."""

    model: str
    name: str
    path: Path
    bytes: int = 0
    accuracy: float = 0.0
    load_ms: float = 0.0
    samples_ms: dict[int, list[float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "variant": self.name, "bytes": self.bytes}
        out["accuracy"] = self.accuracy
        out["load_ms"] = self.load_ms
        for batch, samples in self.samples_ms.items():
            out[f"b{batch}_p50_ms"] = float(np.percentile(samples, 50))
            out[f"b{batch}_p99_ms"] = float(np.percentile(samples, 99))
            out[f"b{batch}_rows_per_s"] = batch * 1000.0 / float(np.mean(samples))
        return out


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test images (N, 1, 28, 28) in [0, 1], and their labels."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    small = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    images = F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False).numpy()
    x_train, x_test, y_train, y_test = train_test_split(
        images, data.target, test_size=0.33, random_state=SEED, stratify=data.target
    )
    return x_train, x_test, y_train, y_test


def networks() -> dict[str, Any]:
    import torch.nn as nn

    def cnn(width: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
        )  # fmt: skip

    mlp = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, 10),
    )  # fmt: skip
    return {"mlp": mlp, "cnn": cnn(16), "cnn-wide": cnn(32)}


def train(net: Any, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.tensor(x), torch.tensor(y)
    generator = torch.Generator().manual_seed(SEED)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(order), 64):
            rows = order[start : start + 64]
            opt.zero_grad()
            loss_fn(net(xt[rows]), yt[rows]).backward()
            opt.step()
    net.eval()


def export(net: Any, path: Path) -> None:
    import torch

    # The TorchScript exporter needs nothing beyond torch; the dynamo one needs onnxscript.
    torch.onnx.export(
        net, (torch.zeros(1, 1, 28, 28),), str(path), input_names=["image"],
        output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17, dynamo=False,
    )  # fmt: skip


def variants(model: str, fp32: Path, calibration: np.ndarray) -> list[Variant]:
    """Every step applied to ``fp32``, each written beside it."""
    steps: dict[str, Callable[[Path, Path], None]] = {
        "graph-optimized": optimize_graph,
        "dynamic int8": quantize_dynamic_int8,
        "static int8": lambda s, t: quantize_static_int8(s, t, {"image": calibration}),
        "static int8 per-tensor": lambda s, t: quantize_static_int8(
            s, t, {"image": calibration}, per_channel=False
        ),
        "fp16": to_fp16,
    }
    import onnx

    if find_layers(onnx.load(str(fp32)).graph):  # hidden layers that can lose units
        for share in (0.5, 0.75):
            steps[f"structured {share:.0%}"] = lambda s, t, share=share: prune_structured(
                s, t, share
            )
    found = [Variant(model, "fp32", fp32)]
    for name, step in steps.items():
        target = fp32.with_name(f"{model}-{name.replace(' ', '-')}.onnx")
        step(fp32, target)
        found.append(Variant(model, name, target))
    return found


def measure(found: list[Variant], x_test: np.ndarray, y_test: np.ndarray, rounds: int) -> None:
    settings = RuntimeSettings.model_construct()  # one intra-op thread, as a worker runs
    runtimes = {id(v): make_runtime("onnx", v.path, settings) for v in found}
    for variant in found:
        runtime = runtimes[id(variant)]
        loads = []
        for _ in range(5):  # the session build: what offline graph optimization saves
            start = time.perf_counter()
            runtime.load()
            loads.append((time.perf_counter() - start) * 1000.0)
        variant.load_ms = float(np.median(loads))
        variant.bytes = variant.path.stat().st_size
        logits = runtime.predict({"image": x_test})["logits"]
        variant.accuracy = float(np.mean(np.argmax(logits, axis=1) == y_test))
    calls = {1: 1000, 32: 200}
    for _ in range(rounds):
        for batch in BATCHES:
            rows = x_test[:batch]
            for variant in found:
                run = runtimes[id(variant)].predict
                for _ in range(20):  # warm caches after the other variants ran
                    run({"image": rows})
                samples = variant.samples_ms.setdefault(batch, [])
                for _ in range(calls[batch]):
                    start = time.perf_counter()
                    run({"image": rows})
                    samples.append((time.perf_counter() - start) * 1000.0)


def table(found: list[Variant]) -> str:
    head = (
        "| model | variant | size KB | x smaller | accuracy % | load ms | b1 p50 ms | b1 p99 ms "
        "| b32 p50 ms | b32 p99 ms | b32 rows/s | b32 speed-up |"
    )
    lines = [head, "|" + "---|" * 12]
    base = {v.model: v.summary() for v in found if v.name == "fp32"}
    for variant in found:
        s, b = variant.summary(), base[variant.model]
        lines.append(
            f"| {s['model']} | {s['variant']} | {s['bytes'] / 1024:,.0f} "
            f"| {b['bytes'] / s['bytes']:.2f} | {100 * s['accuracy']:.2f} | {s['load_ms']:.1f} "
            f"| {s['b1_p50_ms']:.3f} | {s['b1_p99_ms']:.3f} | {s['b32_p50_ms']:.3f} "
            f"| {s['b32_p99_ms']:.3f} | {s['b32_rows_per_s']:,.0f} "
            f"| {b['b32_p50_ms'] / s['b32_p50_ms']:.2f} |"
        )
    return "\n".join(lines)


def bars(found: list[Variant]) -> str:
    by = {(v.model, v.name): v.summary() for v in found}
    lines = ["| bar | model | measured | |", "|---|---|---|---|"]
    for model in dict.fromkeys(v.model for v in found):
        fp32, dyn, static = by[model, "fp32"], by[model, "dynamic int8"], by[model, "static int8"]
        shrink = fp32["bytes"] / dyn["bytes"]
        drop = 100 * (fp32["accuracy"] - dyn["accuracy"])
        speedup = fp32["b32_p50_ms"] / static["b32_p50_ms"]
        lines += [
            f"| dynamic int8 file ≥ {SHRINK_BAR}x smaller | {model} | {shrink:.3f}x "
            f"| {'met' if shrink >= SHRINK_BAR else 'missed'} |",
            f"| dynamic int8 accuracy drop < {ACCURACY_BAR_PP:g} pp | {model} | {drop:+.2f} pp "
            f"| {'met' if drop < ACCURACY_BAR_PP else 'missed'} |",
            f"| static int8 ≥ {SPEEDUP_BAR}x faster at batch 32 (p50) | {model} "
            f"| {speedup:.2f}x | {'met' if speedup >= SPEEDUP_BAR else 'missed'} |",
        ]
    return "\n".join(lines)


def machine() -> str:
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, load average {load}; onnxruntime "
        f"{onnxruntime.__version__}, torch {torch.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds per variant")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()

    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    x_train, x_test, y_train, y_test = digits()
    calibration = x_train[np.random.default_rng(SEED).permutation(len(x_train))[:256]]
    found: list[Variant] = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, net in networks().items():
            train(net, x_train, y_train, epochs=15 if model == "mlp" else 10)
            export(net, Path(tmp) / f"{model}.onnx")
            found += variants(model, Path(tmp) / f"{model}.onnx", calibration)
        print(f"machine: {machine()}")
        print(f"data: digits, {len(x_train)} training rows, {len(x_test)} test rows\n")
        measure(found, x_test, y_test, args.rounds)
    print(table(found) + "\n\n" + bars(found))
    if args.json:
        args.json.write_text(json.dumps([v.summary() for v in found], indent=2))


if __name__ == "__main__":
    main()
