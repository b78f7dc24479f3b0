"""``servion ab report`` and ``servion rollout status|pause|resume|abort``: watching and
steering an endpoint's arms and its canary rollout through the admin API."""

from __future__ import annotations

from typing import Any

import click

from servion.cli.client import call, change_options, server_options
from servion.cli.common import echo_json, refusals_exit_2, table


@click.group()
def ab() -> None:
    """A/B comparisons between an endpoint's arms."""


@ab.command("report")
@click.argument("endpoint")
@click.option("--json", "as_json", is_flag=True)
@server_options
@refusals_exit_2
def ab_report(endpoint: str, as_json: bool, url: str, token: str | None) -> None:
    """Requests, errors and latency (p50/p99) per arm, over every worker."""
    answer = call(url, token, "GET", f"/v2/admin/endpoints/{endpoint}/report")
    if as_json:
        echo_json(answer)
        return

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    rows = [
        (
            a["arm"],
            f"{a['weight']:g}%",
            a["requests"],
            a["errors"],
            f"{100 * a['error_rate']:.2f}%",
            ms(a["p50_ms"]),
            ms(a["p99_ms"]),
        )
        for a in answer["arms"]
    ]
    click.echo(f"endpoint {endpoint}, revision {answer['revision']}")
    click.echo(table(("ARM", "WEIGHT", "REQUESTS", "ERRORS", "ERROR %", "P50 MS", "P99 MS"), rows))
    shadows = answer.get("shadows", [])
    if shadows:

        def share(value: float | None) -> str:
            return "-" if value is None else f"{100 * value:.1f}%"

        def diff(value: float | None) -> str:
            return "-" if value is None else f"{value:.3g}"

        click.echo()
        shadow_rows = [
            (
                s["shadow"],
                f"{100 * s['sample']:g}%",
                s["requests"],
                s["errors"],
                s["dropped"],
                share(s["agreement"]),
                diff(s["mean_max_abs_diff"]),
                ms(s["p50_ms"]),
                ms(s["p99_ms"]),
            )
            for s in shadows
        ]
        headers = ("SHADOW", "SAMPLE", "COMPARED", "ERRORS", "DROPPED", "AGREE", "MEAN MAX |Δ|")
        click.echo(table((*headers, "P50 MS", "P99 MS"), shadow_rows))


@click.group()
def rollout() -> None:
    """Follow and steer a canary rollout (started by deploying a spec with rollout:)."""


def _rollout_line(answer: dict[str, Any]) -> str:
    return (
        f"endpoint {answer['endpoint']}: rollout of {answer['canary']} {answer['state']},"
        f" step {answer['step'] + 1}/{len(answer['steps'])} ({answer['percent']:g} %)"
        + (f"; {answer['reason']}" if answer["reason"] else "")
    )


@rollout.command("status")
@click.argument("endpoint")
@click.option("--json", "as_json", is_flag=True)
@server_options
@refusals_exit_2
def rollout_status(endpoint: str, as_json: bool, url: str, token: str | None) -> None:
    """State, step and last reason of the endpoint's rollout."""
    answer = call(url, token, "GET", f"/v2/admin/endpoints/{endpoint}/rollout")
    if as_json:
        echo_json(answer)
    else:
        click.echo(_rollout_line(answer))


def _rollout_action(verb: str) -> click.Command:
    @click.argument("endpoint")
    @click.option("--json", "as_json", is_flag=True)
    @change_options
    @refusals_exit_2
    def command(endpoint: str, as_json: bool, url: str, token: str | None) -> None:
        answer = call(url, token, "POST", f"/v2/admin/endpoints/{endpoint}/rollout/{verb}", b"")
        if as_json:
            echo_json(answer)
        else:
            click.echo(_rollout_line(answer))

    docs = {
        "pause": "Hold the rollout at its current step (the step's clock stops).",
        "resume": "Carry on from the current step.",
        "abort": "Stop the rollout and restore the stable revision now.",
    }
    command.__doc__ = docs[verb]
    return rollout.command(verb)(command)


for _verb in ("pause", "resume", "abort"):
    _rollout_action(_verb)
