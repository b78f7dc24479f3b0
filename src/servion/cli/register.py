"""``servion register NAME PATH --version vX.Y.Z``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click
import numpy as np
import orjson

from servion.audit import Auditor
from servion.cli.common import (
    Context,
    echo_json,
    human_bytes,
    mlflow_origin,
    open_registry,
    refusals_exit_2,
)
from servion.cli.progress import steps
from servion.errors import ValidationFailed
from servion.registry import ModelRegistry, RegisterRequest
from servion.runtime import FORMATS
from servion.types import Arrays


def load_sample(path: Path) -> Arrays:
    """Read a smoke-test sample: ``.npz`` arrays, or JSON ``{"input_name": nested list}``."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ValidationFailed(f"sample file {path.name!r} does not exist") from None
    except (ValueError, OSError) as exc:
        raise ValidationFailed(f"cannot read sample file {path.name!r}: {exc}") from None
    if isinstance(raw, dict) and isinstance(raw.get("inputs"), dict):
        raw = raw["inputs"]
    if not isinstance(raw, dict) or not raw:
        raise ValidationFailed('a JSON sample must be {"input_name": [[...]], ...}')
    try:
        return {str(k): np.asarray(v) for k, v in raw.items()}
    except ValueError as exc:
        raise ValidationFailed(f"sample arrays are not rectangular: {exc}") from None


def _key_values(pairs: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValidationFailed(f"--option {pair!r} is not KEY=VALUE")
        if key.strip() in found:
            raise ValidationFailed(f"--option {key.strip()!r} is given twice")
        found[key.strip()] = value.strip()
    return found


def _with_reference(registry: ModelRegistry, name: str, version: str, path: Path) -> None:
    from servion.cli.drift import store_reference

    try:
        store_reference(registry, name, version, path)
    except ValidationFailed as exc:
        raise ValidationFailed(
            f"{name}:{version} is registered, but its drift reference was refused:"
            f" {exc.message}; set one with: servion drift reference {name}:{version} FILE"
        ) from None


@click.command()
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--version", "version", required=True, help="Semantic version, e.g. v1.0.0.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(sorted(FORMATS)),
    default=None,
    help="Artifact format (default: from the extension).",
)
@click.option("--checksum", default=None, help="Expected SHA-256 of the file (hex).")
@click.option(
    "--sample",
    type=click.Path(path_type=Path),
    default=None,
    help="Inputs for the smoke inference (.npz or JSON); default: generated.",
)
@click.option(
    "--allow-large",
    "large_reason",
    default=None,
    metavar="REASON",
    help="Admit a model over the size limit; the reason is recorded.",
)
@click.option("--trust-code", is_flag=True, help="Allow a custom Python model (runs its code).")
@click.option(
    "--option",
    "runtime_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A runtime option, repeatable (PyTorch: device=cpu|cuda:N, precision=fp16|bf16,"
    " warmup=1,8,32).",
)
@click.option(
    "--allow-signature-change",
    is_flag=True,
    help="Serve it under latest:N even if its inputs or outputs differ from the served version.",
)
@click.option(
    "--reference",
    type=click.Path(path_type=Path),
    default=None,
    help="Data the model was trusted on (.npz, .csv or .parquet): its drift reference.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the recorded version as JSON.")
@click.pass_obj
@refusals_exit_2
def register(
    ctx: Context,
    name: str,
    path: Path,
    version: str,
    fmt: str | None,
    checksum: str | None,
    sample: Path | None,
    large_reason: str | None,
    trust_code: bool,
    runtime_options: tuple[str, ...],
    allow_signature_change: bool,
    reference: Path | None,
    as_json: bool,
) -> None:
    """Validate, store and record a model file or directory as NAME at --version.

    A folder with an MLmodel file is an MLflow model: the flavor servion serves is
    taken from it, and the MLflow run it came from is recorded."""
    if reference is not None and importlib.util.find_spec("scipy") is None:
        raise ValidationFailed("--reference needs scipy: pip install 'servion[drift]'")
    registry: ModelRegistry = open_registry(ctx.settings)
    audit = Auditor(ctx.settings)
    try:
        with (
            audit.operation(
                "register", model_name=name, model_version=version, rollback_available=False
            ) as op,
            steps(f"registering {name}:{version}") as step,
        ):
            mv = registry.register(
                RegisterRequest(
                    name=name,
                    path=path,
                    version=version,
                    format=fmt,
                    checksum=checksum,
                    sample=load_sample(sample) if sample else None,
                    large_reason=large_reason,
                    trust_code=trust_code,
                    runtime_options=_key_values(runtime_options),
                    allow_signature_change=allow_signature_change,
                ),
                on_step=step,
            )
            op.resources_affected = [f"model:{mv.label}", f"artifact:{mv.sha256}"]
        if reference is not None:
            _with_reference(registry, mv.name, mv.version, reference)
    finally:
        registry.close()
        audit.close()
    if mv.held:
        click.echo(
            f"warning: {mv.label} is registered but not served yet: {mv.held}. Callers of"
            f" /v2/models/{mv.name} would have to change their requests. Serve it with:"
            f" servion models confirm {mv.label} (or name it in an explicit version policy)",
            err=True,
        )
    if as_json:
        echo_json(mv.to_dict())
        return
    click.echo(
        f"registered {mv.label} ({mv.format}, {human_bytes(mv.size_bytes)}, sha256 {mv.sha256})"
    )
    if mv.mlflow is not None:
        click.echo(f"  from MLflow: {mlflow_origin(mv.mlflow)}")
    for spec in mv.signature.inputs:
        click.echo(f"  input  {spec.name}: {spec.datatype} {list(spec.shape)}")
    for spec in mv.signature.outputs:
        click.echo(f"  output {spec.name}: {spec.datatype} {list(spec.shape)}")
