"""Closed-loop load over gRPC (``servion bench grpc://HOST:PORT``).

The request is a ``ModelInferRequest`` with raw input contents, built once from
the model's gRPC metadata and sent pre-serialized (the client does no protobuf
work per call). Calls are spread over several channels, each with its own TCP
connection, so a multi-worker server sees its connections spread by the kernel
as it does for REST. The client is grpcio's asyncio stack: it spends more CPU
per call than wrk, and on a shared machine that CPU comes out of the server's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Final

import grpc

from servion.bench.body import raw_bytes
from servion.bench.stats import ERROR_KINDS, LatencySummary, LoadResult
from servion.errors import InvalidInput, RuntimeFailure, printable, quoted
from servion.protocol.grpc import grpc_service_pb2 as pb
from servion.runtime import Signature, sample_inputs

SCHEME: Final = "grpc://"
_SERVICE: Final = "/inference.GRPCInferenceService/"
_MAX_CHANNELS: Final = 8
_OPTIONS: Final = [
    # Separate connections per channel (grpc would otherwise share one per target).
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
]


@dataclass(frozen=True, slots=True)
class GrpcTarget:
    """A probed gRPC model endpoint and the serialized request to repeat."""

    address: str
    model: str
    request: bytes

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.address} {self.model}"


def parse_address(url: str) -> str:
    """``grpc://host:port`` → ``host:port``.

    >>> parse_address("grpc://127.0.0.1:8081")
    '127.0.0.1:8081'
    """
    rest = url.removeprefix(SCHEME)
    host, _, port = rest.rpartition(":")
    if not url.startswith(SCHEME) or not host or not port.isdigit() or "/" in rest:
        raise InvalidInput(f"gRPC URL must look like grpc://HOST:PORT, got {quoted(url)}")
    return rest


def prepare_grpc_target(url: str, model: str, batch_size: int, timeout_s: float) -> GrpcTarget:
    """Read the model's metadata over gRPC, build a raw request, and probe it."""
    address = parse_address(url)
    with grpc.insecure_channel(address, options=_OPTIONS) as channel:
        metadata = channel.unary_unary(
            _SERVICE + "ModelMetadata",
            request_serializer=pb.ModelMetadataRequest.SerializeToString,
            response_deserializer=pb.ModelMetadataResponse.FromString,
        )
        try:
            meta = metadata(pb.ModelMetadataRequest(name=model), timeout=timeout_s)
        except grpc.RpcError as exc:
            raise RuntimeFailure(f"metadata of model {quoted(model)}: {_describe(exc)}") from None
        signature = Signature.from_dict(
            {
                "inputs": [
                    {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                    for t in meta.inputs
                ],
                "outputs": [],
            }
        )
        request = pb.ModelInferRequest(model_name=model)
        for name, arr in sample_inputs(signature, batch_size, seed=0).items():
            spec = next(s for s in signature.inputs if s.name == name)
            request.inputs.add(name=name, datatype=spec.datatype, shape=arr.shape)
            request.raw_input_contents.append(raw_bytes(arr, spec.datatype))
        payload = request.SerializeToString()
        infer = channel.unary_unary(_SERVICE + "ModelInfer")
        try:
            infer(payload, timeout=timeout_s)
        except grpc.RpcError as exc:
            raise RuntimeFailure(f"probe request to {url} failed: {_describe(exc)}") from None
    return GrpcTarget(address, model, payload)


def _describe(exc: grpc.RpcError) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return f"{code.name if code else 'error'}: {printable(details or '')}"


async def closed_loop(
    target: GrpcTarget, concurrency: int, duration_s: float, timeout_s: float
) -> LoadResult:
    """``concurrency`` calls in flight for ``duration_s``; every answer timed."""
    channels = [
        grpc.aio.insecure_channel(target.address, options=_OPTIONS)
        for _ in range(min(concurrency, _MAX_CHANNELS))
    ]
    latencies: list[int] = []
    errors = dict.fromkeys(ERROR_KINDS, 0)
    start = perf_counter_ns()
    end = start + int(duration_s * 1e9)

    async def caller(channel: grpc.aio.Channel) -> None:
        call = channel.unary_unary(_SERVICE + "ModelInfer")
        payload = target.request
        while perf_counter_ns() < end:
            t0 = perf_counter_ns()
            try:
                await call(payload, timeout=timeout_s)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    errors["timeout"] += 1
                elif code == grpc.StatusCode.UNAVAILABLE:
                    errors["connect"] += 1
                    await asyncio.sleep(0.01)
                else:
                    errors["status"] += 1
                continue
            latencies.append(perf_counter_ns() - t0)

    try:
        await asyncio.gather(*(caller(channels[i % len(channels)]) for i in range(concurrency)))
    finally:
        for channel in channels:
            await channel.close()
    elapsed = (perf_counter_ns() - start) / 1e9
    return LoadResult(
        engine="grpc",
        mode="closed",
        connections=concurrency,
        rate=None,
        elapsed_s=elapsed,
        requests=len(latencies) + errors["status"],
        errors=errors,
        latency=LatencySummary.from_ns(latencies),
        notes=(f"{len(channels)} gRPC connections",),
    )


def run(target: GrpcTarget, concurrency: int, duration_s: float, timeout_s: float) -> LoadResult:
    return asyncio.run(closed_loop(target, concurrency, duration_s, timeout_s))
