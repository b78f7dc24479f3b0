"""The layering of docs/architecture.md is a contract the tests enforce: the real
source keeps it, and a wrong-way import added to a copy of it breaks it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "servion"
MAX_LINES = 400


def lint_imports(python_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    env = dict(os.environ)
    if python_path is not None:  # found before the installed package
        env["PYTHONPATH"] = str(python_path)
    return subprocess.run(
        [command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120
    )


def test_the_source_keeps_the_layers() -> None:
    done = lint_imports()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "wrong"),
    [
        ("routing/endpoint.py", "servion.deploy"),
        ("protocol/codec.py", "servion.server.app"),
        ("runtime/base.py", "servion.serving"),
    ],
    ids=["routing-to-deploy", "protocol-to-server", "runtime-to-serving"],
)
def test_a_wrong_way_import_breaks_the_contract(tmp_path: Path, module: str, wrong: str) -> None:
    copy = tmp_path / "servion"
    shutil.copytree(SOURCE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\nimport {wrong}  # the wrong way\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0, done.stdout
    importer = "servion." + module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> {wrong}" in done.stdout, done.stdout


def test_source_files_stay_small() -> None:
    """Split a module by concept before it grows past a reader's screenful or two."""
    long = {
        str(path.relative_to(SOURCE)): n
        for path in SOURCE.rglob("*.py")
        if "_pb2" not in path.name and (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long
