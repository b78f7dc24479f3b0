"""Shared fixtures: real model files made by the real frameworks, a registry in
a temporary home, and a real ``servion serve`` process on a free port.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from servion.config import Settings
from servion.registry import ModelRegistry, RegisterRequest

N_FEATURES = 32


@dataclass
class TabularModels:
    """One scikit-learn pipeline in every format servion reads, plus its data."""

    x: np.ndarray
    pipeline: object
    joblib: Path
    skops: Path
    pickle: Path
    onnx: Path


@pytest.fixture(scope="session")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> TabularModels:
    import pickle

    import joblib
    import skops.io as sio
    from skl2onnx import to_onnx
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = tmp_path_factory.mktemp("tabular")
    x, y = make_classification(n_samples=600, n_features=N_FEATURES, random_state=0)
    x = x.astype(np.float32)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(x, y)
    joblib.dump(pipe, root / "model.joblib")
    sio.dump(pipe, root / "model.skops")
    with (root / "model.pkl").open("wb") as fh:
        pickle.dump(pipe, fh)
    onx = to_onnx(pipe, x[:1], options={"zipmap": False}, target_opset=17)
    (root / "model.onnx").write_bytes(onx.SerializeToString())
    return TabularModels(
        x,
        pipe,
        root / "model.joblib",
        root / "model.skops",
        root / "model.pkl",
        root / "model.onnx",
    )


@pytest.fixture(scope="session")
def torch_models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """TorchScript and torch.export files of one small model (skipped without torch)."""
    pytest.importorskip("torch")
    from torch_models import make_torch_models

    return make_torch_models(tmp_path_factory.mktemp("torch"))


@dataclass
class BatchHome:
    """A registry shared by the batch job tests: the tabular model as ONNX (``tabular``)
    and as a scikit-learn joblib file (``tabsk``, finite numbers only), and a folder for
    the files its jobs read."""

    home: Path
    files: Path
    tabular: TabularModels


@pytest.fixture(scope="session")
def batch_home(tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels) -> BatchHome:
    root = tmp_path_factory.mktemp("batch")
    registry = ModelRegistry(Settings.load(home=root / "home"))
    try:
        registry.register(RegisterRequest("tabular", tabular.onnx, "v1.0.0"))
        registry.register(RegisterRequest("tabsk", tabular.joblib, "v1.0.0"))
    finally:
        registry.close()
    (root / "files").mkdir()
    return BatchHome(root / "home", root / "files", tabular)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load(home=tmp_path / "home")


@pytest.fixture
def registry(settings: Settings) -> Iterator[ModelRegistry]:
    reg = ModelRegistry(settings)
    yield reg
    reg.close()


def cli(
    home: Path, *args: str, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``servion`` command (with ``env`` added to the environment)."""
    return subprocess.run(
        [sys.executable, "-m", "servion.cli.main", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env} if env else None,
    )


