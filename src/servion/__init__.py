"""servion: take trained models from a file to a fast, observable, versioned endpoint.

The public API is what this module exports; everything else may change.

>>> from servion import ModelRegistry, RegisterRequest, Settings
>>> registry = ModelRegistry(Settings.load())                                   # doctest: +SKIP
>>> registry.register(RegisterRequest("demo", Path("demo.onnx"), "v1.0.0"))     # doctest: +SKIP
"""

from servion._version import __version__
from servion.config import Settings
from servion.errors import ServionError
from servion.registry import ModelRegistry, ModelVersion, RegisterRequest, VersionPolicy
from servion.runtime import Runtime, Signature, TensorSpec, make_runtime
from servion.server import serve

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
