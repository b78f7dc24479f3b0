"""What a new user meets first: help that answers at once, --home anywhere, tables
rather than dicts, confirmation before deleting, every spec problem in one go."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

from conftest import TabularModels, cli, cli_on_terminal

HEAVY = ("servion.cli.deploy", "servion.registry", "sqlalchemy", "numpy", "pydantic", "yaml")


def imported(*args: str) -> set[str]:
    """The modules ``servion ARGS`` imports, read off ``python -X importtime``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "servion.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    return {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_help_and_server_commands_import_nothing_heavy() -> None:
    for args in (
        ("--help",),
        ("status", "--help"),
        ("optimize", "--help"),
        ("batch", "run", "--help"),
        ("history", "x", "--url", "http://127.0.0.1:9"),
        ("rollback", "x", "--url", "http://127.0.0.1:9"),
        ("status", "--url", "http://127.0.0.1:9"),
        ("drift", "report", "x", "--url", "http://127.0.0.1:9"),
    ):
        modules = imported(*args)
        assert "click" in modules, args  # the measurement itself works
        heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY)
        assert not heavy, (args, heavy)
    # Every command is listed with its summary, none of them imported to get it.
    listing = cli(Path("unused"), "--help").stdout
    for name in ("deploy", "rollback", "models", "quickstart", "verify"):
        assert f"  {name} " in listing


