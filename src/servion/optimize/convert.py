"""scikit-learn estimators (and XGBoost and LightGBM models in their scikit-learn form,
alone or inside a Pipeline) to ONNX, keeping what clients send and get back.

The ONNX input takes the source's name and shape; classifiers give probabilities as a
plain tensor (no ZipMap); each output is cast and reshaped to the source's datatype and
shape (scikit-learn's FP64 probabilities, a regressor's one value per row), so a client
of the source sends the same request to the ONNX version and reads the same answer. The
arithmetic inside runs in float32, as ONNX converters write it: the equivalence check
after the step says whether that changed anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from servion.errors import InvalidInput, quoted
from servion.optimize.steps import StepInput
from servion.runtime import Signature, TensorSpec, make_runtime

OPSETS = {"": 17, "ai.onnx.ml": 3}
"""Opsets every onnxruntime since 1.14 runs; the tree converters need ml opset 3."""

_BOOSTERS = {
    # class path -> (skl2onnx alias, onnxmltools module, converter, extra)
    "xgboost.XGBClassifier": ("XGBoostXGBClassifier", "xgboost", "convert_xgboost", "xgboost"),
    "xgboost.XGBRegressor": ("XGBoostXGBRegressor", "xgboost", "convert_xgboost", "xgboost"),
    "lightgbm.LGBMClassifier": (
        "LightGbmLGBMClassifier",
        "lightgbm",
        "convert_lightgbm",
        "lightgbm",
    ),
    "lightgbm.LGBMRegressor": ("LightGbmLGBMRegressor", "lightgbm", "convert_lightgbm", "lightgbm"),
}
_CONVERTER_MODULES = {
    "xgboost": "onnxmltools.convert.xgboost.operator_converters.XGBoost",
    "lightgbm": "onnxmltools.convert.lightgbm.operator_converters.LightGbm",
}


def sklearn_to_onnx(step: StepInput) -> None:
    """Convert the estimator in ``step.source`` and write it to ``step.target``."""
    runtime = make_runtime(step.format, step.source, step.runtime)
    runtime.load()
    estimator = getattr(runtime, "estimator", None)
    if estimator is None:
        raise InvalidInput(f"the {step.format} model holds no scikit-learn estimator to convert")
    estimator_to_onnx(estimator, step.signature, step.target)


def estimator_to_onnx(estimator: Any, signature: Signature, target: Path) -> None:
    """Write a fitted scikit-learn ``estimator`` as ONNX taking ``signature``'s input and
    giving its outputs (by name, type and shape, where one matches)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    _register_boosters(estimator)
    _check_parts(estimator)
    spec = signature.inputs[0]
    options = {"zipmap": False} if hasattr(estimator, "classes_") else None
    try:
        model = convert_sklearn(
            estimator,
            initial_types=[(spec.name, FloatTensorType([None, *spec.shape[1:]]))],
            options=options,
            target_opset=OPSETS,
        )
    except Exception as exc:  # the converters raise anything from RuntimeError to KeyError
        raise InvalidInput(
            f"skl2onnx cannot convert {_describe(estimator)}: {type(exc).__name__}: {exc}"
        ) from exc
    _match_outputs(model.graph, signature)
    _one_opset_per_domain(model)
    target.write_bytes(model.SerializeToString())


def _one_opset_per_domain(model: Any) -> None:
    """skl2onnx can list the default domain twice; onnxruntime runs that, but its
    quantizer refuses the model, so the steps after conversion get one entry each."""
    versions: dict[str, int] = {}
    for opset in model.opset_import:
        versions[opset.domain] = max(versions.get(opset.domain, 0), opset.version)
    del model.opset_import[:]
    for domain, version in versions.items():
        entry = model.opset_import.add()
        entry.domain, entry.version = domain, version


def _describe(estimator: Any) -> str:
    return f"{type(estimator).__module__}.{type(estimator).__qualname__}"


