"""The ``servion`` command: argument parsing and exit codes, nothing more.

Exit codes: 0 success, 1 unexpected failure (or a missed SLO), 2 refused input
(a ``ServionError`` or a usage error). Command modules are imported only when
their command runs, and ``servion --help`` imports none of them: their one-line
summaries are written here.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click

from servion._version import __version__

# command name -> (module, attribute, summary for --help)
COMMANDS = {
    "ab": ("servion.cli.rollout", "ab", "A/B comparisons between an endpoint's arms."),
    "audit": ("servion.cli.audit", "audit", "Search and follow the audit trail."),
    "batch": ("servion.cli.batch", "batch", "Batch prediction over files, resumable."),
    "bench": ("servion.cli.bench", "bench", "Load a server and check latency SLOs."),
    "deploy": ("servion.cli.deploy", "deploy", "Apply a deployment spec as a new revision."),
    "drift": ("servion.cli.drift", "drift", "Drift references, thresholds and reports."),
    "diff": ("servion.cli.deploy", "diff", "What changed between two revisions."),
    "history": ("servion.cli.endpoints", "history", "Every revision of an endpoint."),
    "models": ("servion.cli.models", "models", "Inspect and manage registered models."),
    "monitoring": (
        "servion.cli.monitoring",
        "monitoring",
        "Print the shipped Prometheus rules or Grafana dashboard.",
    ),
    "optimize": (
        "servion.cli.optimize",
        "optimize",
        "Derive a faster version (ONNX, int8...) that keeps its accuracy.",
    ),
    "profile": ("servion.cli.profile", "profile", "Measure a model at growing batch sizes."),
    "quickstart": ("servion.cli.quickstart", "quickstart", "Register a demo model and serve it."),
    "register": ("servion.cli.register", "register", "Validate and store a model version."),
    "registry": ("servion.cli.registry_cmd", "registry", "Back up and restore the registry."),
    "rollback": ("servion.cli.endpoints", "rollback", "Serve an earlier revision again."),
    "rollout": ("servion.cli.rollout", "rollout", "Follow and steer a canary rollout."),
    "serve": ("servion.cli.serve", "serve", "Serve the registered models and endpoints."),
    "status": ("servion.cli.endpoints", "status", "Deployed endpoints and their readiness."),
    "tokens": ("servion.cli.tokens", "tokens", "Create, list and revoke admin API tokens."),
    "top": ("servion.cli.top", "top", "Live requests, latency and queues of a server."),
    "undeploy": ("servion.cli.endpoints", "undeploy", "Stop serving an endpoint."),
    "verify": ("servion.cli.deploy", "verify", "Check an endpoint after a change."),
}


def _set_home(ctx: click.Context, _: click.Parameter, value: Path | None) -> None:
    if value is not None:
        from servion.cli.common import Context

        obj = ctx.find_object(Context)
        if obj is not None:
            obj.home = value


def _with_home(command: click.Command) -> None:
    """Let ``--home`` follow the subcommand too (``servion models list --home DIR``)."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _with_home(sub)
        return
    if any(p.name == "home" for p in command.params):
        return
    command.params.append(
        click.Option(
            ["--home"],
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            expose_value=False,
            is_eager=True,
            callback=_set_home,
            help="Registry home (default: $SERVION_HOME or ./.servion).",
        )
    )


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
        _with_home(command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="servion")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Registry home (default: $SERVION_HOME or ./.servion); also after the command.",
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
