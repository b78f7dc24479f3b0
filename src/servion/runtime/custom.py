"""Custom Python models: a file defining a class with ``load()`` and ``predict()``.

Importing the file runs its code, so this runtime only loads artifacts that
were registered with ``--trust-code``. The class declares its signature:

    class Model:
        inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
        outputs = [{"name": "y", "datatype": "FP32", "shape": [-1]}]
        def load(self) -> None: ...
        def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
        def unload(self) -> None: ...  # optional: called once nothing runs the model any more
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from servion.datatypes import DATATYPES
from servion.errors import RuntimeFailure, UnsafeArtifact
from servion.runtime.base import Runtime, Signature, TensorSpec
from servion.types import Arrays


def _specs(raw: Any, what: str) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list | tuple) or not raw:
        raise RuntimeFailure(f"the model class must declare a non-empty list '{what}'")
    specs = []
    for item in raw:
        try:
            spec = TensorSpec.from_dict(item)
        except (KeyError, TypeError, ValueError) as exc:
            raise RuntimeFailure(f"bad entry in '{what}': {item!r} ({exc})") from exc
        if spec.datatype not in DATATYPES:
            raise RuntimeFailure(f"unknown datatype '{spec.datatype}' in '{what}'")
        specs.append(spec)
    return tuple(specs)


class PythonRuntime(Runtime):
    """Runs a user's Python class; accepted only for artifacts registered with trust."""

    format = "python"
    platform = "python"
    runs_on_loop = False

    def load(self) -> None:
        if not self.options.get("trust_code"):
            raise UnsafeArtifact(
                "custom Python models run arbitrary code: register with --trust-code"
            )
        module_name = f"servion_user_model_{abs(hash(self.path))}"
        spec = importlib.util.spec_from_file_location(module_name, self.path)
        if spec is None or spec.loader is None:
            raise RuntimeFailure("cannot import the model file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise RuntimeFailure(f"importing the model file failed: {exc!r}") from exc
        cls = self._find_class(module)
        self._model = cls()
        self._signature = Signature(
            _specs(getattr(cls, "inputs", None), "inputs"),
            _specs(getattr(cls, "outputs", None), "outputs"),
            bool(getattr(cls, "batched", True)),
        )
        try:
            self._model.load()
        except Exception as exc:
            raise RuntimeFailure(f"the model's load() failed: {exc!r}") from exc

    def _find_class(self, module: Any) -> type:
        wanted = self.options.get("class_name")
        found = [
            obj
            for name, obj in vars(module).items()
            if inspect.isclass(obj)
            and obj.__module__ == module.__name__
            and callable(getattr(obj, "load", None))
            and callable(getattr(obj, "predict", None))
            and (wanted is None or name == wanted)
        ]
        if len(found) != 1:
            raise RuntimeFailure(
                f"the model file must define exactly one class with load() and predict() "
                f"(found {len(found)})"
            )
        return found[0]

    def signature(self) -> Signature:
        return self._signature

    def predict(self, inputs: Arrays, outputs: Sequence[str] | None = None) -> Arrays:
        result = self._model.predict(inputs)
        if not isinstance(result, dict):
            raise RuntimeFailure("the model's predict() must return a dict of arrays")
        return {str(k): np.asarray(v) for k, v in result.items()}

    def unload(self) -> None:
        """Call the model's own ``unload()``, when it has one, then let it go."""
        model = self.__dict__.pop("_model", None)
        release = getattr(model, "unload", None)
        if callable(release):
            try:
                release()
            except Exception as exc:
                raise RuntimeFailure(f"the model's unload() failed: {exc!r}") from exc
