"""``servion deploy | diff | verify``: deployment commands spoken to a running server.

They (and ``status``, ``history``, ``rollback``, ``undeploy``, ``rollout``, ``ab``) talk
HTTP to ``--url`` (``$SERVION_URL``, default http://127.0.0.1:8080) with ``--token``
(``$SERVION_TOKEN``). A refusal by the server (4xx) exits 2 with its message; an
unreachable server exits 1.
"""

from __future__ import annotations

import difflib
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

from servion.cli.client import call, change_options, server_options
from servion.cli.common import Context, echo_json, open_registry, refusals_exit_2, table
from servion.errors import InvalidInput

PROBE = ("X-Servion-Probe", "verify")


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--schema", is_flag=True, help="Print the spec's JSON Schema and exit.")
@click.option(
    "--check",
    is_flag=True,
    help="Only check the spec, against the registry of --home (no server needed).",
)
@click.option(
    "--wait",
    is_flag=True,
    help="For a canary: wait for its outcome; exit 1 unless it is promoted (for CI).",
)
@click.option("--json", "as_json", is_flag=True)
@change_options
@click.pass_obj
@refusals_exit_2
def deploy(
    ctx: Context,
    spec: Path | None,
    schema: bool,
    check: bool,
    wait: bool,
    as_json: bool,
    url: str,
    token: str | None,
) -> None:
    """Apply a deployment spec (YAML) to the running server as a new revision."""
    from servion.deploy import Deployments, json_schema, parse_spec

    if schema:
        click.echo(json_schema(), nl=False)
        return
    if spec is None:
        raise click.UsageError("give a SPEC file (or --schema)")
    try:
        text = spec.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {spec}: {exc.strerror}") from None
    if check:
        registry = open_registry(ctx.settings)
        try:
            problems = Deployments(registry).problems(text, spec.name)
        finally:
            registry.close()
        if problems:
            for problem in problems:
                click.echo(f"error: {spec.name}: {problem}", err=True)
            sys.exit(2)
        click.echo(f"{spec.name}: valid spec for endpoint {parse_spec(text).endpoint!r}")
        return
    parse_spec(text, spec.name)
    answer = call(url, token, "POST", "/v2/admin/endpoints", text)
    if "state" in answer and wait:
        answer = _outcome(url, token, answer["endpoint"])
    if as_json:
        echo_json(answer)
    elif "state" in answer and wait:
        click.echo(f"canary rollout of {answer['canary']}: {answer['state']} ({answer['reason']})")
    elif "state" in answer:  # a canary: the server moves traffic step by step
        steps = ", ".join(f"{p:g}%" for p in answer["steps"])
        click.echo(
            f"canary rollout of {answer['canary']} on endpoint {answer['endpoint']} started:"
            f" steps {steps}; follow it with: servion rollout status {answer['endpoint']}"
        )
    if "state" in answer:
        if wait and answer["state"] != "promoted":
            sys.exit(1)
        return
    click.echo(
        f"endpoint {answer['endpoint']} revision {answer['revision']} serving in every worker"
        f" ({answer['applied_ms']:.0f} ms)"
    )


@click.command()
@click.argument("endpoint")
@click.option("--from", "from_", type=click.IntRange(1), help="Older revision (default: previous).")
@click.option("--to", type=click.IntRange(1), help="Newer revision (default: current).")
@click.option(
    "--spec",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Compare the current revision with this spec file instead.",
)
@server_options
@refusals_exit_2
def diff(
    endpoint: str,
    from_: int | None,
    to: int | None,
    spec: Path | None,
    url: str,
    token: str | None,
) -> None:
    """Show what changed between two revisions (or a spec file and the current one)."""
    from servion.deploy import parse_spec

    current = call(url, token, "GET", f"/v2/admin/endpoints/{endpoint}")
    new_rev = to or current["revision"]
    new = current if new_rev == current["revision"] else _revision(url, token, endpoint, new_rev)
    if spec is not None:
        old, new = new, {"revision": spec.name, "spec": parse_spec(spec.read_bytes()).to_dict()}
    else:
        old_rev = from_ or new_rev - 1
        if old_rev < 1:
            raise InvalidInput(f"endpoint {endpoint!r} has only revision {new_rev}")
        old = _revision(url, token, endpoint, old_rev)
    lines = difflib.unified_diff(
        _as_written(old["spec"]).splitlines(keepends=True),
        _as_written(new["spec"]).splitlines(keepends=True),
        fromfile=f"{endpoint} revision {old['revision']}",
        tofile=f"{endpoint} revision {new['revision']}" if spec is None else f"{new['revision']}",
    )
    text = "".join(lines)
    click.echo(text if text else "no differences", nl=not text)


def _as_written(spec: dict[str, Any]) -> str:
    """A spec as someone would write it: the settings it makes, not every default."""
    from servion.deploy import spec_from_dict

    return str(yaml.safe_dump(spec_from_dict(spec).written(), sort_keys=False))


