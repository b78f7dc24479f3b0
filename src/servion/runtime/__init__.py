"""Runtimes: one adapter per model format behind one small interface.

``make_runtime(format, path, settings)`` creates the adapter; ``load``,
``signature``, ``predict``, ``warmup`` and ``unload`` are all a caller uses.
This subsystem knows nothing of the registry, the server or the protocol.
"""

from servion.runtime.base import Runtime, Signature, TensorSpec, sample_inputs
from servion.runtime.formats import (
    FORMATS,
    PICKLE_FORMATS,
    check_options,
    check_static,
    detect_format,
    entrypoint,
    is_model_file,
    make_runtime,
)
from servion.runtime.timing import BatchPoint, batch_point

__all__ = [
    "FORMATS",
    "PICKLE_FORMATS",
    "BatchPoint",
    "Runtime",
    "Signature",
    "TensorSpec",
    "batch_point",
    "check_options",
    "check_static",
    "detect_format",
    "entrypoint",
    "is_model_file",
    "make_runtime",
    "sample_inputs",
]
