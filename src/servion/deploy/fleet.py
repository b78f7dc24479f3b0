"""What deploy needs of the servers whose endpoints it changes; the server implements it."""

from __future__ import annotations

from typing import Any, Protocol


class Fleet(Protocol):
    """Every live worker, as seen from one of them."""

    worker_id: str
    """This worker's name: the holder of the leases it takes."""

    async def converge(self) -> None:
        """Apply the registry here and wait until every live worker has applied it."""

    async def endpoint_counters(self, endpoint: str) -> dict[str, dict[str, Any]]:
        """One endpoint's per-arm counters, by live worker."""
        ...

    def load_failures(self) -> dict[tuple[str, str], str]:
        """Versions this worker should serve but could not load, with the reason."""
        ...
