"""Admit pickle-based model files (pickle, joblib, PyTorch zip) by allow-list.

Every global a file references must be on an ``AllowList``; anything else is
refused with ``UnsafeArtifact`` naming it, before its module is even imported.
The gate is ``find_class`` of a pure-Python restricted unpickler; the static
pickletools scan and picklescan only add depth.  Files that do not parse
exactly (truncated, trailing bytes, bad checksum, wrong format) are refused,
and nothing here ever falls back to an unrestricted unpickle.
"""

from __future__ import annotations

import bz2
import copyreg
import functools
import io
import lzma
import pickle
import pickletools
import sys
import types
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, Protocol

from picklescan.scanner import SafetyLevel
from picklescan.scanner import scan_pickle_bytes as _picklescan

from servion.errors import UnsafeArtifact
from servion.runtime._pickle_allowlist import (
    AllowList,
    Ref,
    fix_import,
    qualified,
    resolve,
)

__all__ = [
    "AllowList",
    "load_joblib_file",
    "load_pickle_file",
    "scan_pickle_bytes",
]

# --- static scan ----------------------------------------------------------------

_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"}
    | {"STRING", "BINSTRING", "SHORT_BINSTRING"}
)
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


def _extension_ref(code: int) -> Ref:
    registry: dict[int, Ref] = copyreg._inverted_registry  # type: ignore[attr-defined]  # private
    return registry.get(code, (f"<unregistered extension code {code}>", ""))


def _static_extension_ref(code: int) -> Ref:
    """Always refused: the registry is per process, so the loader's may map the code elsewhere."""
    module, name = _extension_ref(code)
    return (f"<extension code {code} = {qualified((module, name))}>" if name else module, "")


def _global_of(kind: str, arg: Any, top: list[str | None], proto: int) -> Ref | None:
    """The global an opcode references, if any (``top``: known topmost stack strings)."""
    if kind in ("GLOBAL", "INST"):
        module, _, name = str(arg).partition(" ")
        return fix_import(module, name, proto)
    if kind == "STACK_GLOBAL":
        if len(top) >= 2 and isinstance(top[-2], str) and isinstance(top[-1], str):
            return fix_import(top[-2], top[-1], proto)
        return ("<STACK_GLOBAL with computed operands>", "")
    if kind in ("EXT1", "EXT2", "EXT4"):
        return _static_extension_ref(int(arg))
    return None


def _referenced_globals(data: bytes) -> Iterator[Ref]:
    """Yield every global the pickle references; ValueError unless it is exactly one pickle.

    STACK_GLOBAL takes its operands from the stack, so we track which topmost
    items were pushed by consecutive string (or memo-of-string) opcodes; an
    operand we cannot prove literal is reported unresolved, hence refused.
    """
    proto, end = 0, -1
    memo: dict[int, str | None] = {}
    top: list[str | None] = []
    for op, arg, pos in pickletools.genops(data):
        end, kind = (-1 if pos is None else pos), op.name
        if kind == "PROTO":
            proto = int(arg)  # type: ignore[arg-type]  # PROTO's argument is an int
        elif kind in _STRING_OPS:
            top.append(arg if isinstance(arg, str) else None)
        elif kind in _GET_OPS:
            top.append(memo.get(arg) if isinstance(arg, int) else None)
        elif kind == "MEMOIZE" or kind in _PUT_OPS:
            index = len(memo) if kind == "MEMOIZE" else int(arg)  # type: ignore[arg-type]  # an int
            memo[index] = top[-1] if top else None
        elif kind != "FRAME":
            ref = _global_of(kind, arg, top, proto)
            if ref is not None:
                yield ref
            top = []
    if end + 1 != len(data):
        raise ValueError("trailing bytes after the pickle STOP opcode")


def scan_pickle_bytes(data: bytes | BinaryIO, allow: AllowList) -> list[str]:
    """Statically list the globals of one complete pickle, refusing untrusted ones.

    Returns ``module.name`` for every global referenced, in first-use order.
    Raises ``UnsafeArtifact`` if the bytes are not exactly one well-formed
    pickle (truncated, trailing bytes, unknown opcode), or if any global is not
    allowed, naming every offending global.  Nothing is unpickled.

        scan_pickle_bytes(pickle.dumps(StandardScaler()), AllowList.default())
    """
    raw = data if isinstance(data, bytes) else data.read()
    try:
        refs = list(dict.fromkeys(_referenced_globals(raw)))
    except Exception as exc:  # pickletools raises ValueError, struct and decode errors alike
        raise UnsafeArtifact(f"not one complete, well-formed pickle: {exc}") from exc
    offending = [qualified(r) for r in refs if not allow.allows(*r)]
    if offending:
        raise UnsafeArtifact(f"untrusted globals, not on the allow-list: {', '.join(offending)}")
    return [qualified(r) for r in refs]


