"""A new version whose signature differs from the served one is registered but held:
``latest:N`` keeps serving the old version until the operator confirms the change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from conftest import TabularModels, cli, start_server, wait_until

ROW = [0.25] * 32


def index(url: str) -> dict[str, dict[str, Any]]:
    entries = httpx.post(f"{url}/v2/repository/index", json={}).json()
    return {e["version"]: e for e in entries if e["name"] == "tabular"}


def served_inputs(url: str) -> tuple[list[str], list[str]]:
    meta = httpx.get(f"{url}/v2/models/tabular").json()
    return meta["versions"], [t["name"] for t in meta["inputs"]]


def test_a_signature_change_waits_for_confirmation(tmp_path: Path, tabular: TabularModels) -> None:
    home = tmp_path / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    server = start_server(home, tmp_path, "--workers", "1")
    try:
        changed = cli(home, "register", "tabular", str(tabular.joblib), "--version", "v2.0.0")
        assert changed.returncode == 0, changed.stderr
        assert "warning: tabular:v2.0.0 is registered but not served yet" in changed.stderr
        assert "has no input 'X', unlike tabular:v1.0.0" in changed.stderr
        assert "servion models confirm tabular:v2.0.0" in changed.stderr
        # The server has seen v2.0.0 (it is in the index) and still serves v1.0.0.
        wait_until(lambda: "v2.0.0" in index(server.url), 20, "v2.0.0 in the index")
        assert "held" in index(server.url)["v2.0.0"]["reason"]
        assert served_inputs(server.url) == (["v1.0.0"], ["X"])
        body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": ROW}]}
        assert httpx.post(f"{server.url}/v2/models/tabular/infer", json=body).status_code == 200
        listed = cli(home, "models", "list").stdout
        assert any("v2.0.0" in line and "(held)" in line for line in listed.splitlines())
        assert "selects v1.0.0" in cli(home, "models", "policy", "tabular").stdout

        confirmed = cli(home, "models", "confirm", "tabular:v2.0.0")
        assert confirmed.returncode == 0, confirmed.stderr
        assert "selects v2.0.0" in confirmed.stdout
        wait_until(lambda: served_inputs(server.url)[0] == ["v2.0.0"], 30, "v2.0.0 served")
        assert served_inputs(server.url)[1] == ["input"]

        # The operator may say so at registration: served at once, no warning.
        allowed = cli(
            home, "register", "tabular", str(tabular.onnx), "--version", "v3.0.0",
            "--allow-signature-change",
        )  # fmt: skip
        assert allowed.returncode == 0 and "warning" not in allowed.stderr, allowed.stderr
        wait_until(lambda: served_inputs(server.url) == (["v3.0.0"], ["X"]), 30, "v3.0.0")
        # The same signature: nothing to hold.
        same = cli(home, "register", "tabular", str(tabular.onnx), "--version", "v3.1.0")
        assert same.returncode == 0 and "warning" not in same.stderr
    finally:
        server.stop()
    not_held = cli(home, "models", "confirm", "tabular:v3.1.0")
    assert not_held.returncode == 2 and "is not held" in not_held.stderr
    missing = cli(home, "models", "confirm", "tabular:v9.0.0")
    assert missing.returncode == 2 and "unknown" in missing.stderr
    no_version = cli(home, "models", "confirm", "tabular")
    assert no_version.returncode == 2 and "NAME:VERSION" in no_version.stderr


def test_an_explicit_policy_serves_a_held_version(tmp_path: Path, tabular: TabularModels) -> None:
    home = tmp_path / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    held = cli(home, "register", "tabular", str(tabular.joblib), "--version", "v2.0.0")
    assert "not served yet" in held.stderr
    assert "selects v1.0.0" in cli(home, "models", "policy", "tabular").stdout
    chosen = cli(home, "models", "policy", "tabular", "specific:v2.0.0")
    assert chosen.returncode == 0 and "selects v2.0.0" in chosen.stdout
    every = cli(home, "models", "policy", "tabular", "all")
    assert "selects v1.0.0, v2.0.0" in every.stdout
    two = cli(home, "models", "policy", "tabular", "latest:2")
    assert "selects v1.0.0" in two.stdout and "v2.0.0" not in two.stdout
