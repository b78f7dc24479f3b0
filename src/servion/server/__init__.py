"""The server: REST and gRPC front ends, worker processes, health, graceful shutdown.

Names are imported on first use, so ``python -m servion.server.supervisor`` and
the workers load only the modules they run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from servion.server.supervisor import check_bind_safety, is_loopback, serve

__all__ = ["check_bind_safety", "is_loopback", "serve"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("servion.server.supervisor"), name)
    raise AttributeError(f"module 'servion.server' has no attribute {name!r}")
