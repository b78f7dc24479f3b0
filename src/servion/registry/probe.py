"""Load and probe a model in a child process, so a broken or hostile model
cannot crash or hang the caller.

The child loads the artifact, reports its signature, and runs one smoke
inference on the given sample (or on one generated from the signature).
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from servion.config import RuntimeSettings
from servion.datatypes import NUMPY_OF
from servion.errors import (
    ChecksumMismatch,
    RuntimeFailure,
    ServionError,
    UnsafeArtifact,
    ValidationFailed,
)
from servion.runtime import Signature, make_runtime, sample_inputs
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


def _child(
    conn: Connection,
    fmt: str,
    path: Path,
    settings: RuntimeSettings,
    options: dict[str, Any],
    sample: Arrays | None,
) -> None:
    try:
        runtime = make_runtime(fmt, path, settings, options)
        runtime.load()
        signature = runtime.signature()
        inputs = sample_inputs(signature) if sample is None else _check_sample(signature, sample)
        outputs = runtime.predict(inputs)
        missing = {o.name for o in signature.outputs} - set(outputs)
        if missing:
            raise RuntimeFailure(f"smoke inference did not return outputs {sorted(missing)}")
        described = {k: (str(np.asarray(v).dtype), np.asarray(v).shape) for k, v in outputs.items()}
        conn.send(("ok", signature.to_dict(), described))
    except ServionError as exc:
        conn.send(("refused", type(exc).__name__, exc.message))
    except BaseException as exc:  # the model's own code may raise anything
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        conn.send(("refused", "RuntimeFailure", f"the model failed to load or run: {detail}"))
    finally:
        conn.close()


def _check_sample(signature: Signature, inputs: Arrays) -> Arrays:
    """Match the sample to the signature; JSON samples carry no datatype, so cast to it."""
    expected = {s.name: s.datatype for s in signature.inputs}
    if set(inputs) != set(expected):
        raise RuntimeFailure(
            f"the sample's inputs {sorted(inputs)} do not match the model's {sorted(expected)}"
        )
    try:
        return {
            k: np.asarray(v).astype(NUMPY_OF[expected[k]], copy=False) for k, v in inputs.items()
        }
    except (TypeError, ValueError) as exc:
        raise RuntimeFailure(f"the sample does not fit the model's datatypes: {exc}") from None


def probe(
    fmt: str,
    path: Path,
    settings: RuntimeSettings,
    options: dict[str, Any],
    sample: Arrays | None,
    timeout_s: float,
) -> ProbeResult:
    """Load and smoke-test a model in a fresh process; raise the error the child saw."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child, args=(child, fmt, path, settings, options, sample), daemon=True
    )
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            if proc.is_alive():
                proc.kill()
                raise RuntimeFailure(f"the model did not load and answer within {timeout_s:g} s")
            proc.join()
            raise RuntimeFailure(f"the model crashed the process while loading ({_exit(proc)})")
        try:
            message = parent.recv()
        except EOFError:
            proc.join(5)
            raise RuntimeFailure(
                f"the model crashed the process while loading ({_exit(proc)})"
            ) from None
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
        parent.close()
    if message[0] == "ok":
        outputs = {k: (v[0], tuple(v[1])) for k, v in message[2].items()}
        return ProbeResult(Signature.from_dict(message[1]), outputs)
    _, kind, text = message
    raise _REBUILT.get(kind, RuntimeFailure)(text)


def _exit(proc: Any) -> str:
    code = proc.exitcode
    if code is None:
        return "still running"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"
