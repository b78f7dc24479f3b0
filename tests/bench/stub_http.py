"""A tiny HTTP/1.1 server for load-generator tests: a fixed reply, a chosen framing.

It stands in for a server whose timing and framing a test must control (slow,
chunked, closing); servion's own server is exercised in test_bench_cli.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

Framing = Literal["length", "chunked", "close", "eof"]


def _response(framing: Framing, status: int, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
    if framing == "chunked":
        half = len(body) // 2
        chunks = b"".join(
            f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:half], body[half:])
        )
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
    if framing == "eof":
        return (head + "Connection: close\r\n\r\n").encode() + body
    extra = "Connection: close\r\n" if framing == "close" else ""
    return (head + f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


class StubServer:
    """Answers every request with ``status`` and ``{"ok":true}`` after ``delay_s``,
    one request at a time per connection.
    """

    def __init__(self, framing: Framing = "length", status: int = 200, delay_s: float = 0.0):
        self.framing: Framing = framing
        self.reply = b""
        self.respond(status)
        self.closes = framing in ("close", "eof")
        self.delay_s = delay_s
        self.requests = 0
        self.port = 0

    def respond(self, status: int) -> None:
        """Answer with ``status`` from now on."""
        self.reply = _response(self.framing, status, b'{"ok":true}')

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                self.requests += 1
                writer.write(self.reply)
                await writer.drain()
                if self.closes:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    @contextmanager
    def running(self) -> Iterator[str]:
        """Serve on a free port in a background thread; yields the base URL."""
        loop = asyncio.new_event_loop()
        started = threading.Event()

        async def main() -> asyncio.Server:
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            return server

        def run() -> None:
            asyncio.set_event_loop(loop)
            holder.append(loop.run_until_complete(main()))
            started.set()
            loop.run_forever()

        holder: list[asyncio.Server] = []
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        started.wait(10)
        try:
            yield f"http://127.0.0.1:{self.port}"
        finally:
            loop.call_soon_threadsafe(holder[0].close)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
