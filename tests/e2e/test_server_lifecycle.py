"""Safe defaults, several workers agreeing, graceful shutdown, and the quickstart."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from conftest import RunningServer, TabularModels, cli, register, start_server, wait_until
from servion.registry import ModelRegistry, RegisterRequest


def test_non_loopback_bind_without_token_is_refused(tmp_path: Path) -> None:
    done = cli(tmp_path / "home", "serve", "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 2
    assert "without an admin token" in done.stderr


def test_control_operations_need_the_token(
    registry: ModelRegistry, tabular: TabularModels, serve: Callable[..., RunningServer]
) -> None:
    register(registry, "tabular", tabular.onnx)
    server = serve(registry.settings.home, "--admin-token", "s3cret")
    url = f"{server.url}/v2/repository/models/tabular/unload"
    assert httpx.post(url).status_code == 401
    assert httpx.post(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.post(url, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    # reads stay open
    assert httpx.post(f"{server.url}/v2/repository/index").status_code == 200


def test_binds_loopback_by_default(
    registry: ModelRegistry, tabular: TabularModels, serve: Callable[..., RunningServer]
) -> None:
    register(registry, "tabular", tabular.onnx)
    server = serve(registry.settings.home)
    import psutil

    supervisor = psutil.Process(server.proc.pid)
    tree = [supervisor, *supervisor.children(recursive=True)]
    listening = [
        c.laddr for p in tree for c in p.net_connections() if c.status == psutil.CONN_LISTEN
    ]
    # gRPC's listener is dual-stack: 127.0.0.1 appears as ::ffff:127.0.0.1.
    assert listening and {a.ip.removeprefix("::ffff:") for a in listening} == {"127.0.0.1"}
    assert {a.port for a in listening} == {server.port, server.grpc_port}


def test_workers_agree_on_unload_and_stats(
    registry: ModelRegistry, tabular: TabularModels, serve: Callable[..., RunningServer]
) -> None:
    register(registry, "tabular", tabular.onnx)
    server = serve(registry.settings.home, "--workers", "2")
    body = {
        "inputs": [
            {"name": "X", "shape": [1, 32], "datatype": "FP32", "data": tabular.x[0].tolist()}
        ]
    }
    time.sleep(1.0)  # let the second worker finish loading too
    for _ in range(20):  # fresh connections spread over both workers
        assert httpx.post(f"{server.url}/v2/models/tabular/infer", json=body).status_code == 200

    def inferences() -> int:
        stats = httpx.get(f"{server.url}/v2/models/tabular/stats").json()["model_stats"][0]
        return int(stats["inference_count"])

    # Workers report their statistics every second, and each answers with its own view:
    # polled until one view holds all twenty, which is then checked to hold no more.
    seen: list[int] = []

    def all_counted() -> bool:
        seen.append(inferences())
        return seen[-1] >= 20

    wait_until(all_counted, 10, "both workers' statistics")
    assert seen[-1] == 20
    assert httpx.post(f"{server.url}/v2/repository/models/tabular/unload").status_code == 200
    codes = {
        httpx.post(f"{server.url}/v2/models/tabular/infer", json=body).status_code
        for _ in range(20)
    }
    assert codes == {503}
    # a version registered while serving reaches every worker
    register(registry, "tabular", tabular.onnx, "v2.0.0")
    assert httpx.post(f"{server.url}/v2/repository/models/tabular/load").status_code == 200
    versions = {
        httpx.post(f"{server.url}/v2/models/tabular/infer", json=body).json()["model_version"]
        for _ in range(20)
    }
    assert versions == {"v2.0.0"}


def _slow_model(tmp_path: Path) -> Path:
    path = tmp_path / "slow.py"
    path.write_text(
        "import time\nimport numpy as np\n"
        "class Slow:\n"
        "    inputs = [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 1]}]\n"
        "    outputs = [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 1]}]\n"
        "    def load(self):\n        pass\n"
        "    def predict(self, inputs):\n"
        # Only the test's request (1.0) is slow: the registration probe's and warm-up's
        # generated sample (0.126...) is answered at once.
        "        if inputs['x'][0, 0] > 0.5: time.sleep(1.5)\n"
        "        return {'y': inputs['x']}\n"
    )
    return path


def test_sigterm_drains_in_flight_requests_and_exits_0(
    registry: ModelRegistry, tmp_path: Path, serve: Callable[..., RunningServer]
) -> None:
    register(registry, "slow", _slow_model(tmp_path), trust_code=True)
    server = serve(registry.settings.home)
    body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}
    result: dict[str, int] = {}

    def call() -> None:
        result["status"] = httpx.post(
            f"{server.url}/v2/models/slow/infer", json=body, timeout=30
        ).status_code

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.5)  # the request is inside the model now
    server.proc.send_signal(signal.SIGTERM)
    thread.join(30)
    assert result == {"status": 200}
    assert server.proc.wait(30) == 0


def test_quickstart_end_to_end(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = start_server(home, tmp_path, "--workers", "1", command="quickstart", ready=False)
    try:
        # The examples appear once the server answers, with its real port: the very next
        # call is served.
        wait_until(lambda: "Stop the server with Ctrl-C." in server.log(), 120, "the examples")
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
        out_text = server.log()
        assert f"serving on http://127.0.0.1:{server.port}\n" in out_text
        assert "registered demo:v1.0.0" in out_text and "curl -s -X POST" in out_text
        # No child is left a zombie (the registration's helper processes are reaped).
        assert zombies(server.proc.pid) == [], zombies(server.proc.pid)
        snippet = out_text.split("python3 - <<'PY'\n", 1)[1].split("PY\n", 1)[0]
        snippet = snippet.replace("PORT", str(server.port))
        ran = subprocess.run(
            [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=30
        )
        assert ran.returncode == 0, ran.stderr
        assert "'name': 'label'" in ran.stdout
        curl_line = out_text.split("curl -s -X POST ", 1)[1].split("\n\n", 1)[0]
        cmd = "curl -s -X POST " + curl_line.replace("PORT", str(server.port))
        done = subprocess.run(
            ["bash", "-c", cmd.replace("\\\n", " ")], capture_output=True, text=True, timeout=30
        )
        assert '"model_name":"demo"' in done.stdout, done.stdout + done.stderr
        probs = httpx.post(
            f"{server.url}/v2/models/demo/infer",
            json={
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, 4],
                        "datatype": "FP32",
                        "data": [0.5, -1.2, 3.3, 0.7],
                    }
                ]
            },
        ).json()["outputs"][1]["data"]
        assert np.isclose(sum(probs), 1.0, atol=1e-5)
    finally:
        assert server.stop() == 0
    # a second run reuses the registered model
    again = start_server(home, tmp_path, "--workers", "1", command="quickstart")
    assert "registered demo" not in again.log()
    again.stop()
    # A taken port fails at once, before any "Try it" text.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = subprocess.run(
            [sys.executable, "-m", "servion.cli.main", "--home", str(home), "quickstart",
             "--port", str(taken.getsockname()[1]), "--no-grpc"],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert busy.returncode == 2, busy.stdout + busy.stderr
    assert "Try it" not in busy.stdout and "serving on" not in busy.stdout
    assert "already in use" in busy.stderr or "in use" in busy.stderr, busy.stderr


def zombies(pid: int) -> list[int]:
    """Children of ``pid`` that exited and were never waited for."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            stat = Path(f"/proc/{child}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                found.append(int(child))
    return found


