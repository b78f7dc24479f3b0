"""Wire formats: Open Inference Protocol (V2) and KServe V1 REST codecs, and the
one table from servion errors to HTTP and gRPC status codes.

The server composes these; nothing here does I/O.
"""

from servion.protocol.codec import (
    decode_infer_request,
    encode_error,
    encode_infer_response,
    parse_header_length,
)
from servion.protocol.errors import grpc_code_for, http_status_for, public_message
from servion.protocol.limits import DEFAULT_LIMITS, Limits
from servion.protocol.types import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)
from servion.protocol.v1 import decode_v1_request, encode_v1_response

__all__ = [
    "DEFAULT_LIMITS",
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "Limits",
    "RequestedOutput",
    "decode_infer_request",
    "decode_v1_request",
    "encode_error",
    "encode_infer_response",
    "encode_v1_response",
    "grpc_code_for",
    "http_status_for",
    "parse_header_length",
    "public_message",
]
