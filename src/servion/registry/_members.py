"""Writing an archive's members safely: each name checked before it becomes a path,
duplicates and links refused, bytes counted as they are decompressed and bounded both
by a cap and by a ratio to the compressed size."""

from __future__ import annotations

import contextlib
import lzma
import os
import re
import stat
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from servion.errors import UnsafeArtifact, ValidationFailed, printable

_CHUNK = 64 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
# Small files of padding compress far past any sane ratio (64 KiB of zeros: ~1000:1), so
# each ratio bound allows this much on top; a bomb still writes at most this extra.
RATIO_ALLOWANCE = 1024 * 1024
_RATIO_NAME = "expansion ratio, SERVION_REGISTRY_MAX_EXPANSION_RATIO"


class _Source(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _refuse(name: str, why: str) -> UnsafeArtifact:
    return UnsafeArtifact(f"archive member '{printable(name)}' refused: {why}")


def _safe_parts(name: str) -> tuple[str, ...]:
    """Split a member name into path parts that provably stay inside the target.

    Empty and ``.`` parts are dropped (``./a//b`` is ``a/b``); an empty result is
    the archive's root folder entry.
    """
    if "\x00" in name or any(unicodedata.category(c) == "Cc" for c in name):
        raise _refuse(name, "control character in name")
    if "\\" in name:
        raise _refuse(name, "backslash in name")
    if name.startswith("/"):
        raise _refuse(name, "absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(name, "'..' path component")
    if any(_DRIVE.match(p) for p in parts):
        raise _refuse(name, "drive letter in path")
    return parts


def _key(parts: tuple[str, ...]) -> tuple[str, ...]:
    # Case-insensitive and normalising filesystems (macOS, Windows) would merge
    # 'A' and 'a' or NFC/NFD forms, so those count as the same name.
    return tuple(unicodedata.normalize("NFC", p).casefold() for p in parts)


# --- writing ----------------------------------------------------------------


@dataclass(frozen=True)
class _Limits:
    max_total_bytes: int
    max_members: int
    max_ratio: float | None
    """Most bytes written per compressed byte (None: only the cap bounds them)."""
    archive_bytes: int

    def ratio_bound(self, compressed: int) -> int | None:
        """Most bytes ``compressed`` bytes may expand to under the ratio."""
        if self.max_ratio is None:
            return None
        return int(self.max_ratio * compressed) + RATIO_ALLOWANCE

    @property
    def budget(self) -> int:
        """Most bytes the whole archive may write: the cap or the ratio, the lower."""
        bound = self.ratio_bound(self.archive_bytes)
        return self.max_total_bytes if bound is None else min(self.max_total_bytes, bound)

    def over_budget(self, name: str) -> UnsafeArtifact:
        if self.budget < self.max_total_bytes:
            return _refuse(
                name,
                f"the archive expands past {self.budget} bytes, the bound for its "
                f"{self.archive_bytes} bytes at {self.max_ratio:g}:1 ({_RATIO_NAME})",
            )
        return _refuse(name, f"archive expands past the cap of {self.max_total_bytes} bytes")

    def over_ratio(self, name: str, compressed: int, declared: int | None = None) -> UnsafeArtifact:
        bound = f"{self.ratio_bound(compressed)} bytes, the bound for its {compressed} compressed"
        says = "it expands past" if declared is None else f"it declares {declared} bytes, past"
        return _refuse(name, f"{says} {bound} bytes at {self.max_ratio:g}:1 ({_RATIO_NAME})")


@dataclass
class _Writer:
    """Writes accepted members under ``root`` and enforces every limit."""

    root: Path
    limits: _Limits
    written: int = 0
    declared: int = 0
    members: int = 0
    files: set[tuple[str, ...]] = field(default_factory=set)
    dirs: set[tuple[str, ...]] = field(default_factory=set)

    def count(self, name: str) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise _refuse(name, f"archive has more than {self.limits.max_members} members")

    def add_dir(self, name: str) -> None:
        parts = _safe_parts(name)
        if parts:
            self._claim(name, parts, is_dir=True)
            self._make_dirs(parts)

    def expect(self, name: str, declared_size: int, compressed: int | None = None) -> None:
        """Refuse a member whose header already breaks a bound, before anything is written.

        ``compressed`` is the member's own compressed size where the format keeps one
        (zip); without it (a compressed tar stream) only the whole archive's ratio applies.
        """
        bound = None if compressed is None else self.limits.ratio_bound(compressed)
        if bound is not None and declared_size > bound:
            raise self.limits.over_ratio(name, compressed or 0, declared_size)
        self.declared += declared_size
        if self.declared > self.limits.budget:
            raise self.limits.over_budget(name)

    def add_file(
        self, name: str, source: _Source, declared_size: int, compressed: int | None = None
    ) -> None:
        """Write one member; headers can lie, so the bounds apply again to every byte."""
        parts = _safe_parts(name)
        if not parts:
            raise _refuse(name, "file member without a name")
        self._claim(name, parts, is_dir=False)
        self._make_dirs(parts[:-1])
        copied = self._copy(name, source, self.root.joinpath(*parts), compressed)
        if copied != declared_size:
            raise ValidationFailed(
                f"archive member '{printable(name)}' holds {copied} bytes "
                f"but its header says {declared_size}"
            )

    def _claim(self, name: str, parts: tuple[str, ...], *, is_dir: bool) -> None:
        """Refuse a name that would overwrite or pass through an earlier member."""
        key = _key(parts)
        prefixes = [key[:i] for i in range(1, len(key))]
        if key in self.files or any(p in self.files for p in prefixes):
            raise _refuse(name, "duplicate or conflicting name")
        if not is_dir and key in self.dirs:
            raise _refuse(name, "duplicate or conflicting name")
        self.dirs.update(prefixes)
        (self.dirs if is_dir else self.files).add(key)

    def _make_dirs(self, parts: tuple[str, ...]) -> None:
        path = self.root
        for part in parts:
            path = path / part
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o755)
            # Nothing here ever creates a link, but a folder must really be one.
            if not stat.S_ISDIR(path.lstat().st_mode):
                raise _refuse("/".join(parts), "path is not a folder")

    def _copy(self, name: str, source: _Source, dest: Path, compressed: int | None) -> int:
        """Stream ``source`` to a new file, charging every byte against the bounds.

        A chunk is checked before it is written, so disk use never passes a bound.
        """
        member_bound = None if compressed is None else self.limits.ratio_bound(compressed)
        budget = self.limits.budget
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        copied = 0
        with os.fdopen(os.open(dest, flags, 0o644), "wb") as out:
            while chunk := source.read(_CHUNK):
                copied += len(chunk)
                self.written += len(chunk)
                if member_bound is not None and copied > member_bound:
                    raise self.limits.over_ratio(name, compressed or 0)
                if self.written > budget:
                    raise self.limits.over_budget(name)
                out.write(chunk)
        return copied


# --- reading ---------------------------------------------------------------


class _StreamLimitExceeded(Exception):
    """The decompressed tar stream (headers included) outgrew its budget."""


class _CorruptStream(Exception):
    """Decompression failed: the archive's bytes are malformed."""


class _GuardedReader:
    """A read-only stream that tells corrupt data from local I/O errors, with a byte limit.

    Decompressors report bad input as ``OSError`` (bz2, gzip), the same type a
    full disk raises, so read errors are relabelled here where their origin is
    known. tarfile reads headers (pax records, long names) into memory before we
    see the member, so a tar stream is bounded as a whole, not only payloads.
    """

    def __init__(self, inner: IO[bytes], limit: int | None = None) -> None:
        self._inner = inner
        self._limit = limit
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        if self._limit is not None:
            room = self._limit - self.consumed + 1
            size = room if size < 0 else min(size, room)
        try:
            data = self._inner.read(size)
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise _CorruptStream(str(exc)) from exc
        self.consumed += len(data)
        if self._limit is not None and self.consumed > self._limit:
            raise _StreamLimitExceeded
        return data

    def close(self) -> None:
        self._inner.close()
