"""Registry backup and restore: the metadata database and the artifacts it refers to.

A backup is a gzipped tar holding ``registry.db`` (taken with SQLite's online
backup, so it is consistent while a server writes), ``artifacts/`` (the stored
artifacts that snapshot refers to: content-addressed and never rewritten, so
copying them after the snapshot is safe) and ``manifest.json``. A restore goes
into an empty home, through the same safe extractor as model archives, and
re-verifies every artifact's checksum before it reports success.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from servion._version import __version__
from servion.config import Settings
from servion.errors import ConfigError, InvalidInput, ServionError, quoted
from servion.registry.archive import extract_archive
from servion.state import utcnow

FORMAT = 1


def _sqlite_path(settings: Settings) -> Path:
    prefix = "sqlite:///"
    if not settings.db_url.startswith(prefix):
        raise ConfigError(
            "registry backup covers the embedded SQLite registry; back up a database at"
            " another URL with that database's own tools"
        )
    return Path(settings.db_url[len(prefix) :])


def backup(settings: Settings, target: Path) -> dict[str, Any]:
    """Write a consistent snapshot of the registry to ``target`` (a .tar.gz)."""
    source = _sqlite_path(settings)
    if not source.exists():
        raise InvalidInput(f"there is no registry at {settings.home}")
    if target.exists() and target.is_dir():
        raise InvalidInput(f"{quoted(str(target))} is a folder: name the backup file")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".servion-backup.") as tmp:
        snapshot = Path(tmp) / "registry.db"
        src = sqlite3.connect(source)
        dst = sqlite3.connect(snapshot)
        try:
            src.backup(dst)  # a consistent copy, even with a server writing
        finally:
            dst.close()
            src.close()
        with contextlib.closing(sqlite3.connect(snapshot)) as conn:
            rows = conn.execute(
                "SELECT name, version, artifact, sha256 FROM model_versions"
            ).fetchall()
        artifacts = sorted({row[2] for row in rows})
        manifest = {
            "format": FORMAT,
            "servion": __version__,
            "created_at": utcnow(),
            "versions": [f"{r[0]}:{r[1]}" for r in rows],
            "artifacts": artifacts,
        }
        partial = Path(tmp) / "backup.tar.gz"
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(snapshot, "registry.db")
            for key in artifacts:
                path = settings.artifacts_dir / key
                if not path.exists():
                    raise ServionError(f"artifact {key} is missing from the store")
                tar.add(path, f"artifacts/{key}")
            raw = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(raw)
            with tempfile.TemporaryFile() as buffer:
                buffer.write(raw)
                buffer.seek(0)
                tar.addfile(info, buffer)
        os.replace(partial, target)
    return {**manifest, "bytes": target.stat().st_size}


def restore(settings: Settings, source: Path) -> dict[str, Any]:
    """Restore a backup into an empty home; every artifact's checksum is verified."""
    from servion.registry.registry import ModelRegistry

    database = _sqlite_path(settings)
    if database.exists() and _has_versions(database):
        raise InvalidInput(f"{settings.home} already holds a registry: restore into an empty home")
    if not source.is_file():
        raise InvalidInput(f"cannot read backup {quoted(str(source))}")
    settings.home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=settings.home, prefix=".restore."))
    try:
        unpacked = extract_archive(
            source, staging / "backup", max_total_bytes=settings.registry.max_archive_bytes
        )
        manifest_path = unpacked / "manifest.json"
        if not manifest_path.is_file() or not (unpacked / "registry.db").is_file():
            raise InvalidInput(f"{quoted(source.name)} is not a servion registry backup")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT:
            raise InvalidInput(f"backup format {manifest.get('format')!r} is not supported")
        for stale in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            stale.unlink(missing_ok=True)
        database.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(unpacked / "registry.db"), database)
        settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
        for key in manifest["artifacts"]:
            destination = settings.artifacts_dir / key
            if not destination.exists():
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(unpacked / "artifacts" / key), destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    registry = ModelRegistry(settings)  # brings an older schema forward
    try:
        versions = registry.list_versions()
        for mv in versions:
            registry.store.verify(mv.artifact, mv.sha256, mv.label)
    finally:
        registry.close()
    return {
        "restored_from": manifest["created_at"],
        "versions": [mv.label for mv in versions],
        "checksums": "verified",
    }


def _has_versions(database: Path) -> bool:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        try:
            return bool(conn.execute("SELECT 1 FROM model_versions LIMIT 1").fetchone())
        except sqlite3.OperationalError:
            return False
