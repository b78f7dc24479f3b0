"""servion's own HTTP/1.1 front end, spoken to over raw sockets: keep-alive,
pipelining, Expect: 100-continue, chunked bodies, limits, and malformed input.
The ASGI adapter under uvicorn is checked for the same answers at the end."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import RunningServer, TabularModels, register, start_server
from servion.config import Settings
from servion.registry import ModelRegistry

ROW = [0.25] * 32


def infer_body(request_id: str = "", rows: int = 1) -> bytes:
    payload: dict[str, object] = {
        "inputs": [{"name": "X", "shape": [rows, 32], "datatype": "FP32", "data": ROW * rows}]
    }
    if request_id:
        payload["id"] = request_id
    return json.dumps(payload).encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def get(path: str, extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


class Conn:
    """A raw client connection that reads replies one at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> Reply:
        status_line = self.file.readline()
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        headers: dict[str, str] = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = self.file.read(int(headers.get("content-length", "0")))
        return Reply(int(status_line.split()[1]), headers, body)

    def closed_by_server(self) -> bool:
        try:
            return self.file.read(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels) -> Path:
    settings = Settings.load(home=tmp_path_factory.mktemp("front-end") / "home")
    registry = ModelRegistry(settings)
    register(registry, "tabular", tabular.onnx)
    # The same model run in its own thread: every request to it is queued and
    # answered later, while "tabular" answers in the loop turn it arrives in.
    register(registry, "threaded", tabular.onnx)
    registry.set_batching("threaded", {"execution": "thread"})
    registry.close()
    return settings.home


@pytest.fixture(scope="module")
def server(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_server(
        home,
        tmp_path_factory.mktemp("front-end-run"),
        "--workers",
        "1",
        "--max-body-bytes",
        "65536",
        env={"SERVION_SERVER_KEEP_ALIVE_S": "1"},
    )
    yield srv
    srv.stop()


@pytest.fixture
def conn(server: RunningServer) -> Iterator[Conn]:
    c = Conn(server.port)
    yield c
    c.close()


def expected(tabular: TabularModels, rows: int = 1) -> np.ndarray:
    x = np.array([ROW] * rows, dtype=np.float32)
    return np.asarray(tabular.pipeline.predict(x))  # type: ignore[attr-defined]


def test_keep_alive_serves_many_requests_on_one_connection(
    conn: Conn, tabular: TabularModels
) -> None:
    for i in range(20):
        conn.send(post("/v2/models/tabular/infer", infer_body(f"r{i}")))
        reply = conn.reply()
        assert reply.status == 200
        assert reply.json()["id"] == f"r{i}"
        assert "connection" not in reply.headers
    label = reply.json()["outputs"][0]  # type: ignore[index]
    assert label["data"] == expected(tabular).tolist()


def test_pipelined_requests_are_answered_in_order(conn: Conn) -> None:
    # Answers that are ready at once (inline inference, health) queue behind
    # ones still running in the model's thread; they must leave in order.
    requests, labels = [], []
    for i in range(40):
        model = "threaded" if i % 3 else "tabular"
        requests.append(post(f"/v2/models/{model}/infer", infer_body(f"p{i}", rows=1 + i % 4)))
        labels.append(f"p{i}")
        if i % 10 == 5:
            requests.append(get("/v2/health/live"))
            labels.append("live")
    conn.send(b"".join(requests))
    answered = []
    for _ in requests:
        reply = conn.reply()
        assert reply.status == 200, reply.body
        answered.append(str(reply.json().get("id", "live")))
    assert answered == labels


def test_expect_100_continue(conn: Conn) -> None:
    body = infer_body("ec")
    head = post("/v2/models/tabular/infer", b"", "Expect: 100-continue\r\n")
    conn.send(head.replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode()))
    assert conn.file.readline() == b"HTTP/1.1 100 Continue\r\n"
    assert conn.file.readline() == b"\r\n"
    conn.send(body)
    assert conn.reply().json()["id"] == "ec"


