"""``servion drift reference|thresholds|report``: a version's drift reference, a model's
thresholds, and what a running server found."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from servion.cli.client import call, server_options
from servion.cli.common import Context, audited_change, echo_json, refusals_exit_2, table
from servion.cli.quality import quality
from servion.errors import InvalidInput, ModelNotFound

if TYPE_CHECKING:  # the registry and audit (sqlalchemy, pydantic): only where used
    from servion.registry import ModelRegistry


def store_reference(registry: ModelRegistry, name: str, version: str, path: Path) -> int:
    """Profile ``path`` (and the version's outputs for it) as the version's reference; the
    number of features profiled."""
    from servion.drift.reference import profile_from_file

    mv = registry.get(name, version)
    runtime = registry.open_runtime(mv)
    try:
        profile = profile_from_file(path, mv.signature, runtime.predict)
    finally:
        runtime.unload()
    registry.drift.put_profile(name, version, profile, replace=True)
    return len(profile["inputs"]) + len(profile["outputs"])


@click.group()
def drift() -> None:
    """Drift references, thresholds and reports."""


@drift.command()
@click.argument("ref", metavar="MODEL:VERSION")
@click.argument("path", type=click.Path(path_type=Path))
@click.pass_obj
@refusals_exit_2
def reference(ctx: Context, ref: str, path: Path) -> None:
    """Set or replace a version's reference from FILE (.npz, .csv or .parquet)."""
    from servion.registry import parse_ref

    name, version = parse_ref(ref)
    if version is None:
        raise InvalidInput("name the version: MODEL:VERSION")
    fields = {"model_name": name, "model_version": version, "resources": {"file": path.name}}
    with audited_change(ctx, "drift_reference", **fields) as (registry, op):
        features = store_reference(registry, name, version, path)
        op.resources_affected = [f"model:{name}:{version}"]
    click.echo(f"drift reference of {name}:{version} set from {path.name} ({features} features)")


@drift.command()
@click.argument("model")
@click.option("--psi", type=click.FloatRange(min=0, min_open=True), required=True)
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), required=True)
@click.pass_obj
@refusals_exit_2
def thresholds(ctx: Context, model: str, psi: float, alpha: float) -> None:
    """A feature of MODEL drifts when its PSI exceeds --psi and its test's p-value is below
    --alpha (servers apply it from their next window)."""
    resources = {"psi": psi, "alpha": alpha}
    change = audited_change(ctx, "drift_thresholds", model_name=model, resources=resources)
    with change as (registry, op):
        if not registry.list_versions(model):
            raise ModelNotFound(model)
        registry.drift.set_thresholds(model, psi, alpha)
        op.resources_affected = [f"model:{model}"]
    click.echo(f"drift thresholds of {model}: PSI > {psi:g} and p < {alpha:g}")


def check_plot_file(path: Path) -> None:
    """Refuse, before asking the server anything, a plot that could not be written."""
    if path.suffix.lower() != ".png":
        raise InvalidInput(f"--plot {path}: the plot is a PNG; name a file ending in .png")
    if path.is_dir():
        raise InvalidInput(f"--plot {path}: that is a folder; name a file in it")
    folder = path.parent
    if not folder.is_dir():
        raise InvalidInput(f"--plot {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InvalidInput(f"--plot {path}: permission denied, cannot write there")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InvalidInput("--plot needs matplotlib: pip install 'servion[drift]'") from None


def write_plot(name: str, ref: str, windows: list[dict[str, Any]], path: Path) -> int:
    """Draw ``windows`` into ``path``; the number of features drawn."""
    from servion.drift.plot import plot

    if not windows:
        click.echo(f"error: no drift window judged yet for {ref}: nothing to plot", err=True)
        sys.exit(1)
    try:
        drawn = plot(name, windows, path)
    except OSError as exc:
        raise InvalidInput(f"--plot {path}: cannot write it: {exc.strerror or exc}") from None
    if not drawn:
        raise InvalidInput(
            f"the drift windows of {ref} carry no histograms (a server older than this client?)"
        )
    return drawn


@drift.command()
@click.argument("ref", metavar="MODEL[:VERSION]")
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
@click.option(
    "--plot",
    "plot_file",
    type=click.Path(path_type=Path),
    help="Also draw reference against live histograms of the worst features into FILE.png.",
)
@server_options
@refusals_exit_2
def report(ref: str, as_json: bool, plot_file: Path | None, url: str, token: str | None) -> None:
    """Each feature of the last window, highest PSI first, drifted ones flagged."""
    if plot_file is not None:
        check_plot_file(plot_file)
    name, _, version = ref.partition(":")  # the server checks them
    path = f"/v2/admin/models/{name}" + (f"/versions/{version}" if version else "") + "/drift"
    answer = call(url, token, "GET", path)
    drawn = 0 if plot_file is None else write_plot(name, ref, answer["versions"], plot_file)
    if as_json:
        echo_json(answer)
        return
    if not answer["versions"]:
        click.echo(f"no drift window judged yet for {ref} (is a reference set, and traffic?)")
        return
    _print_windows(name, answer["versions"])
    if plot_file is not None:
        click.echo(f"wrote {plot_file}: reference and live histograms of {drawn} features")


def _print_windows(name: str, windows: list[dict[str, Any]]) -> None:
    for window in windows:
        drifted = sum(f["drifted"] for f in window["features"])
        click.echo(
            f"{name}:{window['version']}  {window['rows']} rows  reference {window['reference']}"
            f"  {drifted} drifted (PSI > {window['thresholds']['psi']:g}"
            f" and p < {window['thresholds']['alpha']:g})"
        )
        rows = [
            (
                f["feature"],
                f["source"],
                f"{f['psi']:.4f}",
                f"{f['pvalue']:.3g}",
                "DRIFT" if f["drifted"] else "",
            )
            for f in sorted(window["features"], key=lambda f: -f["psi"])
        ]
        click.echo(table(["FEATURE", "SOURCE", "PSI", "P-VALUE", ""], rows))


drift.add_command(quality)
