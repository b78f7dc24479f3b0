"""Load and probe a model in a child process, so a broken or hostile model
cannot crash or hang the caller.

The child loads the artifact, reports its signature, and runs one smoke
inference on the given sample (or on one generated from the signature).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from servion.config import RuntimeSettings
from servion.errors import (
    ChecksumMismatch,
    RuntimeFailure,
    ServionError,
    UnsafeArtifact,
    ValidationFailed,
)
from servion.runtime import Signature
from servion.types import Arrays

# Errors the child may report, rebuilt under their own class in the parent.
_REBUILT: dict[str, type[ServionError]] = {
    c.__name__: c for c in (UnsafeArtifact, ValidationFailed, RuntimeFailure, ChecksumMismatch)
}


@dataclass(frozen=True, slots=True)
class ProbeResult:
    signature: Signature
    outputs: dict[str, tuple[str, tuple[int, ...]]]
    """Name -> (numpy dtype, shape) of each output of the smoke inference."""


def probe(
    fmt: str,
    path: Path,
    settings: RuntimeSettings,
    options: dict[str, Any],
    sample: Arrays | None,
    timeout_s: float,
) -> ProbeResult:
    """Load and smoke-test a model in a fresh process; raise the error the child saw."""
    # A plain interpreter on ``-m``, not multiprocessing's spawn: that one would import the
    # caller's main module again (the CLI, a test runner) before the probe's own.
    reader, writer = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "servion.runtime.probe_child", str(writer)],
        stdin=subprocess.PIPE, pass_fds=(writer,),
    )  # fmt: skip
    os.close(writer)
    parent = Connection(reader, writable=False)
    try:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died at once: said below
            proc.stdin.write(pickle.dumps((fmt, path, settings, options, sample)))
            proc.stdin.close()
        if not parent.poll(timeout_s):
            proc.kill()
            raise RuntimeFailure(f"the model did not load and answer within {timeout_s:g} s")
        try:
            message = parent.recv()
        except EOFError:
            _wait(proc)
            raise RuntimeFailure(
                f"the model crashed the process while loading ({_exit(proc)})"
            ) from None
    finally:
        _wait(proc)
        parent.close()
    if message[0] == "ok":
        outputs = {k: (v[0], tuple(v[1])) for k, v in message[2].items()}
        return ProbeResult(Signature.from_dict(message[1]), outputs)
    _, kind, text = message
    raise _REBUILT.get(kind, RuntimeFailure)(text)


def _wait(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _exit(proc: subprocess.Popen[bytes]) -> str:
    code = proc.returncode
    if code is None:
        return "still running"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"
