"""A minimal HTTP/1.1 client over asyncio streams, for the load generator.

httpx costs ~10x more CPU per request than the server it measures, which would
make the client the bottleneck. This speaks just enough HTTP: one request
encoded once and written many times, keep-alive, and response bodies framed by
Content-Length or chunked encoding (uvicorn chunks bodies sent without a
length). Everything else (TLS, redirects, 1xx, trailers' meaning) is out of scope.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit

from servion.errors import InvalidInput, quoted

_NO_BODY_STATUSES: Final = frozenset({204, 304})
_STREAM_LIMIT: Final = 1 << 20


class ProtocolViolation(Exception):
    """The server's bytes are not an HTTP/1.1 response this client can frame."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a server listens: ``http://host:port`` plus an optional path prefix.

    >>> Endpoint.parse("http://127.0.0.1:8080/").path("/v2/models/m")
    '/v2/models/m'
    """

    host: str
    port: int
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Accept a plain-HTTP base URL; anything else is refused input."""
        try:
            parts = urlsplit(url)
            port = parts.port or 80
        except ValueError:
            raise InvalidInput(f"invalid server URL {quoted(url)}") from None
        if parts.scheme != "http" or not parts.hostname:
            raise InvalidInput(
                f"invalid server URL {quoted(url)}: use http://HOST:PORT (plain HTTP only)"
            )
        return cls(parts.hostname, port, parts.path.rstrip("/"))

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def path(self, path: str) -> str:
        return f"{self.prefix}{path}"

    def infer_path(self, model: str) -> str:
        return self.path(f"/v2/models/{quote(model, safe='')}/infer")

    def url(self, path: str) -> str:
        return f"http://{self.authority}{path}"


def encode_request(
    endpoint: Endpoint,
    method: str,
    path: str,
    body: bytes = b"",
    headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """The bytes of one request, built once and written as often as needed."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {endpoint.authority}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One keep-alive connection; ``exchange`` sends a request and reads the response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.closed = False

    @classmethod
    async def open(cls, endpoint: Endpoint) -> Connection:
        reader, writer = await asyncio.open_connection(
            endpoint.host, endpoint.port, limit=_STREAM_LIMIT
        )
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send ``request`` and return the response's status and body."""
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status, length, chunked, close = _parse_head(head)
        if status in _NO_BODY_STATUSES or 100 <= status < 200:
            body = b""
        elif chunked:
            body = await self._read_chunked()
        elif length is not None:
            body = await self._reader.readexactly(length)
        else:
            body = await self._reader.read(-1)
            close = True
        if close:
            self.close()
        return status, body

    async def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            line = await self._reader.readuntil(b"\r\n")
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise ProtocolViolation(f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                # Trailer fields, if any, end with an empty line.
                while await self._reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return b"".join(parts)
            chunk = await self._reader.readexactly(size + 2)
            parts.append(chunk[:-2])

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """(status, content length, chunked, connection close) of a response head."""
    lines = head.split(b"\r\n")
    status_line = lines[0]
    if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
        raise ProtocolViolation(f"not an HTTP/1.x response: {status_line[:40]!r}")
    status = int(status_line[9:12])
    length: int | None = None
    chunked = close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    return status, length, chunked, close


async def fetch(endpoint: Endpoint, request: bytes, timeout_s: float) -> tuple[int, bytes]:
    """One request on a fresh connection: for metadata and the probe."""
    async with asyncio.timeout(timeout_s):
        conn = await Connection.open(endpoint)
        try:
            return await conn.exchange(request)
        finally:
            conn.close()
