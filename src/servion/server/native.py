"""servion's own HTTP/1.1 front end: httptools' parser on an asyncio protocol.

A general ASGI server spends more per request than a small model does: a scope
dictionary, a task, and two message dictionaries for every request, each
validated. This front end parses straight into a ``Request``, asks the app for
its answer, and writes it in the same loop turn when the answer is ready (an
inference the batcher ran inline). Only queued inferences and control calls
wait, on a future; nothing creates a task for the hot path.

What a client may rely on: keep-alive (HTTP/1.1 default, HTTP/1.0 on request),
pipelining (answers in request order), ``Expect: 100-continue``, chunked
request bodies, idle connections closed after ``keep_alive_s``, and on SIGTERM
a drain: the listener closes, readiness turns false, requests already read are
answered, then the worker exits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import httptools

from servion.errors import InvalidInput, PayloadTooLarge
from servion.protocol import encode_error
from servion.server.answers import Answer, error_response
from servion.server.app import ServionApp
from servion.server.http import JSON_HEADERS, Request, Response, refuse_before_body
from servion.server.request_log import AccessLog, RequestIds

log = logging.getLogger("servion.server")

MAX_HEADER_BYTES = 64 * 1024
"""Request line plus headers; more is answered 431."""
STALLED_REQUEST_S = 60.0
"""A request that sends nothing for this long while incomplete is dropped."""
SWEEP_EVERY_S = 1.0

_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")}
_STATUS_LINES = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus if s.value >= 200
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_WRITE_JOINED_BELOW = 64 * 1024
"""Bodies shorter than this go out in one buffer with their head (one copy, one send)."""


Seen = tuple[bytes, float, str, str]
"""What the answer to a request is written with: its id, when it was read, method, path."""
_UNREAD: Seen = (b"", 0.0, "-", "-")


class _Slot:
    """One request's place in a connection's answer order."""

    __slots__ = ("answer", "keep_alive", "seen")

    def __init__(
        self, answer: Response | asyncio.Future[Response], keep_alive: bool, seen: Seen
    ) -> None:
        self.answer = answer
        self.keep_alive = keep_alive
        self.seen = seen


class Connections:
    """State shared by every connection of one worker."""

    def __init__(
        self, app: ServionApp, keep_alive_s: float, access: AccessLog | None = None
    ) -> None:
        self.app = app
        self.keep_alive_s = keep_alive_s
        self.ids = RequestIds()
        self.access = access or AccessLog()
        self.open: set[HttpProtocol] = set()
        self.draining = False
        self.closed = asyncio.Event()

    def sweep(self, now: float) -> None:
        """Close idle keep-alive connections and stalled half-requests."""
        for conn in list(self.open):
            quiet = now - conn.last_active
            idle_too_long = conn.idle and (quiet > self.keep_alive_s or self.draining)
            stalled = conn.in_message and not conn.slots and quiet > STALLED_REQUEST_S
            if idle_too_long or stalled:
                conn.close()

    def forget(self, conn: HttpProtocol) -> None:
        self.open.discard(conn)
        if self.draining and not self.open:
            self.closed.set()


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, shared: Connections) -> None:
        self.shared = shared
        self.app = shared.app
        self.limit = shared.app.limits.max_body_bytes
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.slots: deque[_Slot] = deque()
        self.last_active = self.loop.time()
        self.in_message = False
        self.dead = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0

    @property
    def idle(self) -> bool:
        return not self.in_message and not self.slots

    # -- transport events ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.shared.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.dead = True
        for slot in self.slots:
            if isinstance(slot.answer, asyncio.Future):
                slot.answer.cancel()  # a queued inference is withdrawn from its batch
        self.slots.clear()
        self.shared.forget(self)

    def data_received(self, data: bytes) -> None:
        if self.dead:
            return
        self.last_active = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if not self.dead:
                self._refuse(400, "protocol upgrades are not supported: send plain HTTP/1.1")
        except httptools.HttpParserError as exc:
            if not self.dead:
                self._refuse(400, f"malformed HTTP request: {_reason(exc)}")

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.dead:
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.dead:
            self.dead = True
            self.transport.close()

    # -- parser callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_message = True
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._body = []
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEADER_BYTES:
            self._head_too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEADER_BYTES:
            self._head_too_large()

    def _head_too_large(self) -> None:
        # Checked as the bytes arrive, so a client cannot make the server buffer more.
        if not self.dead:
            self._refuse(431, f"the request line and headers exceed {MAX_HEADER_BYTES} bytes")

    def on_headers_complete(self) -> None:
        if self.dead:
            return
        if self.parser.should_upgrade():
            self._refuse(400, "protocol upgrades are not supported: send plain HTTP/1.1")
            return
        refusal = refuse_before_body(self._headers, self.limit)
        if refusal is not None:
            self._refuse_with(error_response(refusal))
            return
        for name, value in self._headers:
            if name.lower() == b"expect" and value.lower() == b"100-continue":
                assert self.transport is not None
                self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self.dead:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self.limit:
            too_large = PayloadTooLarge(
                f"request body exceeds the {self.limit}-byte limit", limit=self.limit
            )
            self._refuse_with(error_response(too_large))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self.dead:
            return
        self.in_message = False
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        keep_alive = self.parser.should_keep_alive() and not self.shared.draining
        raw_method = self.parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode()
        try:
            req = Request(method, _path(self._url), self._headers, body)
        except InvalidInput as exc:
            rid = self.shared.ids.pick(None)
            self._answer(error_response(exc), keep_alive, (rid, time.perf_counter(), method, "?"))
            return
        # The header index this builds is the one the host check and the routes read.
        rid = req.request_id = self.shared.ids.pick(req.header(b"x-request-id"))
        seen = (rid, time.perf_counter(), method, req.path)
        self._answer(self.app.respond(req), keep_alive, seen)

    # -- answers -------------------------------------------------------------------------

    def _answer(self, answer: Answer, keep_alive: bool, seen: Seen) -> None:
        if isinstance(answer, tuple):
            if not self.slots:
                self._write(answer, keep_alive, seen)
                return
            self.slots.append(_Slot(answer, keep_alive, seen))
            return
        future: asyncio.Future[Response] = (
            answer if isinstance(answer, asyncio.Future) else self._task(answer)
        )
        self.slots.append(_Slot(future, keep_alive, seen))
        future.add_done_callback(self._settled)

    def _task(self, work: Awaitable[Response]) -> asyncio.Future[Response]:
        return asyncio.ensure_future(work)

    def _settled(self, _: asyncio.Future[Response]) -> None:
        # Answers leave in request order: write every finished one at the head.
        while self.slots and not self.dead:
            head = self.slots[0].answer
            if isinstance(head, asyncio.Future):
                if not head.done():
                    return
                if head.cancelled():
                    response = (503, encode_error("the request was cancelled"), JSON_HEADERS)
                else:
                    response = head.result()
            else:
                response = head
            slot = self.slots.popleft()
            self._write(response, slot.keep_alive, slot.seen)

    def _write(self, response: Response, keep_alive: bool, seen: Seen = _UNREAD) -> None:
        transport = self.transport
        if transport is None or self.dead:
            return
        status, body, headers = response
        rid = seen[0] or self.shared.ids.pick(None)
        head = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode()]
        for name, value in headers:
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(b"x-request-id: %s\r\n" % rid)
        head.append(b"content-length: %d\r\n" % len(body))
        head.append(_date_line())
        if not keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if len(body) < _WRITE_JOINED_BELOW:
            head.append(body)
            transport.write(b"".join(head))
        else:
            transport.writelines([b"".join(head), body])
        access = self.shared.access
        if seen[1] and (access.enabled or status >= 500 or access.slow_s):
            elapsed = time.perf_counter() - seen[1]
            if access.wants(status, elapsed):
                access.write(seen[2], seen[3], status, len(body), elapsed, rid)
        if not keep_alive or (self.shared.draining and self.idle):
            self.close()

    def _refuse(self, status: int, message: str) -> None:
        self._refuse_with((status, encode_error(message), JSON_HEADERS))

    def _refuse_with(self, response: Response) -> None:
        """Answer and close: the rest of what the client sends is not read."""
        # Earlier pipelined requests lose their answers; a client that pipelines
        # behind a refused request has sent something it must not retry as is.
        self.slots.clear()
        self._write(response, keep_alive=False)
        self.close()


_date: list[Any] = [0, b""]


def _date_line() -> bytes:
    """``Date: ...`` (RFC 9110), formatted once a second, not once a response."""
    now = int(time.time())
    if _date[0] != now:
        _date[0] = now
        _date[1] = b"date: %s\r\n" % formatdate(now, usegmt=True).encode()
    line: bytes = _date[1]
    return line


def _path(url: bytes) -> str:
    if url[:1] != b"/":
        if url == b"*":
            return "*"
        parsed = httptools.parse_url(url)  # absolute form: http://host/path
        url = parsed.path or b"/"
    path = url.split(b"?", 1)[0]
    try:
        text = path.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidInput("the request path is not ASCII: percent-encode it") from None
    return unquote(text) if "%" in text else text


def _reason(exc: Exception) -> str:
    return str(exc).strip().rstrip(".") or type(exc).__name__
