"""Vetting a pickle-based model file by its format, before anything loads it:
plain pickles and PyTorch zips scanned statically, joblib files through the
restricted unpickler."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from servion.errors import UnsafeArtifact
from servion.runtime._pickle_allowlist import TORCH_NAMES
from servion.runtime.safe_pickle import (
    AllowList,
    _load_joblib,
    _refuse_picklescan_findings,
    scan_pickle_bytes,
)

_PICKLE_SUFFIXES = frozenset({".pkl", ".pickle"})
_JOBLIB_SUFFIXES = frozenset({".joblib", ".jbl", ".z", ".gz", ".bz2", ".xz", ".lzma"})
_TORCH_SUFFIXES = frozenset({".pt", ".pth"})


def _scan_torch_member(
    archive: zipfile.ZipFile, member: str, allow: AllowList, path: Path
) -> list[str]:
    data, what = archive.read(member), f"{path.name}:{member}"
    try:
        names = scan_pickle_bytes(data, allow)
    except UnsafeArtifact as exc:
        raise UnsafeArtifact(f"{what}: {exc.message}") from exc
    _refuse_picklescan_findings(data, what)
    return names


def check_torch_zip(path: Path, allow: AllowList) -> list[str]:
    """Scan every ``*.pkl`` member of a PyTorch zip statically; torch is never imported."""
    with path.open("rb") as fh:
        if fh.read(4) != b"PK\x03\x04":  # torch.load reads anything else as the legacy format
            raise UnsafeArtifact(f"{path.name}: not a zip archive (legacy torch.save is refused)")
    torch_allow, names = allow.extended(TORCH_NAMES), []
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
            if len(set(members)) != len(members) or archive.testzip() is not None:
                raise UnsafeArtifact(f"{path.name}: duplicate or corrupt zip members")
            pickles = [m for m in members if m.endswith(".pkl")]
            if not any(m == "data.pkl" or m.endswith("/data.pkl") for m in pickles):
                raise UnsafeArtifact(f"{path.name}: no data.pkl, so not a PyTorch archive")
            for member in pickles:
                names += _scan_torch_member(archive, member, torch_allow, path)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
        raise UnsafeArtifact(f"{path.name}: unreadable zip archive: {exc}") from exc
    return list(dict.fromkeys(names))


def _check_plain_pickle(path: Path, allow: AllowList) -> list[str]:
    data = path.read_bytes()
    try:
        names = scan_pickle_bytes(data, allow)
    except UnsafeArtifact as exc:
        hint = " (name joblib.dump output .joblib)" if b"NumpyArrayWrapper" in data else ""
        raise UnsafeArtifact(f"{path.name}: {exc.message}{hint}") from exc
    _refuse_picklescan_findings(data, path.name)
    return names


def check_pickle_file(path: Path, allow: AllowList) -> list[str]:
    """Vet a pickle-based model file by its extension; return the globals it references.

    ``.pkl``/``.pickle``: one plain pickle, scanned statically.  ``.joblib``
    (or a joblib compression suffix): loaded by the restricted unpickler and
    discarded.  ``.pt``/``.pth``: a PyTorch zip whose pickles are scanned.
    Anything else, or content that does not match its extension, raises
    ``UnsafeArtifact``, which names the offending globals it found.

        check_pickle_file(Path("model.joblib"), AllowList.default())
    """
    suffix = path.suffix.lower()
    if suffix in _PICKLE_SUFFIXES:
        return _check_plain_pickle(path, allow)
    if suffix in _JOBLIB_SUFFIXES:
        return _load_joblib(path, allow)[1]
    if suffix in _TORCH_SUFFIXES:
        return check_torch_zip(path, allow)
    raise UnsafeArtifact(f"{path.name}: '{suffix}' is not a known pickle-based model format")
