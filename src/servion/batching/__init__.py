"""Dynamic batching per model version: bounded queue, priorities, deadlines,
latency-aware waiting, exact splitting of results.
"""

from servion.batching.batcher import DynamicBatcher
from servion.batching.config import BatchingConfig, request_scheduling
from servion.batching.execution import Trace, model_failure, reported

__all__ = [
    "BatchingConfig",
    "DynamicBatcher",
    "Trace",
    "model_failure",
    "reported",
    "request_scheduling",
]
