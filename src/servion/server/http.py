"""What the REST handlers see of HTTP: a request whose body is already read, and a
response as a plain (status, body, headers) triple.

Both front ends build these: the native one (``native.py``, the default) straight
from its parser, and the ASGI adapter (for running servion under any ASGI server)
from ASGI messages. Handlers never see either, so the inference path is the
same code whichever carries it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import orjson

from servion.errors import PayloadTooLarge, ServionError, UnsupportedMediaType

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

Headers = list[tuple[bytes, bytes]]
Response = tuple[int, bytes, Headers]
"""Status, body and the headers besides Content-Length."""

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
EMPTY_HEADERS: Headers = []

# Bodies that would need unpickling are refused by type, before they are read.
PICKLE_TYPES = (
    b"application/python-pickle",
    b"application/x-python-pickle",
    b"application/pickle",
    b"application/x-pickle",
)


class Request:
    """The parts of an HTTP request a handler reads; headers are indexed lazily."""

    __slots__ = ("_index", "body", "headers", "method", "path", "request_id")

    def __init__(
        self, method: str, path: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self._index: dict[bytes, bytes] | None = None
        self.request_id = b""
        """``X-Request-Id`` of the answer (set by the front end)."""

    def header(self, name: bytes) -> bytes | None:
        """The value of header ``name`` (lower case), or None."""
        if self._index is None:
            self._index = {k.lower(): v for k, v in self.headers}
        return self._index.get(name)

    def body_within(self, limit: int) -> bytes:
        """The body, or 413 when it is longer than this route accepts."""
        if len(self.body) > limit:
            raise PayloadTooLarge(
                f"request body of {len(self.body)} bytes exceeds the {limit}-byte limit",
                limit=limit,
            )
        return self.body


def refuse_before_body(headers: Sequence[tuple[bytes, bytes]], limit: int) -> ServionError | None:
    """The error to answer with before reading a body at all, if any: a declared
    length over ``limit`` or a content type that would need unpickling."""
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            if value.strip().isdigit() and int(value) > limit:
                return PayloadTooLarge(
                    f"request body of {int(value)} bytes exceeds the {limit}-byte limit",
                    limit=limit,
                )
        elif lowered == b"content-type" and value.split(b";")[0].strip().lower() in PICKLE_TYPES:
            return UnsupportedMediaType("pickled request bodies are never accepted: send JSON")
    return None


def json_response(status: int, payload: Any) -> Response:
    return status, orjson.dumps(payload), JSON_HEADERS


async def read_asgi(scope: Scope, receive: Receive, limit: int) -> Request | ServionError:
    """Build a Request from ASGI messages, or the error that refuses it unread."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    refusal = refuse_before_body(headers, limit)
    if refusal is not None:
        return refusal
    message = await receive()
    body: bytes = message.get("body", b"")
    if message.get("more_body", False):
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return PayloadTooLarge(f"request body exceeds the {limit}-byte limit", limit=limit)
            chunks.append(chunk)
        body = b"".join(chunks)
    elif len(body) > limit:
        return PayloadTooLarge(f"request body exceeds the {limit}-byte limit", limit=limit)
    return Request(scope["method"], scope["path"], headers, body)


async def send_asgi(send: Send, response: Response, request_id: bytes = b"") -> None:
    status, body, headers = response
    # A length lets the server write the body as is instead of chunk-encoding it.
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    if request_id:
        headers.append((b"x-request-id", request_id))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
