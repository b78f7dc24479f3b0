"""``servion drift report --plot``: a file it could not write, or a missing matplotlib, is
refused with exit 2 before any server is asked (none listens at the URL given here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli

NOWHERE = "http://127.0.0.1:9"


def plot(home: Path, target: Path | str) -> subprocess.CompletedProcess[str]:
    return cli(home, "drift", "report", "m:v1.0.0", "--url", NOWHERE, "--plot", str(target))


def test_a_plot_file_that_cannot_be_written_exits_2_with_the_reason(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (tmp_path / "taken.png").mkdir()
    cases = [
        (tmp_path / "drift.jpg", "the plot is a PNG; name a file ending in .png"),
        (tmp_path / "drift", "the plot is a PNG; name a file ending in .png"),
        (tmp_path / "missing" / "drift.png", f"the folder {tmp_path / 'missing'} does not exist"),
        (tmp_path / "taken.png", "that is a folder; name a file in it"),
    ]
    for target, words in cases:
        done = plot(home, target)
        assert done.returncode == 2, (target, done.stdout, done.stderr)
        assert done.stderr == f"error: --plot {target}: {words}\n"
        assert not done.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any permission")
def test_a_folder_without_write_permission_exits_2(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    done = plot(tmp_path / "home", locked / "drift.png")
    assert done.returncode == 2
    assert "permission denied, cannot write there" in done.stderr


def test_without_matplotlib_the_plot_names_the_extra(tmp_path: Path) -> None:
    # A stand-in that fails to import, as an uninstalled matplotlib would.
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'matplotlib'\")\n")
    path = os.pathsep.join([str(shadow.parent), *sys.path])
    command = ["drift", "report", "m", "--url", NOWHERE, "--plot", str(tmp_path / "d.png")]
    done = subprocess.run(
        [sys.executable, "-m", "servion.cli.main", "--home", str(tmp_path / "home"), *command],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == "error: --plot needs matplotlib: pip install 'servion[drift]'\n"
    assert not (tmp_path / "d.png").exists()
