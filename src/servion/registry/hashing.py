"""SHA-256 of artifacts, computed by streaming: a multi-GB model is never read whole."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from servion.errors import UnsafeArtifact, quoted

CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of one file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_files(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` in a stable order; links and special files are refused."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted([*filenames, *(d for d in dirnames if Path(dirpath, d).is_symlink())]):
            path = Path(dirpath, name)
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                rel = path.relative_to(root).as_posix()
                raise UnsafeArtifact(f"{quoted(rel)} in the model directory is not a regular file")
            yield path


def sha256_tree(root: Path) -> str:
    """Hex SHA-256 of a directory: of each file's relative path and SHA-256, in order."""
    digest = hashlib.sha256()
    for path in tree_files(root):
        digest.update(f"{path.relative_to(root).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def sha256_artifact(path: Path) -> str:
    """SHA-256 of a file, or of a directory tree."""
    return sha256_tree(path) if path.is_dir() else sha256_file(path)


def copy_tree(src: Path, dst: Path) -> None:
    """Copy regular files only (the checks in ``tree_files`` apply)."""
    for path in tree_files(src):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
