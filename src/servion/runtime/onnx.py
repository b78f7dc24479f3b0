"""ONNX models on onnxruntime (CPU)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from servion.errors import InvalidInput, RuntimeFailure, quoted
from servion.runtime.base import Runtime, Signature, TensorSpec
from servion.runtime.onnx_checks import check_external_data
from servion.types import Arrays

# onnxruntime's type strings for tensors; anything else (sequences, maps) is not a tensor.
_DATATYPE_OF_ORT = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def _spec(arg: Any) -> TensorSpec | None:
    datatype = _DATATYPE_OF_ORT.get(arg.type)
    if datatype is None:
        return None
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
    return TensorSpec(arg.name, datatype, shape)


class OnnxRuntime(Runtime):
    """Runs an ``.onnx`` file with onnxruntime's CPU provider.

    External-data files must stay inside the model's folder: that is checked
    before onnxruntime ever opens the model, at registration and at every load.
    Outputs that are not tensors (ZipMap's sequence of maps) are not served;
    export classifiers with ``zipmap=False``. BYTES tensors are handed to
    onnxruntime as ``str`` and come back as ``bytes``, so they round-trip exactly:
    onnxruntime turns a ``bytes`` element into the text of its ``repr``.
    """

    format = "onnx"
    platform = "onnxruntime_onnx"

    def load(self) -> None:
        import onnxruntime as ort

        if any(p != self.path for p in self.path.parent.iterdir()):
            # Files beside the graph: it may use external data, so check where
            # that data lives. A lone file was checked when it was registered,
            # and the checksum verified before this load proves it unchanged.
            check_external_data(self.path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.settings.onnx_intra_op_threads
        opts.inter_op_num_threads = self.settings.onnx_inter_op_threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(
                str(self.path), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise RuntimeFailure(f"onnxruntime could not load the model: {exc}") from exc
        inputs = [_spec(a) for a in self._session.get_inputs()]
        if any(s is None for s in inputs):
            raise RuntimeFailure("the model has a non-tensor input, which servion cannot feed")
        outputs = [s for s in (_spec(a) for a in self._session.get_outputs()) if s is not None]
        if not outputs:
            raise RuntimeFailure("the model has no tensor output")
        batched = all(s is not None and s.shape and s.shape[0] == -1 for s in inputs)
        self._signature = Signature(
            tuple(s for s in inputs if s is not None), tuple(outputs), batched
        )
        self._output_names = [s.name for s in outputs]
        self._text_inputs = [s.name for s in inputs if s is not None and s.datatype == "BYTES"]
        self._text_outputs = frozenset(s.name for s in outputs if s.datatype == "BYTES")
        # The session's own run() re-checks input names on every call; inputs
        # arrive here already validated against the signature, so call the
        # native session directly when this onnxruntime build exposes it.
        native = getattr(self._session, "_sess", None)
        self._run = native.run if native is not None else self._session.run

    def signature(self) -> Signature:
        return self._signature

    def predict(self, inputs: Arrays, outputs: Sequence[str] | None = None) -> Arrays:
        names = list(outputs) if outputs else self._output_names
        if self._text_inputs:
            inputs = {**inputs, **{n: _as_text(inputs[n], n) for n in self._text_inputs}}
        try:
            results = self._run(names, inputs, None)
        except Exception as exc:
            raise RuntimeFailure(f"onnxruntime failed: {exc}") from exc
        found = dict(zip(names, results, strict=True))
        for name in self._text_outputs.intersection(found):
            found[name] = _as_bytes(found[name])
        return found

    def unload(self) -> None:
        self.__dict__.pop("_session", None)


def _as_text(arr: Any, name: str) -> Any:
    """A BYTES input as the ``str`` elements an ONNX string tensor holds."""
    if arr.dtype.kind == "U":
        return arr
    out = np.empty(arr.shape, dtype=object)
    flat = out.reshape(-1)
    for index, value in enumerate(arr.reshape(-1).tolist()):
        if isinstance(value, str):
            flat[index] = value
        elif isinstance(value, bytes | bytearray):
            try:
                flat[index] = value.decode("utf-8")
            except UnicodeDecodeError:
                # An ONNX string is text: bytes that are not UTF-8 have no faithful form.
                raise InvalidInput(
                    f"input {quoted(name)} element {index} is not valid UTF-8;"
                    " this ONNX model takes text strings"
                ) from None
        else:
            raise InvalidInput(
                f"input {quoted(name)} element {index} is {type(value).__name__}, not bytes"
            )
    return out


def _as_bytes(arr: Any) -> Any:
    """onnxruntime's ``str`` elements as the ``bytes`` every BYTES tensor holds."""
    out = np.empty(arr.shape, dtype=object)
    flat = out.reshape(-1)
    for index, value in enumerate(arr.reshape(-1).tolist()):
        flat[index] = value.encode("utf-8") if isinstance(value, str) else value
    return out
