"""``servion status | history | rollback | undeploy``: the commands that only talk to a
running server, kept to light imports so they answer at once."""

from __future__ import annotations

from typing import Any

import click
import orjson

from servion.cli.client import arms_text, call, change_options, confirm, server_options, when
from servion.cli.common import echo_json, refusals_exit_2, table


@click.command()
@click.argument("endpoint", required=False)
@click.option("--json", "as_json", is_flag=True)
@server_options
@refusals_exit_2
def status(endpoint: str | None, as_json: bool, url: str, token: str | None) -> None:
    """Deployed endpoints: current revision, arms and readiness."""
    path = "/v2/admin/endpoints" + (f"/{endpoint}" if endpoint else "")
    answer = call(url, token, "GET", path)
    states = [answer] if endpoint else answer["endpoints"]
    if as_json:
        echo_json(answer)
        return
    rows = [
        (
            s["endpoint"],
            s["revision"],
            s["spec"].get("environment", "dev"),
            arms_text(s["spec"]),
            "yes" if s["ready"] else "no",
            when(s["created_at"]),
        )
        for s in states
    ]
    click.echo(table(("ENDPOINT", "REVISION", "ENV", "ARMS", "READY", "SINCE (UTC)"), rows))
    if not endpoint and "cost" in answer:  # a server older than the cost series has none
        click.echo(cost_line(answer["cost"]))


def cost_line(cost: dict[str, Any]) -> str:
    """The replica's cost in one line.

    >>> cost_line({"configured": True, "currency": "USD", "per_hour": 2.4, "gpus": 0,
    ...            "requests_per_s": 812.0, "per_1000_requests": 0.000821, "window_s": 60})
    'cost: $0.000821 per 1,000 requests at 812 req/s ($2.40/hour)'
    """
    if not cost["configured"]:
        return "cost: not configured (--cost-per-replica-hour, --cost-per-gpu-hour)"
    currency = cost["currency"]
    per_hour = f"{money(cost['per_hour'], currency, 2)}/hour"
    if cost["gpus"]:
        per_hour += f" with {cost['gpus']} GPU" + ("s" if cost["gpus"] > 1 else "")
    per_1000, rate = cost["per_1000_requests"], cost["requests_per_s"]
    if per_1000 is None:
        if rate is None:
            return f"cost: {per_hour} (no request rate: metrics are off)"
        return f"cost: {per_hour}, no request in the last {cost['window_s']:g} s"
    return f"cost: {money(per_1000, currency)} per 1,000 requests at {rate_text(rate)} ({per_hour})"


def money(amount: float, currency: str, decimals: int | None = None) -> str:
    """``$2.40`` for dollars, ``2.40 EUR`` for any other currency; three significant digits
    below 1 unless ``decimals`` says, as a cost per request is often a fraction of a cent."""
    if decimals is not None or amount >= 1:
        text = f"{amount:,.{2 if decimals is None else decimals}f}"
    else:
        text = f"{amount:.3g}"
    return f"${text}" if currency == "USD" else f"{text} {currency}"


def rate_text(rate: float) -> str:
    return f"{rate:,.0f} req/s" if rate >= 100 else f"{rate:.3g} req/s"


@click.command()
@click.argument("endpoint")
@click.option("--json", "as_json", is_flag=True)
@server_options
@refusals_exit_2
def history(endpoint: str, as_json: bool, url: str, token: str | None) -> None:
    """Every revision of an endpoint, oldest first."""
    answer = call(url, token, "GET", f"/v2/admin/endpoints/{endpoint}/history")
    if as_json:
        echo_json(answer)
        return
    rows = [
        (
            r["revision"],
            r["action"] + (f" to {r['source_revision']}" if r["source_revision"] else ""),
            arms_text(r["spec"]),
            r["created_by"],
            when(r["created_at"]),
        )
        for r in answer["revisions"]
    ]
    click.echo(table(("REVISION", "ACTION", "ARMS", "BY", "AT (UTC)"), rows))


@click.command()
@click.argument("endpoint")
@click.option("--to", type=click.IntRange(1), help="Revision to restore (default: previous).")
@click.option("--json", "as_json", is_flag=True)
@change_options
@refusals_exit_2
def rollback(endpoint: str, to: int | None, as_json: bool, url: str, token: str | None) -> None:
    """Serve an earlier revision again (as a new revision); returns once every worker does."""
    body = orjson.dumps({"to": to}) if to is not None else b""
    answer = call(url, token, "POST", f"/v2/admin/endpoints/{endpoint}/rollback", body)
    if as_json:
        echo_json(answer)
        return
    click.echo(
        f"endpoint {endpoint} rolled back to revision {answer['source_revision']}"
        f" (now revision {answer['revision']}), serving in every worker"
        f" after {answer['applied_ms']:.0f} ms"
    )


@click.command()
@click.argument("endpoint")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@change_options
@refusals_exit_2
def undeploy(endpoint: str, yes: bool, url: str, token: str | None) -> None:
    """Stop serving an endpoint (its history is kept)."""
    confirm(f"Stop serving endpoint {endpoint!r}?", yes)
    call(url, token, "DELETE", f"/v2/admin/endpoints/{endpoint}")
    click.echo(f"endpoint {endpoint} is no longer served")
