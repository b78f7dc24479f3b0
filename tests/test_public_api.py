"""The public API is small, sorted, and importable without side effects."""

from __future__ import annotations

import logging
import subprocess
import sys

import servion


def test_all_is_sorted_and_importable() -> None:
    assert servion.__all__ == sorted(servion.__all__)
    for name in servion.__all__:
        assert getattr(servion, name) is not None
    assert len(servion.__all__) <= 15


def test_import_has_no_side_effects() -> None:
    code = (
        "import logging, os; before = dict(os.environ); import servion; "
        "assert not logging.getLogger('servion').handlers; "
        "assert not logging.getLogger().handlers; assert dict(os.environ) == before"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not logging.getLogger("servion").handlers


def test_settings_take_any_database_url(tmp_path: object) -> None:
    from pathlib import Path

    home = Path(str(tmp_path))
    settings = servion.Settings.load(home=home, db_url=f"sqlite:///{home}/elsewhere.db")
    registry = servion.ModelRegistry(settings)
    registry.close()
    assert (home / "elsewhere.db").exists()
