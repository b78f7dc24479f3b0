"""``servion status | history | rollback | undeploy``: the commands that only talk to a
running server, kept to light imports so they answer at once."""

from __future__ import annotations

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
