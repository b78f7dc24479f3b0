"""Archive bombs are refused by their expansion ratio before they fill the disk: real zip
and tar.gz bombs through the extractor, ``servion register`` and ``registry restore``."""

from __future__ import annotations

import os
import shutil
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from conftest import TabularModels, cli
from servion.config import RegistrySettings, Settings
from servion.errors import UnsafeArtifact
from servion.registry import ModelRegistry, RegisterRequest
from servion.registry._members import RATIO_ALLOWANCE, _Limits, _Writer
from servion.registry.archive import extract_archive

MIB = 1024 * 1024
BOMB_BYTES = 200 * MIB
RATIO_REFUSAL = (
    r"'zeros\.bin' refused: .* at 100:1 \(expansion ratio, SERVION_REGISTRY_MAX_EXPANSION_RATIO\)"
)


class Zeros:
    """A stream of ``size`` zero bytes, never held in memory at once."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, size: int = -1, /) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """200 MiB of zeros, deflated ~1000:1, as a zip and as a tar.gz (built once)."""
    root = tmp_path_factory.mktemp("bombs")
    zipped = root / "bomb.zip"
    with (
        zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        zf.open("zeros.bin", "w") as out,
    ):
        shutil.copyfileobj(Zeros(BOMB_BYTES), out, MIB)
    tarred = root / "bomb.tar.gz"
    with tarfile.open(tarred, "w:gz", compresslevel=9) as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = BOMB_BYTES
        tf.addfile(info, Zeros(BOMB_BYTES))
    return {"zip": zipped, "tar.gz": tarred}


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _extract(archive: Path, target: Path, ratio: float | None = 100) -> Path:
    return extract_archive(archive, target, max_total_bytes=20 * 1024**3, max_expansion_ratio=ratio)


def _largest_file(root: Path) -> int:
    return max((p.stat().st_size for p in root.rglob("*") if p.is_file()), default=0)


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_bomb_is_refused_by_its_ratio_before_anything_is_written(
    bombs: dict[str, Path], tmp_path: Path, fmt: str
) -> None:
    archive = bombs[fmt]
    assert BOMB_BYTES / archive.stat().st_size > 500  # a real bomb, not a big file

    started = time.perf_counter()
    with pytest.raises(UnsafeArtifact, match=RATIO_REFUSAL):
        _extract(archive, tmp_path / "out")

    assert time.perf_counter() - started < 2  # refused from its headers, not by writing
    assert list(tmp_path.iterdir()) == []  # no target, no staging folder


def test_zip_member_ratio_applies_past_a_small_allowance(tmp_path: Path) -> None:
    noise = os.urandom(2 * MIB)  # incompressible: the whole archive's ratio stays low
    padded = _zip(tmp_path / "padded.zip", {"noise.bin": noise, "pad.bin": bytes(512 * 1024)})
    # 512 KiB of zeros deflate ~1000:1, but small padded files are what the allowance is for.
    _extract(padded, tmp_path / "ok")
    assert (tmp_path / "ok/pad.bin").stat().st_size == 512 * 1024

    bomb = _zip(tmp_path / "bomb.zip", {"noise.bin": noise, "pad.bin": bytes(4 * MIB)})
    assert 6 * MIB / bomb.stat().st_size < 4  # only the one member is a bomb
    with pytest.raises(UnsafeArtifact, match=r"'pad\.bin' refused: it declares 4194304 bytes"):
        _extract(bomb, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.zip", "ok", "padded.zip"]


@pytest.mark.parametrize(
    ("compressed", "bound"),
    [(1000, 100 * 1000 + RATIO_ALLOWANCE), (None, 100 * 10_000 + RATIO_ALLOWANCE)],
    ids=["zip-member", "whole-stream"],
)
def test_a_lying_header_never_lets_a_byte_past_the_bound_reach_the_disk(
    tmp_path: Path, compressed: int | None, bound: int
) -> None:
    limits = _Limits(2**40, 10, 100, archive_bytes=10_000)
    writer = _Writer(tmp_path, limits)
    writer.expect("liar.bin", 1000, compressed)  # what the header claims passes

    with pytest.raises(UnsafeArtifact, match=r"'liar\.bin' refused: .*expansion ratio"):
        writer.add_file("liar.bin", Zeros(BOMB_BYTES), 1000, compressed)

    assert 0 < (tmp_path / "liar.bin").stat().st_size <= bound


@pytest.mark.parametrize("ratio", [None, "40"], ids=["default", "configured"])
def test_register_refuses_a_bomb_with_exit_2(
    bombs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ratio: str | None
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # where register unpacks archives
    if ratio is not None:
        monkeypatch.setenv("SERVION_REGISTRY_MAX_EXPANSION_RATIO", ratio)
    home = tmp_path / "home"

    for fmt in ("zip", "tar.gz"):
        done = cli(home, "register", "bomb", str(bombs[fmt]), "--version", "v1.0.0")
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: archive member 'zeros.bin' refused"), done.stderr
        assert f"at {ratio or 100}:1 (expansion ratio" in done.stderr

    assert list(scratch.iterdir()) == []
    assert _largest_file(home) < MIB


def test_restore_refuses_a_bomb(bombs: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = cli(home, "registry", "restore", str(bombs["tar.gz"]))

    assert done.returncode == 2
    assert "'zeros.bin' refused" in done.stderr and "expansion ratio" in done.stderr
    assert not list(home.glob(".restore.*"))
    assert _largest_file(home) < MIB


def test_a_higher_ratio_admits_a_model_that_compresses_well(
    tmp_path: Path, tabular: TabularModels
) -> None:
    folder = tmp_path / "padded"
    folder.mkdir()
    shutil.copy(tabular.onnx, folder / "model.onnx")
    (folder / "padding.bin").write_bytes(bytes(4 * MIB))
    archive = tmp_path / "padded.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname="padded")

    def registry(ratio: float) -> ModelRegistry:
        home = tmp_path / f"home-{ratio:g}"
        return ModelRegistry(
            Settings(
                home=home,
                db_url=f"sqlite:///{home}/r.db",
                registry=RegistrySettings(max_expansion_ratio=ratio),
            )
        )

    strict = registry(100)
    with pytest.raises(UnsafeArtifact, match=r"'padded/padding\.bin' refused: .*at 100:1"):
        strict.register(RegisterRequest("padded", archive, "v1.0.0"))
    strict.close()
    lenient = registry(5000)
    assert lenient.register(RegisterRequest("padded", archive, "v1.0.0")).format == "onnx"
    lenient.close()
