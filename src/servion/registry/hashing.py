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
            _check_member(path.lstat(), path, root)
            yield path


def _check_member(info: os.stat_result, path: Path, root: Path) -> None:
    rel = path.relative_to(root).as_posix()
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeArtifact(f"{quoted(rel)} in the model directory is not a regular file")
    if info.st_nlink > 1:
        # Its other names may be outside the folder (a hard link to any file the
        # registering user can read), and the bytes can change through them later.
        raise UnsafeArtifact(
            f"{quoted(rel)} in the model directory is a hard link ({info.st_nlink} names for"
            " one file): it may be a file outside the folder; copy it in instead"
        )


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
    """Copy regular, singly-linked files only (the checks in ``tree_files`` apply).

    Each file is checked again on the descriptor it is copied from: a name swapped
    for a link between the walk and the copy is refused, not followed.
    """
    # O_NONBLOCK: a name swapped for a FIFO must not hang the open.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    for path in tree_files(src):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, flags)
        except OSError:  # ELOOP, ENOENT: the name was replaced after the walk
            raise UnsafeArtifact(
                f"{quoted(path.relative_to(src).as_posix())} in the model directory changed"
                " while it was copied"
            ) from None
        with open(fd, "rb") as source:
            _check_member(os.fstat(fd), path, src)
            with target.open("wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
