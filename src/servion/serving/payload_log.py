"""Payload logging: a sampled copy of an endpoint's requests and answers, off the request path.

The data plane hands each request to an endpoint with a ``payload_log`` here. Whether it
is logged is decided by a hash of its request id, so the choice is the same in every
worker and for every retry of a request, and tests can know it in advance. Once the
answer (or the error) is ready, the request, the answer and what routing learned (the
arm, a cache hit) go to the endpoint's channel on its sink (``payload_sinks``) in a later
callback, after the transport has the answer. Probe traffic is never logged.

Channels follow the endpoints: ``sync`` runs after every swap of routers and closes the
channels of endpoints that are gone or whose settings changed; a sink closes when its last
channel does, once what was queued for it is written.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping

from servion.errors import ServionError
from servion.protocol import InferRequest, InferResponse, http_status_for
from servion.routing import EndpointRouter, RequestContext
from servion.routing.endpoint import Answer
from servion.serving.manager import ModelManager
from servion.serving.payload_events import Payload
from servion.serving.payload_sinks import HTTP_TIMEOUT_S, Channel, SinkWriter, sink_key


def sampled(request_id: str | None, sample: float) -> bool:
    """True when the request with this id is logged at this sample rate.

    >>> sampled("any id", 1.0)
    True
    >>> sum(sampled(f"req-{i}", 0.25) for i in range(1000)) in range(200, 300)
    True
    """
    if sample >= 1.0:
        return True
    if request_id is None:
        return random.random() < sample
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < sample


class PayloadLogger:
    """One worker's payload logs: a channel per logging endpoint, a thread per sink."""

    def __init__(self, manager: ModelManager, http_timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.manager = manager
        self.http_timeout_s = http_timeout_s
        self._channels: dict[str, Channel] = {}
        self._sinks: dict[str, SinkWriter] = {}
        self._retired: list[SinkWriter] = []
        """Closed sinks that may still be writing what was queued: joined at shutdown."""
        self._closed = False
        manager.on_endpoints.append(self.sync)

    def watch(
        self,
        router: EndpointRouter,
        request: InferRequest,
        ctx: RequestContext,
        answer: Callable[[], Answer],
    ) -> Answer:
        """``answer()``, and a copy of the request and its outcome when it is sampled."""
        policy = router.payload_log
        if policy is None or ctx.probe or not sampled(ctx.request_id, policy.sample):
            return answer()
        try:
            result = answer()
        except Exception as exc:
            self._later(router, request, ctx, None, exc)
            raise
        if isinstance(result, InferResponse):
            self._later(router, request, ctx, result, None)
        elif isinstance(result, asyncio.Future):
            # A queued request: a callback, not a task, as the transports do.
            result.add_done_callback(lambda done: self._settled(router, request, ctx, done))
        else:
            return self._awaited(router, request, ctx, result)
        return result

    def _settled(
        self,
        router: EndpointRouter,
        request: InferRequest,
        ctx: RequestContext,
        done: asyncio.Future[InferResponse],
    ) -> None:
        if done.cancelled():  # the caller went away: there was no answer to log
            return
        error = done.exception()
        response = done.result() if error is None else None
        self._later(router, request, ctx, response, error)

    async def _awaited(
        self,
        router: EndpointRouter,
        request: InferRequest,
        ctx: RequestContext,
        answer: Awaitable[InferResponse],
    ) -> InferResponse:
        try:
            response = await answer
        except Exception as exc:
            self._later(router, request, ctx, None, exc)
            raise
        self._later(router, request, ctx, response, None)
        return response

    def _later(
        self,
        router: EndpointRouter,
        request: InferRequest,
        ctx: RequestContext,
        response: InferResponse | None,
        error: BaseException | None,
    ) -> None:
        # The answer's time, taken now; the rest once the transport has the answer.
        now = time.time()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside a loop (a test): no answer to go first
            self._offer(router, request, ctx, response, error, now)
            return
        loop.call_soon(self._offer, router, request, ctx, response, error, now)

    def _offer(
        self,
        router: EndpointRouter,
        request: InferRequest,
        ctx: RequestContext,
        response: InferResponse | None,
        error: BaseException | None,
        now: float,
    ) -> None:
        channel = self._channel(router)
        if channel is None:  # the endpoint left, or changed its log, before this answer
            router.payload_stats.add(dropped=1)
            return
        status = 200 if error is None else http_status_for(error)[0]
        if error is None:
            message = None
        elif isinstance(error, ServionError):
            message = error.message
        else:  # as the transports say it: no details of the server's code
            message = f"internal error ({type(error).__name__})"
        if response is not None and response.model_version is not None:
            subject: str | None = f"{response.model_name}:{response.model_version}"
        else:
            subject = ctx.arm
        payload = Payload(
            endpoint=router.name,
            request_id=ctx.request_id or request.id or uuid.uuid4().hex[:16],
            time=now,
            subject=subject,
            request=request,
            response=response,
            error=message,
            status=status,
            cached=ctx.cached,
            max_elements=channel.policy.max_elements,
        )
        channel.sink.offer(channel, payload)

    def _channel(self, router: EndpointRouter) -> Channel | None:
        channel = self._channels.get(router.name)
        if channel is not None and channel.policy == router.payload_log:
            return channel
        if self._closed or self.manager.endpoints.get(router.name) is not router:
            return None
        # The current revision before any swap told us of it (the first requests).
        self.sync(self.manager.endpoints)
        return self._channels.get(router.name)

    def sync(self, endpoints: Mapping[str, EndpointRouter]) -> None:
        """Open channels for endpoints that log, close those of endpoints that stopped."""
        if self._closed:
            return
        old, self._channels = self._channels, {}
        for name, router in endpoints.items():
            policy = router.payload_log
            if policy is None:
                continue
            kept = old.get(name)
            if kept is not None and kept.policy == policy:
                self._channels[name] = old.pop(name)
                continue
            # Opened before the old channels close, so a sink both use stays one sink.
            key = sink_key(policy.sink)
            sink = self._sinks.get(key)
            if sink is None:
                sink = self._sinks[key] = SinkWriter(policy.sink, self.http_timeout_s)
            sink.users += 1
            self._channels[name] = Channel(policy, router.payload_stats, sink)
        for channel in old.values():
            self._release(channel)

    def _release(self, channel: Channel) -> None:
        sink = channel.sink
        sink.users -= 1
        if sink.users == 0:
            sink.close()
            del self._sinks[sink.key]
            self._retired = [s for s in self._retired if not s.join(0)]
            self._retired.append(sink)

    def close(self) -> None:
        """Stop logging: every sink closes once what was queued for it is written."""
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            self._release(channel)
        self._closed = True

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for closed sinks to finish; False if one is still busy
        (a collector that does not answer: its thread dies with the process)."""
        deadline = time.monotonic() + timeout_s
        return all([sink.join(deadline - time.monotonic()) for sink in self._retired])
