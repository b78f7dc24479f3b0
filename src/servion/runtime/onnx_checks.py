"""Static checks on an ONNX model before onnxruntime opens it.

An ONNX file may keep tensor bytes in "external data" files named by a
``location`` string inside the graph. onnxruntime opens whatever that string
names, so an untrusted model could read ``/etc/passwd``, a file beside its
folder, or a FIFO that hangs the loader. ``check_external_data`` reads only the
graph (never the external bytes) and accepts only plain, singly-linked files
inside the model's own folder.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from servion.errors import UnsafeArtifact, ValidationFailed, printable

if TYPE_CHECKING:  # onnx is imported where a graph is parsed: serving does not need it
    import onnx

__all__ = ["check_external_data"]

# onnxruntime treats this location as "the offset is a raw memory address".
_ORT_MEMORY_TAG = "_ORT_MEM_ADDR_"
_DRIVE = re.compile(r"^[A-Za-z]:")
_DECIMAL = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class _ExternalRef:
    """One tensor's pointer into an external file, as written in the graph."""

    tensor: str
    location: str
    offset: int
    length: int | None


def check_external_data(model_path: Path) -> list[Path]:
    """Refuse a model whose external data could leave its folder; return the data files.

    Every tensor stored EXTERNAL (initializers, sparse initializers, Constant
    and other attribute tensors, If/Loop/Scan subgraphs, function bodies,
    training graphs) must name a relative ``location`` without ``..`` that is a
    regular, non-symlinked, singly-linked file inside ``model_path.parent``,
    and its ``offset``+``length`` must lie within that file. The returned
    paths (sorted, unique) are the files the registry must hash with the model.

    Raises ``UnsafeArtifact`` naming the refused location, and
    ``ValidationFailed`` if the file is not ONNX or a reference is malformed.

    >>> check_external_data(Path("models/mlp/model.onnx"))  # doctest: +SKIP
    [PosixPath('models/mlp/weights.bin')]
    """
    import onnx

    model = _load_graph_only(model_path)
    folder = model_path.parent
    found: dict[tuple[str, ...], Path] = {}
    for tensor in _model_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        ref = _parse_ref(tensor)
        parts = _safe_parts(ref.location)
        size = _check_file(folder, parts, ref.location)
        _check_span(ref, size)
        found[parts] = folder.joinpath(*parts)
    return [found[key] for key in sorted(found)]


def _load_graph_only(model_path: Path) -> onnx.ModelProto:
    """Parse the graph without following any external reference."""
    import onnx

    name = printable(model_path.name)
    if not model_path.is_file():
        raise ValidationFailed(f"not a valid ONNX model: {name} is not a file")
    try:
        # format is fixed: onnx would otherwise pick a text parser from the suffix,
        # while onnxruntime always reads binary protobuf.
        model = onnx.load(str(model_path), format="protobuf", load_external_data=False)
    except Exception as exc:  # protobuf and onnx raise several unrelated types
        # The exception text may hold the full path; only its type is shown.
        raise ValidationFailed(f"not a valid ONNX model: {name} ({type(exc).__name__})") from exc
    if not model.HasField("graph"):
        raise ValidationFailed(f"not a valid ONNX model: {name} has no graph")
    return model


# --- finding tensors --------------------------------------------------------


def _model_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)
    for training in model.training_info:
        yield from _graph_tensors(training.initialization)
        yield from _graph_tensors(training.algorithm)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    yield from _sparse_parts(graph.sparse_initializer)
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Iterable[onnx.NodeProto]) -> Iterator[onnx.TensorProto]:
    for node in nodes:
        for attr in node.attribute:
            # Every field is walked whatever attr.type says: a reader that trusts
            # the type tag must not see a tensor this check skipped.
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield from _sparse_parts([attr.sparse_tensor])
            yield from _sparse_parts(attr.sparse_tensors)
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for graph in attr.graphs:
                yield from _graph_tensors(graph)


def _sparse_parts(sparse: Iterable[onnx.SparseTensorProto]) -> Iterator[onnx.TensorProto]:
    for tensor in sparse:
        yield tensor.values
        yield tensor.indices


# --- checking one reference -------------------------------------------------


def _parse_ref(tensor: onnx.TensorProto) -> _ExternalRef:
    entries: dict[str, str] = {}
    for entry in tensor.external_data:
        if entry.key in entries:
            # Readers disagree on which duplicate wins, so neither may be trusted.
            raise UnsafeArtifact(
                f"tensor '{printable(tensor.name)}' repeats external data key '{entry.key}'"
            )
        entries[entry.key] = entry.value
    if "location" not in entries:
        raise ValidationFailed(
            f"tensor '{printable(tensor.name)}' is stored externally but names no location"
        )
    return _ExternalRef(
        tensor=tensor.name,
        location=entries["location"],
        offset=_non_negative(tensor, entries, "offset") or 0,
        length=_non_negative(tensor, entries, "length"),
    )


def _non_negative(tensor: onnx.TensorProto, entries: dict[str, str], key: str) -> int | None:
    value = entries.get(key)
    if value is None:
        return None
    if not _DECIMAL.fullmatch(value):
        raise ValidationFailed(
            f"tensor '{printable(tensor.name)}' has a non-numeric external data "
            f"{key} '{printable(value)}'"
        )
    return int(value)


def _refuse(location: str, why: str) -> UnsafeArtifact:
    return UnsafeArtifact(f"external data location '{printable(location)}' refused: {why}")


def _safe_parts(location: str) -> tuple[str, ...]:
    """Split ``location`` into parts that cannot name anything above the folder."""
    if any(not c.isprintable() for c in location):
        raise _refuse(location, "control character in location")
    if _ORT_MEMORY_TAG in location:
        raise _refuse(location, "onnxruntime reads this location as a memory address")
    if "\\" in location or _DRIVE.match(location):
        raise _refuse(location, "backslash or drive letter in location")
    if os.path.isabs(location) or location.startswith("/"):
        raise _refuse(location, "absolute path")
    parts = tuple(p for p in location.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(location, "'..' path component")
    if not parts:
        raise _refuse(location, "empty location")
    return parts


def _check_file(folder: Path, parts: tuple[str, ...], location: str) -> int:
    """Check every component below ``folder``; return the data file's size."""
    path = folder
    info = None
    for part in parts:
        path = path / part
        try:
            info = path.lstat()
        except FileNotFoundError:
            raise _refuse(location, "file does not exist") from None
        except OSError:  # e.g. a file where a folder was expected
            raise _refuse(location, "path cannot be read") from None
        if stat.S_ISLNK(info.st_mode):
            raise _refuse(location, "symbolic link in path")
    assert info is not None  # parts is never empty
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(location, "not a regular file")
    if info.st_nlink > 1:
        # A hard link shares bytes with a file elsewhere that can change them later.
        raise _refuse(location, "file is a hard link")
    real_folder = os.path.realpath(folder)
    if os.path.commonpath([real_folder, os.path.realpath(path)]) != real_folder:
        raise _refuse(location, "resolves outside the model folder")
    return info.st_size


def _check_span(ref: _ExternalRef, size: int) -> None:
    end = ref.offset + (ref.length or 0)
    if end > size:
        raise _refuse(
            ref.location,
            f"tensor '{printable(ref.tensor)}' reads bytes {ref.offset}..{end} "
            f"of a {size}-byte file",
        )
