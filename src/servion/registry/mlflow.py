"""MLflow model folders: the ``MLmodel`` file read as data, one servable flavor chosen.

MLflow's own loaders import the model's code (pyfunc) or unpickle it (cloudpickle,
``torch.save``), so servion never imports ``mlflow``: it reads ``MLmodel`` with a
safe YAML loader, picks the first flavor whose file servion can serve without
running code from it, and hands that file to the usual registration path, which
checks, stores and probes it like any other model.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from servion.errors import UnsafeArtifact, ValidationFailed, printable, quoted

MLMODEL = "MLmodel"
MAX_MLMODEL_BYTES = 1024 * 1024
"""Far above any MLmodel MLflow writes (a wide signature is tens of KiB)."""
MAX_SIGNATURE_CHARS = 64 * 1024
"""Kept with every version row, which workers re-read: a longer signature is noted, not kept."""
_MAX_FIELD_CHARS = 256
SERVED = (
    "onnx; sklearn saved as skops or pickle; pytorch saved as torch.export (pt2) or"
    " TorchScript; xgboost saved as json or ubj; lightgbm boosters (text model file)"
)
_RECORDED = ("run_id", "artifact_path", "model_uuid", "model_id", "utc_time_created")
_FRAMEWORK_VERSION = {
    "onnx": "onnx_version",
    "sklearn": "sklearn_version",
    "pytorch": "pytorch_version",
    "xgboost": "xgb_version",
    "lightgbm": "lgb_version",
}


@dataclass(frozen=True)
class MlflowModel:
    """What registration takes from an MLflow folder: the file to store and what to record."""

    format: str
    artifact: Path
    """The flavor's model file, or the folder when an ONNX graph keeps its weights beside it."""
    record: dict[str, Any] = field(default_factory=dict)
    """Kept with the version (``environment["mlflow"]``): where in MLflow it came from."""


class _Refused(Exception):
    """A flavor servion will not serve from this folder; the next one may still do."""

    def __init__(self, message: str, *, unsafe: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.unsafe = unsafe


def mlflow_model_in(path: Path, requested_format: str | None = None) -> MlflowModel | None:
    """The MLflow model in ``path`` (a folder holding an ``MLmodel`` file), or None.

    ``--format python`` keeps a folder a servion Python model even with an MLmodel in
    it: that is how a model only MLflow's pyfunc loader reads is served, by a trusted
    ``model.py`` of the user's own.
    """
    if requested_format == "python" or not path.is_dir():
        return None
    if not os.path.lexists(path / MLMODEL):
        return None
    return read_mlflow_model(path, requested_format)


def read_mlflow_model(folder: Path, requested_format: str | None = None) -> MlflowModel:
    """Choose the flavor of an MLflow model folder that servion serves, without running it.

    Flavors are tried in order: onnx, sklearn, pytorch, xgboost, lightgbm. Raises
    ``ValidationFailed`` for a malformed MLmodel or a folder with no servable flavor,
    ``UnsafeArtifact`` when every servable flavor would run code on load, or when the
    MLmodel names a file outside the folder.

    >>> read_mlflow_model(Path("mlruns/0/abc/artifacts/model")).format  # doctest: +SKIP
    'sklearn-skops'
    """
    doc = _load_mlmodel(folder / MLMODEL)
    flavors = doc["flavors"]
    refusals: list[_Refused] = []
    for name, resolve in _RESOLVERS.items():
        conf = flavors.get(name)
        if conf is None:
            continue
        if not isinstance(conf, dict):
            raise ValidationFailed(f"MLmodel: flavor {name} is not a mapping")
        try:
            fmt, artifact, how = resolve(folder, conf)
        except _Refused as refused:
            refusals.append(refused)
            continue
        if requested_format is not None and requested_format != fmt:
            raise ValidationFailed(
                f"--format {requested_format} does not match this MLflow model: its {name}"
                f" flavor is format {fmt} (leave --format out for an MLflow folder)"
            )
        return MlflowModel(fmt, artifact, _record(doc, name, conf, how, folder, artifact))
    if refusals:
        unsafe = all(r.unsafe for r in refusals)
        message = "; ".join(r.message for r in refusals)
        raise (UnsafeArtifact if unsafe else ValidationFailed)(message)
    raise ValidationFailed(_no_servable_flavor(sorted(flavors)))


def _load_mlmodel(path: Path) -> dict[str, Any]:
    import yaml

    text = _read_bounded(path)
    try:
        doc = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ValidationFailed(f"MLmodel is not valid YAML{at}: it cannot be read") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("flavors"), dict):
        raise ValidationFailed("MLmodel has no 'flavors' mapping: it is not an MLflow model file")
    if not doc["flavors"] or not all(isinstance(k, str) for k in doc["flavors"]):
        raise ValidationFailed("MLmodel's 'flavors' must name at least one flavor")
    return doc


