"""Safe extraction of model archives (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz).

An uploaded archive is untrusted input: a member may try to escape the target
folder (``../x``, ``/etc/x``, ``C:\\x``, links, device nodes), overwrite a sibling
(duplicate names), or expand to far more bytes than it occupies (a bomb). Every
member is checked here explicitly; sizes a header declares are checked before
anything is written, and bytes are counted again as they are decompressed
(headers can lie). Everything is written into a private staging folder that only
becomes ``target`` once the whole archive was accepted, so a refusal leaves nothing
behind.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Literal, cast

from servion.errors import UnsafeArtifact, ValidationFailed, printable
from servion.registry._members import (
    _CorruptStream,
    _GuardedReader,
    _Limits,
    _refuse,
    _StreamLimitExceeded,
    _Writer,
)

__all__ = ["extract_archive", "is_archive"]

_Kind = Literal["zip", "tar", "gz", "bz2", "xz"]

_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_COMPRESSED_MAGIC: tuple[tuple[bytes, _Kind], ...] = (
    (b"\x1f\x8b", "gz"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_TAR_MAGIC_OFFSET = 257
_CHUNK = 64 * 1024
# Tar headers (long names, pax records) are decompressed too; they get a budget of
# their own on top of the payload cap so a header cannot be a bomb either.
_HEADER_BYTES_PER_MEMBER = 16 * 1024
_HEADER_BYTES_FIXED = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")


def is_archive(path: Path) -> bool:
    """Say whether ``path`` looks like an archive servion can extract.

    The name decides first (``model.tar.gz``); a file with another name is
    sniffed by its magic bytes, so a renamed upload is still recognised.

    >>> is_archive(Path("model.tgz"))
    True
    """
    name = path.name.lower()
    if name.endswith(_SUFFIXES):
        return True
    try:
        return _sniff(path) is not None
    except OSError:
        return False


def extract_archive(
    archive: Path,
    target: Path,
    *,
    max_total_bytes: int,
    max_expansion_ratio: float | None,
    max_members: int = 10_000,
) -> Path:
    """Extract ``archive`` into ``target`` and return ``target``, or refuse it whole.

    ``target`` must not exist or be an empty folder. The format is taken from
    the magic bytes, not the name. Only regular files and folders are
    accepted; at most ``max_members`` members and ``max_total_bytes``
    decompressed bytes. With ``max_expansion_ratio`` (None: no ratio bound), the
    archive may expand to at most that many times its own size, and a zip member
    to that many times its compressed size (each plus ``RATIO_ALLOWANCE``, for
    small padded files). Declared sizes are refused before extraction starts
    where the format lists them (zip) or before the member is written (tar);
    the bytes actually written are counted too, and no byte past a bound reaches
    the disk. Files are written ``0o644``: archive modes (setuid, exec) are not kept.

    Raises ``UnsafeArtifact`` naming the member that escapes, links, duplicates
    or exceeds a limit, and ``ValidationFailed`` for a malformed archive. On any
    error ``target`` is left as it was found: nothing extracted remains.

    >>> extract_archive(
    ...     Path("m.tar.gz"), Path("out"), max_total_bytes=2**30, max_expansion_ratio=100
    ... )  # doctest: +SKIP
    PosixPath('out')
    """
    if max_total_bytes < 0 or max_members < 0:
        raise ValueError("max_total_bytes and max_members must not be negative")
    if max_expansion_ratio is not None and not max_expansion_ratio > 0:
        raise ValueError("max_expansion_ratio must be positive")
    kind = _detect(archive)
    limits = _Limits(max_total_bytes, max_members, max_expansion_ratio, archive.stat().st_size)
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    )
    try:
        writer = _Writer(staging, limits)
        if kind == "zip":
            _extract_zip(archive, writer)
        else:
            _extract_tar(archive, kind, writer)
        staging.chmod(0o755)
        _publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


# --- format detection -------------------------------------------------------


def _detect(archive: Path) -> _Kind:
    """Return the archive's kind from its bytes, refusing anything else."""
    if not archive.is_file():
        raise ValidationFailed(f"archive '{printable(archive.name)}' is not a file")
    kind = _sniff(archive)
    if kind is None:
        raise ValidationFailed(f"'{printable(archive.name)}' is not a supported archive")
    return kind


def _sniff(path: Path) -> _Kind | None:
    """Identify zip, plain tar, or compressed tar by magic bytes."""
    with path.open("rb") as raw:
        head = raw.read(_TAR_MAGIC_OFFSET + 8)
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if _has_tar_magic(head):
        return "tar"
    for magic, kind in _COMPRESSED_MAGIC:
        if head.startswith(magic):
            # A compressed file is only an archive if a tar header is inside it.
            return kind if _compressed_holds_tar(path, kind) else None
    return None


