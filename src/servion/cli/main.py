"""The ``servion`` command: argument parsing and exit codes, nothing more.

Exit codes: 0 success, 1 unexpected failure (or a missed SLO), 2 refused input
(a ``ServionError`` or a usage error). Command modules are imported only when
their command runs, so ``servion serve`` does not carry the registry tooling.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click

from servion._version import __version__

# command name -> (module, attribute)
COMMANDS = {
    "ab": ("servion.cli.rollout", "ab"),
    "audit": ("servion.cli.audit", "audit"),
    "bench": ("servion.cli.bench", "bench"),
    "deploy": ("servion.cli.deploy", "deploy"),
    "diff": ("servion.cli.deploy", "diff"),
    "history": ("servion.cli.deploy", "history"),
    "models": ("servion.cli.models", "models"),
    "profile": ("servion.cli.profile", "profile"),
    "quickstart": ("servion.cli.quickstart", "quickstart"),
    "register": ("servion.cli.register", "register"),
    "registry": ("servion.cli.registry_cmd", "registry"),
    "rollback": ("servion.cli.deploy", "rollback"),
    "rollout": ("servion.cli.rollout", "rollout"),
    "serve": ("servion.cli.serve", "serve"),
    "status": ("servion.cli.deploy", "status"),
    "tokens": ("servion.cli.tokens", "tokens"),
    "undeploy": ("servion.cli.deploy", "undeploy"),
    "verify": ("servion.cli.deploy", "verify"),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = COMMANDS.get(cmd_name)
        if found is None:
            return None
        command = getattr(importlib.import_module(found[0]), found[1])
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    from servion.cli.common import Context

    ctx.obj = Context(home)


def main(argv: list[str] | None = None) -> Any:
    """Console entry point."""
    return cli.main(args=argv, prog_name="servion", standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main())
