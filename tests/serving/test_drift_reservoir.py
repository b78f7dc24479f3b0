"""The drift reservoir: bounded, and a uniform sample of everything offered."""

from __future__ import annotations

import numpy as np

from servion.serving.drift import Reservoir


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
