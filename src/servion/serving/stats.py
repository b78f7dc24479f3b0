"""Per model-version inference statistics in the shape of Triton's statistics extension.

Counters are plain ints updated on the event loop (one thread), so no locks.
Durations are nanoseconds, as the extension reports them.
"""

from __future__ import annotations

import time
from typing import Any

_DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


class ModelStats:
    """Counts and total durations for one model version in one worker."""

    __slots__ = ("batch", "counts", "execution_count", "inference_count", "last_inference", "ns")

    def __init__(self) -> None:
        self.counts = dict.fromkeys(_DURATIONS, 0)
        self.ns = dict.fromkeys(_DURATIONS, 0)
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference = 0
        self.batch: dict[int, list[int]] = {}
        """batch size -> [count, input ns, infer ns, output ns]"""

    def record_request(self, rows: int, t_queue: int, t_in: int, t_infer: int, t_out: int) -> None:
        """One successful request: its rows and where its time went (ns)."""
        c, n = self.counts, self.ns
        c["success"] += 1
        n["success"] += t_queue + t_in + t_infer + t_out
        for key, value in (
            ("queue", t_queue),
            ("compute_input", t_in),
            ("compute_infer", t_infer),
            ("compute_output", t_out),
        ):
            c[key] += 1
            n[key] += value
        self.inference_count += rows
        self.last_inference = time.time_ns() // 1_000_000

    def record_execution(self, batch_size: int, t_infer: int) -> None:
        """One model execution, of ``batch_size`` rows (several requests when batched)."""
        self.execution_count += 1
        row = self.batch.get(batch_size)
        if row is None:
            row = self.batch[batch_size] = [0, 0, 0, 0]
        row[0] += 1
        row[2] += t_infer

    def record_failure(self, elapsed_ns: int) -> None:
        self.counts["fail"] += 1
        self.ns["fail"] += elapsed_ns

    def to_dict(self) -> dict[str, Any]:
        return {
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "last_inference": self.last_inference,
            "counts": dict(self.counts),
            "ns": dict(self.ns),
            "batch": {str(k): list(v) for k, v in self.batch.items()},
        }


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the ``to_dict`` forms of several workers' stats for one model version."""
    total = ModelStats().to_dict()
    for part in parts:
        total["inference_count"] += part["inference_count"]
        total["execution_count"] += part["execution_count"]
        total["last_inference"] = max(total["last_inference"], part["last_inference"])
        for key in _DURATIONS:
            total["counts"][key] += part["counts"][key]
            total["ns"][key] += part["ns"][key]
        for size, row in part["batch"].items():
            acc = total["batch"].setdefault(size, [0, 0, 0, 0])
            for i, value in enumerate(row):
                acc[i] += value
    return total


def to_triton(name: str, version: str, data: dict[str, Any]) -> dict[str, Any]:
    """Render merged stats as one entry of Triton's ``model_stats`` list."""

    def duration(key: str) -> dict[str, int]:
        return {"count": data["counts"][key], "ns": data["ns"][key]}

    return {
        "name": name,
        "version": version,
        "last_inference": data["last_inference"],
        "inference_count": data["inference_count"],
        "execution_count": data["execution_count"],
        "inference_stats": {
            **{key: duration(key) for key in _DURATIONS},
            "cache_hit": {"count": 0, "ns": 0},
            "cache_miss": {"count": 0, "ns": 0},
        },
        "batch_stats": [
            {
                "batch_size": int(size),
                "compute_input": {"count": row[0], "ns": row[1]},
                "compute_infer": {"count": row[0], "ns": row[2]},
                "compute_output": {"count": row[0], "ns": row[3]},
            }
            for size, row in sorted(data["batch"].items(), key=lambda kv: int(kv[0]))
        ],
    }
