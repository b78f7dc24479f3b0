"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``).

Runs in every worker process, on the worker's event loop, beside the REST front
end: the same model manager, validation, batcher and statistics answer both;
only the codec (``protocol/grpc``) differs. Errors carry the REST message with
the status code of ``protocol/errors.py``'s table.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from servion.errors import ConfigError, InvalidInput, Overloaded, ServionError
from servion.protocol import InferResponse, grpc_code_for, http_status_for
from servion.protocol.grpc import grpc_service_pb2 as pb
from servion.protocol.grpc.codec import decode_model_infer, encode_model_infer
from servion.routing import request_context
from servion.server.app import ServionApp
from servion.server.request_log import RequestIds
from servion.serving import current_request_id, current_trace, describe
from servion.serving.sleep import obtain

if TYPE_CHECKING:
    from servion.server.tracing import RequestTrace

log = logging.getLogger("servion.server")

SERVICE = "inference.GRPCInferenceService"

Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]

_DATA_TYPE = {
    "BOOL": pb.TYPE_BOOL,
    "UINT8": pb.TYPE_UINT8,
    "UINT16": pb.TYPE_UINT16,
    "UINT32": pb.TYPE_UINT32,
    "UINT64": pb.TYPE_UINT64,
    "INT8": pb.TYPE_INT8,
    "INT16": pb.TYPE_INT16,
    "INT32": pb.TYPE_INT32,
    "INT64": pb.TYPE_INT64,
    "FP16": pb.TYPE_FP16,
    "FP32": pb.TYPE_FP32,
    "FP64": pb.TYPE_FP64,
    "BYTES": pb.TYPE_STRING,
}


