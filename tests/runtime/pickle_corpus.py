"""Hand-built pickle bytes for the safe_pickle tests: opcodes, bypass corpus, torch zips.

Built opcode by opcode so no payload ever has to be pickled (or its module
imported) by the test process itself.
"""

from __future__ import annotations

import gzip
import io
import marshal
import shlex
import zipfile
from dataclasses import dataclass
from pathlib import Path

EXT_CODE = 0xF7

# --- raw opcode builders ------------------------------------------------------


def g(module: str, name: str) -> bytes:
    """GLOBAL: push module.name."""
    return f"c{module}\n{name}\n".encode()


def u(text: str) -> bytes:
    """UNICODE (protocol 0): push a str."""
    return b"V" + text.encode("raw_unicode_escape") + b"\n"


def su(text: str) -> bytes:
    """SHORT_BINUNICODE (protocol 4): push a str."""
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def bu(text: str) -> bytes:
    """BINUNICODE (protocol 2): push a str."""
    raw = text.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


def bb(raw: bytes) -> bytes:
    """BINBYTES (protocol 3): push bytes."""
    return b"B" + len(raw).to_bytes(4, "little") + raw


def call(func: bytes, *args: bytes) -> bytes:
    """REDUCE: func(*args)."""
    return func + b"(" + b"".join(args) + b"tR"


# --- the corpus -----------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    data: bytes
    offending: tuple[str, ...]  # in load order: the restricted load names the first
    live: bool = True  # a control run with pickle.load must execute it


def corpus(marker: Path) -> dict[str, Payload]:
    sh = f"touch {shlex.quote(str(marker))}"
    py = f"open({str(marker)!r}, 'w').close()"
    code = marshal.dumps(compile(py, "<payload>", "exec"))
    p4 = b"\x80\x04"
    return {
        "os.system": Payload(call(g("os", "system"), u(sh)) + b".", ("os.system",)),
        "posix.system": Payload(call(g("posix", "system"), u(sh)) + b".", ("posix.system",)),
        "builtins.eval": Payload(call(g("builtins", "eval"), u(py)) + b".", ("builtins.eval",)),
        "builtins.exec": Payload(call(g("builtins", "exec"), u(py)) + b".", ("builtins.exec",)),
        "nested getattr(__import__)": Payload(
            call(
                call(
                    g("builtins", "getattr"),
                    call(g("builtins", "__import__"), u("os")),
                    u("system"),
                ),
                u(sh),
            )
            + b".",
            ("builtins.getattr", "builtins.__import__"),
        ),
        "pip.main": Payload(
            call(g("pip", "main"), b"(" + u("--version") + b"l") + b".", ("pip.main",), live=False
        ),
        "runpy._run_code": Payload(
            call(g("runpy", "_run_code"), u(py), b"(d") + b".", ("runpy._run_code",)
        ),
        "marshal + FunctionType": Payload(
            b"\x80\x03"
            + call(call(g("types", "FunctionType"), call(g("marshal", "loads"), bb(code)), b"(d"))
            + b".",
            ("types.FunctionType", "marshal.loads"),
        ),
        "pydoc.locate + methodcaller": Payload(
            call(
                call(g("operator", "methodcaller"), u("system"), u(sh)),
                call(g("pydoc", "locate"), u("os")),
            )
            + b".",
            ("operator.methodcaller", "pydoc.locate"),
        ),
        "functools.partial": Payload(
            call(call(g("functools", "partial"), g("os", "system"), u(sh))) + b".",
            ("functools.partial", "os.system"),
        ),
        "subprocess.Popen": Payload(
            call(g("subprocess", "Popen"), b"(" + u("touch") + u(str(marker)) + b"l") + b".",
            ("subprocess.Popen",),
        ),
        "numpy runstring": Payload(
            call(g("numpy.testing._private.utils", "runstring"), u(py), b"(d") + b".",
            ("numpy.testing._private.utils.runstring",),
        ),
        "numpy.memmap creates a file": Payload(
            call(g("numpy", "memmap"), u(str(marker)), u("uint8"), u("w+"), b"I0\n", b"(I4\nt")
            + b".",
            ("numpy.memmap",),
        ),
        "INST opcode": Payload(b"(" + u(sh) + b"ios\nsystem\n.", ("os.system",)),
        "OBJ opcode": Payload(b"(" + g("os", "system") + u(sh) + b"o.", ("os.system",)),
        "STACK_GLOBAL": Payload(
            p4 + su("posix") + su("system") + b"\x93" + su(sh) + b"\x85R.", ("posix.system",)
        ),
        "STACK_GLOBAL via memo": Payload(
            p4
            + su("posix")
            + b"\x94"
            + su("system")
            + b"\x94"
            + b"0" * 2
            + b"h\x00h\x01\x93"
            + su(sh)
            + b"\x85R.",
            ("posix.system",),
        ),
        "STACK_GLOBAL with a computed module": Payload(
            p4
            + call(g("builtins", "str"), u("posix"))
            + su("system")
            + b"\x93"
            + su(sh)
            + b"\x85R.",
            ("posix.system",),  # the load names it; the static scan cannot, and refuses anyway
        ),
        "dotted name hopping out of sklearn": Payload(
            p4
            + su("sklearn.base")
            + su("np.testing._private.utils.runstring")
            + b"\x93"
            + call(b"", u(py), b"(d")  # REDUCE on the callable STACK_GLOBAL pushed
            + b".",
            ("sklearn.base.np.testing._private.utils.runstring",),
        ),
        "EXT1 via copyreg registry": Payload(
            b"\x80\x02\x82" + bytes([EXT_CODE]) + b"(" + u(sh) + b"tR.",
            ("posix.system",),
            live=False,  # the registry entry exists only in this process
        ),
    }


def poison_pickle() -> bytes:
    """BUILD with slot state on a trusted class (one without __setstate__): setattr on the class."""
    state = b"N}" + bu("poisoned") + b"K\x01s\x86"
    return b"\x80\x02" + g("sklearn._loss.link", "Interval") + state + b"b."


def gzip_bad_crc(data: bytes) -> bytes:
    raw = bytearray(gzip.compress(data))
    raw[-8] ^= 0xFF  # the CRC32 in the trailer
    return bytes(raw)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def state_dict_pickle(storage: tuple[str, str] = ("torch", "FloatStorage")) -> bytes:
    """What torch.save writes for {"weight": tensor(4)}, by hand (torch is not installed)."""
    pid = b"(" + bu("storage") + g(*storage) + bu("0") + bu("cpu") + b"K\x04tQ"
    tensor = call(
        g("torch._utils", "_rebuild_tensor_v2"),
        pid,
        b"K\x00",
        b"K\x04\x85",
        b"K\x01\x85",
        b"\x89",
        g("collections", "OrderedDict") + b")R",
    )
    return b"\x80\x02" + g("collections", "OrderedDict") + b")R" + bu("weight") + tensor + b"s."


def torch_zip(path: Path, data_pkl: bytes, **extra: bytes) -> Path:
    members = {
        "archive/data.pkl": data_pkl,
        "archive/version": b"3\n",
        "archive/data/0": b"\0" * 16,
    }
    path.write_bytes(zip_bytes({**members, **extra}))
    return path
