"""The audit trail from real commands and a real server: pairs of events for register,
delete, tokens, deploy and rollback; the production policy; ``servion audit``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from conftest import Collector, TabularModels, cli, start_server
from servion.audit import read_events


def events(home: Path) -> list[dict[str, Any]]:
    return list(read_events(home / "audit"))


def wait_for(home: Path, operation: str, outcome: str, count: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [e for e in events(home) if (e["operation"], e["outcome"]) == (operation, outcome)]
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {operation} {outcome} event in {events(home)}")


def test_operations_leave_paired_events(tmp_path: Path, tabular: TabularModels) -> None:
    home = tmp_path / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.1.0").returncode == 0
    )
    refused = cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.1.0")
    assert refused.returncode == 2
    created = cli(home, "tokens", "create", "--role", "deployer", "--name", "release-bot")
    token = created.stdout.strip().splitlines()[-1]
    registered = [e for e in events(home) if e["operation"] == "register"]
    assert [e["outcome"] for e in registered] == ["started", "success"] * 2 + ["started", "failure"]
    assert registered[-1]["error_detail"]["type"] == "DuplicateVersion"
    assert registered[1]["resources_affected"][0] == "model:tabular:v1.0.0"
    assert {e["operation"] for e in events(home)} >= {"register", "token_create"}

    server = start_server(home, tmp_path, "--workers", "1")
    try:
        auth = {"authorization": f"Bearer {token}"}

        def post(path: str, body: str = "", ticket: str | None = None) -> httpx.Response:
            headers = {**auth, **({"x-servion-change-ticket": ticket} if ticket else {})}
            return httpx.post(f"{server.url}/v2/admin{path}", content=body, headers=headers)

        spec = {"endpoint": "fraud", "environment": "production"}
        first = json.dumps({**spec, "models": [{"model": "tabular", "version": "v1.0.0"}]})
        second = json.dumps({**spec, "models": [{"model": "tabular", "version": "v1.1.0"}]})
        no_ticket = post("/endpoints", first)
        assert no_ticket.status_code == 400
        assert "deploy in production needs a change ticket" in no_ticket.json()["error"]
        assert post("/endpoints", first, "CHG-100").status_code == 200
        assert post("/endpoints", second, "CHG-101").status_code == 200
        assert post("/endpoints/fraud/rollback", "", None).status_code == 400
        assert post("/endpoints/fraud/rollback", "", "CHG-102").status_code == 200
        # A canary spec that leaves its environment out is still a change to production.
        canary = {
            "endpoint": "fraud",
            "models": [{"model": "tabular", "version": "v1.1.0"}],
            "rollout": {"steps": [50, 100]},
        }
        unticketed = post("/endpoints", json.dumps(canary))
        assert unticketed.status_code == 400
        assert "needs a change ticket" in unticketed.json()["error"]
        dev = json.dumps(
            {"endpoint": "sandbox", "models": [{"model": "tabular", "version": "v1.0.0"}]}
        )
        assert post("/endpoints", dev).status_code == 200
        for verb in ("unload", "load"):
            reply = httpx.post(f"{server.url}/v2/repository/models/tabular/{verb}", headers=auth)
            assert reply.status_code == 200
        deploys = wait_for(home, "deploy", "success", 3)
        assert wait_for(home, "load", "success")[0]["user"] == "token:release-bot"
        assert wait_for(home, "unload", "success")[0]["model_name"] == "tabular"
        failures = wait_for(home, "deploy", "failure")
        rollbacks = wait_for(home, "rollback", "success")
    finally:
        server.stop()
    assert failures[0]["error_detail"]["message"].startswith("deploy in production needs")
    assert failures[0]["change_ticket"] is None and failures[0]["user"] == "token:release-bot"
    by_ticket = {e["change_ticket"]: e for e in deploys}
    second_deploy = by_ticket["CHG-101"]
    assert second_deploy["model_version"] == "v1.1.0"
    assert second_deploy["previous_version"] == "v1.0.0"
    assert second_deploy["deployment_strategy"] == "blue_green"
    assert second_deploy["rollback_available"] is True
    assert second_deploy["environment"] == "production"
    assert second_deploy["resources_affected"] == ["endpoint:fraud", "tabular:v1.1.0"]
    assert second_deploy["performance_metrics"]["applied_ms"] > 0
    assert "recorded (environment production)" in second_deploy["policy"]
    sandbox = by_ticket[None]
    assert sandbox["policy"] == "change ticket check skipped (environment dev)"
    assert rollbacks[0]["change_ticket"] == "CHG-102"
    started = [e for e in events(home) if e["operation_id"] == second_deploy["operation_id"]]
    assert [e["outcome"] for e in started] == ["started", "success"]

    shown = cli(home, "audit", "--operation", "deploy", "--outcome", "success", "--json")
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert len(lines) == 3
    table = cli(home, "audit", "--model", "tabular", "--since", "1h")
    assert table.returncode == 0 and "CHG-101" in table.stdout and "register" in table.stdout
    assert cli(home, "models", "policy", "tabular", "all").returncode == 0
    changed = [e for e in events(home) if e["operation"] == "config_change"]
    assert [e["outcome"] for e in changed] == ["started", "success"]
    assert changed[1]["resources"] == {"version_policy": "all"}
    # Events about an endpoint carry its name in a field of their own and are found by it,
    # whatever model its arms serve.
    assert second_deploy["endpoint"] == "fraud" and sandbox["endpoint"] == "sandbox"
    about = cli(home, "audit", "--endpoint", "sandbox", "--json")
    found = [json.loads(line) for line in about.stdout.splitlines()]
    assert {e["operation"] for e in found} == {"deploy"} and len(found) == 2
    by_model = cli(home, "audit", "--model", "sandbox", "--json").stdout.splitlines()
    assert len(by_model) == 2
    assert all(e["endpoint"] is None for e in registered)
    bad = cli(home, "audit", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_a_server_forwards_its_events(tmp_path: Path, tabular: TabularModels) -> None:
    collector = Collector()
    home = tmp_path / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    url = f"http://127.0.0.1:{collector.port}/_bulk"
    server = start_server(home, tmp_path, "--workers", "1", env={"SERVION_AUDIT_FORWARD_URL": url})
    try:
        spec = json.dumps(
            {"endpoint": "fwd", "models": [{"model": "tabular", "version": "v1.0.0"}]}
        )
        assert httpx.post(f"{server.url}/v2/admin/endpoints", content=spec).status_code == 200
        deadline = time.monotonic() + 20
        # The register events written by the CLI before the server started go too.
        while len(collector.docs) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        server.stop()
        collector.stop()
    operations = sorted((d["operation"], d["outcome"]) for d in collector.docs.values())
    assert operations == [
        ("deploy", "started"),
        ("deploy", "success"),
        ("register", "started"),
        ("register", "success"),
    ]
