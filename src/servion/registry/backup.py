"""Registry backup and restore: the metadata database and the artifacts it refers to.

A backup is a gzipped tar holding ``registry.db`` (taken with SQLite's online
backup, so it is consistent while a server writes), ``artifacts/`` (the stored
artifacts that snapshot refers to: content-addressed and never rewritten, so
copying them after the snapshot is safe), ``audit/`` (the audit trail's daily
files: a registry's history is part of it) and ``manifest.json``. A restore goes
into an empty home, through the same safe extractor as model archives, and
re-verifies every artifact's checksum before it reports success.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
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


SUFFIXES = (".tar.gz", ".tgz")


def backup(settings: Settings, target: Path, overwrite: bool = False) -> dict[str, Any]:
    """Write a consistent snapshot of the registry to ``target`` (a .tar.gz); an existing
    file is replaced only when ``overwrite`` says so."""
    source = _sqlite_path(settings)
    if not source.exists():
        raise InvalidInput(f"there is no registry at {settings.home}")
    if target.exists() and target.is_dir():
        raise InvalidInput(f"{quoted(str(target))} is a folder: name the backup file")
    if not target.name.endswith(SUFFIXES):
        raise InvalidInput(
            f"{quoted(target.name)}: a backup is a gzipped tar; name it *.tar.gz or *.tgz"
        )
    if target.exists() and not overwrite:
        raise InvalidInput(f"{quoted(str(target))} exists: pass --force to replace it")
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
        audit_files = sorted(settings.audit_dir.glob("audit-*.jsonl"))
        manifest = {
            "format": FORMAT,
            "servion": __version__,
            "created_at": utcnow(),
            "versions": [f"{r[0]}:{r[1]}" for r in rows],
            "artifacts": artifacts,
            "audit": [path.name for path in audit_files],
        }
        partial = Path(tmp) / "backup.tar.gz"
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(snapshot, "registry.db")
            for key in artifacts:
                path = settings.artifacts_dir / key
                if not path.exists():
                    raise ServionError(f"artifact {key} is missing from the store")
                tar.add(path, f"artifacts/{key}")
            for path in audit_files:
                # Copied, not added: the day's file may grow while the tar is written.
                raw_events = path.read_bytes()
                _add_bytes(tar, f"audit/{path.name}", raw_events)
            _add_bytes(tar, "manifest.json", json.dumps(manifest, indent=2).encode())
        os.replace(partial, target)
    return {**manifest, "bytes": target.stat().st_size}


def _add_bytes(tar: tarfile.TarFile, name: str, raw: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(raw)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(raw))


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
            source,
            staging / "backup",
            max_total_bytes=settings.registry.max_archive_bytes,
            max_expansion_ratio=settings.registry.max_expansion_ratio,
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
        _restore_audit(unpacked, manifest.get("audit", []), settings.audit_dir)
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


def _restore_audit(unpacked: Path, names: list[str], directory: Path) -> None:
    """Put the backed-up audit files back. A day file that already exists holds only this
    restore's own events (the home was empty): the restored ones are appended to it, as
    the audit writer appends, so no event of either is lost."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (name.startswith("audit-") and name.endswith(".jsonl") and "/" not in name):
            raise InvalidInput(f"backup lists an odd audit file {quoted(name)}")
        with (unpacked / "audit" / name).open("rb") as src, (directory / name).open("ab") as out:
            shutil.copyfileobj(src, out)


def _has_versions(database: Path) -> bool:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        try:
            return bool(conn.execute("SELECT 1 FROM model_versions LIMIT 1").fetchone())
        except sqlite3.OperationalError:
            return False
