"""Dynamic batching per model version: bounded queue, priorities, deadlines,
latency-aware waiting, exact splitting of results.
"""

from servion.batching.batcher import DynamicBatcher, request_scheduling
from servion.batching.config import BatchingConfig

__all__ = ["BatchingConfig", "DynamicBatcher", "request_scheduling"]
