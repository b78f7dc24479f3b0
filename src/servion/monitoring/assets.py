"""The files servion ships for Prometheus and Grafana. They live here, beside the code that
prints them, and nowhere else: ``docs/monitoring`` points at them rather than copying."""

from __future__ import annotations

from importlib.resources import files
from typing import Final, Literal

Asset = Literal["rules", "dashboard"]

ASSETS: Final[dict[Asset, str]] = {"rules": "alerts.yml", "dashboard": "dashboard.json"}
"""What ``servion monitoring`` prints -> the package data file it is."""


def asset(kind: Asset) -> bytes:
    """The shipped bytes of the rules or the dashboard, exactly as in the package.

    >>> asset("rules").startswith(b"# Prometheus alerting rules")
    True
    """
    return files("servion.monitoring").joinpath(ASSETS[kind]).read_bytes()
