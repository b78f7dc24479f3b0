"""``servion audit``: read the audit trail back, filtered, as a table or JSON."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta

import click
import orjson

from servion.audit import read_events
from servion.cli.common import Context, refusals_exit_2, table
from servion.errors import InvalidInput

_RELATIVE = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def since_timestamp(text: str) -> str:
    """``30m``, ``2h``, ``7d`` ago, or an ISO date/time (UTC), as a comparable timestamp.

    >>> since_timestamp("2026-01-02")
    '2026-01-02T00:00:00.000000Z'
    """
    match = _RELATIVE.fullmatch(text.strip())
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        moment = datetime.now(UTC) - delta
    else:
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"--since {text!r}: give a duration (30m, 2h, 7d) or an ISO date/time"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@click.command()
@click.option("--model", help="Only events about this model or endpoint.")
@click.option("--endpoint", help="Only events about this endpoint.")
@click.option("--operation", help="Only this operation (register, deploy, rollback, ...).")
@click.option("--since", help="Only events since 30m / 2h / 7d ago, or an ISO date/time.")
@click.option("--outcome", type=click.Choice(("started", "success", "failure")))
@click.option("--limit", type=click.IntRange(1), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines, every field.")
@click.option(
    "--forward",
    is_flag=True,
    help="Send events not yet delivered to SERVION_AUDIT_FORWARD_URL, then exit.",
)
@click.pass_obj
@refusals_exit_2
def audit(
    ctx: Context,
    model: str | None,
    endpoint: str | None,
    operation: str | None,
    since: str | None,
    outcome: str | None,
    limit: int,
    as_json: bool,
    forward: bool,
) -> None:
    """Audit events from $SERVION_HOME/audit (or SERVION_AUDIT_DIRECTORY), oldest first."""
    if forward:
        _forward(ctx)
        return
    cutoff = since_timestamp(since) if since else None
    found = [
        e
        for e in read_events(ctx.settings.audit_dir)
        if (model is None or model in (e.get("model_name"), e.get("endpoint")))
        and (endpoint is None or e.get("endpoint") == endpoint)
        and (operation is None or e.get("operation") == operation)
        and (outcome is None or e.get("outcome") == outcome)
        and (cutoff is None or str(e.get("timestamp", "")) >= cutoff)
    ][-limit:]
    if as_json:
        for event in found:
            click.echo(orjson.dumps(event).decode())
        return
    rows = [
        (
            str(e.get("timestamp", ""))[:19].replace("T", " "),
            e.get("operation", ""),
            e.get("outcome", ""),
            e.get("user", ""),
            e.get("endpoint") or "",
            e.get("model_name") or "",
            e.get("model_version") or "",
            e.get("environment") or "",
            e.get("change_ticket") or "",
            "" if e.get("duration_seconds") is None else f"{e['duration_seconds']:.3f}",
            ((e.get("error_detail") or {}).get("message") or "")[:60],
        )
        for e in found
    ]
    headers = (
        "TIME",
        "OPERATION",
        "OUTCOME",
        "USER",
        "ENDPOINT",
        "MODEL",
        "VERSION",
        "ENV",
        "TICKET",
    )
    click.echo(table((*headers, "SECONDS", "ERROR"), rows))


def _forward(ctx: Context) -> None:
    from servion.audit.forward import Forwarder

    if not ctx.settings.audit.forward_url:
        raise InvalidInput("set SERVION_AUDIT_FORWARD_URL to the collector's _bulk URL")
    forwarder = Forwarder(ctx.settings)
    if not forwarder.acquire():
        raise InvalidInput("another process is forwarding these events (a server worker?)")
    try:
        while forwarder.pump():
            pass
    except OSError as exc:
        click.echo(f"error: the collector did not accept events: {exc}", err=True)
        sys.exit(1)
    finally:
        forwarder.release()
    click.echo(f"forwarded {forwarder.delivered} events")
