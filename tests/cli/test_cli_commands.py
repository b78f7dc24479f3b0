"""The servion command, run as a real process: exit codes, tables, JSON."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TabularModels, cli


def test_register_list_show_delete(tmp_path: Path, tabular: TabularModels) -> None:
    home = tmp_path / "home"
    done = cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0")
    assert done.returncode == 0, done.stderr
    assert "registered tabular:v1.0.0" in done.stdout and "input  X: FP32 [-1, 32]" in done.stdout
    listed = cli(home, "models", "list")
    assert listed.returncode == 0
    assert "tabular" in listed.stdout and "latest:1" in listed.stdout
    as_json = json.loads(cli(home, "models", "list", "--json").stdout)
    assert [(m["name"], m["version"]) for m in as_json] == [("tabular", "v1.0.0")]
    shown = json.loads(cli(home, "models", "show", "tabular:v1.0.0", "--json").stdout)
    assert shown["signature"]["inputs"][0]["name"] == "X"
    assert "sha256" in cli(home, "models", "show", "tabular").stdout
    assert cli(home, "models", "policy", "tabular", "all").returncode == 0
    assert cli(home, "models", "delete", "tabular:v1.0.0").returncode == 0
    assert "no models registered" in cli(home, "models", "list").stdout


def test_refusals_exit_2_with_a_precise_message(tmp_path: Path, tabular: TabularModels) -> None:
    home = tmp_path / "home"
    cases = [
        (("register", "x", str(tabular.onnx), "--version", "v1.0.0"), "invalid model name"),
        (("register", "tabular", str(tabular.onnx), "--version", "1.0"), "invalid version"),
        (
            ("register", "tabular", str(tmp_path / "nope.onnx"), "--version", "v1.0.0"),
            "no such file",
        ),
        (
            (
                "register",
                "tabular",
                str(tabular.onnx),
                "--version",
                "v1.0.0",
                "--checksum",
                "f" * 64,
            ),
            "not the expected",
        ),
        (("models", "show", "missing"), "unknown model"),
        (("models", "delete", "tabular"), "NAME:VERSION"),
        (("models", "policy", "tabular", "newest"), "invalid version policy"),
    ]
    for args, words in cases:
        done = cli(home, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert words in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    dup = cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0")
    assert dup.returncode == 2 and "already registered" in dup.stderr
    later = [
        (
            ("register", "tabular", str(tabular.onnx), "--version", "v99999999999999999999.0.0"),
            "numbers of up to 9 digits",
        ),
        (("register", "tabular", str(tabular.onnx), "--version", "v01.0.0"), "no leading zeros"),
        (("register", "tabular", str(tabular.onnx), "--version", "v\uff11.0.0"), "invalid version"),
        (
            ("register", "tabular", str(tabular.onnx), "--version", "v\u0661.\u0660.\u0660"),
            "invalid version",
        ),
        (
            ("models", "policy", "tabular", "specific:v1.0.0,v9.9.9"),
            "names v9.9.9, which 'tabular' does not have (it has v1.0.0)",
        ),
        (("serve", "--port", "70000"), "70000 is not in the range 0<=x<=65535"),
    ]
    for args, words in later:
        done = cli(home, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert words in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert cli(home, "models", "policy", "tabular", "specific:v1.0.0").returncode == 0


def test_register_with_sample_file(tmp_path: Path, tabular: TabularModels) -> None:
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps({"X": tabular.x[:2].tolist()}))
    done = cli(
        tmp_path / "home",
        "register",
        "tabular",
        str(tabular.onnx),
        "--version",
        "v1.0.0",
        "--sample",
        str(sample),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == "v1.0.0"
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    done = cli(
        tmp_path / "home",
        "register",
        "tabular",
        str(tabular.onnx),
        "--version",
        "v1.0.1",
        "--sample",
        str(bad),
    )
    assert done.returncode == 2 and "sample" in done.stderr


def test_token_secret_alone_on_stdout_and_policy_shown(
    tmp_path: Path, tabular: TabularModels
) -> None:
    home = tmp_path / "home"
    created = cli(home, "tokens", "create", "--role", "viewer", "--name", "ci-bot")
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("\n") == 1 and created.stdout.startswith("svt_")
    assert "keep it, it is not shown again" in created.stderr
    for version in ("v1.0.0", "v1.1.0"):
        assert (
            cli(home, "register", "tabular", str(tabular.onnx), "--version", version).returncode
            == 0
        )
    shown = cli(home, "models", "policy", "tabular")
    assert shown.returncode == 0 and shown.stdout.strip() == "tabular: latest:1 (selects v1.1.0)"
    both = cli(home, "models", "policy", "tabular", "latest:2")
    assert both.stdout.strip() == "tabular: serving latest:2 (selects v1.0.0, v1.1.0)"
    unknown = cli(home, "models", "policy", "nosuch")
    assert unknown.returncode == 2 and "unknown model 'nosuch'" in unknown.stderr