class GrpcFrontEnd:
    """One worker's gRPC server; several workers share the port with SO_REUSEPORT."""

    def __init__(self, app: ServionApp, host: str, port: int, max_message_bytes: int) -> None:
        self.app = app
        self.manager = app.manager
        self.plane = app.plane
        self.control = app.control
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self._server: grpc.aio.Server | None = None
        self.ids = RequestIds()

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
            ]
        )
        server.add_generic_rpc_handlers((self._handlers(),))
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if server.add_insecure_port(address) == 0:
            raise ConfigError(f"cannot listen for gRPC on {address}")
        await server.start()
        self._server = server

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls and let running ones finish within ``grace_s``."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None

    def _handlers(self) -> grpc.GenericRpcHandler:
        rpc = self._rpc
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ServerLive": rpc(self._server_live, pb.ServerLiveRequest),
                "ServerReady": rpc(self._server_ready, pb.ServerReadyRequest),
                "ModelReady": rpc(self._model_ready, pb.ModelReadyRequest),
                "ServerMetadata": rpc(self._server_metadata, pb.ServerMetadataRequest),
                "ModelMetadata": rpc(self._model_metadata, pb.ModelMetadataRequest),
                "ModelInfer": rpc(self._model_infer, pb.ModelInferRequest),
                "ModelConfig": rpc(self._model_config, pb.ModelConfigRequest),
                "ModelStatistics": rpc(self._model_statistics, pb.ModelStatisticsRequest),
                "RepositoryIndex": rpc(self._repository_index, pb.RepositoryIndexRequest),
                "RepositoryModelLoad": rpc(self._load, pb.RepositoryModelLoadRequest),
                "RepositoryModelUnload": rpc(self._unload, pb.RepositoryModelUnloadRequest),
            },
        )

    def _rpc(self, method: Handler, request_type: type[Message]) -> grpc.RpcMethodHandler:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            try:
                return await method(request, context)
            except ServionError as exc:
                if isinstance(exc, Overloaded):
                    seconds = max(1, int(exc.retry_after + 0.999))
                    context.set_trailing_metadata((("retry-after", str(seconds)),))
                code = getattr(grpc.StatusCode, grpc_code_for(exc))
                await context.abort(code, exc.message)
            except Exception:
                request_id = uuid.uuid4().hex[:16]
                log.exception("grpc_request_failed", extra={"request_id": request_id})
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})"
                )
            raise AssertionError("unreachable: abort raises")  # pragma: no cover

        return grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=request_type.FromString,
            response_serializer=lambda message: message.SerializeToString(),
        )

    # -- health and metadata ---------------------------------------------------------

    async def _server_live(self, _: pb.ServerLiveRequest, __: Any) -> Message:
        return pb.ServerLiveResponse(live=True)

    async def _server_ready(self, _: pb.ServerReadyRequest, __: Any) -> Message:
        return pb.ServerReadyResponse(ready=self.manager.ready and not self.app.draining)

    async def _model_ready(self, request: pb.ModelReadyRequest, _: Any) -> Message:
        try:
            describe.ready(self.manager, request.name, request.version or None)
        except ServionError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def _server_metadata(self, _: pb.ServerMetadataRequest, __: Any) -> Message:
        meta = self.app.server_metadata
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    async def _model_metadata(self, request: pb.ModelMetadataRequest, _: Any) -> Message:
        meta = describe.metadata(self.manager, request.name, request.version or None)
        return json_format.ParseDict(meta, pb.ModelMetadataResponse())

    async def _model_config(self, request: pb.ModelConfigRequest, _: Any) -> Message:
        model = describe.configured(self.manager, request.name, request.version or None)
        batched = model.batched
        # Triton's dims leave out the batch dimension when the model batches.
        skip = 1 if batched else 0
        config = pb.ModelConfig(
            name=request.name,
            platform=model.runtime.platform,
            backend=model.meta.format,
            max_batch_size=model.max_batch_size if batched else 0,
            input=[
                pb.ModelInput(name=s.name, data_type=_DATA_TYPE[s.datatype], dims=s.shape[skip:])
                for s in model.signature.inputs
            ],
            output=[
                pb.ModelOutput(name=s.name, data_type=_DATA_TYPE[s.datatype], dims=s.shape[skip:])
                for s in model.signature.outputs
            ],
        )
        if batched and model.batcher.config.dynamic:
            cfg = model.batcher.config
            config.dynamic_batching.CopyFrom(
                pb.ModelDynamicBatching(
                    preferred_batch_size=list(cfg.preferred_batch_sizes),
                    max_queue_delay_microseconds=cfg.max_queue_delay_us,
                    default_priority_level=cfg.default_priority,
                    default_queue_policy=pb.ModelQueuePolicy(
                        default_timeout_microseconds=cfg.default_timeout_us,
                        max_queue_size=cfg.max_queue_size,
                    ),
                )
            )
        return pb.ModelConfigResponse(config=config)

    async def _model_statistics(self, request: pb.ModelStatisticsRequest, _: Any) -> Message:
        stats = await self.control.stats(request.name or None, request.version or None)
        return json_format.ParseDict(stats, pb.ModelStatisticsResponse())

    # -- model repository --------------------------------------------------------------

    async def _repository_index(self, request: pb.RepositoryIndexRequest, _: Any) -> Message:
        entries = self.control.index_entries(request.ready)
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in entries]
        )

    async def _load(self, request: pb.RepositoryModelLoadRequest, context: Any) -> Message:
        self._require_admin(context)
        await self.control.load(_model_name(request.model_name))
        return pb.RepositoryModelLoadResponse()

    async def _unload(self, request: pb.RepositoryModelUnloadRequest, context: Any) -> Message:
        self._require_admin(context)
        await self.control.unload(_model_name(request.model_name))
        return pb.RepositoryModelUnloadResponse()

    def _require_admin(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.control.authorize(_metadata(context, b"authorization"), "deployer")

    # -- inference ---------------------------------------------------------------------

    async def _model_infer(self, request: pb.ModelInferRequest, context: Any) -> Message:
        # The id comes back in the trailers, on errors too (as REST's X-Request-Id).
        rid = self.ids.pick(_metadata(context, b"x-request-id"))
        context.set_trailing_metadata((("x-request-id", rid.decode("ascii")),))
        if self.app.tracing is None:
            return await self._counted(request, context, rid, None)
        attributes: dict[str, str | int] = {
            "rpc.system": "grpc",
            "rpc.service": SERVICE,
            "rpc.method": "ModelInfer",
            "servion.target": request.model_name,
            "servion.request_id": rid.decode("ascii"),
        }
        trace = self.app.tracing.request(lambda key: _metadata(context, key), attributes, False)
        if trace is None:
            return await self._counted(request, context, rid, None)
        token = current_trace.set(trace)
        try:
            response = await self._counted(request, context, rid, trace)
        except BaseException as exc:
            trace.span.set_attribute("rpc.grpc.status_code", _code(exc))
            trace.end(http_status_for(exc)[0], exc)
            raise
        finally:
            current_trace.reset(token)
        trace.span.set_attribute("rpc.grpc.status_code", 0)
        trace.end(200)
        return response

    async def _counted(
        self, request: pb.ModelInferRequest, context: Any, rid: bytes, trace: RequestTrace | None
    ) -> Message:
        metrics = self.app.metrics
        if metrics is None:
            return await self._infer(request, context, rid, trace)
        done = metrics.requests.start("grpc", self.app.target(request.model_name))
        try:
            response = await self._infer(request, context, rid, trace)
        except BaseException as exc:
            done(http_status_for(exc)[0])  # the status class REST would have answered
            raise
        done(200)
        return response

    async def _infer(
        self, request: pb.ModelInferRequest, context: Any, rid: bytes, trace: RequestTrace | None
    ) -> Message:
        if self.control.inference_auth:
            self.control.authorize(_metadata(context, b"authorization"), "viewer")
        current_request_id.set(rid)  # this call's own context: nothing to reset
        name, version = request.model_name, request.model_version or None
        router = self.manager.endpoints.get(name) if version is None else None
        if router is None:
            model = await obtain(self.manager, name, version)  # NOT_FOUND / UNAVAILABLE first
            decoded = decode_model_infer(request, self.app.limits)
            answer = self.plane.infer_model(model, decoded)
        else:
            decoded = decode_model_infer(request, self.app.limits)
            ctx = request_context(lambda key: _metadata(context, key))
            ctx.request_id = rid.decode("ascii")
            answer = self.plane.infer_endpoint(router, decoded, ctx)
        response = answer if isinstance(answer, InferResponse) else await answer
        if trace is None:
            return encode_model_infer(response, decoded.outputs)
        t0 = time.perf_counter_ns()
        message = encode_model_infer(response, decoded.outputs)
        trace.encoded(t0, time.perf_counter_ns())
        return message


def _code(exc: BaseException) -> int:
    code: tuple[int, str] = getattr(grpc.StatusCode, grpc_code_for(exc)).value
    return code[0]


def _metadata(context: grpc.aio.ServicerContext[Any, Any], name: bytes) -> bytes | None:
    """One invocation metadata value (gRPC keys are lower case)."""
    key = name.decode()
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v.encode() if isinstance(v, str) else bytes(v)
    return None


def _model_name(name: str) -> str:
    if not name:
        raise InvalidInput("model_name is empty")
    return name
