"""Rules for what a model name, a version and a source path may be."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import NamedTuple

from servion.errors import ValidationFailed, quoted

NAME_RE = re.compile(r"^[a-zA-Z0-9_\-]{3,64}$")
_NUMBER = r"(0|[1-9][0-9]{0,8})"
VERSION_RE = re.compile(rf"^v{_NUMBER}\.{_NUMBER}\.{_NUMBER}$")
"""ASCII digits only, no leading zeros (semver), at most 9 digits (any database's integer)."""


class Version(NamedTuple):
    """A parsed semantic version; tuples order the way versions should."""

    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise ``ValidationFailed``."""
    if not NAME_RE.fullmatch(name):
        raise ValidationFailed(
            f"invalid model name {quoted(name)}: use 3-64 letters, digits, '_' or '-'"
        )
    return name


def parse_version(version: str) -> Version:
    """Parse ``vMAJOR.MINOR.PATCH``.

    >>> parse_version("v1.2.3")
    Version(major=1, minor=2, patch=3)
    """
    match = VERSION_RE.fullmatch(version)
    if not match:
        raise ValidationFailed(
            f"invalid version {quoted(version)}: use vMAJOR.MINOR.PATCH, e.g. v1.0.0"
            " (numbers of up to 9 digits, no leading zeros)"
        )
    return Version(*(int(g) for g in match.groups()))


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split ``NAME[:VERSION]`` into its checked parts."""
    name, _, version = ref.partition(":")
    check_name(name)
    if version:
        parse_version(version)
    return name, version or None


def check_source(path: Path) -> Path:
    """Check that a path to register is a real regular file or directory.

    Symlinks and special files are refused: what is hashed must be what is
    stored, and a link can be re-pointed after the check.
    """
    text = str(path)
    if "\x00" in text or any(not ch.isprintable() for ch in text):
        raise ValidationFailed("the model path contains control characters")
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise ValidationFailed(f"no such file or directory: {quoted(path.name)}") from None
    except OSError as exc:
        raise ValidationFailed(f"cannot read the model path: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise ValidationFailed(f"{quoted(path.name)} is a symbolic link: register its target")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise ValidationFailed(f"{quoted(path.name)} is not a regular file or directory")
    return path.absolute()


def check_digest(checksum: str | None) -> str | None:
    """The expected SHA-256 (``--checksum``) as bare lowercase hex, or None when not given."""
    if checksum is None:
        return None
    value = checksum.lower().removeprefix("sha256:")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValidationFailed(f"--checksum {quoted(checksum)} is not a hex SHA-256 digest")
    return value