def _has_tar_magic(block: bytes) -> bool:
    return block[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar"


def _compressed_holds_tar(path: Path, kind: _Kind) -> bool:
    try:
        with path.open("rb") as raw, _decompressor(raw, kind) as inner:
            return _has_tar_magic(inner.read(512))
    except (OSError, EOFError, zlib.error, lzma.LZMAError):
        return False


def _decompressor(raw: IO[bytes], kind: _Kind) -> IO[bytes]:
    if kind == "gz":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))  # typeshed: not an IO
    if kind == "bz2":
        return bz2.BZ2File(raw, mode="rb")
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    return raw


# --- target handling --------------------------------------------------------


def _check_target(target: Path) -> None:
    """Refuse a target that holds anything: extraction never merges or overwrites."""
    if not target.exists() and not target.is_symlink():
        return
    if target.is_symlink() or not target.is_dir() or any(target.iterdir()):
        raise ValidationFailed(
            f"extraction target '{printable(target.name)}' exists and is not an empty folder"
        )


def _publish(staging: Path, target: Path) -> None:
    """Move the fully checked staging folder into place in one rename."""
    if target.is_dir() and not target.is_symlink():
        target.rmdir()  # fails, and so refuses, if something appeared meanwhile
    os.rename(staging, target)


# --- member names -----------------------------------------------------------


def _malformed(archive: Path, exc: BaseException) -> ValidationFailed:
    return ValidationFailed(f"malformed archive '{printable(archive.name)}': {printable(str(exc))}")


# --- zip --------------------------------------------------------------------


def _extract_zip(archive: Path, writer: _Writer) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            # The central directory lists every size: a bomb is refused before any write.
            for info in zf.infolist():
                if not info.is_dir():
                    writer.expect(info.filename, info.file_size, _compressed(info, writer))
            for info in zf.infolist():
                writer.count(info.filename)
                _extract_zip_member(zf, info, writer)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, _CorruptStream) as exc:
        raise _malformed(archive, exc) from exc


def _extract_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, writer: _Writer) -> None:
    name = info.filename
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _refuse(name, "links, devices and pipes are not allowed")
    if info.is_dir() or file_type == stat.S_IFDIR:
        writer.add_dir(name)
        return
    if info.flag_bits & 0x1:
        raise ValidationFailed(f"archive member '{printable(name)}' is encrypted")
    with zf.open(info) as source:
        writer.add_file(name, _GuardedReader(source), info.file_size, _compressed(info, writer))


def _compressed(info: zipfile.ZipInfo, writer: _Writer) -> int:
    # A header cannot make a member more compressed than the whole archive.
    return min(info.compress_size, writer.limits.archive_bytes)


# --- tar --------------------------------------------------------------------


def _extract_tar(archive: Path, kind: _Kind, writer: _Writer) -> None:
    limits = writer.limits
    limit = (
        limits.budget + (limits.max_members + 1) * _HEADER_BYTES_PER_MEMBER + _HEADER_BYTES_FIXED
    )
    last = "(archive start)"
    try:
        with archive.open("rb") as raw, _decompressor(raw, kind) as inner:
            reader = _GuardedReader(inner, limit)
            # Stream mode ("r|") reads forward only: no seeking, no member read twice.
            with tarfile.open(fileobj=cast(IO[bytes], reader), mode="r|") as tf:
                for member in tf:
                    last = member.name
                    _extract_tar_member(tf, member, writer)
    except _StreamLimitExceeded:
        raise UnsafeArtifact(
            f"archive '{printable(archive.name)}' expands past its size cap "
            f"near member '{printable(last)}'"
        ) from None
    except (tarfile.TarError, _CorruptStream) as exc:
        raise _malformed(archive, exc) from exc


def _extract_tar_member(tf: tarfile.TarFile, member: tarfile.TarInfo, writer: _Writer) -> None:
    name = member.name
    writer.count(name)
    if member.issym() or member.islnk():
        raise _refuse(name, "symbolic and hard links are not allowed")
    if member.isdev():
        raise _refuse(name, "device nodes and pipes are not allowed")
    if member.isdir():
        writer.add_dir(name)
        return
    if not member.isreg():
        raise _refuse(name, f"unsupported member type {member.type!r}")
    # A compressed stream has no per-member compressed size: the archive's ratio applies.
    writer.expect(name, member.size)
    source = tf.extractfile(member)
    if source is None:  # pragma: no cover - isreg() members always have data
        raise _refuse(name, "member has no data")
    with source:
        writer.add_file(name, source, member.size)
