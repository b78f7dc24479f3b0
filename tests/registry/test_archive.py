"""Safe archive extraction: real malicious archives are refused whole, good ones land intact."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servion.errors import RegistryError, UnsafeArtifact, ValidationFailed
from servion.registry.archive import extract_archive, is_archive

CAP = 1024 * 1024
TAR_MODES = {"tar": "w", "tar.gz": "w:gz", "tgz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}
FORMATS = ["zip", *TAR_MODES]
ESCAPES = [
    "../evil",
    "/abs/evil",
    "a/../../evil",
    "./../evil",
    "C:/evil",
    "C:\\evil",
    "a\\..\\..\\evil",
]


# --- builders ---------------------------------------------------------------


def _file_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    return info


def _special_info(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def _write_tar(
    path: Path, members: Sequence[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w"
) -> Path:
    with tarfile.open(path, mode) as tf:  # type: ignore[call-overload]  # mode is a runtime str
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _tar_files(path: Path, files: dict[str, bytes], mode: str = "w") -> Path:
    return _write_tar(path, [(_file_info(n, len(d)), d) for n, d in files.items()], mode)


def _zip_files(
    path: Path, files: list[tuple[str | zipfile.ZipInfo, bytes]], level: int = 6
) -> Path:
    with (
        warnings.catch_warnings(),
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf,
    ):
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns on duplicate names
        for name, data in files:
            zf.writestr(name, data)
    return path


def _archive(tmp_path: Path, fmt: str, files: dict[str, bytes]) -> Path:
    path = tmp_path / f"model.{fmt}"
    if fmt == "zip":
        return _zip_files(path, list(files.items()))
    return _tar_files(path, files, TAR_MODES[fmt])


def _assert_nothing_left(tmp_path: Path, archive: Path) -> None:
    """Only the archive itself remains: no target, no staging folder, nothing escaped."""
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name]


def _extract(archive: Path, target: Path, cap: int = CAP, **limits: int) -> Path:
    # No ratio bound here: these tests are about the cap (test_archive_bombs: the ratio).
    return extract_archive(archive, target, max_total_bytes=cap, max_expansion_ratio=None, **limits)


# --- the good case ----------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_nested_tree_is_extracted_intact(tmp_path: Path, fmt: str) -> None:
    inner = _zip_files(tmp_path / "inner.zip", [("x.txt", b"inner")])
    files = {
        "./model/": b"",
        "model/model.onnx": b"\x08\x07onnx",
        "model/sub/deeper/weights.bin": bytes(range(256)) * 8,
        "model/inner.zip": inner.read_bytes(),
        "README": b"hello",
    }
    if fmt != "zip":  # tar folder entries are DIRTYPE members, not names ending in '/'
        files.pop("./model/")
    archive = _archive(tmp_path, fmt, files)
    target = tmp_path / "out" / "v1"

    assert _extract(archive, target) == target

    assert (target / "model/model.onnx").read_bytes() == b"\x08\x07onnx"
    assert (target / "model/sub/deeper/weights.bin").read_bytes() == bytes(range(256)) * 8
    assert (target / "README").read_bytes() == b"hello"
    # A nested archive is data: it is stored as a file, never extracted itself.
    assert (target / "model/inner.zip").read_bytes() == inner.read_bytes()
    assert not (target / "model/x.txt").exists()
    assert stat.S_IMODE((target / "README").stat().st_mode) == 0o644
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["v1"]


def test_tar_folder_members_and_empty_target_folder_are_accepted(tmp_path: Path) -> None:
    dir_info = tarfile.TarInfo("pkg")
    dir_info.type = tarfile.DIRTYPE
    dot = tarfile.TarInfo(".")
    dot.type = tarfile.DIRTYPE
    archive = _write_tar(
        tmp_path / "m.tar", [(dot, None), (dir_info, None), (_file_info("pkg/a", 1), b"a")]
    )
    target = tmp_path / "empty"
    target.mkdir()

    _extract(archive, target)

    assert (target / "pkg/a").read_bytes() == b"a"


def test_setuid_and_exec_bits_are_dropped(tmp_path: Path) -> None:
    info = _file_info("run.sh", 2)
    info.mode = 0o4755
    archive = _write_tar(tmp_path / "m.tar", [(info, b"hi")])

    _extract(archive, tmp_path / "out")

    assert stat.S_IMODE((tmp_path / "out/run.sh").stat().st_mode) == 0o644


# --- escapes ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.gz"])
@pytest.mark.parametrize("name", ESCAPES)
def test_escaping_member_is_refused_and_nothing_is_left(
    tmp_path: Path, fmt: str, name: str
) -> None:
    # A good member first, so the refusal has a partial extraction to clean up.
    archive = _archive(tmp_path, fmt, {"good.txt": b"ok", name: b"pwned"})

    with pytest.raises(UnsafeArtifact) as err:
        _extract(archive, tmp_path / "out")

    assert name in str(err.value)
    _assert_nothing_left(tmp_path, archive)


def test_tar_symlink_pointing_outside_is_refused(tmp_path: Path) -> None:
    link = _special_info("link", tarfile.SYMTYPE, "../../../etc/passwd")
    archive = _write_tar(tmp_path / "m.tar", [(link, None), (_file_info("link/x", 1), b"x")])

    with pytest.raises(UnsafeArtifact, match=r"'link'.*link"):
        _extract(archive, tmp_path / "out")

    _assert_nothing_left(tmp_path, archive)


def test_tar_symlink_pointing_inside_is_refused_too(tmp_path: Path) -> None:
    members = [(_file_info("a", 1), b"a"), (_special_info("b", tarfile.SYMTYPE, "a"), None)]
    archive = _write_tar(tmp_path / "m.tar", members)

    with pytest.raises(UnsafeArtifact, match="'b'"):
        _extract(archive, tmp_path / "out")


def test_tar_hard_link_is_refused(tmp_path: Path) -> None:
    members = [
        (_file_info("a", 1), b"a"),
        (_special_info("hard", tarfile.LNKTYPE, "/etc/passwd"), None),
    ]
    archive = _write_tar(tmp_path / "m.tar", members)

    with pytest.raises(UnsafeArtifact, match=r"'hard'.*hard links"):
        _extract(archive, tmp_path / "out")

    _assert_nothing_left(tmp_path, archive)


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_tar_device_and_fifo_members_are_refused(tmp_path: Path, kind: bytes) -> None:
    dev = _special_info("dev/sda", kind)
    dev.devmajor, dev.devminor = 8, 0
    archive = _write_tar(tmp_path / "m.tar", [(dev, None)])

    with pytest.raises(UnsafeArtifact, match=r"'dev/sda'.*device"):
        _extract(archive, tmp_path / "out")

    _assert_nothing_left(tmp_path, archive)


def test_zip_symlink_member_is_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("link")
    link.create_system = 3  # unix: the high 16 bits of external_attr are st_mode
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip_files(tmp_path / "m.zip", [("ok", b"1"), (link, b"../../etc/passwd")])

    with pytest.raises(UnsafeArtifact, match="'link'"):
        _extract(archive, tmp_path / "out")

    _assert_nothing_left(tmp_path, archive)


# --- overwrites -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["zip", "tar"])
@pytest.mark.parametrize(
    ("first", "second"),
    [("a.txt", "a.txt"), ("a.txt", "./a.txt"), ("A.txt", "a.txt"), ("a", "a/b"), ("a/b", "a")],
)
def test_duplicate_or_conflicting_names_are_refused(
    tmp_path: Path, fmt: str, first: str, second: str
) -> None:
    path = tmp_path / f"m.{fmt}"
    if fmt == "zip":
        archive = _zip_files(path, [(first, b"first"), (second, b"second")])
    else:
        members = [(_file_info(n, len(d)), d) for n, d in [(first, b"first"), (second, b"second")]]
        archive = _write_tar(path, members)

    with pytest.raises(UnsafeArtifact, match="duplicate or conflicting"):
        _extract(archive, tmp_path / "out")

    _assert_nothing_left(tmp_path, archive)


# --- bombs and limits -------------------------------------------------------


def test_high_ratio_zip_bomb_is_refused_while_streaming(tmp_path: Path) -> None:
    payload = bytes(20 * CAP)
    archive = _zip_files(tmp_path / "bomb.zip", [("zeros.bin", payload)], level=9)
    assert len(payload) / archive.stat().st_size > 500  # a real bomb, not a big file

    with pytest.raises(UnsafeArtifact, match=r"'zeros\.bin'.*cap of 1048576 bytes"):
        _extract(archive, tmp_path / "out")

    _assert_nothing_left(tmp_path, archive)


def test_zip_whose_header_understates_the_size_is_refused(tmp_path: Path) -> None:
    archive = _zip_files(tmp_path / "liar.zip", [("zeros.bin", bytes(20 * CAP))], level=9)
    data = bytearray(archive.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    lie = (1000).to_bytes(4, "little")
    data[22:26] = lie  # local header: uncompressed size
    data[central + 24 : central + 28] = lie  # central directory: uncompressed size
    archive.write_bytes(bytes(data))
    assert zipfile.ZipFile(archive).getinfo("zeros.bin").file_size == 1000

    # Either the cap or the size/CRC mismatch stops it; never 20 MiB on disk.
    with pytest.raises(RegistryError, match=r"zeros\.bin"):
        _extract(archive, tmp_path / "out")

    _assert_nothing_left(tmp_path, archive)


def test_tar_gz_bomb_is_refused(tmp_path: Path) -> None:
    archive = _tar_files(tmp_path / "bomb.tar.gz", {"zeros.bin": bytes(20 * CAP)}, "w:gz")
    assert archive.stat().st_size < CAP // 10

    with pytest.raises(UnsafeArtifact, match=r"'zeros\.bin'.*cap"):
        _extract(archive, tmp_path / "out")

    _assert_nothing_left(tmp_path, archive)


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_cap_counts_all_members_together(tmp_path: Path, fmt: str) -> None:
    files = {f"part{i}.bin": bytes(CAP // 4) for i in range(5)}
    archive = _archive(tmp_path, fmt, files)

    with pytest.raises(UnsafeArtifact, match=r"'part4\.bin'.*cap"):
        _extract(archive, tmp_path / "out")

    _assert_nothing_left(tmp_path, archive)


def test_exactly_the_cap_is_allowed(tmp_path: Path) -> None:
    archive = _archive(tmp_path, "tar.gz", {"a": bytes(600), "b": bytes(400)})

    _extract(archive, tmp_path / "out", cap=1000)

    assert (tmp_path / "out/b").stat().st_size == 400


def test_tar_header_bomb_is_refused(tmp_path: Path) -> None:
    # A pax header is metadata tarfile reads into memory: it must be bounded too.
    info = _file_info("tiny", 1)
    info.pax_headers = {"comment": "x" * (4 * CAP)}
    archive = tmp_path / "hdr.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(info, io.BytesIO(b"t"))

    with pytest.raises(UnsafeArtifact, match="size cap"):
        _extract(archive, tmp_path / "out", cap=1024, max_members=4)

    _assert_nothing_left(tmp_path, archive)


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_too_many_members_are_refused(tmp_path: Path, fmt: str) -> None:
    archive = _archive(tmp_path, fmt, {f"f{i:02d}": b"x" for i in range(11)})

    with pytest.raises(UnsafeArtifact, match=r"'f10'.*more than 10 members"):
        _extract(archive, tmp_path / "out", max_members=10)

    _assert_nothing_left(tmp_path, archive)


def test_negative_limits_are_a_programming_error(tmp_path: Path) -> None:
    archive = _archive(tmp_path, "tar", {"a": b"a"})
    with pytest.raises(ValueError):
        _extract(archive, tmp_path / "out", cap=-1)


# --- messages, targets and malformed input ---------------------------------


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_refusal_message_has_no_control_characters(tmp_path: Path, fmt: str) -> None:
    name = "../evil\nERROR forged log line\x1b[31m"
    archive = _archive(tmp_path, fmt, {name: b"x"})

    with pytest.raises(UnsafeArtifact) as err:
        _extract(archive, tmp_path / "out")

    message = str(err.value)
    assert "evil" in message
    assert message.isprintable()
    _assert_nothing_left(tmp_path, archive)


def test_non_empty_target_is_refused_and_kept(tmp_path: Path) -> None:
    archive = _archive(tmp_path, "tar", {"a": b"a"})
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep").write_text("mine")

    with pytest.raises(ValidationFailed, match="not an empty folder"):
        _extract(archive, target)

    assert (target / "keep").read_text() == "mine"


def test_empty_target_folder_survives_a_refusal_empty(tmp_path: Path) -> None:
    archive = _archive(tmp_path, "tar", {"ok": b"1", "../evil": b"x"})
    target = tmp_path / "out"
    target.mkdir()

    with pytest.raises(UnsafeArtifact):
        _extract(archive, target)

    assert list(target.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name, "out"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("model.onnx", b"\x08\x07 not an archive"),
        ("model.tar.gz", b"\x1f\x8b\x08\x00 truncated gzip"),
        ("model.zip", b"PK\x03\x04 truncated zip"),
        ("empty.tar", b""),
    ],
)
def test_malformed_or_foreign_files_are_validation_failures(
    tmp_path: Path, name: str, content: bytes
) -> None:
    archive = tmp_path / name
    archive.write_bytes(content)

    with pytest.raises(ValidationFailed):
        _extract(archive, tmp_path / "out")

    _assert_nothing_left(tmp_path, archive)


def test_truncated_tar_gz_is_a_validation_failure(tmp_path: Path) -> None:
    archive = _archive(tmp_path, "tar.gz", {"a.bin": bytes(range(256)) * 400})
    archive.write_bytes(archive.read_bytes()[:-200])

    with pytest.raises(ValidationFailed, match="malformed archive"):
        _extract(archive, tmp_path / "out")

    _assert_nothing_left(tmp_path, archive)


def test_encrypted_zip_member_is_refused(tmp_path: Path) -> None:
    archive = _zip_files(tmp_path / "m.zip", [("secret.bin", b"xx")])
    data = bytearray(archive.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    data[6] |= 0x1  # local header: general purpose flags, bit 0 = encrypted
    data[central + 8] |= 0x1  # central directory: the same flag
    archive.write_bytes(bytes(data))

    with pytest.raises(ValidationFailed, match="encrypted"):
        _extract(archive, tmp_path / "out")


# --- is_archive -------------------------------------------------------------


@pytest.mark.parametrize("name", ["m.zip", "m.tar", "m.TAR.GZ", "m.tgz", "m.tar.bz2", "m.tar.xz"])
def test_is_archive_by_extension(name: str) -> None:
    assert is_archive(Path(name))


@pytest.mark.parametrize("fmt", FORMATS)
def test_is_archive_by_magic_when_renamed(tmp_path: Path, fmt: str) -> None:
    archive = _archive(tmp_path, fmt, {"a": b"a"})
    renamed = archive.rename(tmp_path / "upload.bin")

    assert is_archive(renamed)


def test_is_archive_rejects_plain_and_compressed_non_tar_files(tmp_path: Path) -> None:
    import gzip

    plain = tmp_path / "model.onnx"
    plain.write_bytes(b"\x08\x07" + bytes(600))
    gz = tmp_path / "model.onnx.gz"
    gz.write_bytes(gzip.compress(b"\x08\x07" + bytes(600)))

    assert not is_archive(plain)
    assert not is_archive(gz)
    assert not is_archive(tmp_path / "missing")


# --- any name at all --------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(names=st.lists(st.text(alphabet="a./\\:C\n ", min_size=1, max_size=12), max_size=4))
def test_no_member_name_ever_lands_outside_the_target(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        archive = _write_tar(root / "m.tar", [(_file_info(n, 1), b"x") for n in names])
        target = root / "box" / "out"
        try:
            extract_archive(archive, target, max_total_bytes=CAP, max_expansion_ratio=100)
        except RegistryError:
            assert not target.exists()
        else:
            real = os.path.realpath(target)
            for path in target.rglob("*"):
                assert os.path.commonpath([real, os.path.realpath(path)]) == real
        # Nothing beside the target: no stray file, no leftover staging folder.
        assert {p.name for p in root.iterdir()} <= {"m.tar", "box"}
        assert [p.relative_to(root).as_posix() for p in root.glob("box/*")] in ([], ["box/out"])
