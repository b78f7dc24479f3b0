"""Scale to zero and the model cache. With ``servion serve --scale-to-zero-after S`` a model
version that answered nothing for S seconds is unloaded; with ``--model-memory SIZE``
versions load on their first request and, when loading one would pass SIZE, the least
recently used are unloaded first, each counted at the memory it measured at load. Either
way the next request for a version not loaded loads it and waits for it, bounded, without
failing because of it. Requests that wait together share one load.

Versions an endpoint serves (and the revision before, kept for rollback) stay loaded: an
endpoint's arms switch and roll back without a load. A version asleep still says what it
is (metadata, configuration) from what it said when it was loaded, and counts as ready:
it answers, later by its load time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from servion.errors import ModelNotReady, ServionError
from servion.serving.process import trim_heap

if TYPE_CHECKING:
    from servion.registry import ModelVersion
    from servion.serving.loaded import LoadedModel
    from servion.serving.manager import ModelManager
    from servion.serving.selection import Key

log = logging.getLogger("servion.serving")

ASLEEP = "scaled to zero: loads on its next request"
EVICTED = "evicted from the model cache: loads on its next request"
PARKED = "not loaded yet: loads on its first request"


@dataclass(frozen=True, slots=True)
class Asleep:
    """A version not loaded here, and what it said of itself when it was (None: never)."""

    meta: ModelVersion
    metadata: dict[str, Any] | None
    config: dict[str, Any] | None
    since: float
    reason: str
    footprint: int = 0
    """Resident bytes the worker grew by when it last loaded it (0: never loaded)."""


class Sleep:
    """The versions one worker put to sleep, and their waking."""

    def __init__(
        self,
        manager: ModelManager,
        after_s: float | None,
        budget: int | None = None,
        wait_s: float = 120.0,
    ) -> None:
        self.manager = manager
        self.after_s = after_s
        self.budget = budget
        """Resident bytes the loaded versions may take together (None: no cache)."""
        self.wait_s = wait_s
        """The longest a request waits for a load before it is answered 503."""
        self.asleep: dict[Key, Asleep] = {}
        self._seen: dict[Key, float] = {}
        """When this worker first saw each loaded version (a version never asked for is idle
        from then)."""
        self._waking: dict[Key, asyncio.Future[LoadedModel]] = {}
        self.wakes: dict[Key, list[float]] = {}
        """(model, version) -> [times woken, seconds its requests waited for the loads]."""

    # -- what is asleep -----------------------------------------------------------------

    def find(self, name: str, version: str | None) -> Key | None:
        """The version a request for ``name[:version]`` would wake: that version, or the
        newest of the name (asked for when no version of it is loaded)."""
        if version is not None:
            return (name, version) if (name, version) in self.asleep else None
        keys = [k for k in self.asleep if k[0] == name]
        return max(keys, key=lambda k: self.asleep[k].meta.semver) if keys else None

    def versions(self, name: str) -> list[str]:
        return [v for n, v in self.asleep if n == name]

    # -- going to sleep ---------------------------------------------------------------

    async def sweep(self) -> None:
        """Unload each version that answered nothing for ``after_s`` (endpoints' aside)."""
        manager = self.manager
        if self.after_s is None:
            return
        now = time.time()
        idle = [key for key, model in manager.models.items() if self._idle(key, model, now)]
        if not idle:
            return
        async with manager.lock:
            models = dict(manager.models)
            for key in idle:
                model = models.get(key)
                if model is not None and self._idle(key, model, time.time()):
                    self._unload(models, key, ASLEEP)  # not reloaded or asked for meanwhile
            manager.replace(models)
        await asyncio.to_thread(trim_heap)

    def _unload(self, models: dict[Key, LoadedModel], key: Key, reason: str) -> None:
        """Take ``key`` out of ``models``, asleep from now; call holding the lock."""
        model = models.pop(key)
        self.asleep[key] = Asleep(  # metadata's versions: filled in when it is asked for
            model.meta, model.metadata([]), describe_config(model), time.time(), reason,
            model.handle.memory_bytes,
        )  # fmt: skip
        self._seen.pop(key, None)
        event = "model_scaled_to_zero" if reason == ASLEEP else "model_evicted"
        extra = {"model": key[0], "version": key[1], "memory_bytes": model.handle.memory_bytes}
        log.info(event, extra=extra)

    def park(self, mv: ModelVersion) -> None:
        """A version the cache loads on its first request."""
        key = (mv.name, mv.version)
        if key not in self.asleep:
            self.asleep[key] = Asleep(mv, None, None, time.time(), PARKED)

    def last_used(self, key: Key, model: LoadedModel) -> float:
        return max(self._seen.get(key, 0.0), model.stats.last_inference / 1000)

    async def _make_room(self, need: int, keep: Key) -> None:
        """Unload the least recently used versions (none an endpoint's, none with requests
        queued) until ``need`` more bytes fit the budget."""
        manager, budget = self.manager, self.budget
        assert budget is not None
        async with manager.lock:
            models = dict(manager.models)
            used = resident(models)
            movable = [
                k for k, m in models.items()
                if k != keep and k not in manager.pinned and m.batcher.queued == 0
            ]  # fmt: skip
            movable.sort(key=lambda k: self.last_used(k, models[k]))
            evicted = False
            for key in movable:
                if used + need <= budget:
                    break
                used -= models[key].handle.memory_bytes
                self._unload(models, key, EVICTED)
                evicted = True
            if evicted:
                manager.replace(models)
        if evicted:
            await asyncio.to_thread(trim_heap)
        if used + need > budget:
            log.warning(
                "model_cache_over_budget",
                extra={"model": keep[0], "version": keep[1], "used_bytes": used + need,
                       "budget_bytes": budget},
            )  # fmt: skip

    def _idle(self, key: Key, model: LoadedModel, now: float) -> bool:
        if key in self.manager.pinned:
            return False
        if self.after_s is None:
            return False
        seen = self._seen.setdefault(key, now)
        last = max(seen, model.stats.last_inference / 1000)
        return now - last >= self.after_s

    def forget(self, wanted: set[Key]) -> None:
        """Versions no longer to be served are no longer asleep either."""
        for key in [k for k in self.asleep if k not in wanted]:
            del self.asleep[key]

    # -- waking -------------------------------------------------------------------------

    async def wake(self, name: str, version: str | None) -> LoadedModel | None:
        """The version loaded again (None when nothing of the name is asleep); concurrent
        requests wait for the same load, each at most ``wait_s``."""
        key = self.find(name, version)
        if key is None:
            return None
        waking = self._waking.get(key)
        if waking is None:
            waking = asyncio.ensure_future(self._load(key))
            self._waking[key] = waking
            waking.add_done_callback(lambda _: self._waking.pop(key, None))
        try:
            return await asyncio.wait_for(asyncio.shield(waking), self.wait_s)
        except TimeoutError:
            raise ModelNotReady(name, version, "loading (it was not loaded)") from None

    async def _load(self, key: Key) -> LoadedModel:
        manager = self.manager
        asleep = self.asleep[key]
        started = time.perf_counter()
        if self.budget is not None:  # room first, at what it took last time (or its size)
            await self._make_room(asleep.footprint or asleep.meta.size_bytes, key)
        loaded = await manager.load_version(asleep.meta)
        if loaded is None:
            reason = manager.failures.get(key, "failed to load")
            raise ModelNotReady(key[0], key[1], reason)
        async with manager.lock:
            if self.asleep.get(key) is asleep:  # still wanted, and not woken meanwhile
                del self.asleep[key]
                manager.replace({**manager.models, key: loaded})
            else:
                loaded.handle.retire()
                current = manager.models.get(key)
                if current is None:
                    raise ModelNotReady(key[0], key[1], "no longer served")
                loaded = current
        self._seen[key] = time.time()
        if self.budget is not None:  # what it measured now counts
            await self._make_room(0, key)
        took = time.perf_counter() - started
        slot = self.wakes.setdefault(key, [0, 0.0])
        slot[0] += 1
        slot[1] += took
        log.info(
            "model_woken",
            extra={
                "model": key[0], "version": key[1], "load_s": round(took, 4),
                "asleep_s": round(time.time() - asleep.since, 1),
            },
        )  # fmt: skip
        return loaded


def resident(models: dict[Key, LoadedModel]) -> int:
    """What the loaded runtimes measured at load, each counted once."""
    handles = {id(m.handle): m.handle.memory_bytes for m in models.values()}
    return sum(handles.values())


def describe_config(model: LoadedModel) -> dict[str, Any]:
    from servion.serving.describe import model_config

    return model_config(model)


async def obtain(manager: ModelManager, name: str, version: str | None) -> LoadedModel:
    """The loaded model for a request: at once if it is loaded, after its load if it was
    scaled to zero, else the reason ``resolve`` gives."""
    try:
        return manager.resolve(name, version)
    except ServionError:
        sleep = manager.sleep
        if sleep is None:
            raise
        woken = await sleep.wake(name, version)
        if woken is None:
            raise
        return woken