def _refuse_picklescan_findings(payload: bytes, file_id: str) -> None:
    """Defence in depth: refuse what picklescan calls dangerous even if we let it through."""
    result = _picklescan(io.BytesIO(payload), file_id, multiple_pickles=False)
    flagged = [f"{g.module}.{g.name}" for g in result.globals if g.safety == SafetyLevel.Dangerous]
    if flagged:
        raise UnsafeArtifact(f"{file_id}: picklescan flags dangerous globals: {', '.join(flagged)}")


@functools.cache
def _picklescan_admits(ref: Ref) -> bool:
    """picklescan's verdict on one global, judged from a pickle that only names it."""
    module, name = ref
    synthetic = b"c%s\n%s\nN." % (module.encode(), name.encode())
    result = _picklescan(io.BytesIO(synthetic), qualified(ref), multiple_pickles=False)
    return not any(g.safety == SafetyLevel.Dangerous for g in result.globals)


# --- restricted loading ---------------------------------------------------------


class _Gate:
    """The allow-list check shared by every restricted unpickler reading one file."""

    def __init__(self, allow: AllowList) -> None:
        self.allow = allow
        self.seen: dict[Ref, None] = {}

    def admit(self, module: str, name: str, proto: int) -> object:
        ref = fix_import(module, name, proto)
        self.seen[ref] = None
        obj = resolve(ref, self.allow)
        # Defence in depth before anything is built: the allow-list (perhaps a
        # deployment's extension) let it through, but a deny-list knows it.
        if not _picklescan_admits(ref):
            raise UnsafeArtifact(f"picklescan flags '{qualified(ref)}' as dangerous")
        return obj


_NOT_BUILDABLE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)


def _guarded_build(unpickler: Any) -> None:
    """BUILD, but only on instances.

    BUILD's slot state is applied with setattr, so on a class or function it
    would rewrite a trusted global for every later load in this process.
    """
    target = unpickler.stack[-2]
    if isinstance(target, _NOT_BUILDABLE) or type(target).__name__ == "cython_function_or_method":
        raise UnsafeArtifact(f"BUILD would modify the global {target!r}, not an instance")
    pickle._Unpickler.load_build(unpickler)  # type: ignore[attr-defined]  # not in typeshed


class _RestrictedUnpickler(pickle._Unpickler):
    """Pure-Python unpickler: GLOBAL, STACK_GLOBAL, INST, OBJ and EXT* all reach find_class."""

    dispatch = pickle._Unpickler.dispatch.copy()
    dispatch[pickle.BUILD[0]] = _guarded_build

    def __init__(self, file: BinaryIO, gate: _Gate) -> None:
        super().__init__(file)
        self.gate = gate

    def find_class(self, module: str, name: str) -> Any:
        sys.audit("pickle.find_class", module, name)
        return self.gate.admit(module, name, getattr(self, "proto", 0))

    def persistent_load(self, pid: Any) -> NoReturn:
        raise UnsafeArtifact("the pickle uses persistent ids, which no admitted format needs")

    def get_extension(self, code: int) -> None:
        # Skip copyreg's process-wide _extension_cache: an entry cached by an
        # unrestricted unpickle elsewhere would otherwise bypass find_class.
        self.append(self.find_class(*_extension_ref(code)))  # type: ignore[attr-defined]  # load()


def _finish(unpickler: Any, stream: BinaryIO, what: str) -> object:
    """Run ``unpickler`` and insist the stream ends exactly at its STOP."""
    try:
        obj = unpickler.load()
        trailing = stream.read(1)
    except UnsafeArtifact as exc:
        raise UnsafeArtifact(f"{what}: {exc.message}") from exc
    except Exception as exc:  # any parse or constructor failure is a refusal, never a retry
        raise UnsafeArtifact(f"{what}: cannot be unpickled safely: {exc!r}") from exc
    if trailing:
        raise UnsafeArtifact(f"{what}: trailing bytes after the pickle STOP opcode")
    return obj


def load_pickle_file(path: Path, allow: AllowList) -> object:
    """Load a plain pickle, constructing only allow-listed globals.

    The static scan runs first, so an untrusted file is refused before any
    object is built; the restricted ``find_class`` is the gate either way.

        model = load_pickle_file(Path("model.pkl"), AllowList.default())
    """
    data = path.read_bytes()
    try:
        scan_pickle_bytes(data, allow)
    except UnsafeArtifact as exc:
        raise UnsafeArtifact(f"{path.name}: {exc.message}") from exc
    _refuse_picklescan_findings(data, path.name)
    stream = io.BytesIO(data)
    return _finish(_RestrictedUnpickler(stream, _Gate(allow)), stream, path.name)


# --- joblib ---------------------------------------------------------------------


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, /) -> bytes: ...