def test_oversized_body_is_refused_before_it_is_sent(conn: Conn, server: RunningServer) -> None:
    head = (
        "POST /v2/models/tabular/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
        "Expect: 100-continue\r\n\r\n"
    )
    conn.send(head.encode())
    reply = conn.reply()  # no 100 Continue: the answer is final
    assert reply.status == 413
    assert "65536-byte limit" in reply.json()["error"]  # type: ignore[operator]
    assert reply.headers["connection"] == "close"
    assert conn.closed_by_server()
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_chunked_body_within_and_over_the_limit(server: RunningServer) -> None:
    def chunked(body: bytes) -> bytes:
        out = b""
        for i in range(0, len(body), 1000):
            piece = body[i : i + 1000]
            out += b"%x\r\n%s\r\n" % (len(piece), piece)
        return out + b"0\r\n\r\n"

    head = (
        b"POST /v2/models/tabular/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    )
    c = Conn(server.port)
    c.send(head + chunked(infer_body("ch", rows=4)))
    reply = c.reply()
    assert reply.status == 200
    assert reply.json()["id"] == "ch"
    c.send(head + chunked(b" " * 70_000))
    assert c.reply().status == 413
    assert c.closed_by_server()
    c.close()


def test_pickle_body_is_refused_unread(conn: Conn) -> None:
    conn.send(
        post("/v2/models/tabular/infer", b"\x80\x04K\x01.", "").replace(
            b"application/json", b"application/python-pickle"
        )
    )
    reply = conn.reply()
    assert reply.status == 415
    assert "pickle" in reply.json()["error"]  # type: ignore[operator]


def test_http_1_0_and_connection_close_end_the_connection(server: RunningServer) -> None:
    for request in (
        get("/v2/health/live", version="1.0"),
        get("/v2/health/live", "Connection: close\r\n"),
    ):
        c = Conn(server.port)
        c.send(request)
        reply = c.reply()
        assert reply.status == 200
        assert reply.headers["connection"] == "close"
        assert c.closed_by_server()
        c.close()


def test_http_1_0_keep_alive_is_honoured(conn: Conn) -> None:
    for _ in range(3):
        conn.send(get("/v2/health/live", "Connection: keep-alive\r\n", version="1.0"))
        assert conn.reply().status == 200


def test_idle_connection_is_closed_after_keep_alive_timeout(conn: Conn) -> None:
    conn.send(get("/v2/health/live"))
    assert conn.reply().status == 200
    time.sleep(3)  # keep-alive is 1 s; the sweep runs every second
    assert conn.closed_by_server()


@pytest.mark.parametrize(
    ("raw", "status", "words"),
    [
        (b"NONSENSE\r\n\r\n", 400, "malformed HTTP request"),
        (b"GET /v2 HTTP/9.9\r\n\r\n", 400, "malformed"),
        (b"POST /v2 HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400, "malformed"),
        (
            b"GET /v2 HTTP/1.1\r\nHost: localhost\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
            431,
            "exceed",
        ),
        (
            b"GET /v2 HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n",
            400,
            "upgrades are not supported",
        ),
        (b"GET /v2/models/tab\xc3\xa9 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, "malformed"),
    ],
    ids=["garbage", "bad-version", "bad-length", "huge-headers", "upgrade", "non-ascii-path"],
)
def test_malformed_requests_get_4xx_and_the_server_keeps_serving(
    server: RunningServer, raw: bytes, status: int, words: str
) -> None:
    c = Conn(server.port)
    c.send(raw)
    reply = c.reply()
    assert reply.status == status
    assert words in reply.json()["error"]  # type: ignore[operator]
    c.close()
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_percent_encoded_path_is_decoded(conn: Conn) -> None:
    conn.send(post("/v2/models/tab%75lar/infer", infer_body("pct")))
    assert conn.reply().json()["id"] == "pct"


def test_client_that_vanishes_mid_pipeline_does_not_disturb_others(
    server: RunningServer,
) -> None:
    c = Conn(server.port)
    c.send(b"".join(post("/v2/models/tabular/infer", infer_body(f"v{i}")) for i in range(30)))
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    with httpx.Client(base_url=server.url) as client:
        for i in range(5):
            r = client.post("/v2/models/tabular/infer", content=infer_body(f"after{i}"))
            assert r.json()["id"] == f"after{i}"


def test_the_asgi_adapter_under_uvicorn_answers_the_same(
    home: Path, tmp_path: Path, tabular: TabularModels
) -> None:
    srv = start_server(
        home,
        tmp_path,
        "--workers",
        "1",
        "--max-body-bytes",
        "65536",
        env={"SERVION_SERVER_HTTP": "uvicorn"},
    )
    try:
        with httpx.Client(base_url=srv.url) as client:
            ok = client.post("/v2/models/tabular/infer", content=infer_body("u", rows=3))
            assert ok.status_code == 200
            assert ok.json()["outputs"][0]["data"] == expected(tabular, 3).tolist()
            big = client.post("/v2/models/tabular/infer", content=b" " * 70_000)
            assert big.status_code == 413
            pickled = client.post(
                "/v2/models/tabular/infer",
                content=b"\x80\x04K\x01.",
                headers={"content-type": "application/x-pickle"},
            )
            assert pickled.status_code == 415
            assert client.get("/v2/models/nosuch").status_code == 404
            assert client.get("/v2/health/ready").json() == {"ready": True}
            assert client.get("/v2/openapi.json").json()["openapi"] == "3.1.0"
            assert_dated_and_405(client)
    finally:
        assert srv.stop() == 0


def assert_dated_and_405(client: httpx.Client) -> None:
    answer = client.get("/v2/health/ready")
    dated = parsedate_to_datetime(answer.headers["date"])
    assert abs((dated - datetime.now(UTC)).total_seconds()) < 5
    wrong = client.get("/v2/models/tabular/infer")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert "takes POST, not GET" in wrong.json()["error"]
    posted = client.post("/v2/models/tabular/config", content=b"{}")
    assert posted.status_code == 405 and posted.headers["allow"] == "GET"


def test_every_answer_is_dated_and_a_wrong_method_is_405(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        assert_dated_and_405(client)
        assert client.get("/v2/health/ready").status_code == 200
