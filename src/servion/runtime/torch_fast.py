"""Calling a torch.export program's graph directly, without ``module()``'s per-call work."""

from __future__ import annotations

from typing import Any

import torch

from servion.errors import InvalidInput, quoted


class FastCall:
    """Calls an exported program's graph directly, with its weights as the leading inputs.

    ``ExportedProgram.module()`` flattens and unflattens pytrees and runs its guards on every
    call, which costs about 80 µs, four times a small MLP's own arithmetic; the graph needs
    none of it once inputs are checked against the signature. The range of each dynamic
    dimension (``Dim(max=...)``), which the guards would enforce, is checked here instead.
    """

    def __init__(
        self,
        graph: Any,
        leading: list[torch.Tensor],
        ranges: list[tuple[int, int, str, int, int | None]],
        names: list[str],
    ) -> None:
        self.graph, self.leading, self.ranges, self.names = graph, leading, ranges, names

    @classmethod
    def plan(cls, program: Any, module: Any) -> FastCall | None:
        """The direct call, or None when the program needs what only module() does
        (weights it mutates, custom objects, effect tokens, inputs after its weights)."""
        kinds = torch.export.graph_signature
        specs = program.graph_signature
        if any(o.kind != kinds.OutputKind.USER_OUTPUT for o in specs.output_specs):
            return None
        leading: list[torch.Tensor] = []
        users = 0
        for spec in specs.input_specs:
            if spec.kind == kinds.InputKind.USER_INPUT:
                users += 1
                continue
            if users or spec.kind not in (
                kinds.InputKind.PARAMETER,
                kinds.InputKind.BUFFER,
                kinds.InputKind.CONSTANT_TENSOR,
            ):
                return None
            try:
                leading.append(_attribute(module, spec.target))
            except AttributeError:
                return None
        return cls(program.graph_module, leading, _ranges(program), _spec_names(program))

    def __call__(self, args: list[torch.Tensor]) -> list[Any]:
        for index, dim, name, low, high in self.ranges:
            size = args[index].shape[dim]
            if size < low or (high is not None and size > high):
                raise InvalidInput(
                    f"input {quoted(name)} dimension {dim} is {size}; the program was exported"
                    f" for {low} to {'any' if high is None else high}"
                )
        return list(self.graph(*self.leading, *args))


SLOW = FastCall(None, [], [], [])


def _attribute(module: Any, target: str) -> torch.Tensor:
    found = module
    for part in target.split("."):
        found = getattr(found, part)
    if not isinstance(found, torch.Tensor):
        raise AttributeError(target)
    return found


def _ranges(program: Any) -> list[tuple[int, int, str, int, int | None]]:
    """(input index, dimension, input name, lowest, highest) of each dynamic dimension."""
    users = [
        s.arg.name
        for s in program.graph_signature.input_specs
        if s.kind == torch.export.graph_signature.InputKind.USER_INPUT
    ]
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    found = []
    for index, name in enumerate(users):
        value = placeholders[name].meta.get("val")
        for dim, size in enumerate(getattr(value, "shape", ())):
            if isinstance(size, torch.SymInt):
                bounds = program.range_constraints.get(size.node.expr)
                low = _bound(getattr(bounds, "lower", None)) or 0
                # A lowest size of 2 is export's 0/1 specialization, not the model's: torch's
                # own guards let 0 and 1 through, and so does servion.
                low = low if low > 2 else 0
                found.append((index, dim, name, low, _bound(getattr(bounds, "upper", None))))
    return found


def _bound(value: Any) -> int | None:
    """A range end as an int; None for infinity (torch's int_oo has no int())."""
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None


def _spec_names(program: Any) -> list[str]:
    """``output_names`` from the program's output structure rather than a result."""
    spec = program.call_spec.out_spec
    if spec.is_leaf():
        return ["output"]
    if spec.type is dict and all(child.is_leaf() for child in spec.children_specs):
        return [str(key) for key in spec.context]
    return [f"output_{i}" for i in range(spec.num_leaves)]