_UNSUPPORTED_MAGIC = ((b"ZF", "the joblib < 0.10 format"), (b"\x04\x22\x4d\x18", "lz4"))
_COMPRESSIONS: tuple[tuple[bytes, str, Callable[[], _Decompressor]], ...] = (
    (b"\x1f\x8b", "gzip", lambda: zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)),
    (b"\x78", "zlib", zlib.decompressobj),
    (b"BZ", "bz2", bz2.BZ2Decompressor),
    (b"\xfd7zXZ", "xz", lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ)),
    (b"\x5d\x00", "lzma", lambda: lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)),
)


def _joblib_payload(raw: bytes, what: str) -> bytes:
    """Undo joblib's compression once, with its checksum and its exact end verified.

    Our own strict decompression rather than joblib's file wrappers, which
    take a truncated zlib stream for a clean end of file.
    """
    for magic, label in _UNSUPPORTED_MAGIC:
        if raw.startswith(magic):
            raise UnsafeArtifact(f"{what}: {label} is not supported")
    for magic, method, make in _COMPRESSIONS:
        if raw.startswith(magic):
            decompressor = make()
            try:
                payload = decompressor.decompress(raw)
            except (zlib.error, OSError, EOFError, ValueError, lzma.LZMAError) as exc:
                raise UnsafeArtifact(f"{what}: corrupt {method} stream: {exc}") from exc
            if not decompressor.eof or decompressor.unused_data:
                raise UnsafeArtifact(f"{what}: {method} stream is truncated or has trailing bytes")
            return payload
    return raw


_WRAPPER_FIELDS = frozenset(
    {"subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes"}
)


def _read_wrapped_array(unpickler: Any, wrapper: Any, wrapper_cls: Any) -> object:
    """Read the array behind a joblib ``NumpyArrayWrapper``, restricted.

    The wrapper's state came from the file, so it is validated before joblib's
    reader sees it (an extra attribute could shadow a method).  An object
    array is a nested pickle: it is read by our restricted unpickler with the
    same gate, never by a fresh unrestricted one.
    """
    import numpy as np

    state, stream = vars(wrapper), unpickler.file_handle
    shape, dtype = state.get("shape"), state.get("dtype")
    if (
        not _WRAPPER_FIELDS.issuperset(state)
        or state.get("subclass") is not np.ndarray
        or not isinstance(dtype, np.dtype)
        or not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape))
        or state.get("order") not in ("C", "F")
    ):
        raise UnsafeArtifact("malformed joblib array header")
    if dtype.hasobject:
        array = _RestrictedUnpickler(stream, unpickler.gate).load()
        if not isinstance(array, np.ndarray):
            raise UnsafeArtifact("a joblib object array did not unpickle to an array")
        return array
    if functools.reduce(int.__mul__, shape, dtype.itemsize) > len(stream.getbuffer()):
        raise UnsafeArtifact("a joblib array is larger than the file")  # before allocating it
    return wrapper_cls.read_array(wrapper, unpickler, True)


@functools.cache
def _joblib_unpickler_class() -> type[Any]:
    """Built on first use, so importing servion does not import joblib."""
    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

    class _RestrictedJoblibUnpickler(NumpyUnpickler):  # type: ignore[misc]  # joblib has no stubs
        dispatch = NumpyUnpickler.dispatch.copy()
        find_class = _RestrictedUnpickler.find_class
        persistent_load = _RestrictedUnpickler.persistent_load
        get_extension = _RestrictedUnpickler.get_extension

        def __init__(self, filename: str, stream: BinaryIO, gate: _Gate) -> None:
            super().__init__(filename, stream, ensure_native_byte_order=True, mmap_mode=None)
            self.gate = gate

        def load_build(self) -> None:
            _guarded_build(self)
            if type(self.stack[-1]) is NumpyArrayWrapper:
                self.stack[-1] = _read_wrapped_array(self, self.stack[-1], NumpyArrayWrapper)

        dispatch[pickle.BUILD[0]] = load_build

    return _RestrictedJoblibUnpickler


def _load_joblib(path: Path, allow: AllowList) -> tuple[object, list[str]]:
    payload = _joblib_payload(path.read_bytes(), path.name)
    gate, stream = _Gate(allow), io.BytesIO(payload)
    obj = _finish(_joblib_unpickler_class()(str(path), stream, gate), stream, path.name)
    return obj, [qualified(r) for r in gate.seen]


def load_joblib_file(path: Path, allow: AllowList) -> object:
    """Load a ``joblib.dump`` file (any of its compressions), restricted, never memory-mapped.

    A static scan cannot walk past joblib's raw array bytes, so the restricted
    load is the gate here: the first untrusted global stops it and is named.

        model = load_joblib_file(Path("model.joblib"), AllowList.default())
    """
    return _load_joblib(path, allow)[0]
