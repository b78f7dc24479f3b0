"""``servion top``: a live view of a server's models and endpoints, from its ``GET /metrics``.

Every ``--interval`` it scrapes again and shows what changed since the previous scrape
(``servion.monitoring.rates``): requests per second, the share answered with a 5xx, p50
and p99 latency (interpolated inside the histogram's buckets, as ``histogram_quantile``
does), mean rows per execution, queued requests and the features the last drift window
flagged, per model or endpoint and per version or arm. On a terminal it redraws in place
(rich); piped, or with ``--once``, it prints plain tables.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import click

from servion.cli.client import server_options
from servion.cli.common import table
from servion.monitoring import Row, Scrape, between

if TYPE_CHECKING:  # rich is imported only to draw on a terminal
    from rich.table import Table

HEADERS = ("TARGET", "VERSION", "REQ/S", "ERR %", "P50", "P99", "BATCH", "QUEUE", "DRIFT")


@click.command()
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 3600),
    default=1.0,
    show_default=True,
    help="Seconds between scrapes; rates are over this interval.",
)
@click.option("--once", is_flag=True, help="Print one table from two scrapes, then exit.")
@server_options
def top(interval: float, once: bool, url: str, token: str | None) -> None:
    """Requests, errors, latency, batching and queues of a running server, live."""
    try:
        if once or not sys.stdout.isatty():
            _print(url, token, interval, once)
        else:
            _live(url, token, interval)
    except KeyboardInterrupt:
        return


def _print(url: str, token: str | None, interval: float, once: bool) -> None:
    before = _scrape(url, token)
    while True:
        time.sleep(interval)
        after = _scrape(url, token)
        click.echo(render(between(before, after)))
        if once:
            return
        click.echo()
        before = after


def _live(url: str, token: str | None, interval: float) -> None:
    from rich.live import Live
    from rich.text import Text

    before = _scrape(url, token)
    with Live(
        Text(f"servion top: {url}: the first rates come in {interval:g} s"), auto_refresh=False
    ) as live:
        while True:
            time.sleep(interval)
            after = _scrape(url, token)
            live.update(_rich_table(url, between(before, after)), refresh=True)
            before = after


def _scrape(url: str, token: str | None) -> Scrape:
    request = urllib.request.Request(url.rstrip("/") + "/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            text = reply.read().decode()
    except urllib.error.HTTPError as exc:
        click.echo(f"error: {url}/metrics answered HTTP {exc.code}", err=True)
        sys.exit(1)
    except (urllib.error.URLError, OSError) as exc:
        click.echo(f"error: cannot reach {url}: {getattr(exc, 'reason', exc)}", err=True)
        sys.exit(1)
    return Scrape.parse(text, time.monotonic())


def cells(row: Row) -> tuple[str, ...]:
    """A row as the table shows it; "-" where the interval says nothing. DRIFT is the
    features the last drift window flagged ("3 drifted", "ok"), "-" for a version no window
    judged (no reference yet, or no traffic) and for endpoints."""
    return (
        row.target,
        row.version,
        f"{row.rps:.1f}",
        "-" if row.error_ratio is None else f"{100 * row.error_ratio:.1f}",
        _duration(row.p50_s),
        _duration(row.p99_s),
        "-" if row.batch is None else f"{row.batch:.1f}",
        "-" if row.queue is None else f"{row.queue:.0f}",
        _drift(row.drifted),
    )


def _drift(drifted: int | None) -> str:
    if drifted is None:
        return "-"
    return f"{drifted} drifted" if drifted else "ok"


def render(rows: list[Row]) -> str:
    """The plain table of ``--once`` and of a piped ``servion top``."""
    if not rows:
        return "no models or endpoints served yet"
    return table(HEADERS, [cells(r) for r in rows])


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _rich_table(url: str, rows: list[Row]) -> Table:
    from rich.box import SIMPLE_HEAD
    from rich.table import Table

    view = Table(title=f"servion top: {url}", title_justify="left", box=SIMPLE_HEAD)
    for i, header in enumerate(HEADERS):
        view.add_column(header, justify="left" if i < 2 else "right", no_wrap=True)
    for row in rows:
        view.add_row(*cells(row), style=None if row.target else "dim")
    if not rows:
        view.caption = "no models or endpoints served yet"
    return view
