"""scikit-learn estimators from skops, joblib or pickle files.

Loading never runs arbitrary code: skops files are loaded with an explicit
trusted-types check, joblib and pickle files through the allow-list unpickler
of ``safe_pickle``. A file refused there is never retried with full unpickling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from servion.datatypes import datatype_of
from servion.errors import InvalidInput, RuntimeFailure, UnsafeArtifact
from servion.runtime.base import Runtime, Signature, TensorSpec
from servion.runtime.safe_pickle import AllowList, load_joblib_file, load_pickle_file
from servion.types import Arrays

INPUT = "input"


def _load_skops(path: Any, allow: AllowList) -> Any:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise UnsafeArtifact(f"not a readable skops file: {exc}") from exc
    refused = [t for t in untrusted if not allow.allows(*t.rsplit(".", 1))]
    if refused:
        raise UnsafeArtifact(f"skops file references untrusted types: {', '.join(refused)}")
    try:
        return sio.load(path, trusted=untrusted)
    except Exception as exc:
        raise UnsafeArtifact(f"skops refused the file: {exc}") from exc


class SklearnRuntime(Runtime):
    """A fitted scikit-learn estimator (or Pipeline).

    Input: one tensor ``input`` of shape ``[-1, n_features]`` (FP32 by default;
    the estimator receives float64 as scikit-learn would make it anyway).
    Outputs: classifiers give ``label`` and, with ``predict_proba``,
    ``probabilities``; other estimators give ``prediction``.
    """

    platform = "sklearn"
    # scikit-learn's input validation refuses NaN and infinity in most estimators.
    finite_inputs = True
    loaders = {
        "sklearn-skops": _load_skops,
        "sklearn-joblib": load_joblib_file,
        "sklearn-pickle": load_pickle_file,
    }

    def __init__(self, *args: Any, fmt: str = "sklearn-joblib", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.format = fmt  # type: ignore[misc]  # one adapter serves three registry formats

    def load(self) -> None:
        allow = AllowList.default().extended(self.settings.trusted_globals)
        model = self.loaders[self.format](self.path, allow)
        if not hasattr(model, "predict"):
            raise RuntimeFailure(
                f"the object in the file ({type(model).__name__}) has no predict()"
            )
        self._model = model
        self._signature = self._describe(model)

    def _describe(self, model: Any) -> Signature:
        n_features = getattr(model, "n_features_in_", None)
        if not isinstance(n_features, int | np.integer):
            raise RuntimeFailure("the estimator is not fitted (it has no n_features_in_)")
        inputs = (TensorSpec(INPUT, "FP32", (-1, int(n_features))),)
        classes = getattr(model, "classes_", None)
        self._proba = classes is not None and hasattr(model, "predict_proba")
        if classes is None:
            return Signature(inputs, (TensorSpec("prediction", "FP64", (-1,)),))
        outputs = [TensorSpec("label", datatype_of(np.asarray(classes).dtype), (-1,))]
        if self._proba:
            outputs.append(TensorSpec("probabilities", "FP64", (-1, len(classes))))
        self._output_names = [o.name for o in outputs]
        return Signature(inputs, tuple(outputs))

    def signature(self) -> Signature:
        return self._signature

    @property
    def estimator(self) -> Any:
        """The loaded estimator, for tools that read the model itself (ONNX converters)."""
        return self._model

    def predict(self, inputs: Arrays, outputs: Sequence[str] | None = None) -> Arrays:
        try:
            return self._predict(inputs[INPUT], outputs)
        except ValueError as exc:
            # scikit-learn's input validation speaks of the input, not of the model.
            raise InvalidInput(f"the estimator refused the input: {exc}") from None

    def _predict(self, x: Any, outputs: Sequence[str] | None) -> Arrays:
        if self._signature.outputs[0].name == "prediction":
            return {"prediction": np.asarray(self._model.predict(x), dtype=np.float64)}
        wanted = outputs or self._output_names
        # predict and predict_proba can disagree (SVC's Platt scaling), so each
        # output comes from its own method, and only the requested ones run.
        result: Arrays = {}
        if "label" in wanted:
            result["label"] = np.asarray(self._model.predict(x))
        if "probabilities" in wanted and self._proba:
            result["probabilities"] = np.asarray(self._model.predict_proba(x), dtype=np.float64)
        return result

    def unload(self) -> None:
        self.__dict__.pop("_model", None)
