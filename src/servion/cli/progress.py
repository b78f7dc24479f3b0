"""Progress for long commands: a live line on a terminal, nothing at all when piped.

rich is imported only when stderr is a terminal, so scripts and the fast commands
pay nothing for it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Step = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@contextmanager
def steps(title: str) -> Iterator[Step]:
    """A spinner with the step in progress; each finished step stays printed with its
    duration. Yields the function that starts the next step."""
    if not sys.stderr.isatty():
        yield _quiet
        return
    from rich.console import Console

    console = Console(stderr=True)
    current: dict[str, Any] = {"text": None, "since": time.monotonic()}

    def finish() -> None:
        if current["text"] is not None:
            took = time.monotonic() - current["since"]
            console.print(f"  [green]done[/] {current['text']} [dim]({took:.1f} s)[/]")

    with console.status(f"{title}...") as status:

        def step(text: str) -> None:
            finish()
            current["text"], current["since"] = text, time.monotonic()
            status.update(f"{title}: {text}...")

        try:
            yield step
        finally:
            finish()


@contextmanager
def bar(title: str, total: float, unit: str = "") -> Iterator[Callable[[float], None]]:
    """A progress bar to ``total``; yields the function that sets how far it is."""
    if not sys.stderr.isatty():
        yield lambda _done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeRemainingColumn

    with Progress(
        f"[progress.description]{title}",
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(title, total=total)
        yield lambda done: progress.update(task, completed=done)


@contextmanager
def timed(title: str, seconds: float) -> Iterator[None]:
    """A bar that follows the clock, for a run of known length (a load test): it redraws
    four times a second, little enough not to disturb what is measured."""
    if not sys.stderr.isatty():
        yield
        return
    import threading

    started = time.monotonic()
    done = threading.Event()
    with bar(title, seconds) as advance:

        def tick() -> None:
            while not done.wait(0.25):
                advance(min(seconds, time.monotonic() - started))

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()
