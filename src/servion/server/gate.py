"""What a request must show before any route sees it: a host this server answers for,
a content type it speaks, and, to change what is served, no sign of a foreign web page.

A browser lets any page send "simple" requests (``text/plain`` bodies, no custom headers)
to any address, loopback included, and DNS rebinding lets a page name its own host while
reaching 127.0.0.1. So on a loopback bind only loopback host names are answered (421
otherwise, unless ``--allowed-hosts`` adds names); a request that would change what is
served is refused when it comes from another origin (``Origin``, ``Sec-Fetch-Site``) and
must carry JSON or YAML, a type a browser cannot send cross-origin without a preflight that
servion never grants; and every body must be of a type servion decodes (415 otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from servion.errors import Forbidden, MisdirectedRequest, ServionError, UnsupportedMediaType
from servion.server.http import Request

LOOPBACK_NAMES: Final = ("localhost", "127.0.0.1", "::1")
JSON: Final = frozenset({b"application/json"})
INFER: Final = frozenset({b"application/json", b"application/octet-stream"})
SPEC: Final = frozenset(
    {b"application/json", b"application/yaml", b"application/x-yaml", b"text/yaml"}
)
CHANGES: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CACHE_LIMIT: Final = 64


class Gate:
    """The checks above, for one server's bind address and allowed host names."""

    def __init__(self, loopback: bool, allowed_hosts: Sequence[str] = ()) -> None:
        names = [h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip()]
        if "*" in names:
            self.hosts: frozenset[str] | None = None
        elif names or loopback:
            self.hosts = frozenset(names) | (frozenset(LOOPBACK_NAMES) if loopback else set())
        else:
            self.hosts = None  # bound to a network address: any name may reach it
        self._seen: dict[bytes, bool] = {}

    def check(self, req: Request) -> ServionError | None:
        """The refusal ``req`` gets, or None when routes may answer it."""
        if self.hosts is not None:
            host = req.header(b"host")
            if host is not None and not self._host_ok(host):
                return MisdirectedRequest(
                    f"host {_shown(host)} is not served here: a server on a loopback address"
                    " answers only localhost, 127.0.0.1 and [::1] (add names with"
                    " --allowed-hosts)"
                )
        if req.method not in CHANGES:
            return None
        path = req.path
        control = path.startswith("/v2/admin/") or path.startswith("/v2/repository/models/")
        if control:
            refusal = _cross_site(req)
            if refusal is not None:
                return refusal
            names = "Content-Type: application/json or application/yaml"
            return _content_type(req, SPEC, names)
        if path.endswith("/infer") or path.endswith(":predict"):
            allowed = INFER if path.startswith("/v2/") else JSON
            names = "application/json" + (
                " or application/octet-stream" if allowed is INFER else ""
            )
            return _content_type(req, allowed, names)
        return _content_type(req, JSON, "application/json")

    def _host_ok(self, raw: bytes) -> bool:
        known = self._seen.get(raw)
        if known is None:
            assert self.hosts is not None
            known = _host_name(raw) in self.hosts
            if len(self._seen) < _CACHE_LIMIT:  # a client cycling names cannot grow it
                self._seen[raw] = known
        return known


def _host_name(raw: bytes) -> str:
    """``localhost:8080`` -> ``localhost``; ``[::1]:8080`` -> ``::1``."""
    text = raw.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    return text.rpartition(":")[0].rstrip(".") if ":" in text else text.rstrip(".")


def _cross_site(req: Request) -> ServionError | None:
    site = req.header(b"sec-fetch-site")
    if site is not None and site.strip().lower() in (b"cross-site", b"same-site"):
        return Forbidden(
            "a request from another site may not change what is served"
            f" (Sec-Fetch-Site: {_shown(site)}); use the servion CLI or an API client"
        )
    origin = req.header(b"origin")
    if origin is None:
        return None
    host = req.header(b"host") or b""
    scheme, _, rest = origin.strip().lower().partition(b"://")
    if scheme not in (b"http", b"https") or rest.rstrip(b"/") != host.strip().lower():
        return Forbidden(
            f"a request from origin {_shown(origin)} may not change what is served on"
            f" {_shown(host)}; use the servion CLI or an API client"
        )
    return None


def _content_type(req: Request, allowed: frozenset[bytes], names: str) -> ServionError | None:
    value = req.header(b"content-type")
    if value is None:
        # Decoded as the route's own type. A browser always names a body's type (text/plain
        # at the least), so an untyped body is an API client's (tritonclient sends them).
        return None
    media = value.partition(b";")[0].strip().lower()
    if media in allowed:
        return None
    return UnsupportedMediaType(
        f"content type {_shown(media)} is not accepted here: send {names}"
        + (" (curl: -H 'Content-Type: application/json')" if b"form" in media else "")
    )


def _shown(raw: bytes) -> str:
    text = raw[:100].decode("latin-1")
    return "'" + "".join(c if c.isprintable() else "?" for c in text) + "'"
