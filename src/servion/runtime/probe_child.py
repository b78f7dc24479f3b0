"""The child side of a registration's probe (``servion.registry.probe``): load the model,
report its signature, run one smoke inference, send the outcome down the pipe.

It lives apart from the registry so that the fresh interpreter a probe starts imports the
runtimes and nothing of the registry's database layer.
"""

from __future__ import annotations

import pickle
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from servion.config import RuntimeSettings
from servion.datatypes import NUMPY_OF
from servion.errors import RuntimeFailure, ServionError
from servion.runtime import Signature, make_runtime, sample_inputs
from servion.types import Arrays


def run_probe(
    conn: Connection,
    fmt: str,
    path: Path,
    settings: RuntimeSettings,
    options: dict[str, Any],
    sample: Arrays | None,
) -> None:
    """In the child: load, describe and smoke-test the model, and send what happened."""
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


def main() -> None:
    """``python -m servion.runtime.probe_child FD``: the probe's arguments pickled on stdin
    (from the registering process, nobody else), its outcome sent on the pipe ``FD``."""
    fd = int(sys.argv[1])
    fmt, path, settings, options, sample = pickle.load(sys.stdin.buffer)
    run_probe(Connection(fd, readable=False), fmt, path, settings, options, sample)


if __name__ == "__main__":
    main()
