"""servion: take trained models from a file to a fast, observable, versioned endpoint.

The public API is what this module exports; everything else may change. Names
are imported on first use, so ``servion serve``'s supervisor process and the
CLI pay only for what they touch.

>>> from servion import ModelRegistry, RegisterRequest, Settings
>>> registry = ModelRegistry(Settings.load())                                   # doctest: +SKIP
>>> registry.register(RegisterRequest("demo", Path("demo.onnx"), "v1.0.0"))     # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from servion._version import __version__

if TYPE_CHECKING:
    from servion.config import Settings
    from servion.errors import ServionError
    from servion.registry import ModelRegistry, ModelVersion, RegisterRequest, VersionPolicy
    from servion.runtime import Runtime, Signature, TensorSpec, make_runtime
    from servion.server import serve

_HOME = {
    "ModelRegistry": "servion.registry",
    "ModelVersion": "servion.registry",
    "RegisterRequest": "servion.registry",
    "Runtime": "servion.runtime",
    "ServionError": "servion.errors",
    "Settings": "servion.config",
    "Signature": "servion.runtime",
    "TensorSpec": "servion.runtime",
    "VersionPolicy": "servion.registry",
    "make_runtime": "servion.runtime",
    "serve": "servion.server",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'servion' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ModelRegistry",
    "ModelVersion",
    "RegisterRequest",
    "Runtime",
    "ServionError",
    "Settings",
    "Signature",
    "TensorSpec",
    "VersionPolicy",
    "__version__",
    "make_runtime",
    "serve",
]
