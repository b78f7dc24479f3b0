"""The drift reservoir (bounded, a uniform sample of everything offered) and the pace of
sampling."""

from __future__ import annotations

import numpy as np

from servion.config import DriftSettings
from servion.registry import ModelRegistry
from servion.serving.drift import DriftMonitor, Reservoir


def test_the_reservoir_keeps_at_most_its_capacity_drawn_from_the_whole_stream() -> None:
    reservoir = Reservoir(500, seed=0)
    for start in range(0, 20_000, 100):
        reservoir.add({"x": np.arange(start, start + 100, dtype=np.float64)})
    kept = reservoir.view()["x"]
    assert reservoir.seen == 20_000 and len(kept) == 500
    # Uniform over the stream: each quarter holds about a quarter of the rows.
    quarters = np.bincount((kept // 5000).astype(int), minlength=4)
    assert all(90 <= q <= 160 for q in quarters), quarters


def test_a_short_stream_is_kept_whole() -> None:
    reservoir = Reservoir(500)
    reservoir.add({"x": np.arange(30, dtype=np.float64)})
    assert reservoir.view()["x"].tolist() == list(range(30))


def test_sampling_thins_out_under_load_and_back(registry: ModelRegistry) -> None:
    """At most about ``max_samples_per_s`` requests a second are copied: k doubles while
    more arrive, and comes back down to ``sample_every`` when traffic drops."""
    settings = DriftSettings(sample_every=2, max_samples_per_s=40)  # 10 per drain
    monitor = DriftMonitor(registry, settings)
    row = {"X": np.zeros((1, 4), np.float32)}
    for expected in (4, 8, 16):
        for _ in range(50):
            monitor.offer("m", "v1.0.0", row, row)
        monitor._drain()
        assert monitor.every == expected
    for expected in (8, 4, 2, 2):
        monitor._drain()  # nothing arrived
        assert monitor.every == expected
