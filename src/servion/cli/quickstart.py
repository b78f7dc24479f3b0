"""``servion quickstart``: a real model, registered and served, with examples that work."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from servion.cli.common import Context, refusals_exit_2
from servion.cli.serve import server_options, with_server_overrides
from servion.demo import EXAMPLE_ROW, build_demo_model
from servion.errors import ModelNotFound
from servion.logs import configure_logging
from servion.registry import ModelRegistry, RegisterRequest
from servion.registry.hashing import sha256_file
from servion.server import serve as run_server

NAME, VERSION = "demo", "v1.0.0"


def examples(host: str, port: int | str) -> str:
    """The ready-to-paste client examples the quickstart prints."""
    url = f"http://{host}:{port}/v2/models/{NAME}/infer"
    row = ", ".join(str(v) for v in EXAMPLE_ROW)
    body = (
        f'{{"inputs": [{{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [{row}]}}]}}'
    )
    return f"""
Try it (in another terminal):

  curl -s -X POST {url} \\
       -H 'Content-Type: application/json' \\
       -d '{body}'

  python3 - <<'PY'
import json, urllib.request
body = {{"inputs": [{{"name": "input", "shape": [1, 4], "datatype": "FP32",
                    "data": [{row}]}}]}}
req = urllib.request.Request("{url}", data=json.dumps(body).encode(),
                             headers={{"Content-Type": "application/json"}})
print(json.load(urllib.request.urlopen(req))["outputs"])
PY

Any Open Inference Protocol client works too, e.g. tritonclient.http against {host}:{port}.
Stop the server with Ctrl-C.
"""


@click.command()
@server_options
@click.pass_obj
@refusals_exit_2
def quickstart(
    ctx: Context,
    /,
    port_file: Path | None,
    grpc_port_file: Path | None,
    **overrides: Any,
) -> None:
    """Build a demo model, register it as demo v1.0.0, serve it, print client examples."""
    configure_logging("WARNING")
    settings = with_server_overrides(ctx.settings, **overrides)
    registry = ModelRegistry(settings)
    model_file = build_demo_model(settings.home / "quickstart" / "demo.onnx")
    try:
        existing = registry.get(NAME, VERSION)
        if existing.sha256 != sha256_file(model_file):
            click.echo(f"note: {NAME}:{VERSION} is already registered with other bytes; serving it")
    except ModelNotFound:
        mv = registry.register(RegisterRequest(NAME, model_file, VERSION))
        click.echo(f"registered {mv.label} (sha256 {mv.sha256[:12]}...) in {settings.home}")
    registry.close()
    host = settings.server.host
    # Printed by the server once it answers ready: a port already taken fails first, and
    # a curl pasted the moment the text appears is answered.
    announce = f"serving on http://{host}:{{PORT}}\n" + examples(host, "{PORT}")
    sys.exit(run_server(settings, port_file, grpc_port_file, announce=announce))