def parts(estimator: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf estimator with where it sits (``pipeline step 'clf'``), walking
    Pipelines, ColumnTransformers and FeatureUnions."""
    children: list[tuple[str, Any]] = []
    if hasattr(estimator, "steps"):
        children = list(estimator.steps)
    elif hasattr(estimator, "transformers_"):
        children = [(name, t) for name, t, _ in estimator.transformers_]
    elif hasattr(estimator, "transformer_list"):
        children = list(estimator.transformer_list)
    if not children:
        yield path or "the model", estimator
        return
    for name, child in children:
        if isinstance(child, str):  # "passthrough" and "drop" convert as themselves
            continue
        yield from parts(child, f"{path} > {name}" if path else f"pipeline step {quoted(name)}")


def _check_parts(estimator: Any) -> None:
    """Name the first part no converter knows, before the converter fails less clearly."""
    try:
        from skl2onnx._parse import sklearn_operator_name_map
    except ImportError:  # a skl2onnx without the table: its own error will have to do
        return
    for where, part in parts(estimator):
        if type(part) in sklearn_operator_name_map:
            continue
        booster = _booster_key(part)
        if booster is not None:
            extra = _BOOSTERS[booster][3]
            raise InvalidInput(
                f"{where} ({_describe(part)}) converts with onnxmltools:"
                f" pip install 'servion[{extra}]'"
            )
        raise InvalidInput(
            f"cannot convert {where} ({_describe(part)}) to ONNX: skl2onnx has no converter"
            " for it; leave it out of the pipeline or register an ONNX export of the model"
        )


def _booster_key(part: Any) -> str | None:
    module = type(part).__module__.split(".")[0]
    key = f"{module}.{type(part).__name__}"
    return key if key in _BOOSTERS else None


def _register_boosters(estimator: Any) -> None:
    """Teach skl2onnx the XGBoost and LightGBM models in ``estimator`` (onnxmltools
    converts them); absent packages leave them unknown, which ``_check_parts`` reports."""
    import importlib

    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    for _, part in parts(estimator):
        key = _booster_key(part)
        if key is None:
            continue
        alias, family, converter, _ = _BOOSTERS[key]
        try:
            convert = getattr(importlib.import_module(_CONVERTER_MODULES[family]), converter)
        except ImportError:
            continue
        classifier = key.endswith("Classifier")
        shapes = (
            calculate_linear_classifier_output_shapes
            if classifier
            else calculate_linear_regressor_output_shapes
        )
        options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
        update_registered_converter(
            type(part), alias, shapes, convert, options=options if classifier else None
        )


def _match_outputs(graph: Any, signature: Signature) -> None:
    """Rename, cast and reshape the graph's outputs to the source's, where one matches."""
    names = {o.name for o in graph.output}
    for spec in signature.outputs:
        found = spec.name if spec.name in names else _alias(spec, names)
        if found is not None:
            _adapt(graph, found, spec)


def _alias(spec: TensorSpec, names: set[str]) -> str | None:
    # skl2onnx calls a regressor's output "variable"; the scikit-learn runtime "prediction".
    return "variable" if spec.name == "prediction" and "variable" in names else None


def _adapt(graph: Any, current: str, spec: TensorSpec) -> None:
    from onnx import TensorProto, helper

    want = _onnx_type(spec.datatype)
    output = next(o for o in graph.output if o.name == current)
    tensor_type = output.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
    reshape = len(spec.shape) == 1 and len(dims) == 2 and dims[1] == 1
    cast = want != tensor_type.elem_type and TensorProto.STRING not in (want, tensor_type.elem_type)
    if not reshape and not cast and current == spec.name:
        return
    raw = f"{spec.name}__servion_raw"
    _rename(graph, current, raw)
    tensor = raw
    if reshape:
        shape = helper.make_tensor(f"{spec.name}__servion_shape", TensorProto.INT64, [1], [-1])
        graph.initializer.append(shape)
        after = spec.name if not cast else f"{spec.name}__servion_flat"
        graph.node.append(helper.make_node("Reshape", [tensor, shape.name], [after]))
        tensor = after
    if cast:
        graph.node.append(helper.make_node("Cast", [tensor], [spec.name], to=want))
    elem = want if cast else tensor_type.elem_type
    shape_out = [None, *spec.shape[1:]] if reshape else [None, *dims[1:]]
    index = next(i for i, o in enumerate(graph.output) if o.name == raw)
    graph.output.remove(graph.output[index])
    value = helper.make_tensor_value_info(
        spec.name, elem, [d if d != -1 else None for d in shape_out]
    )
    graph.output.insert(index, value)


def _onnx_type(datatype: str) -> int:
    from onnx import TensorProto, helper

    from servion.datatypes import NUMPY_OF

    if datatype == "BYTES":
        return int(TensorProto.STRING)
    return int(helper.np_dtype_to_tensor_dtype(NUMPY_OF[datatype]))


def _rename(graph: Any, old: str, new: str) -> None:
    """Give tensor ``old`` a new name everywhere it is produced, consumed or listed."""
    for node in graph.node:
        node.output[:] = [new if n == old else n for n in node.output]
        node.input[:] = [new if n == old else n for n in node.input]
    for info in (*graph.output, *graph.value_info):
        if info.name == old:
            info.name = new
