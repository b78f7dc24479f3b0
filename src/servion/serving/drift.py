"""Drift watching in one worker: live rows sampled off the hot path, compared per window.

The hot path pays an attribute increment and a modulo per answered request (in the data
plane); every ``sample_every``-th request of a model version is offered here and has its
input and output rows copied into a bounded queue. A thread drains the queue into a
reservoir per version (at most ``reservoir_rows`` rows per window, uniformly sampled) and,
every ``window_s``, compares each reservoir with the version's reference profile
(``servion.drift``) and starts a new window. A version without a reference learns one
from its first ``reference_rows`` sampled rows and stores it in the registry, where the
first worker to store one wins.

A judged window is kept whole (``latest``) for the metrics and the admin API, with the
reference and live histograms of its ``HISTOGRAMS`` highest-PSI features for a plot, and
its verdict goes to the audit trail when it changes what drifts (``drift_audit``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from servion.config import DriftSettings
from servion.drift import Thresholds, build_profile, columns_of, compare
from servion.drift.histogram import histogram
from servion.drift.profile import Columns
from servion.registry import ModelRegistry
from servion.serving.drift_audit import DriftAudit
from servion.types import Arrays

log = logging.getLogger("servion.drift")

PENDING_MAX = 4096
"""Sampled requests waiting for the thread; beyond it the oldest are dropped, not queued."""
DRAIN_EVERY_S = 0.25
MAX_EVERY = 1 << 16
HISTOGRAMS = 6
"""Features per window whose histograms are kept (the highest PSI first): enough for the
plot of the worst ones, and a bound on the window's size however wide the model."""


class Reservoir:
    """Up to ``capacity`` rows of a stream, each row equally likely to be kept (Algorithm R),
    as feature columns."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity = capacity
        self.seen = 0
        self.filled = 0
        self.columns: Columns = {}
        self._rng = np.random.default_rng(seed)

    def add(self, chunk: Columns) -> None:
        rows = len(next(iter(chunk.values()))) if chunk else 0
        if rows == 0:
            return
        if not self.columns:
            self.columns = {
                k: np.empty(self.capacity, dtype=v.dtype if v.dtype.kind in "fiub" else object)
                for k, v in chunk.items()
            }
        if any(k not in chunk for k in self.columns):
            return  # a request that asked for fewer outputs: its rows would be partial
        index = np.arange(self.seen, self.seen + rows)
        slots = np.where(
            index < self.capacity, index, self._rng.integers(0, np.maximum(index + 1, 1))
        )
        keep = slots < self.capacity
        for name, column in self.columns.items():
            column[slots[keep]] = chunk[name][keep]
        self.seen += rows
        self.filled = min(self.seen, self.capacity)

    def view(self) -> Columns:
        return {k: v[: self.filled] for k, v in self.columns.items()}


class _Version:
    """One model version's window and, until it has a reference, what it learns one from."""

    def __init__(self, capacity: int) -> None:
        self.inputs = Reservoir(capacity, seed=1)
        self.outputs = Reservoir(capacity, seed=2)
        self.learning: list[tuple[Arrays, Arrays]] = []
        self.learnt_rows = 0
        self.drifting: set[str] = set()


