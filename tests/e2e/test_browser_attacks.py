"""What a web page can make a browser send to a default (loopback, no token) install,
sent here as the raw requests a browser makes: none of them may change what is served,
and a rebound DNS name gets nothing at all."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import RunningServer, TabularModels, cli, server_home, start_server, wait_until

BODY = json.dumps(
    {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": [0.25] * 32}]}
)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("browser")
    home = tmp / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    srv = start_server(home, tmp, "--workers", "1")
    yield srv
    srv.stop()


def raw(
    server: RunningServer, method: str, path: str, headers: dict[str, str], body: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """One request exactly as written (no client library adding or fixing headers)."""
    head = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    data = body.encode()
    head += [f"Content-Length: {len(data)}", "Connection: close", "", ""]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall("\r\n".join(head).encode() + data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    top, _, payload = reply.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    found = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, found, payload


def browser(
    server: RunningServer, origin: str = "http://evil.example", **extra: str
) -> dict[str, str]:
    """The headers a browser sends with a page's cross-origin "simple" request."""
    return {
        "Host": f"127.0.0.1:{server.port}",
        "Origin": origin,
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0",
        "Accept": "*/*",
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "no-cors",
        "Content-Type": "text/plain;charset=UTF-8",
        **extra,
    }


def ready(server: RunningServer) -> bool:
    return httpx.get(f"{server.url}/v2/models/tabular/ready").status_code == 200


SPEC = "endpoint: pwned\nmodels:\n  - {model: tabular, version: v1.0.0}\n"


def test_a_page_cannot_unload_deploy_or_undeploy(server: RunningServer) -> None:
    unload = "/v2/repository/models/tabular/unload"
    status, _, body = raw(server, "POST", unload, browser(server), "{}")
    assert status == 403 and b"another site" in body, body
    # An older browser sends Origin without Sec-Fetch-*: refused by its origin.
    old = browser(server)
    del old["Sec-Fetch-Site"], old["Sec-Fetch-Mode"]
    status, _, body = raw(server, "POST", unload, old, "{}")
    assert status == 403 and b"origin 'http://evil.example'" in body, body
    # A page on another port of this machine is another origin too (Sec-Fetch-Site
    # says same-site, as the port does not count for it).
    local = browser(server, "http://localhost:3000", **{"Sec-Fetch-Site": "same-site"})
    assert raw(server, "POST", unload, local, "{}")[0] == 403
    assert ready(server)

    status, _, body = raw(server, "POST", "/v2/admin/endpoints", browser(server), SPEC)
    assert status == 403, body
    # Without any origin header (a tool, not a browser), text/plain is still no spec type.
    plain = {"Host": f"127.0.0.1:{server.port}", "Content-Type": "text/plain"}
    status, _, body = raw(server, "POST", "/v2/admin/endpoints", plain, SPEC)
    assert status == 415 and b"application/yaml" in body, body
    form = {**plain, "Content-Type": "application/x-www-form-urlencoded"}
    assert raw(server, "POST", "/v2/admin/endpoints", form, SPEC)[0] == 415
    assert httpx.get(f"{server.url}/v2/admin/endpoints/pwned").status_code == 404

    # Deployed the proper way, a page cannot take it down either.
    yaml_type = {"Host": f"127.0.0.1:{server.port}", "Content-Type": "application/yaml"}
    status, _, body = raw(server, "POST", "/v2/admin/endpoints", yaml_type, SPEC)
    assert status == 200, body
    status, _, _ = raw(server, "DELETE", "/v2/admin/endpoints/pwned", browser(server))
    assert status == 403
    assert httpx.get(f"{server.url}/v2/admin/endpoints/pwned").status_code == 200
    # The page's own origin (a same-origin request) is allowed, as a browser UI would be.
    own = browser(server, f"http://127.0.0.1:{server.port}", **{"Sec-Fetch-Site": "same-origin"})
    del own["Content-Type"]
    assert raw(server, "DELETE", "/v2/admin/endpoints/pwned", own)[0] == 200
    assert ready(server)


def test_dns_rebinding_gets_nothing(server: RunningServer) -> None:
    for host in ("attacker.example", f"attacker.example:{server.port}", "10.0.0.5"):
        status, _, body = raw(server, "GET", "/v2/models/tabular", {"Host": host})
        assert status == 421 and b"is not served here" in body, (host, body)
        headers = {"Host": host, "Content-Type": "application/json"}
        assert raw(server, "POST", "/v2/models/tabular/infer", headers, BODY)[0] == 421
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}",
                 "localhost", "LOCALHOST."):  # fmt: skip
        assert raw(server, "GET", "/v2/models/tabular", {"Host": host})[0] == 200, host
    assert ready(server)


def test_body_types_are_an_allow_list(server: RunningServer) -> None:
    host = {"Host": f"127.0.0.1:{server.port}"}
    infer = "/v2/models/tabular/infer"
    for media in ("application/vnd.bentoml+pickle", "text/plain", "multipart/form-data; b=x"):
        status, _, body = raw(server, "POST", infer, {**host, "Content-Type": media}, BODY)
        assert status == 415 and b"application/json" in body, (media, body)
    status, _, body = raw(
        server, "POST", infer, {**host, "Content-Type": "application/x-www-form-urlencoded"}, BODY
    )
    assert status == 415 and b"curl: -H 'Content-Type: application/json'" in body
    accepted: tuple[str | None, ...] = ("application/json", "application/json; charset=utf-8", None)
    for kind in accepted:
        headers = {**host, **({"Content-Type": kind} if kind else {})}
        assert raw(server, "POST", infer, headers, BODY)[0] == 200, kind
    v1 = "/v1/models/tabular:predict"
    instances = json.dumps({"instances": [[0.25] * 32]})
    assert raw(server, "POST", v1, {**host, "Content-Type": "text/plain"}, instances)[0] == 415
    assert (
        raw(server, "POST", v1, {**host, "Content-Type": "application/json"}, instances)[0] == 200
    )


def test_a_401_names_the_bearer_scheme(server: RunningServer) -> None:
    home = server_home(server)
    assert cli(home, "tokens", "create", "--role", "admin", "--name", "ops").returncode == 0
    url = f"{server.url}/v2/admin/endpoints"  # a read: waiting on it changes nothing
    wait_until(lambda: httpx.get(url).status_code == 401, 20, "tokens to be required")
    reply = httpx.get(url)
    assert reply.headers["www-authenticate"] == 'Bearer realm="servion"'
    assert ready(server)


def test_allowed_hosts_adds_names(tmp_path: Path, tabular: TabularModels) -> None:
    home = tmp_path / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    srv = start_server(home, tmp_path, "--workers", "1", "--allowed-hosts", "models.internal")
    try:
        assert (
            raw(srv, "GET", "/v2/models/tabular", {"Host": f"models.internal:{srv.port}"})[0] == 200
        )
        assert raw(srv, "GET", "/v2/models/tabular", {"Host": "localhost"})[0] == 200
        assert raw(srv, "GET", "/v2/models/tabular", {"Host": "attacker.example"})[0] == 421
    finally:
        srv.stop()