def cli_on_terminal(
    home: Path, answer: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``servion`` with a terminal as its stdin, typing ``answer`` into it."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer.encode())
        return subprocess.run(
            [sys.executable, "-m", "servion.cli.main", "--home", str(home), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=terminal,
        )
    finally:
        os.close(terminal)
        os.close(controller)


@dataclass
class RunningServer:
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log_path: Path
    grpc_port: int | None = None

    @property
    def grpc_url(self) -> str:
        assert self.grpc_port is not None, "this server was started without gRPC"
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def server_home(server: RunningServer) -> Path:
    """The registry home a test server was started with."""
    args = server.proc.args
    assert isinstance(args, list)
    return Path(args[args.index("--home") + 1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError("server not ready in time")


def start_server(
    home: Path,
    tmp: Path,
    *args: str,
    command: str = "serve",
    env: dict[str, str] | None = None,
    ready: bool = True,
) -> RunningServer:
    port_file = tmp / f"port-{time.monotonic_ns()}"
    grpc_port_file = tmp / f"grpc-port-{time.monotonic_ns()}"
    # Any free gRPC port unless the test chose: parallel servers must not collide.
    grpc_args = [] if "--grpc-port" in args or "--no-grpc" in args else ["--grpc-port", "0"]
    if command == "serve" and "--drain-delay" not in args:
        grpc_args += ["--drain-delay", "0"]  # tests stop servers often: no wait on SIGTERM
    if "--no-grpc" not in args:
        grpc_args += ["--grpc-port-file", str(grpc_port_file)]
    log_path = tmp / f"server-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "servion.cli.main",
                "--home",
                str(home),
                command,
                "--port",
                "0",
                "--port-file",
                str(port_file),
                *grpc_args,
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    deadline = time.monotonic() + 120
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    port = int(port_file.read_text())
    grpc_port = int(grpc_port_file.read_text()) if grpc_port_file.exists() else None
    server = RunningServer(proc, f"http://127.0.0.1:{port}", port, log_path, grpc_port)
    if ready:
        try:
            wait_ready(server.url, proc)
        except Exception:
            server.stop(signal.SIGKILL)
            raise RuntimeError(f"server not ready:\n{server.log()}") from None
    return server


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start ``servion serve`` (one worker unless asked) and stop it after the test."""
    started: list[RunningServer] = []

    def _start(home: Path, *args: str, **kwargs: object) -> RunningServer:
        if "--workers" not in args:
            args = (*args, "--workers", "1")
        server = start_server(home, tmp_path, *args, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield _start
    for server in started:
        if server.proc.poll() is None:
            try:
                server.stop(signal.SIGTERM, timeout=30)
            except subprocess.TimeoutExpired:
                server.stop(signal.SIGKILL)


@contextmanager
def served(
    tmp: Path, setup: Callable[[ModelRegistry], None], *args: str
) -> Iterator[RunningServer]:
    """A one-worker server over a fresh home that ``setup`` fills; for module-scoped fixtures."""
    settings = Settings.load(home=tmp / "home")
    registry = ModelRegistry(settings)
    try:
        setup(registry)
    finally:
        registry.close()
    server = start_server(settings.home, tmp, "--workers", "1", *args)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.stop()


def register(
    registry: ModelRegistry, name: str, path: Path, version: str = "v1.0.0", **kwargs: object
) -> None:
    registry.register(RegisterRequest(name, path, version, **kwargs))  # type: ignore[arg-type]


class Collector:
    """A tiny _bulk endpoint: keeps documents by _id, in arrival order."""

    def __init__(self, port: int = 0, fail_next: int = 0) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.arrivals: list[str] = []
        self.fail_next = fail_next
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                lines = body.decode().splitlines()
                for action, doc in zip(lines[::2], lines[1::2], strict=True):
                    doc_id = json.loads(action)["index"]["_id"]
                    collector.docs[doc_id] = json.loads(doc)
                    collector.arrivals.append(doc_id)
                # Stored, but the acknowledgement is lost: the sender must resend.
                status = 500 if collector.fail_next > 0 else 200
                collector.fail_next -= 1
                self.send_response(status)
                reply = b'{"errors": false}'
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """A real Prometheus server on loopback, keeping its data in ``folder`` (Debian's
    package; .ci/run installs it). It scrapes servion every second once told its port."""

    def __init__(self, binary: str, folder: Path, servion_port: int | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "prometheus.yml"
        self._configure(servion_port)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self._log = (folder / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def _configure(self, servion_port: int | None) -> None:
        jobs = "[]"
        if servion_port is not None:
            target = f"127.0.0.1:{servion_port}"
            jobs = f"\n  - job_name: servion\n    static_configs: [{{targets: ['{target}']}}]"
        self.config.write_text(f"global: {{scrape_interval: 1s}}\nscrape_configs: {jobs}\n")

    def scrape(self, port: int) -> None:
        """Scrape servion on ``port`` from now on; returns once a scrape succeeded (a reload
        reaches the scrapers within 5 s: starting with the port is quicker)."""
        self._configure(port)
        assert self.http.post("/-/reload").status_code == 200
        self.wait_scraping()

    def wait_scraping(self) -> None:
        up = 'up{job="servion"}'
        wait_until(lambda: self.value(up) == 1.0, 60, "Prometheus scraping servion")

    def query(self, expression: str) -> list[dict[str, Any]]:
        """One instant query's series; fails unless Prometheus took the expression."""
        reply = self.http.get("/api/v1/query", params={"query": expression}).json()
        assert reply["status"] == "success", (expression, reply)
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def value(self, expression: str) -> float | None:
        """The value of an instant query's first series; None when it returns none."""
        result = self.query(expression)
        return float(result[0]["value"][1]) if result else None

    def series(self, selector: str) -> list[dict[str, str]]:
        """The label sets of the stored series ``selector`` matches."""
        reply = self.http.get("/api/v1/series", params={"match[]": selector}).json()
        assert reply["status"] == "success", (selector, reply)
        found: list[dict[str, str]] = reply["data"]
        return found

    def stop(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self._log.close()


@contextmanager
def running_prometheus(folder: Path, servion_port: int | None = None) -> Iterator[Prometheus]:
    """A ready ``Prometheus`` (scraping servion on ``servion_port`` if given), stopped
    afterwards; the test is skipped where Prometheus is not installed."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (.ci/run installs Debian's package)")
    prometheus = Prometheus(binary, folder, servion_port)
    try:
        wait_until(lambda: _answers(f"{prometheus.url}/-/ready"), 60, "Prometheus ready")
        if servion_port is not None:
            prometheus.wait_scraping()
        yield prometheus
    finally:
        prometheus.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    with running_prometheus(tmp_path) as server:
        yield server
