"""Dynamic batching per model version: bounded queue, priorities, deadlines,
latency-aware waiting, exact splitting of results.
"""

from servion.batching.batcher import DynamicBatcher, request_scheduling
from servion.batching.config import BatchingConfig
from servion.batching.execution import model_failure

__all__ = ["BatchingConfig", "DynamicBatcher", "model_failure", "request_scheduling"]
