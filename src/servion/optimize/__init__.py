"""Optimization: a registered version turned into a faster one (conversion to ONNX, graph
optimization, quantization), each step checked on validation data against the model
before it and the source, and the result registered with its lineage only if it keeps
its accuracy.

``optimize(registry, OptimizeRequest(...))`` runs a recipe; ``STEPS`` is the step table.
"""

from servion.optimize.data import ValidationSet, load_validation
from servion.optimize.pipeline import OptimizeRequest, OptimizeResult, optimize
from servion.optimize.report import Report, Stage
from servion.optimize.steps import PLANNED, STEPS, Step, parse_recipe

__all__ = [
    "PLANNED",
    "STEPS",
    "OptimizeRequest",
    "OptimizeResult",
    "Report",
    "Stage",
    "Step",
    "ValidationSet",
    "load_validation",
    "optimize",
    "parse_recipe",
]
