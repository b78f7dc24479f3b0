"""Content-addressed artifact store: each artifact lives under its own SHA-256.

The same bytes registered twice are stored once. What is hashed is the copy
in the store, never the source, so a source changed mid-copy cannot slip a
different artifact past the recorded digest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from servion.errors import ChecksumMismatch
from servion.registry.hashing import CHUNK, copy_tree, sha256_artifact, sha256_tree, tree_files


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    """Where an artifact sits in the store and what it is."""

    sha256: str
    key: str
    """Path relative to the store root: ``<sha256>/artifact.ext`` or ``<sha256>/``."""
    size_bytes: int


def source_size(path: Path) -> int:
    """Bytes a file or directory holds (links and special files are refused)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in tree_files(path))
    return path.stat().st_size


class ArtifactStore:
    """Stores artifacts by content under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def put(self, source: Path) -> StoredArtifact:
        """Copy ``source`` in while hashing it; return where it landed."""
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            if source.is_dir():
                copy_tree(source, tmp / "tree")
                digest = sha256_tree(tmp / "tree")
                name = ""
                staged = tmp / "tree"
            else:
                name = "artifact" + source.suffix.lower()
                staged = tmp / name
                digest = _copy_hashing(source, staged)
            size = source_size(staged)
            final = self.root / digest
            if not final.exists():
                if source.is_dir():
                    os.replace(staged, final)
                else:
                    os.replace(tmp, final)
                    tmp = final  # moved whole; nothing left to clean
            return StoredArtifact(digest, f"{digest}/{name}", size)
        finally:
            if tmp.exists() and tmp.name.startswith(".incoming-"):
                shutil.rmtree(tmp, ignore_errors=True)

    def path(self, key: str) -> Path:
        return self.root / key

    def verify(self, key: str, expected: str, label: str) -> Path:
        """Re-hash a stored artifact; refuse it if its bytes changed since registration."""
        path = self.path(key)
        if not path.exists():
            raise ChecksumMismatch(f"the artifact of {label} is missing from the store")
        actual = sha256_artifact(path)
        if actual != expected:
            raise ChecksumMismatch(
                f"the artifact of {label} was modified after registration "
                f"(sha256 {actual[:12]}... != recorded {expected[:12]}...): refusing to load it"
            )
        return path

    def remove(self, sha256: str) -> None:
        shutil.rmtree(self.root / sha256, ignore_errors=True)


def _copy_hashing(source: Path, target: Path) -> str:
    digest = hashlib.sha256()
    with source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()
