"""Talking to a running server's admin API: options, one call, answers as text.

Kept light (click, orjson and the standard library) so that the commands which
only talk to a server start in well under 0.3 s.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import click
import orjson

from servion.errors import InvalidInput, printable

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_URL = "http://127.0.0.1:8080"


class Refused(InvalidInput):
    """The server answered 4xx."""


_change_ticket: dict[str, str] = {}


def _remember_ticket(_: click.Context, __: click.Parameter, value: str | None) -> None:
    if value:
        _change_ticket["value"] = value


def server_options(func: F) -> F:
    """``--url`` and ``--token``: every command that talks to a server."""
    func = click.option(
        "--token",
        envvar="SERVION_TOKEN",
        default=None,
        help="Bearer token ($SERVION_TOKEN).",
    )(func)
    func = click.option(
        "--url",
        envvar="SERVION_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="Server to talk to ($SERVION_URL).",
    )(func)
    return func


def change_options(func: F) -> F:
    """``server_options`` plus ``--change-ticket``: the commands that change what is served."""
    func = click.option(
        "--change-ticket",
        envvar="SERVION_CHANGE_TICKET",
        default=None,
        expose_value=False,
        callback=_remember_ticket,
        help="Change ticket for the audit trail; required in production ($SERVION_CHANGE_TICKET).",
    )(func)
    return server_options(func)


def call(url: str, token: str | None, method: str, path: str, body: bytes | None = None) -> Any:
    """One admin API call; the decoded JSON answer."""
    request = urllib.request.Request(url.rstrip("/") + path, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if "value" in _change_ticket:
        request.add_header("X-Servion-Change-Ticket", _change_ticket["value"])
    if body is not None:
        request.add_header("Content-Type", "application/yaml")
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return orjson.loads(reply.read() or b"null")
    except urllib.error.HTTPError as exc:
        message = _error_text(exc.read())
        if exc.code < 500:
            raise Refused(f"HTTP {exc.code}: {message}") from None
        click.echo(f"error: the server failed: HTTP {exc.code}: {message}", err=True)
        sys.exit(1)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        click.echo(f"error: cannot reach {url}: {reason}", err=True)
        sys.exit(1)


def _error_text(raw: bytes) -> str:
    try:
        value = orjson.loads(raw).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        value = None
    return printable(value if isinstance(value, str) else raw[:300].decode("utf-8", "replace"))


def when(timestamp: str) -> str:
    """A stored UTC timestamp as a table shows it: to the second."""
    return timestamp[:19].replace("T", " ") if len(timestamp) >= 19 else timestamp


def arms_text(spec: dict[str, Any]) -> str:
    return ", ".join(f"{a['model']}:{a['version']} {a['weight']:g}%" for a in spec["models"])


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal before something that cannot be undone; scripts pass ``--yes``
    (and a piped stdin is taken as a script, so pipelines never hang on a prompt)."""
    if yes or not sys.stdin.isatty():
        return
    if not click.confirm(question, default=False):
        click.echo("cancelled", err=True)
        sys.exit(1)
