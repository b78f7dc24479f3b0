"""What every command shares: settings, error reporting, tables."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click
import orjson

from servion.errors import ServionError

if TYPE_CHECKING:  # settings pull in pydantic: commands that only talk to a server skip it
    from servion.config import Settings

P = ParamSpec("P")
R = TypeVar("R")


def open_registry(settings: Settings) -> Any:
    """The registry with every subsystem's guards on it: deploy refuses deleting a version
    an endpoint names, and registering a model under a deployed endpoint's name."""
    from servion.deploy import Deployments
    from servion.registry import ModelRegistry

    registry = ModelRegistry(settings)
    Deployments(registry)
    return registry


class Context:
    """Per-invocation state: settings are built once, here."""

    def __init__(self, home: Path | None) -> None:
        self.home = home
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from servion.config import Settings

            self._settings = Settings.load(home=self.home)
        return self._settings


@contextlib.contextmanager
def audited_change(ctx: Context, operation: str, **fields: Any) -> Iterator[tuple[Any, Any]]:
    """The registry and an audited ``operation`` around one change of it; both are closed
    after, and the operation records a failure if the change raises."""
    from servion.audit import Auditor

    registry = open_registry(ctx.settings)
    audit = Auditor(ctx.settings)
    try:
        with audit.operation(operation, **fields) as op:
            yield registry, op
    finally:
        registry.close()
        audit.close()


def refusals_exit_2(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a ``ServionError`` into ``error: message`` on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ServionError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(2)

    return wrapper


def echo_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def mlflow_origin(record: dict[str, Any]) -> str:
    """One line naming the MLflow run and flavor a version was registered from."""
    from servion.errors import printable

    def field(key: str) -> str:
        value = record.get(key)
        return printable(str(value)) if value else "-"

    return (
        f"run {field('run_id')}, flavor {field('flavor')} ({field('serialization')}),"
        f" artifact path {field('artifact_path')}, MLflow {field('mlflow_version')}"
    )
