"""Which runtime serves which artifact format, and how a format is recognised."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from servion.config import RuntimeSettings
from servion.errors import ValidationFailed
from servion.runtime.base import Runtime

FORMATS: dict[str, str] = {
    "onnx": "ONNX graph (.onnx), run by onnxruntime",
    "sklearn-skops": "scikit-learn estimator in skops format (.skops)",
    "sklearn-joblib": "scikit-learn estimator saved by joblib (.joblib), allow-listed",
    "sklearn-pickle": "scikit-learn estimator saved by pickle (.pkl, .pickle), allow-listed",
    "python": "custom Python model class (.py), only with --trust-code",
}

_EXTENSIONS = {
    ".onnx": "onnx",
    ".skops": "sklearn-skops",
    ".joblib": "sklearn-joblib",
    ".pkl": "sklearn-pickle",
    ".pickle": "sklearn-pickle",
    ".py": "python",
}

# The file a model directory must contain for each format.
DIRECTORY_ENTRYPOINTS = {"onnx": "model.onnx", "python": "model.py"}

PICKLE_FORMATS = frozenset({"sklearn-joblib", "sklearn-pickle"})


def is_model_file(path: Path) -> bool:
    """True when the file's extension names a model format."""
    return path.suffix.lower() in _EXTENSIONS


def detect_format(path: Path) -> str:
    """Name the format of a model file or directory from its extension or entry file."""
    if path.is_dir():
        for fmt, entry in DIRECTORY_ENTRYPOINTS.items():
            if (path / entry).is_file():
                return fmt
        raise ValidationFailed(
            "a model directory must contain model.onnx or model.py (or pass --format)"
        )
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        known = ", ".join(sorted(_EXTENSIONS))
        raise ValidationFailed(
            f"unknown model format for extension '{path.suffix}' (known: {known}; or pass --format)"
        )
    return found


def entrypoint(path: Path, fmt: str) -> Path:
    """The file to load: the artifact itself, or the format's entry file inside a directory."""
    if path.is_dir():
        entry = DIRECTORY_ENTRYPOINTS.get(fmt)
        if entry is None or not (path / entry).is_file():
            raise ValidationFailed(f"a {fmt} model directory must contain {entry or 'one file'}")
        return path / entry
    return path


def make_runtime(
    fmt: str, path: Path, settings: RuntimeSettings, options: dict[str, Any] | None = None
) -> Runtime:
    """Create (not load) the runtime for an artifact of format ``fmt``."""
    if fmt not in FORMATS:
        raise ValidationFailed(f"unknown format '{fmt}' (known: {', '.join(sorted(FORMATS))})")
    if fmt == "onnx":
        from servion.runtime.onnx import OnnxRuntime

        return OnnxRuntime(entrypoint(path, fmt), settings, options or {})
    if fmt == "python":
        from servion.runtime.custom import PythonRuntime

        return PythonRuntime(entrypoint(path, fmt), settings, options or {})
    try:
        from servion.runtime.sklearn import SklearnRuntime
    except ImportError as exc:
        raise ValidationFailed(
            f"format {fmt} needs scikit-learn: pip install 'servion[sklearn]' ({exc.name} missing)"
        ) from exc
    factory = partial(SklearnRuntime, fmt=fmt)
    return factory(entrypoint(path, fmt), settings, options or {})