def _outcome(url: str, token: str | None, endpoint: str) -> Any:
    """Follow a canary rollout until it ends; its final state."""
    while True:
        state = call(url, token, "GET", f"/v2/admin/endpoints/{endpoint}/rollout")
        if state["state"] not in ("running", "paused"):
            return state
        time.sleep(0.5)


def _revision(url: str, token: str | None, endpoint: str, number: int) -> Any:
    return call(url, token, "GET", f"/v2/admin/endpoints/{endpoint}/revisions/{number}")


@click.command()
@click.argument("endpoint")
@click.option("--duration", type=click.FloatRange(0.5, 600), default=3.0, show_default=True)
@click.option(
    "--accuracy",
    is_flag=True,
    help="Also score each arm made by servion optimize again on its recorded validation"
    " data, in this process, from the registry of --home (the server's).",
)
@click.option("--json", "as_json", is_flag=True)
@server_options
@click.pass_obj
@refusals_exit_2
def verify(
    ctx: Context,
    endpoint: str,
    duration: float,
    accuracy: bool,
    as_json: bool,
    url: str,
    token: str | None,
) -> None:
    """Check an endpoint after a change: artifact checksums, a smoke inference per arm,
    and a short load run through the endpoint (with --accuracy, the accuracy of optimized
    arms on their validation data). Exit 1 when something is wrong."""
    from servion.bench import LoadSpec, prepare_target, run_load
    from servion.errors import RuntimeFailure

    checks = call(url, token, "POST", f"/v2/admin/endpoints/{endpoint}/verify", b"")
    bench: dict[str, Any]
    try:
        # Checking traffic: answered by the models, never the cache, and kept out of the
        # counters a canary's gates read.
        # Inputs vary (64 bodies in turn), as live traffic does.
        target = prepare_target(url, endpoint, False, None, 10.0, headers=(PROBE,), variants=64)
        result = run_load(target, LoadSpec(concurrency=8, duration_s=duration, engine="python"))
        bench = {
            "rps": round(result.rps, 1),
            "p50_ms": round(result.latency.p50_ms, 3),
            "p99_ms": round(result.latency.p99_ms, 3),
            "errors": result.error_count,
        }
    except RuntimeFailure as exc:
        bench = {"error": exc.message}
    rechecks = _rechecks(ctx, [c["arm"] for c in checks["arms"]]) if accuracy else None
    ok = bool(checks["ok"]) and "error" not in bench and bench["errors"] == 0
    ok = ok and all(r["ok"] for r in rechecks or [])
    if as_json:
        echo_json(
            {**checks, "bench": bench, **({"accuracy": rechecks} if accuracy else {}), "ok": ok}
        )
    else:
        _print_verified(endpoint, checks, bench, duration, rechecks or [], ok)
    sys.exit(0 if ok else 1)


def _print_verified(
    endpoint: str,
    checks: dict[str, Any],
    bench: dict[str, Any],
    duration: float,
    rechecks: list[dict[str, Any]],
    ok: bool,
) -> None:
    rows = [(c["arm"], c["checksum"], c["smoke"], c.get("smoke_ms", "-")) for c in checks["arms"]]
    click.echo(f"endpoint {endpoint}, revision {checks['revision']}")
    click.echo(table(("ARM", "CHECKSUM", "SMOKE", "SMOKE MS"), rows))
    if "error" in bench:
        click.echo(f"bench: {bench['error']}")
    else:
        click.echo(
            f"bench ({duration:g} s, 8 connections): {bench['rps']:,.0f} req/s,"
            f" p50 {bench['p50_ms']:.2f} ms, p99 {bench['p99_ms']:.2f} ms,"
            f" {bench['errors']} errors"
        )
    for line in _recheck_lines(rechecks):
        click.echo(line)
    click.echo("verified" if ok else "NOT verified")


def _rechecks(ctx: Context, arms: list[str]) -> list[dict[str, Any]]:
    """Each arm's accuracy scored again (arms not made by servion optimize are skipped)."""
    from servion.optimize import recheck
    from servion.registry import ModelRegistry

    registry = ModelRegistry(ctx.settings)
    try:
        return [
            recheck(registry, *arm.split(":", 1)).to_dict()
            for arm in arms
            if registry.lineage.get(*arm.split(":", 1)) is not None
        ]
    finally:
        registry.close()


def _recheck_lines(rechecks: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rechecks:
        now = "-" if r["now"] is None else f"{r['now']:.4f}"
        verdict = "ok" if r["ok"] else f"FAILED: {r['failure']}"
        lines.append(
            f"accuracy {r['version']}: {r['metric']} {now} (recorded {r['recorded']:.4f},"
            f" source {r['source']:.4f}, limit {r['max_accuracy_drop']:g}) {verdict}"
        )
    return lines