def _read_bounded(path: Path) -> bytes:
    # O_NOFOLLOW and a cap on the read: the check and the read see the same file,
    # and a FIFO or a huge file cannot hang or exhaust the registration.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        raise UnsafeArtifact("MLmodel is a symbolic link or cannot be opened: refused") from None
    with open(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeArtifact("MLmodel is not a regular file: refused")
        data = fh.read(MAX_MLMODEL_BYTES + 1)
    if len(data) > MAX_MLMODEL_BYTES:
        raise ValidationFailed(
            f"MLmodel is over {MAX_MLMODEL_BYTES} bytes: not a file MLflow writes, refused"
        )
    return data


def _inside(folder: Path, value: object, flavor: str, key: str, *, is_dir: bool = False) -> Path:
    """The file or folder an MLmodel entry names, refused if it could leave the folder."""
    if not isinstance(value, str) or not PurePosixPath(value.strip()).parts:
        raise ValidationFailed(f"MLmodel: the {flavor} flavor's {key} must name a file")
    rel = PurePosixPath(value)
    if rel.is_absolute() or ".." in rel.parts or "\\" in value or ":" in value or "\x00" in value:
        raise UnsafeArtifact(
            f"MLmodel: the {flavor} flavor's {key} {quoted(value)} points outside the model"
            " folder: refused"
        )
    path, info = folder, folder.lstat()
    for part in rel.parts:
        path = path / part
        try:
            info = path.lstat()
        except OSError:
            raise ValidationFailed(
                f"MLmodel: the {flavor} flavor's {key} {quoted(value)} is not in the folder"
            ) from None
        if stat.S_ISLNK(info.st_mode):
            raise UnsafeArtifact(
                f"MLmodel: the {flavor} flavor's {key} {quoted(value)} goes through a symbolic"
                " link: refused"
            )
    if is_dir != stat.S_ISDIR(info.st_mode) or not (is_dir or stat.S_ISREG(info.st_mode)):
        what = "a folder" if is_dir else "a regular file"
        raise ValidationFailed(
            f"MLmodel: the {flavor} flavor's {key} {quoted(value)} is not {what}"
        )
    return path


# -- one resolver per flavor: (servion format, file to store, how it was saved) ----------


def _onnx(folder: Path, conf: dict[str, Any]) -> tuple[str, Path, str]:
    from servion.runtime.onnx_checks import check_external_data

    path = _inside(folder, conf.get("data"), "onnx", "data")
    if not check_external_data(path):
        return "onnx", path, "onnx"
    # Weights kept beside the graph travel with it: the folder is stored, whose entry
    # file the registry knows as model.onnx (MLflow's own name for it).
    if path != folder / "model.onnx":
        raise _Refused(
            f"onnx: the graph {quoted(str(conf.get('data')))} keeps its weights in separate"
            " files, which servion stores with a folder's model.onnx only"
        )
    return "onnx", folder, "onnx with external data"


def _sklearn(folder: Path, conf: dict[str, Any]) -> tuple[str, Path, str]:
    # MLflow itself reads a missing serialization_format as pickle.
    how = conf.get("serialization_format", "pickle")
    if how == "cloudpickle":
        raise _Refused(
            "sklearn: the model was saved with cloudpickle, which stores code by value and"
            ' runs it on load; log it with serialization_format="skops" (or "pickle",'
            " checked against servion's allow-list)",
            unsafe=True,
        )
    formats = {"skops": "sklearn-skops", "pickle": "sklearn-pickle"}
    if not isinstance(how, str) or how not in formats:
        raise _Refused(f"sklearn: unknown serialization_format {quoted(str(how))}")
    return formats[how], _inside(folder, conf.get("pickled_model"), "sklearn", "pickled_model"), how


def _pytorch(folder: Path, conf: dict[str, Any]) -> tuple[str, Path, str]:
    from servion.runtime.torch_options import check_archive

    data = _inside(folder, conf.get("model_data", "data"), "pytorch", "model_data", is_dir=True)
    if os.path.lexists(data / "model.pt2"):
        return (
            "torch-export",
            _inside(data, "model.pt2", "pytorch", "model_data's model.pt2"),
            "pt2",
        )
    saved = _inside(data, "model.pth", "pytorch", "model_data's model.pth")
    try:
        check_archive("torchscript", saved)
    except (UnsafeArtifact, ValidationFailed) as exc:
        raise _Refused(
            "pytorch: MLflow saved this model with torch.save (serialization_format="
            '"pickle"), a pickle of the module\'s Python objects that runs code on load'
            f' ({exc.message}); log it with serialization_format="pt2" (torch.export) or'
            " as a TorchScript module (torch.jit.script), or convert it to ONNX",
            unsafe=True,
        ) from None
    return "torchscript", saved, "torchscript"


def _xgboost(folder: Path, conf: dict[str, Any]) -> tuple[str, Path, str]:
    path = _inside(folder, conf.get("data"), "xgboost", "data")
    how = conf.get("model_format") or path.suffix.lstrip(".")
    if how not in ("json", "ubj"):
        raise _Refused(
            f"xgboost: model_format {quoted(str(how))} is not served (XGBoost's binary"
            ' format is deprecated); log it with model_format="ubj" or "json"'
        )
    return "xgboost", path, how


def _lightgbm(folder: Path, conf: dict[str, Any]) -> tuple[str, Path, str]:
    path = _inside(folder, conf.get("data"), "lightgbm", "data")
    # Boosters are saved as LightGBM's text model file; scikit-learn-API models
    # (LGBMClassifier...) as skops or a pickle, which only their wrapper class reads.
    if path.suffix.lower() not in (".lgb", ".txt"):
        how = conf.get("serialization_format", "pickle")
        raise _Refused(
            f"lightgbm: {conf.get('model_class', 'the model')} was saved as {how}, not as a"
            " LightGBM text model; log its booster instead (mlflow.lightgbm.log_model("
            "model.booster_, ...))",
            unsafe=how != "skops",
        )
    return "lightgbm", path, "text"


_RESOLVERS: dict[str, Callable[[Path, dict[str, Any]], tuple[str, Path, str]]] = {
    "onnx": _onnx,
    "sklearn": _sklearn,
    "pytorch": _pytorch,
    "xgboost": _xgboost,
    "lightgbm": _lightgbm,
}


def _no_servable_flavor(found: list[str]) -> str:
    if found == ["python_function"]:
        return (
            "this MLflow model has only the python_function flavor: loading it takes MLflow's"
            " loader, which imports and runs the model's own code (a pickled PythonModel or a"
            " loader module), so servion does not serve it; log the model with a framework"
            f" flavor servion serves ({SERVED}), or add a servion model.py that loads it to"
            " the folder and register it with --format python --trust-code"
        )
    names = ", ".join(printable(name, 40) for name in found[:20])
    return (
        f"no MLflow flavor servion serves in this model (found: {names}); servion serves: {SERVED}"
    )


def _record(
    doc: dict[str, Any], flavor: str, conf: dict[str, Any], how: str, folder: Path, artifact: Path
) -> dict[str, Any]:
    record: dict[str, Any] = {key: _scalar(doc.get(key)) for key in _RECORDED}
    record["mlflow_version"] = _scalar(doc.get("mlflow_version"))
    record["flavor"] = flavor
    record["serialization"] = how
    record["framework_version"] = _scalar(conf.get(_FRAMEWORK_VERSION[flavor]))
    record["file"] = artifact.relative_to(folder).as_posix() if artifact != folder else "."
    record["signature"] = _signature(doc.get("signature"))
    return record


def _scalar(value: object) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value)
    return text if len(text) <= _MAX_FIELD_CHARS else text[:_MAX_FIELD_CHARS] + "..."


def _signature(value: object) -> dict[str, str | None] | None:
    """MLflow's signature as it wrote it (JSON strings); servion's own comes from its probe."""
    if not isinstance(value, dict):
        return None
    kept: dict[str, str | None] = {}
    for key in ("inputs", "outputs"):
        text = value.get(key)
        if not isinstance(text, str):
            kept[key] = None
        elif len(text) > MAX_SIGNATURE_CHARS:
            kept[key] = f"(not kept: {len(text)} characters)"
        else:
            kept[key] = text
    return kept