class DriftMonitor:
    """One worker's drift sampling and comparisons (see the module docstring)."""

    def __init__(self, registry: ModelRegistry, settings: DriftSettings) -> None:
        self.registry = registry
        self.settings = settings
        self.every = settings.sample_every
        self._pending: deque[tuple[str, str, Arrays, Arrays]] = deque(maxlen=PENDING_MAX)
        self._versions: dict[tuple[str, str], _Version] = {}
        self.latest: dict[str, dict[str, Any]] = {}
        """``model:version`` -> the last judged window (replaced whole, never mutated)."""
        self.worker = f"{socket.gethostname()}-{os.getpid()}"
        self.audit = DriftAudit(registry.settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the hot path -------------------------------------------------------------

    def offer(self, name: str, version: str, inputs: Arrays, outputs: Arrays) -> None:
        """Copy one sampled request's rows for the thread (the data plane counts)."""
        self._pending.append(
            (
                name,
                version,
                {k: np.array(v) for k, v in inputs.items()},
                {k: np.array(v) for k, v in outputs.items()},
            )
        )

    # -- the thread ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="servion-drift", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.audit.close()

    def results(self) -> dict[str, dict[str, Any]]:
        return dict(self.latest)

    def _run(self) -> None:
        next_window = time.monotonic() + self.settings.window_s
        while not self._stop.wait(min(DRAIN_EVERY_S, self.settings.window_s)):
            try:
                self._drain()
                if time.monotonic() >= next_window:
                    next_window = time.monotonic() + self.settings.window_s
                    self._close_windows()
            except Exception:  # keep watching; the next window may do better
                log.exception("drift_window_failed")

    def _pace(self, drained: int) -> None:
        """Keep the copying near ``max_samples_per_s``: double k when more arrive, halve it
        (down to ``sample_every``) when far fewer do. The data plane reads ``every`` as is."""
        target = self.settings.max_samples_per_s * DRAIN_EVERY_S
        if drained > 2 * target and self.every < MAX_EVERY:
            self.every *= 2
        elif drained < target / 2 and self.every > self.settings.sample_every:
            self.every = max(self.settings.sample_every, self.every // 2)

    def _drain(self) -> None:
        self._pace(len(self._pending))
        while self._pending:
            name, version, inputs, outputs = self._pending.popleft()
            state = self._versions.get((name, version))
            if state is None:
                state = self._versions[(name, version)] = _Version(self.settings.reservoir_rows)
            state.inputs.add(columns_of(inputs))
            state.outputs.add(columns_of(outputs))
            if state.learnt_rows < self.settings.reference_rows:
                state.learning.append((inputs, outputs))
                state.learnt_rows += _rows(inputs)

    def _close_windows(self) -> None:
        for (name, version), state in list(self._versions.items()):
            profile = self.registry.drift.profile(name, version)
            if profile is None:
                profile = self._learn(name, version, state)
            else:
                state.learning.clear()
            if profile is not None and state.inputs.filled:
                self._judge(name, version, state, profile)
            fresh = _Version(self.settings.reservoir_rows)
            fresh.learning, fresh.learnt_rows = state.learning, state.learnt_rows
            fresh.drifting = state.drifting
            self._versions[(name, version)] = fresh

    def _learn(self, name: str, version: str, state: _Version) -> dict[str, Any] | None:
        if state.learnt_rows < self.settings.reference_rows:
            return None
        n = self.settings.reference_rows
        inputs = _concat([i for i, _ in state.learning], n)
        outputs = _concat([o for _, o in state.learning], n)
        state.learning.clear()
        stored = self.registry.drift.put_profile(
            name, version, build_profile(inputs, outputs, "live"), replace=False
        )
        if stored:
            log.info("drift_reference_learnt", extra={"model": name, "version": version})
        return self.registry.drift.profile(name, version)

    def _judge(self, name: str, version: str, state: _Version, profile: dict[str, Any]) -> None:
        chosen = self.registry.drift.thresholds(name)
        limits = (
            Thresholds(*chosen) if chosen else Thresholds(self.settings.psi, self.settings.alpha)
        )
        live = {"input": state.inputs.view(), "output": state.outputs.view()}
        found = compare(profile, live["input"], live["output"], limits)
        if not found:
            return
        drifted = {r.feature for r in found if r.drifted}
        for r in found:
            if r.drifted and r.feature not in state.drifting:
                log.warning(
                    "drift_detected",
                    extra={
                        "model": name,
                        "version": version,
                        "feature": r.feature,
                        "source": r.source,
                        "psi": round(r.psi, 4),
                        "pvalue": r.pvalue,
                    },
                )
        state.drifting = drifted
        features = [r.to_dict() for r in found]
        for f in sorted(features, key=lambda f: -f["psi"])[:HISTOGRAMS]:
            reference = profile[f"{f['source']}s"][f["feature"]]
            f["histogram"] = histogram(reference, live[f["source"]][f["feature"]])
        window = {
            "model": name,
            "version": version,
            "time": time.time(),
            "worker": self.worker,
            "rows": state.inputs.filled,
            "reference": profile.get("source", ""),
            "thresholds": {"psi": limits.psi, "alpha": limits.alpha},
            "features": features,
        }
        self.latest[f"{name}:{version}"] = window
        self.audit.judged(window)


def _rows(arrays: Arrays) -> int:
    first = next(iter(arrays.values()), None)
    return 0 if first is None or first.ndim == 0 else len(first)


def _concat(parts: list[Arrays], limit: int) -> Arrays:
    names = set.intersection(*(set(p) for p in parts)) if parts else set()
    return {k: np.concatenate([p[k] for p in parts])[:limit] for k in sorted(names)}
