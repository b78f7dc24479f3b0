"""Which runtime serves which artifact format, and how a format is recognised."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from servion.config import RuntimeSettings
from servion.errors import ValidationFailed
from servion.runtime.base import Runtime
from servion.runtime.boosters import check_booster_file, lightgbm_by_content, xgboost_by_content
from servion.runtime.torch_options import TORCH_FORMATS, check_archive
from servion.runtime.torch_options import check_options as check_options_torch
from servion.types import Arrays


class _Adapter(NamedTuple):
    """Where a format's runtime class lives, and the extra that installs its library."""

    module: str
    cls: str
    extra: str | None


FORMATS: dict[str, str] = {
    "onnx": "ONNX graph (.onnx), run by onnxruntime",
    "sklearn-skops": "scikit-learn estimator in skops format (.skops)",
    "sklearn-joblib": "scikit-learn estimator saved by joblib (.joblib), allow-listed",
    "sklearn-pickle": "scikit-learn estimator saved by pickle (.pkl, .pickle), allow-listed",
    "python": "custom Python model class (.py), only with --trust-code",
    "torchscript": "PyTorch TorchScript archive (.pt, .pth), run by torch; needs --sample",
    "torch-export": "PyTorch torch.export program (.pt2), run by torch",
    "xgboost": "XGBoost booster in JSON or UBJSON (.json, .ubj), never a pickle",
    "lightgbm": "LightGBM booster in its text model format (.txt, .lgb), never a pickle",
}

_ADAPTERS: dict[str, _Adapter] = {
    "onnx": _Adapter("servion.runtime.onnx", "OnnxRuntime", None),
    "sklearn-skops": _Adapter("servion.runtime.sklearn", "SklearnRuntime", "sklearn"),
    "sklearn-joblib": _Adapter("servion.runtime.sklearn", "SklearnRuntime", "sklearn"),
    "sklearn-pickle": _Adapter("servion.runtime.sklearn", "SklearnRuntime", "sklearn"),
    "python": _Adapter("servion.runtime.custom", "PythonRuntime", None),
    "torchscript": _Adapter("servion.runtime.pytorch", "TorchScriptRuntime", "torch"),
    "torch-export": _Adapter("servion.runtime.pytorch", "TorchExportRuntime", "torch"),
    "xgboost": _Adapter("servion.runtime.boosters", "XGBoostRuntime", "xgboost"),
    "lightgbm": _Adapter("servion.runtime.boosters", "LightGBMRuntime", "lightgbm"),
}


def platform_of(fmt: str) -> str:
    """The platform a format's runtime reports (its module imported, nothing loaded)."""
    adapter = _ADAPTERS[fmt]
    runtime = getattr(importlib.import_module(adapter.module), adapter.cls)
    return str(runtime.platform)


_EXTENSIONS = {
    ".onnx": "onnx",
    ".skops": "sklearn-skops",
    ".joblib": "sklearn-joblib",
    ".pkl": "sklearn-pickle",
    ".pickle": "sklearn-pickle",
    ".py": "python",
    ".pt": "torchscript",
    ".pth": "torchscript",
    ".pt2": "torch-export",
    ".ubj": "xgboost",
    ".lgb": "lightgbm",
}

# Extensions other files share (or XGBoost's deprecated binary format used): the
# file's first bytes decide, and a file that is no model of the format is refused.
_SNIFFED: dict[str, Callable[[Path], str]] = {
    ".json": xgboost_by_content,
    ".xgb": xgboost_by_content,
    ".bst": xgboost_by_content,
    ".txt": lightgbm_by_content,
}

# The file a model directory must contain for each format.
DIRECTORY_ENTRYPOINTS = {
    "onnx": "model.onnx",
    "python": "model.py",
    "torchscript": "model.pt",
    "torch-export": "model.pt2",
}

PICKLE_FORMATS = frozenset({"sklearn-joblib", "sklearn-pickle"})


def is_model_file(path: Path) -> bool:
    """True when the file's extension names a model format."""
    return path.suffix.lower() in _EXTENSIONS or path.suffix.lower() in _SNIFFED


def detect_format(path: Path) -> str:
    """Name the format of a model file or directory from its extension or entry file."""
    if path.is_dir():
        for fmt, entry in DIRECTORY_ENTRYPOINTS.items():
            if (path / entry).is_file():
                return fmt
        entries = " or ".join(sorted(set(DIRECTORY_ENTRYPOINTS.values())))
        raise ValidationFailed(f"a model directory must contain {entries} (or pass --format)")
    sniff = _SNIFFED.get(path.suffix.lower())
    if sniff is not None:
        return sniff(path)
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        known = ", ".join(sorted([*_EXTENSIONS, *_SNIFFED]))
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


def check_options(fmt: str, given: dict[str, str], sample: Arrays | None) -> dict[str, Any]:
    """The runtime options (``--option KEY=VALUE``) to record for a version, checked."""
    if fmt in TORCH_FORMATS:
        return check_options_torch(fmt, given, sample)
    if given:
        raise ValidationFailed(
            f"format {fmt} takes no --option (given: {', '.join(sorted(given))})"
        )
    return {}


def check_static(fmt: str, entry: Path) -> None:
    """Checks of a format's file that run no code and need no framework installed."""
    if fmt in TORCH_FORMATS:
        check_archive(fmt, entry)
    elif fmt in ("xgboost", "lightgbm"):
        check_booster_file(fmt, entry)


def make_runtime(
    fmt: str, path: Path, settings: RuntimeSettings, options: dict[str, Any] | None = None
) -> Runtime:
    """Create (not load) the runtime for an artifact of format ``fmt``."""
    adapter = _ADAPTERS.get(fmt)
    if adapter is None:
        raise ValidationFailed(f"unknown format '{fmt}' (known: {', '.join(sorted(FORMATS))})")
    try:
        module = importlib.import_module(adapter.module)
    except ImportError as exc:
        if adapter.extra is None:
            raise
        raise ValidationFailed(
            f"format {fmt} needs {exc.name}: pip install 'servion[{adapter.extra}]'"
        ) from exc
    cls = getattr(module, adapter.cls)
    extra: dict[str, Any] = {"fmt": fmt} if adapter.cls == "SklearnRuntime" else {}
    runtime: Runtime = cls(entrypoint(path, fmt), settings, options or {}, **extra)
    return runtime