def test_version_policy_selects_served_versions(
    registry: ModelRegistry, tabular: TabularModels, serve: Callable[..., RunningServer]
) -> None:
    from servion.registry import VersionPolicy

    for version in ("v1.0.0", "v1.1.0", "v2.0.0"):
        register(registry, "tabular", tabular.onnx, version)
    registry.set_policy("tabular", VersionPolicy.parse("latest:2"))
    server = serve(registry.settings.home)
    meta = httpx.get(f"{server.url}/v2/models/tabular").json()
    assert meta["versions"] == ["v1.1.0", "v2.0.0"]
    assert httpx.get(f"{server.url}/v2/models/tabular/versions/v1.1.0/ready").status_code == 200
    assert httpx.get(f"{server.url}/v2/models/tabular/versions/v1.0.0/ready").status_code == 404
    registry.set_policy("tabular", VersionPolicy.parse("specific:v1.0.0"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if httpx.get(f"{server.url}/v2/models/tabular").json().get("versions") == ["v1.0.0"]:
            break
        time.sleep(0.1)
    body = {
        "inputs": [
            {"name": "X", "shape": [1, 32], "datatype": "FP32", "data": tabular.x[0].tolist()}
        ]
    }
    reply = httpx.post(f"{server.url}/v2/models/tabular/infer", json=body).json()
    assert reply["model_version"] == "v1.0.0"


def test_artifact_tampered_on_disk_is_refused_at_load(
    registry: ModelRegistry, tabular: TabularModels, serve: Callable[..., RunningServer]
) -> None:
    mv = registry.register(RegisterRequest("tabular", tabular.onnx, "v1.0.0"))
    stored = registry.store.path(mv.artifact)
    stored.write_bytes(stored.read_bytes() + b"\x00")
    server = serve(registry.settings.home, ready=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            index = httpx.post(f"{server.url}/v2/repository/index").json()
            break
        except httpx.TransportError:
            time.sleep(0.1)
    assert index[0]["state"] == "UNAVAILABLE"
    assert "modified after registration" in index[0]["reason"]
    assert str(registry.settings.home) not in index[0]["reason"]
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 503
    body = {"inputs": [{"name": "X", "shape": [1, 32], "datatype": "FP32", "data": [0.0] * 32}]}
    reply = httpx.post(f"{server.url}/v2/models/tabular/infer", json=body)
    assert reply.status_code == 503 and "modified" in reply.json()["error"]
    load = httpx.post(f"{server.url}/v2/repository/models/tabular/load")
    assert load.status_code == 503 and "modified after registration" in load.json()["error"]


def test_workers_exit_when_the_supervisor_is_killed(
    registry: ModelRegistry, tabular: TabularModels, serve: Callable[..., RunningServer]
) -> None:
    import psutil

    register(registry, "tabular", tabular.onnx)
    server = serve(registry.settings.home, "--workers", "2")
    workers = psutil.Process(server.proc.pid).children()
    assert len([w for w in workers if "servion.server.worker" in " ".join(w.cmdline())]) == 2
    server.proc.kill()
    server.proc.wait(10)
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive


def test_a_port_in_use_is_refused(
    registry: ModelRegistry, tabular: TabularModels, serve: Callable[..., RunningServer]
) -> None:
    register(registry, "tabular", tabular.onnx)
    server = serve(registry.settings.home)
    done = cli(registry.settings.home, "serve", "--port", str(server.port))
    assert done.returncode == 2 and "cannot listen" in done.stderr
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_port_zero_means_any_free_port_for_grpc_too(tmp_path: Path) -> None:
    """``--port 0`` without ``--grpc-port`` does not fall back on gRPC's fixed 8081."""
    port_file, grpc_file = tmp_path / "port", tmp_path / "grpc-port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "servion.cli.main",
            "--home",
            str(tmp_path / "home"),
            "serve",
            "--port",
            "0",
            "--drain-delay",
            "0",
            "--workers",
            "1",
            "--port-file",
            str(port_file),
            "--grpc-port-file",
            str(grpc_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not grpc_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        grpc_port = int(grpc_file.read_text())
        assert grpc_port not in (0, 8081)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_two_servers_started_together_never_share_a_port(tmp_path: Path) -> None:
    """SO_REUSEPORT would let both listen and split the traffic between two registries."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "servion.cli.main",
                "--home",
                str(tmp_path / f"home-{i}"),
                "serve",
                "--port",
                str(port),
                "--grpc-port",
                "0",
                "--drain-delay",
                "0",
                "--workers",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for i in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        while all(p.poll() is None for p in procs):
            assert time.monotonic() < deadline, "neither server refused the shared port"
            time.sleep(0.05)
        refused = next(p for p in procs if p.poll() is not None)
        assert refused.returncode == 2
        assert refused.stderr is not None
        message = refused.stderr.read()
        assert f"port {port}" in message or f":{port}" in message, message
        serving = next(p for p in procs if p is not refused)
        wait_until_live = time.monotonic() + 60
        while True:
            assert serving.poll() is None and time.monotonic() < wait_until_live
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/live").status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)


def test_keep_alive_clients_lose_nothing_when_the_server_drains(
    registry: ModelRegistry, tabular: TabularModels, serve: Callable[..., RunningServer]
) -> None:
    """Readiness fails at SIGTERM, while requests are still served for the drain delay:
    clients that stop when readiness fails lose no request."""
    register(registry, "tabular", tabular.onnx)
    server = serve(registry.settings.home, "--workers", "2", "--drain-delay", "2")
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": [0.5] * 32}]}
    failures: list[str] = []
    answered = [0] * 8
    signalled = threading.Event()

    def client(index: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as session:  # keep-alive
            while True:
                try:
                    if session.get("/v2/health/ready").status_code != 200:
                        return  # what a load balancer does: stop sending here
                    reply = session.post("/v2/models/tabular/infer", json=body)
                    if reply.status_code != 200:
                        failures.append(f"{reply.status_code} {reply.text}")
                    answered[index] += 1
                except httpx.TransportError as exc:
                    failures.append(repr(exc))
                    return

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while min(answered) == 0:  # every client is in its loop
        assert time.monotonic() < deadline
        time.sleep(0.01)
    server.proc.send_signal(signal.SIGTERM)
    signalled.set()
    for t in threads:
        t.join(30)
    assert failures == []
    assert server.proc.wait(30) == 0
