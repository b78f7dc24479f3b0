"""The data plane: the model manager (load, warm-up, serve, retire, with reference
counts) and ``DataPlane.infer_endpoint`` / ``infer_model`` over protocol-neutral requests and
answers, the only place that validates, submits to a batcher and counts."""

from servion.serving.dataplane import DataPlane, current_request_id, current_trace
from servion.serving.loaded import LoadedModel, RuntimeHandle
from servion.serving.manager import ModelManager, ModelState, PlanSource
from servion.serving.payload_log import PayloadLogger
from servion.serving.shadow import ShadowRunner
from servion.serving.stats import ModelStats, merge, to_triton

__all__ = [
    "DataPlane",
    "LoadedModel",
    "ModelManager",
    "ModelState",
    "ModelStats",
    "PayloadLogger",
    "PlanSource",
    "RuntimeHandle",
    "ShadowRunner",
    "current_request_id",
    "current_trace",
    "merge",
    "to_triton",
]