def test_home_is_taken_after_the_command_too(tmp_path: Path, tabular: TabularModels) -> None:
    home = tmp_path / "home"
    done = subprocess.run(
        [sys.executable, "-m", "servion.cli.main", "register", "tabular", str(tabular.onnx),
         "--version", "v1.0.0", "--home", str(home)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "servion.cli.main", "models", "list", "--home", str(home)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert "tabular" in listed.stdout and "v1.0.0" in listed.stdout
    elsewhere = cli(tmp_path / "other", "models", "list")
    assert "no models registered" in elsewhere.stdout
    # The one after the command wins over the one before it.
    after = cli(tmp_path / "other", "models", "list", "--home", str(home))
    assert "tabular" in after.stdout


def test_models_batching_shows_the_settings_in_effect(
    tmp_path: Path, tabular: TabularModels
) -> None:
    home = tmp_path / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    shown = cli(home, "models", "batching", "tabular")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[1].split() == ["SETTING", "VALUE", "FROM"]
    assert any(line.split()[:3] == ["max_batch_size", "128", "server"] for line in lines)
    assert "{" not in shown.stdout
    changed = cli(home, "models", "batching", "tabular", "--max-batch-size", "16")
    assert changed.returncode == 0, changed.stderr
    assert any(
        line.split() == ["max_batch_size", "16", "model"] for line in changed.stdout.splitlines()
    )
    as_json = json.loads(cli(home, "models", "batching", "tabular", "--json").stdout)
    assert as_json["own"] == {"max_batch_size": 16}
    assert as_json["effective"]["max_batch_size"] == 16
    assert as_json["effective"]["max_queue_size"] == 1024
    # models show has a header over every column
    table = cli(home, "models", "show", "tabular").stdout
    header = next(line for line in table.splitlines() if "TENSOR" in line)
    assert header.split() == ["ROLE", "TENSOR", "DATATYPE", "SHAPE"], table


def test_delete_asks_on_a_terminal(tmp_path: Path, tabular: TabularModels) -> None:
    home = tmp_path / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    kept = cli_on_terminal(home, "n\n", "models", "delete", "tabular:v1.0.0")
    assert kept.returncode == 1 and "Delete tabular:v1.0.0" in kept.stdout
    assert "cancelled" in kept.stderr
    assert "v1.0.0" in cli(home, "models", "list").stdout
    gone = cli_on_terminal(home, "", "models", "delete", "tabular:v1.0.0", "--yes")
    assert gone.returncode == 0 and "deleted tabular:v1.0.0" in gone.stdout
    assert "Delete" not in gone.stdout


def test_change_ticket_only_on_commands_that_change_something() -> None:
    home = Path("unused")
    for command in (("status",), ("history",), ("diff",), ("ab", "report"), ("rollout", "status")):
        assert "--change-ticket" not in cli(home, *command, "--help").stdout, command
    for command in (("deploy",), ("rollback",), ("undeploy",), ("rollout", "abort")):
        assert "--change-ticket" in cli(home, *command, "--help").stdout, command


def test_deploy_check_reports_every_problem_at_once(tmp_path: Path, tabular: TabularModels) -> None:
    home = tmp_path / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "endpoint: fraud-ep\n"
        "models:\n"
        "  - {model: tabular, version: v1.0.0, weight: 50}\n"
        "  - {model: frad, version: v1.0.0, weight: 40}\n"
        "shadow: []\n"
        "timeout_ms: -5\n"
    )
    done = cli(home, "deploy", "--check", str(spec))
    assert done.returncode == 2
    errors = done.stderr.splitlines()
    assert all(line.startswith("error: bad.yaml: ") for line in errors), errors
    text = done.stderr
    assert "shadow: unknown field (did you mean 'shadows'?)" in text
    assert "timeout_ms" in text
    assert "the weights sum to 90, not 100" in text
    assert "models[1]: 'frad:v1.0.0' is not a registered model version" in text
    assert len(errors) >= 4
    # Fields that parse: the cross-field and registry problems, all of them.
    spec.write_text(
        "endpoint: fraud-ep\n"
        "models:\n"
        "  - {model: tabular, version: v1.0.0, weight: 50}\n"
        "  - {model: tabular, version: v9.0.0, weight: 40}\n"
        "shadows: [{model: nosuch, version: v1.0.0}]\n"
    )
    done = cli(home, "deploy", "--check", str(spec))
    assert done.returncode == 2
    assert "the weights sum to 90, not 100" in done.stderr
    assert "'tabular:v9.0.0' is not a registered model version (tabular has v1.0.0)" in done.stderr
    spec.write_text(spec.read_text().replace("weight: 40", "weight: 50"))
    done = cli(home, "deploy", "--check", str(spec))
    assert done.returncode == 2 and "weights" not in done.stderr
    assert "tabular:v9.0.0" in done.stderr and "'nosuch:v1.0.0'" in done.stderr
    assert "no model 'nosuch' is registered" in done.stderr


def run_with_terminal_stderr(home: Path, *args: str) -> tuple[int, str, str]:
    """Run ``servion`` with stderr on a terminal (stdout piped); exit code, stdout, and
    what the terminal showed."""
    controller, terminal = pty.openpty()
    shown = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed: the command is done
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "servion.cli.main", "--home", str(home), *args],
            stdout=subprocess.PIPE,
            stderr=terminal,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=180,
        )
    finally:
        os.close(terminal)
        reader.join(10)
        os.close(controller)
    return done.returncode, done.stdout, shown.decode("utf-8", "replace")


def test_long_commands_show_progress_on_a_terminal_only(
    tmp_path: Path, tabular: TabularModels
) -> None:
    home = tmp_path / "home"
    code, out, shown = run_with_terminal_stderr(
        home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0"
    )
    assert code == 0 and "registered tabular:v1.0.0" in out
    assert "smoke inference" in shown and "done" in shown, shown
    assert "\x1b[" not in out  # the result on stdout stays plain
    code, out, shown = run_with_terminal_stderr(
        home, "profile", "tabular", "--duration", "0.05", "--max-batch-size", "4"
    )
    assert code == 0 and "batch" in out
    assert "profiling tabular:v1.0.0 at 3 batch sizes" in shown, shown
    # Piped: no progress at all.
    piped = cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.1.0")
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    piped = cli(home, "profile", "tabular", "--duration", "0.05", "--max-batch-size", "4")
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
