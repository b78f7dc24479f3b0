"""Per-endpoint protections that live in each worker: a response cache and a bulkhead."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from typing import Any, Generic, TypeVar

from servion.errors import Overloaded, quoted

V = TypeVar("V")


class ResponseCache(Generic[V]):
    """LRU with a time to live; counts hits and misses."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Any, tuple[float, V]] = OrderedDict()

    def get(self, key: Any) -> V | None:
        found = self._entries.get(key)
        if found is not None:
            expires, value = found
            if expires > time.monotonic():
                self._entries.move_to_end(key)
                self.hits += 1
                return value
            del self._entries[key]
        self.misses += 1
        return None

    def put(self, key: Any, value: V) -> None:
        self._entries[key] = (time.monotonic() + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def to_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "entries": len(self._entries)}


class Bulkhead:
    """At most ``limit`` requests of one endpoint run at once; ``queue`` more wait in order."""

    def __init__(self, endpoint: str, limit: int, queue: int) -> None:
        self.endpoint = endpoint
        self.limit = limit
        self.queue = queue
        self.running = 0
        self.rejected = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    def enter(self) -> asyncio.Future[None] | None:
        """None when the request may run now; a future to await when it must queue.

        Raises ``Overloaded`` (503 with Retry-After) when the queue is full too.
        """
        if self.running < self.limit:
            self.running += 1
            return None
        if len(self._waiting) >= self.queue:
            self.rejected += 1
            raise Overloaded(
                f"endpoint {quoted(self.endpoint)} has {self.running} requests running and"
                f" {len(self._waiting)} waiting (its concurrency limit)",
                retry_after=1.0,
            )
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        return turn

    def leave(self) -> None:
        """A running request finished: hand its place to the next waiting one."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():  # a caller that went away has a cancelled turn
                turn.set_result(None)
                return
        self.running -= 1

    def to_dict(self) -> dict[str, int]:
        return {"running": self.running, "waiting": len(self._waiting), "rejected": self.rejected}


class CircuitBreaker:
    """Closed → open when the recent error rate is too high → half-open after a pause,
    where one probe decides: success closes it, failure opens it again."""

    def __init__(self, error_rate: float, window_s: float, min_requests: int, open_s: float):
        self.error_rate = error_rate
        self.window_s = window_s
        self.min_requests = min_requests
        self.open_s = open_s
        self.state = "closed"
        self.times_opened = 0
        self.rejected = 0
        self._events: deque[tuple[float, bool]] = deque()
        self._errors = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def settings(self) -> tuple[float, float, int, float]:
        return self.error_rate, self.window_s, self.min_requests, self.open_s

    def allow(self, now: float) -> bool:
        """Whether a request may go to the arm now."""
        if self.state == "open" and now - self._opened_at >= self.open_s:
            self.state, self._probing = "half_open", False
        if self.state == "closed":
            return True
        if self.state == "half_open" and not self._probing:
            self._probing = True
            return True
        self.rejected += 1
        return False

    def record(self, ok: bool, now: float) -> None:
        if self.state == "half_open":
            if ok:
                self.state = "closed"
                self._events.clear()
                self._errors = 0
            else:
                self._open(now)
            return
        self._events.append((now, ok))
        self._errors += not ok
        while self._events and now - self._events[0][0] > self.window_s:
            _, was_ok = self._events.popleft()
            self._errors -= not was_ok
        count = len(self._events)
        if count >= self.min_requests and self._errors / count >= self.error_rate:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = "open"
        self._opened_at = now
        self._probing = False
        self.times_opened += 1

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "opened": self.times_opened, "rejected": self.rejected}


class RetryBudget:
    """Retries allowed as a share of recent requests (a token bucket refilled by requests)."""

    def __init__(self, attempts: int, share: float, floor: float = 10.0) -> None:
        self.attempts = attempts
        self.share = share
        self._tokens = floor
        self._cap = max(floor, 100.0 * share)
        self.retried = 0
        self.refused = 0

    def request(self) -> None:
        """Count one request: it earns ``share`` of a retry."""
        self._tokens = min(self._cap, self._tokens + self.share)

    def take(self) -> bool:
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.retried += 1
            return True
        self.refused += 1
        return False

    def to_dict(self) -> dict[str, int]:
        return {"retried": self.retried, "refused": self.refused}
