"""Runs shadow copies of requests off the request path.

A copy is scheduled after the primary's answer is ready (``call_soon``), and
each shadow version runs in a thread of its own, never in its batcher or on the
event loop, so a slow or failing shadow cannot delay or change any answer, nor
hold up another shadow. At most ``max_in_flight`` copies per shadow wait or
run at once; beyond that they are dropped and counted. Copies go through the
data plane, so the shadow version's statistics count them like any request.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor

from servion.errors import ServionError
from servion.protocol import InferRequest, InferResponse
from servion.routing import EndpointRouter, ShadowRoute, compare
from servion.serving.dataplane import DataPlane
from servion.types import Arrays

log = logging.getLogger("servion.serving")


class ShadowRunner:
    def __init__(self, plane: DataPlane, max_in_flight: int = 64) -> None:
        self.plane = plane
        self.max_in_flight = max_in_flight
        self.in_flight: dict[str, int] = {}
        self._pools: dict[str, ThreadPoolExecutor] = {}
        plane.shadows = self

    def after(self, router: EndpointRouter, request: InferRequest, primary: InferResponse) -> None:
        """Copy ``request`` to the router's shadows once the current callback is done."""
        asyncio.get_running_loop().call_soon(self._start, router, request, primary)

    def _start(self, router: EndpointRouter, request: InferRequest, primary: InferResponse) -> None:
        arrays = {o.name: o.data for o in primary.outputs}
        for shadow in router.shadows:
            if shadow.sample < 1.0 and random.random() >= shadow.sample:
                continue
            label = shadow.label
            if self.in_flight.get(label, 0) >= self.max_in_flight:
                shadow.stats.dropped += 1
                continue
            pool = self._pools.get(label)
            if pool is None:
                pool = self._pools[label] = ThreadPoolExecutor(
                    1, thread_name_prefix=f"servion-shadow-{label}"
                )
            copy = InferRequest(request.id, request.inputs, None, {})
            try:
                model = self.plane.manager.resolve(shadow.model, shadow.version)
                done = self.plane.infer_off_loop(model, copy, pool)
            except ServionError:
                shadow.stats.errors += 1
                continue
            self.in_flight[label] = self.in_flight.get(label, 0) + 1
            done.add_done_callback(
                functools.partial(self._finish, shadow, arrays, time.perf_counter())
            )

    def _finish(
        self,
        shadow: ShadowRoute,
        primary: Arrays,
        started: float,
        done: asyncio.Future[InferResponse],
    ) -> None:
        self.in_flight[shadow.label] -= 1
        latency_ms = (time.perf_counter() - started) * 1e3
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            shadow.stats.errors += 1
            log.warning(
                "shadow_failed", extra={"shadow": shadow.label, "error": type(error).__name__}
            )
            return
        agree, worst = compare(primary, {o.name: o.data for o in done.result().outputs})
        shadow.stats.record(latency_ms, agree, worst)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
