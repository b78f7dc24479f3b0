"""``servion monitoring rules | dashboard``: print the Prometheus alerting rules or the
Grafana dashboard servion ships, byte for byte, to redirect into a file or a provisioning
folder."""

from __future__ import annotations

import sys

import click

from servion.monitoring import Asset, asset


@click.group()
def monitoring() -> None:
    """The Prometheus alerting rules and Grafana dashboard servion ships."""


@monitoring.command()
def rules() -> None:
    """Prometheus alerting rules (YAML): servion monitoring rules > servion-alerts.yml"""
    _print("rules")


@monitoring.command()
def dashboard() -> None:
    """Grafana dashboard (JSON model): import it and pick a Prometheus data source."""
    _print("dashboard")


def _print(kind: Asset) -> None:
    # The shipped bytes, not a re-encoding: what a test or a diff compares is the file.
    sys.stdout.buffer.write(asset(kind))
    sys.stdout.flush()
