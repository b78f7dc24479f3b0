"""Watching servion from outside: the Prometheus alerting rules and the Grafana dashboard it
ships (package data, printed by ``servion monitoring``), and what ``servion top`` computes
from two scrapes of ``GET /metrics``.

Only the exposition text is read, never the server's internals (the import-linter contract
keeps this package a leaf), so it watches any servion it can reach.
"""

from servion.monitoring.assets import ASSETS, Asset, asset
from servion.monitoring.rates import Row, Scrape, between, quantile

__all__ = ["ASSETS", "Asset", "Row", "Scrape", "asset", "between", "quantile"]
