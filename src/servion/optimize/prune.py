"""Structured pruning of an ONNX graph's MLP layers: whole hidden units removed.

A hidden layer is a chain ``Gemm`` (or ``MatMul`` then ``Add`` of a bias) -> an
element-wise activation -> ``Gemm`` (or ``MatMul``), with its weights as initializers
used nowhere else. Unit *j* of such a layer is column *j* of the first weight (and bias
*j*) and row *j* of the second; removing it leaves every other unit's arithmetic as it
was, so the layer shrinks to dense matrices that are smaller for real, unlike zeroed
weights, which dense kernels multiply all the same. The units kept in each layer are the
``1 - sparsity`` share with the largest ``|w_in| * |w_out|`` (the norms of what feeds the
unit and of what it feeds), at least one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from servion.errors import InvalidInput

# Applied to each unit on its own, so removing a unit leaves the others' values as they were.
ELEMENTWISE = frozenset(
    (
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "Elu",
        "Selu",
        "Celu",
        "Softplus",
        "Softsign",
        "Gelu",
        "HardSigmoid",
        "HardSwish",
        "Mish",
        "ThresholdedRelu",
        "Identity",
    )
)


@dataclass
class _Layer:
    """One prunable hidden layer: where its unit axis lies in each initializer."""

    first: str
    first_axis: int
    bias: str | None
    second: str
    second_axis: int
    units: int
    touched: tuple[str, ...]
    """Intermediate tensors whose recorded shapes change."""


def prune_structured(source: Path, target: Path, sparsity: float) -> tuple[str, ...]:
    """Write ``source`` with the ``sparsity`` share of every hidden layer's units removed;
    give the report's note."""
    import onnx

    from servion.optimize.onnx_steps import writing

    with writing(source, target) as files:
        model = onnx.load(str(files.source))
        layers = find_layers(model.graph)
        if not layers:
            raise InvalidInput(
                "prune-structured found no hidden layer to shrink: it takes MLP layers"
                " (Gemm or MatMul+Add, an element-wise activation, then Gemm or MatMul)"
            )
        before = after = 0
        for layer in layers:
            kept = _shrink(model.graph, layer, sparsity)
            before, after = before + layer.units, after + kept
        touched = {name for layer in layers for name in layer.touched}
        kept_info = [v for v in model.graph.value_info if v.name not in touched]
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept_info)
        onnx.checker.check_model(model)
        onnx.save(model, str(files.out))
    return (
        f"{len(layers)} hidden layers, {before:,} units -> {after:,}"
        f" ({sparsity:.0%} removed by |w_in|*|w_out|)",
    )


def find_layers(graph: Any) -> list[_Layer]:
    """Every hidden layer of ``graph`` that can lose units without changing anything else."""
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def only(name: str) -> Any | None:
        found = consumers.get(name, [])
        return found[0] if len(found) == 1 and name not in outputs else None

    layers = []
    for node in graph.node:
        head = _producer(node, inits, only)
        if head is None:
            continue
        first, first_axis, bias, hidden = head
        act = only(hidden)
        if act is None or act.op_type not in ELEMENTWISE or len(act.input) != 1:
            continue
        second = only(act.output[0])
        tail = _consumer(second, act.output[0], inits) if second is not None else None
        if tail is None:
            continue
        weights = (first, bias, tail[0])
        if any(w is not None and len(consumers.get(w, [])) != 1 for w in weights):
            continue  # a weight shared with another node would change there too
        units = _dims(inits[first])[first_axis]
        if _dims(inits[tail[0]])[tail[1]] != units:
            continue
        if bias is not None and _dims(inits[bias])[-1] != units:
            continue  # a bias broadcast from one value is not one per unit
        touched = tuple(dict.fromkeys((node.output[0], hidden, act.output[0])))
        layers.append(_Layer(first, first_axis, bias, tail[0], tail[1], units, touched))
    return layers


def _producer(
    node: Any, inits: dict[str, Any], only: Any
) -> tuple[str, int, str | None, str] | None:
    """(weight, unit axis, bias, hidden tensor) when ``node`` makes a hidden layer's units."""
    attrs = {a.name: a.i for a in node.attribute if a.type == 2}  # INT attributes
    if node.op_type == "Gemm" and len(node.input) >= 2 and node.input[1] in inits:
        if attrs.get("transA", 0):
            return None
        axis = 0 if attrs.get("transB", 0) else 1
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bias is not None and (bias not in inits or not _row(inits[bias])):
            return None
        return node.input[1], axis, bias, node.output[0]
    if (
        node.op_type != "MatMul"
        or node.input[1] not in inits
        or len(_dims(inits[node.input[1]])) != 2
    ):
        return None
    add = only(node.output[0])
    if add is not None and add.op_type == "Add":
        other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        if other in inits and _row(inits[other]):
            return node.input[1], 1, other, add.output[0]
    return node.input[1], 1, None, node.output[0]


def _consumer(node: Any, hidden: str, inits: dict[str, Any]) -> tuple[str, int] | None:
    """(weight, unit axis) when ``node`` reads a hidden layer's units as its input rows."""
    if not node.input or node.input[0] != hidden or len(node.input) < 2:
        return None
    weight = node.input[1]
    if weight not in inits or len(_dims(inits[weight])) != 2:
        return None
    if node.op_type == "Gemm":
        attrs = {a.name: a.i for a in node.attribute if a.type == 2}
        if attrs.get("transA", 0):
            return None
        return weight, 1 if attrs.get("transB", 0) else 0
    return (weight, 0) if node.op_type == "MatMul" else None


def _shrink(graph: Any, layer: _Layer, sparsity: float) -> int:
    from onnx import numpy_helper

    inits = {t.name: t for t in graph.initializer}
    first = numpy_helper.to_array(inits[layer.first])
    second = numpy_helper.to_array(inits[layer.second])
    w_in = np.moveaxis(first, layer.first_axis, 0).reshape(layer.units, -1).astype(np.float64)
    w_out = np.moveaxis(second, layer.second_axis, 0).reshape(layer.units, -1).astype(np.float64)
    importance = np.linalg.norm(w_in, axis=1) * np.linalg.norm(w_out, axis=1)
    keep = max(1, round(layer.units * (1.0 - sparsity)))
    kept = np.sort(np.argsort(-importance, kind="stable")[:keep])
    _replace(inits[layer.first], np.take(first, kept, axis=layer.first_axis))
    _replace(inits[layer.second], np.take(second, kept, axis=layer.second_axis))
    if layer.bias is not None:
        _replace(inits[layer.bias], numpy_helper.to_array(inits[layer.bias])[..., kept])
    return int(keep)


def _replace(tensor: Any, values: np.ndarray) -> None:
    from onnx import numpy_helper

    tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(values), tensor.name))


def _row(tensor: Any) -> bool:
    """A bias of one value per unit: shape [units] or [1, units]."""
    dims = _dims(tensor)
    return len(dims) == 1 or (len(dims) == 2 and dims[0] == 1)


def _dims(tensor: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.dims)
