"""The Python and package versions a model was registered with."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any

PACKAGES = (
    "servion",
    "numpy",
    "onnx",
    "onnxruntime",
    "scikit-learn",
    "skops",
    "joblib",
    "scipy",
    "torch",
    "xgboost",
    "xgboost-cpu",
    "lightgbm",
)


def recorded_environment(mlflow: dict[str, Any] | None = None) -> dict[str, object]:
    """What to store next to a model version, so a later mismatch can be explained;
    ``mlflow`` is the MLflow run and flavor a version came from, when it did."""
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    found: dict[str, object] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": versions,
    }
    if mlflow is not None:
        found["mlflow"] = mlflow
    return found
