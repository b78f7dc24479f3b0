"""XGBoost and LightGBM boosters from their own data formats, never from pickles.

XGBoost models are read from JSON or UBJSON, LightGBM models from their text
model file: both are parsed by the library's own loader as data, so loading runs
no code from the file. Outputs follow the scikit-learn runtime: classifiers give
``label`` (the class index) and ``probabilities``; other objectives ``prediction``.
"""

from __future__ import annotations

import json
import re
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from servion.errors import InvalidInput, RuntimeFailure, UnsafeArtifact, ValidationFailed, quoted
from servion.runtime.base import Runtime, Signature, TensorSpec
from servion.types import Arrays

INPUT = "input"
_SNIFF_BYTES = 4096
_RESAVE = "load it with XGBoost and re-save it with booster.save_model('model.ubj') (or .json)"
_SAVE_TEXT = "save it with booster.save_model('model.txt')"
# The first key of every XGBoost model, as JSON text and as a UBJSON key (length 7).
_XGBOOST_KEYS = (b'"learner"', b"\x07learner")
_LIGHTGBM_HEADER = re.compile(rb"\Atree\r?\nversion=")
# XGBoost prefixes its messages with a time and a C++ source location.
_XGBOOST_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: ")


def _head(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(_SNIFF_BYTES)


def _read(path: Path) -> bytearray:
    """The whole file in the one buffer XGBoost loads from (no second copy)."""
    data = bytearray(path.stat().st_size)
    with path.open("rb") as fh:
        del data[fh.readinto(data) :]  # a file that shrank since stat() ends where it ends
    return data


def _is_pickle(head: bytes) -> bool:
    # Protocol 2 and later open with PROTO; joblib's uncompressed files are pickles too.
    return head[:1] == b"\x80" and head[1:2] in {b"\x02", b"\x03", b"\x04", b"\x05"}


def _refuse_pickle(head: bytes, library: str, how: str, what: str = "the file") -> None:
    if _is_pickle(head):
        raise UnsafeArtifact(f"{what} is a pickle: servion never unpickles {library} models; {how}")


def _is_xgboost(head: bytes) -> bool:
    return head.lstrip()[:1] == b"{" and any(key in head for key in _XGBOOST_KEYS)


def xgboost_by_content(path: Path) -> str:
    """``xgboost`` when the file's first bytes are an XGBoost JSON or UBJSON model.

    For extensions XGBoost shares with other files (``.json``) or uses for its
    deprecated binary format (``.xgb``, ``.bst``); anything else is refused by name.
    """
    head = _head(path)
    _refuse_pickle(head, "XGBoost", _RESAVE, quoted(path.name))
    if _is_xgboost(head):
        return "xgboost"
    if path.suffix.lower() == ".json":
        raise ValidationFailed(
            f"unknown model format for {quoted(path.name)}: not an XGBoost model (no"
            ' "learner" object at its start), the only .json model servion reads (or pass --format)'
        )
    raise ValidationFailed(
        f"{quoted(path.name)} is not XGBoost JSON or UBJSON (XGBoost's deprecated binary format"
        f" is not read): {_RESAVE}"
    )


def lightgbm_by_content(path: Path) -> str:
    """``lightgbm`` when the file starts with LightGBM's text model header."""
    head = _head(path)
    _refuse_pickle(head, "LightGBM", _SAVE_TEXT, quoted(path.name))
    if _LIGHTGBM_HEADER.match(head):
        return "lightgbm"
    raise ValidationFailed(
        f"unknown model format for {quoted(path.name)}: not a LightGBM model (it does not start"
        " with 'tree' and 'version='), the only .txt model servion reads (or pass --format)"
    )


def _check_xgboost_head(head: bytes) -> None:
    _refuse_pickle(head, "XGBoost", _RESAVE)
    if head[:64].lstrip()[:1] != b"{":
        raise RuntimeFailure(
            "the file is not XGBoost JSON or UBJSON (XGBoost's deprecated binary format"
            f" is not read): {_RESAVE}"
        )


def _check_lightgbm_head(head: bytes) -> None:
    _refuse_pickle(head, "LightGBM", _SAVE_TEXT)
    if not _LIGHTGBM_HEADER.match(head):
        raise RuntimeFailure(
            "the file is not a LightGBM text model (it does not start with 'tree' and"
            f" 'version='): {_SAVE_TEXT}"
        )


def check_booster_file(fmt: str, path: Path) -> None:
    """Refuse, without the library, a file that is no ``xgboost`` or ``lightgbm`` model:
    a pickle, another format, or LightGBM trees its header does not place."""
    if fmt == "xgboost":
        _check_xgboost_head(_head(path))
    else:
        _check_lightgbm_head(_head(path))
        _lightgbm_objective(path)


@dataclass(frozen=True, slots=True)
class _Task:
    """What a booster's objective makes of its scores."""

    objective: str
    classes: int = 0
    """Number of classes (0: not a classifier)."""
    probabilities: bool = True
    """Whether a classifier has class probabilities to give."""
    width: int = 1
    """Values per row of a non-classifier's ``prediction``."""


def _signature(n_features: int, task: _Task) -> Signature:
    inputs = (TensorSpec(INPUT, "FP32", (-1, n_features)),)
    if not task.classes:
        shape = (-1,) if task.width == 1 else (-1, task.width)
        return Signature(inputs, (TensorSpec("prediction", "FP64", shape),))
    outputs = [TensorSpec("label", "INT64", (-1,))]
    if task.probabilities:
        outputs.append(TensorSpec("probabilities", "FP64", (-1, task.classes)))
    return Signature(inputs, tuple(outputs))


def _library_missing(fmt: str, exc: ImportError) -> RuntimeFailure:
    return RuntimeFailure(f"format {fmt} needs {exc.name}: pip install 'servion[{fmt}]'")


def _two_columns(p: Any) -> Any:
    """A binary classifier's probability of class 1 as both classes' columns."""
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    return np.stack([1.0 - p, p], axis=1)


def _softmax(margins: Any) -> Any:
    shifted = np.asarray(margins, dtype=np.float64)
    shifted = shifted - shifted.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class _BoosterRuntime(Runtime):
    """Shared by both boosters: the input check and the outputs of each task."""

    # NaN is how a booster is told a value is missing: it is a valid input.
    finite_inputs = False
    _task: _Task
    _signature: Signature
    _n_features: int

    def signature(self) -> Signature:
        return self._signature

    def _described(self, n_features: int, task: _Task) -> None:
        self._task, self._n_features = task, n_features
        self._signature = _signature(n_features, task)
        self._output_names = [o.name for o in self._signature.outputs]

    def predict(self, inputs: Arrays, outputs: Sequence[str] | None = None) -> Arrays:
        x = inputs[INPUT]
        if x.ndim != 2 or x.shape[1] != self._n_features:
            raise InvalidInput(
                f"input {quoted(INPUT)} has shape {list(x.shape)}; this {self.format} model"
                f" takes [rows, {self._n_features}]"
            )
        try:
            return self._outputs(x, outputs or self._output_names)
        except ValueError as exc:
            raise InvalidInput(f"the {self.format} model refused the input: {exc}") from None

    def _outputs(self, x: Any, wanted: Sequence[str]) -> Arrays:
        rows, task = len(x), self._task
        if not task.classes:
            shape = (rows,) if task.width == 1 else (rows, task.width)
            return {"prediction": np.asarray(self._scores(x), np.float64).reshape(shape)}
        scores = np.asarray(self._scores(x), np.float64)
        result: Arrays = {}
        if task.classes == 2 and scores.ndim == 1:
            # The frameworks' own rule: class 1 when its probability is over one half.
            if "label" in wanted:
                result["label"] = (scores > 0.5).astype(np.int64)
            if "probabilities" in wanted and task.probabilities:
                result["probabilities"] = _two_columns(scores)
            return result
        scores = scores.reshape(rows, task.classes)
        if "label" in wanted:
            result["label"] = np.argmax(scores, axis=1).astype(np.int64)
        if "probabilities" in wanted:
            result["probabilities"] = scores
        return result

    @abstractmethod
    def _scores(self, x: Any) -> Any:
        """The booster's transformed output for ``x`` (probabilities for classifiers)."""

    def unload(self) -> None:
        self.__dict__.pop("_booster", None)


# Objectives whose output is a class: the others (regression, ranking, survival,
# counts, binary:logitraw's raw margins) are served as ``prediction``.
_XGBOOST_CLASSIFIERS = frozenset(
    {"binary:logistic", "binary:hinge", "multi:softprob", "multi:softmax"}
)


class XGBoostRuntime(_BoosterRuntime):
    """An XGBoost Booster from a JSON or UBJSON model file.

    ``binary:logistic``, ``multi:softprob`` and ``multi:softmax`` give ``label`` and
    ``probabilities`` (``multi:softmax``'s from the softmax of its margins, as
    ``XGBClassifier.predict_proba`` does); ``binary:hinge`` gives ``label`` only.
    Every other objective gives ``prediction``: ``binary:logitraw`` its raw margin,
    a model of several targets one column per target. Multi-label classifiers
    (a classifier objective over several targets) are refused. Like the
    scikit-learn API, a model trained with early stopping predicts with the
    trees up to its best iteration.
    """

    format = "xgboost"
    platform = "xgboost"

    def load(self) -> None:
        try:
            import xgboost
        except ImportError as exc:
            raise _library_missing(self.format, exc) from exc
        data = _read(self.path)
        _check_xgboost_head(bytes(data[:64]))
        booster = xgboost.Booster()
        try:
            # From memory, so JSON and UBJSON are told apart by content, not by extension.
            booster.load_model(data)
        except Exception as exc:  # XGBoostError, or a message that is not UTF-8
            raise RuntimeFailure(f"XGBoost could not load the model: {_xgboost_text(exc)}") from exc
        booster.set_param({"nthread": self.settings.onnx_intra_op_threads})
        learner = json.loads(booster.save_config())["learner"]
        self._task = _xgboost_task(learner)
        best = booster.attr("best_iteration")
        self._range = (0, int(best) + 1) if best is not None else (0, 0)
        # gblinear has no in-place prediction; it also ignores iteration ranges.
        self._inplace = learner["gradient_booster"]["name"] != "gblinear"
        self._booster = booster
        self._described(booster.num_features(), self._task)

    def _run(self, x: Any, margin: bool = False) -> Any:
        if self._inplace:
            # In place on the numpy rows (float32 included): no DMatrix copy per call.
            # The width is checked before; feature names cannot travel with a tensor.
            return self._booster.inplace_predict(
                x,
                iteration_range=self._range,
                predict_type="margin" if margin else "value",
                validate_features=False,
            )
        import xgboost

        matrix = xgboost.DMatrix(x, nthread=self.settings.onnx_intra_op_threads)
        return self._booster.predict(matrix, output_margin=margin, validate_features=False)

    def _scores(self, x: Any) -> Any:
        return self._run(x)

    def _outputs(self, x: Any, wanted: Sequence[str]) -> Arrays:
        if self._task.objective != "multi:softmax":
            return super()._outputs(x, wanted)
        # multi:softmax predicts the class itself; its probabilities come from the margins.
        result: Arrays = {}
        if "label" in wanted:
            result["label"] = np.asarray(self._run(x), np.float64).astype(np.int64)
        if "probabilities" in wanted:
            margins = np.asarray(self._run(x, margin=True)).reshape(len(x), self._task.classes)
            result["probabilities"] = _softmax(margins)
        return result


def _xgboost_task(learner: dict[str, Any]) -> _Task:
    objective = str(learner["objective"]["name"])
    params = learner["learner_model_param"]
    classes, targets = int(params.get("num_class", 0)), int(params.get("num_target", 1))
    classifier = objective in _XGBOOST_CLASSIFIERS
    if classifier and targets > 1:
        raise RuntimeFailure(
            f"objective {quoted(objective)} over {targets} targets (multi-label classification)"
            " is not served: servion serves one label per row"
        )
    if objective.startswith("binary:") and classifier:
        return _Task(objective, classes=2, probabilities=objective == "binary:logistic")
    if classifier:
        return _Task(objective, classes=classes)
    return _Task(objective, width=max(classes, 1) * max(targets, 1))


def _xgboost_text(exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _XGBOOST_PREFIX.sub("", first)


# LightGBM's own names (a model file holds these, never the aliases).
_LIGHTGBM_CLASSIFIERS = frozenset({"binary", "multiclass", "multiclassova"})


class LightGBMRuntime(_BoosterRuntime):
    """A LightGBM Booster from its text model file (``booster.save_model('model.txt')``).

    ``binary``, ``multiclass`` and ``multiclassova`` give ``label`` and
    ``probabilities`` (for ``multiclassova`` the per-class probabilities, which need
    not sum to one, as ``LGBMClassifier.predict_proba`` gives them). Every other
    objective gives ``prediction``; a model trained with a custom objective (its
    file names none) gives its raw scores, one column per tree of an iteration.
    """

    format = "lightgbm"
    platform = "lightgbm"

    def load(self) -> None:
        try:
            import lightgbm
        except ImportError as exc:
            raise _library_missing(self.format, exc) from exc
        _check_lightgbm_head(_head(self.path))
        objective = _lightgbm_objective(self.path)
        try:
            booster = lightgbm.Booster(model_file=str(self.path))
        except Exception as exc:  # LightGBMError, or a parse error of its own
            raise RuntimeFailure(f"LightGBM could not load the model: {exc}") from exc
        per_row = booster.num_model_per_iteration()
        if objective in _LIGHTGBM_CLASSIFIERS:
            task = _Task(objective, classes=2 if objective == "binary" else per_row)
        else:
            task = _Task(objective, width=per_row)
        self._booster = booster
        self._described(booster.num_feature(), task)

    def _scores(self, x: Any) -> Any:
        return self._booster.predict(x, num_threads=self.settings.onnx_intra_op_threads)


def _lightgbm_objective(path: Path) -> str:
    """The ``objective=`` of the header, once the trees are where the header says.

    LightGBM's parser is not hardened: trees cut short or misplaced abort or crash the
    process (at registration that is the probe's child process, and a refusal).
    ``tree_sizes`` places every tree, so a truncated or spliced file is refused here.
    ``Booster.params`` keeps the alias a model was trained with (``softmax``); the
    header holds LightGBM's own name, and no ``objective=`` means a custom objective.
    """
    objective, sizes = "custom", None
    with path.open("rb") as fh:
        while not (line := fh.readline()).startswith(b"Tree="):
            if not line:
                raise RuntimeFailure("the LightGBM model has no trees (the file is cut short)")
            if line.startswith(b"objective="):
                objective = (line[10:].split() or [b"custom"])[0].decode("ascii", "replace")
            elif line.startswith(b"tree_sizes="):
                sizes = [int(size) for size in line[11:].split() if size.isdigit()]
        offset = fh.tell() - len(line)
        for size in sizes or ():
            fh.seek(offset)
            if fh.read(5) != b"Tree=":
                raise RuntimeFailure("the LightGBM model's trees are not where its header says")
            offset += size
        fh.seek(offset)
        if sizes is not None and fh.read(12) != b"end of trees":
            raise RuntimeFailure(
                "the LightGBM model is cut short (no 'end of trees' where its trees end)"
            )
    return objective
