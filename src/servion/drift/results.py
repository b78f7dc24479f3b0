"""Drift results of many workers merged: per model version, the freshest window wins."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def freshest(parts: Iterable[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """``{"model:version": window}`` from each worker, keeping the latest ``time`` per key.

    >>> freshest([{"m:1": {"time": 1}}, {"m:1": {"time": 2}}])["m:1"]["time"]
    2
    """
    merged: dict[str, dict[str, Any]] = {}
    for part in parts:
        for key, window in part.items():
            mine = merged.get(key)
            if mine is None or window.get("time", 0) > mine.get("time", 0):
                merged[key] = window
    return merged
