"""The ``servion`` command: argument parsing and exit codes, nothing more.

Exit codes: 0 success, 1 unexpected failure, 2 refused input (a ``ServionError``
or a usage error).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from servion._version import __version__
from servion.cli import bench, models, profile, quickstart, register, serve
from servion.cli.common import Context


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="servion")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Registry home (default: $SERVION_HOME or ./.servion).",
)
@click.pass_context
def cli(ctx: click.Context, home: Path | None) -> None:
    """servion: register models, serve them over the Open Inference Protocol."""
    ctx.obj = Context(home)


cli.add_command(register.register)
cli.add_command(models.models)
cli.add_command(serve.serve)
cli.add_command(quickstart.quickstart)
cli.add_command(bench.bench)
cli.add_command(profile.profile)


def main(argv: list[str] | None = None) -> Any:
    """Console entry point."""
    return cli.main(args=argv, prog_name="servion", standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main())
