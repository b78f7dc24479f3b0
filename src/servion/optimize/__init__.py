"""Optimization: a registered version turned into a faster one (conversion to ONNX, graph
optimization, quantization), each step checked on validation data against the model
before it and the source, and the result registered with its lineage only if it keeps
its accuracy.

``optimize(registry, OptimizeRequest(...))`` runs a recipe; ``STEPS`` is the step table;
``recheck`` scores a derived version again on the validation data its lineage recorded.
"""

from servion.optimize.data import ValidationSet, load_validation
from servion.optimize.pipeline import OptimizeRequest, OptimizeResult, optimize
from servion.optimize.recheck import Recheck, recheck
from servion.optimize.report import Report, Stage
from servion.optimize.steps import PLANNED, STEPS, Step, parse_recipe

__all__ = [
    "PLANNED",
    "STEPS",
    "OptimizeRequest",
    "OptimizeResult",
    "Recheck",
    "Report",
    "Stage",
    "Step",
    "ValidationSet",
    "load_validation",
    "optimize",
    "parse_recipe",
    "recheck",
]
