"""Request ids and the access log of the REST front end.

Every answer carries ``X-Request-Id``: the client's own when it sent a sane one (1 to 128
of ``A-Z a-z 0-9 . _ : -``), else one made here (a random prefix per worker and a counter:
unique across workers and restarts, and far cheaper than a UUID per request). The access
log (off by default) writes one JSON line per answer, sampled by rate; answers slower than
the slow-request threshold, and every 5xx, are written whatever the sampling.
"""

from __future__ import annotations

import logging
import os
import random
import re
from typing import Final

log = logging.getLogger("servion.access")

_SANE: Final = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class RequestIds:
    __slots__ = ("_count", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(4).hex().encode()
        self._count = 0

    def pick(self, incoming: bytes | None) -> bytes:
        if incoming is not None and _SANE.fullmatch(incoming):
            return incoming
        self._count += 1
        return b"%s-%x" % (self._prefix, self._count)


class AccessLog:
    """``enabled`` with ``sample`` (0..1) of the answers; ``slow_s`` (0: off) and 5xx always."""

    __slots__ = ("enabled", "sample", "slow_s")

    def __init__(self, enabled: bool = False, sample: float = 1.0, slow_s: float = 0.0) -> None:
        self.enabled = enabled
        self.sample = sample
        self.slow_s = slow_s

    def wants(self, status: int, elapsed_s: float) -> bool:
        if status >= 500 or (self.slow_s and elapsed_s >= self.slow_s):
            return True
        return self.enabled and (self.sample >= 1.0 or random.random() < self.sample)

    def write(
        self,
        method: str,
        path: str,
        status: int,
        size: int,
        elapsed_s: float,
        request_id: bytes,
    ) -> None:
        slow = bool(self.slow_s) and elapsed_s >= self.slow_s
        log.log(
            logging.WARNING if status >= 500 or slow else logging.INFO,
            "slow_request" if slow else "request",
            extra={
                "method": method,
                "path": path[:200],
                "status": status,
                "bytes": size,
                "duration_ms": round(elapsed_s * 1000, 3),
                "request_id": request_id.decode("ascii"),
            },
        )
