"""The admin API: deployments over HTTP, behind role-checked bearer tokens.

| verb | path | role |
|---|---|---|
| GET | /v2/admin/endpoints | viewer |
| POST | /v2/admin/endpoints (body: a deployment spec, YAML or JSON) | deployer |
| GET | /v2/admin/endpoints/{e} | viewer |
| DELETE | /v2/admin/endpoints/{e} | deployer |
| GET | /v2/admin/endpoints/{e}/history | viewer |
| GET | /v2/admin/endpoints/{e}/revisions/{n} | viewer |
| POST | /v2/admin/endpoints/{e}/rollback (body: {"to": n} or empty) | deployer |
| GET | /v2/admin/endpoints/{e}/report | viewer |
| POST | /v2/admin/endpoints/{e}/verify | viewer |
| GET | /v2/admin/endpoints/{e}/rollout | viewer |
| POST | /v2/admin/endpoints/{e}/rollout/{pause,resume,abort} | deployer |
| GET | /v2/admin/schema | viewer |
| GET | /v2/admin/models/{m}[/versions/{v}]/drift | viewer |
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from servion.deploy import Change, DeployService, Revision, json_schema, parse_spec
from servion.errors import InvalidInput, ServionError
from servion.protocol import InferInput, InferRequest
from servion.routing.endpoint import settled
from servion.runtime import sample_inputs
from servion.server.control import Control
from servion.server.http import JSON_HEADERS, Request, Response, json_response
from servion.serving import DataPlane, ModelManager

MAX_SPEC_BYTES = 256 * 1024
CHANGE_TICKET_HEADER = b"x-servion-change-ticket"
ROLLOUT_ACTIONS = ("pause", "resume", "abort")

Guard = Callable[[Awaitable[Response], Request], Awaitable[Response]]
CostNow = Callable[[], Awaitable[dict[str, Any]]]


class NoAdminRoute(Exception):
    pass


class AdminApi:
    def __init__(
        self,
        control: Control,
        manager: ModelManager,
        plane: DataPlane,
        service: DeployService,
        guard: Guard,
        cost: CostNow,
    ) -> None:
        self.control = control
        self.manager = manager
        self.plane = plane
        self.service = service
        self.guard = guard
        self.cost = cost
        """The replica's cost now, for the endpoint list (``servion status``)."""

    def handle(self, req: Request, rest: list[str]) -> Response | Awaitable[Response]:
        """``rest``: the path after ``/v2/admin``."""
        method = req.method
        auth = req.header(b"authorization")
        if rest == ["schema"] and method == "GET":
            self.control.authorize(auth, "viewer")
            return 200, json_schema().encode(), JSON_HEADERS
        if len(rest) in (3, 5) and rest[0] == "models" and rest[-1] == "drift":
            if method != "GET" or (len(rest) == 5 and rest[2] != "versions"):
                raise NoAdminRoute
            self.control.authorize(auth, "viewer")
            version = rest[3] if len(rest) == 5 else None
            return self.guard(self._json(self.control.drift(rest[1], version)), req)
        if not rest or rest[0] != "endpoints":
            raise NoAdminRoute
        if len(rest) == 1:
            if method == "GET":
                self.control.authorize(auth, "viewer")
                return self.guard(self._status(None), req)
            if method == "POST":
                change = self._change(req, "deployer")
                spec = parse_spec(req.body_within(MAX_SPEC_BYTES), "spec")
                return self.guard(self._json(self.service.deploy(spec, change)), req)
            raise NoAdminRoute
        endpoint = rest[1]
        tail = rest[2:]
        if not tail:
            if method == "GET":
                self.control.authorize(auth, "viewer")
                return self.guard(self._status(endpoint), req)
            if method == "DELETE":
                change = self._change(req, "deployer")
                return self.guard(self._json(self.service.undeploy(endpoint, change)), req)
        elif tail == ["history"] and method == "GET":
            self.control.authorize(auth, "viewer")
            return self.guard(self._history(endpoint), req)
        elif len(tail) == 2 and tail[0] == "revisions" and method == "GET":
            self.control.authorize(auth, "viewer")
            return self.guard(self._revision(endpoint, _revision_number(tail[1])), req)
        elif tail == ["rollback"] and method == "POST":
            change = self._change(req, "deployer")
            to = _rollback_target(req.body_within(4096))
            return self.guard(self._json(self.service.rollback(endpoint, to, change)), req)
        elif tail == ["rollout"] and method == "GET":
            self.control.authorize(auth, "viewer")
            return self.guard(self._json(self.service.canaries.status(endpoint)), req)
        elif len(tail) == 2 and tail[0] == "rollout" and method == "POST":
            if tail[1] in ROLLOUT_ACTIONS:
                change = self._change(req, "deployer")
                work = self.service.rollout(endpoint, tail[1], change)
                return self.guard(self._json(work), req)
        elif tail == ["verify"] and method == "POST":
            self.control.authorize(auth, "viewer")
            return self.guard(self._verify(endpoint), req)
        elif tail == ["report"] and method == "GET":
            self.control.authorize(auth, "viewer")
            return self.guard(self._report(endpoint), req)
        raise NoAdminRoute

    def _change(self, req: Request, role: str) -> Change:
        """The caller (who must hold ``role``), its change ticket and the command it sent."""
        user = self.control.authorize(req.header(b"authorization"), role)
        raw = req.header(CHANGE_TICKET_HEADER)
        ticket = raw.decode("latin-1") if raw is not None else None
        return Change(user, f"{req.method} {req.path}", ticket)

    async def _json(self, work: Awaitable[dict[str, Any]]) -> Response:
        return json_response(200, await work)

    async def _status(self, endpoint: str | None) -> Response:
        deployments = self.control.deployments
        if endpoint is None:
            revisions = await asyncio.to_thread(deployments.all_current)
            states = [self._state(r) for r in revisions]
            return json_response(200, {"endpoints": states, "cost": await self.cost()})
        revision = await asyncio.to_thread(deployments.current, endpoint)
        return json_response(200, self._state(revision))

    def _state(self, revision: Revision) -> dict[str, Any]:
        router = self.manager.endpoints.get(revision.endpoint)
        applied = router is not None and router.revision == revision.revision
        ready = applied and all(
            (arm.model, arm.version) in self.manager.models for arm in revision.spec.models
        )
        return {**revision.to_dict(), "ready": ready}

    async def _history(self, endpoint: str) -> Response:
        history = await asyncio.to_thread(self.control.deployments.history, endpoint)
        if not history:
            await asyncio.to_thread(self.control.deployments.current, endpoint)  # 404
        return json_response(
            200, {"endpoint": endpoint, "revisions": [r.to_dict() for r in history]}
        )

    async def _revision(self, endpoint: str, number: int) -> Response:
        revision = await asyncio.to_thread(self.control.deployments.get, endpoint, number)
        return json_response(200, revision.to_dict())

    async def _verify(self, endpoint: str) -> Response:
        """Per arm of the current revision: the artifact's checksum, re-read from disk, and
        a smoke inference on inputs made from its signature, timed."""
        current = await asyncio.to_thread(self.control.deployments.current, endpoint)
        registry = self.control.registry
        checks = []
        for arm in current.spec.models:
            check: dict[str, Any] = {"arm": arm.label, "checksum": "ok", "smoke": "ok"}
            try:
                mv = await asyncio.to_thread(registry.get, arm.model, arm.version)
                await asyncio.to_thread(registry.store.verify, mv.artifact, mv.sha256, mv.label)
            except ServionError as exc:
                check["checksum"] = exc.message
            try:
                model = self.manager.resolve(arm.model, arm.version)
                arrays = sample_inputs(model.signature, batch_size=1, seed=0)
                inputs = [InferInput.of(name, data) for name, data in arrays.items()]
                started = time.perf_counter()
                answer = await settled(
                    self.plane.infer_model(model, InferRequest(None, inputs, None, {}))
                )
                check["smoke_ms"] = round((time.perf_counter() - started) * 1e3, 3)
                produced = {o.name for o in answer.outputs}
                missing = [n for n in model.output_order if n not in produced]
                if missing:
                    check["smoke"] = f"outputs missing: {missing}"
            except ServionError as exc:
                check["smoke"] = exc.message
            checks.append(check)
        passed = all(c["checksum"] == "ok" and c["smoke"] == "ok" for c in checks)
        return json_response(
            200,
            {"endpoint": endpoint, "revision": current.revision, "ok": passed, "arms": checks},
        )

    async def _report(self, endpoint: str) -> Response:
        return json_response(200, await self.control.endpoint_report(endpoint))


def _revision_number(text: str) -> int:
    if not text.isdigit() or len(text) > 9:
        raise InvalidInput(f"a revision is a positive integer, got {text[:20]!r}")
    return int(text)


def _rollback_target(body: bytes) -> int | None:
    if not body.strip():
        return None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    to = payload.get("to") if isinstance(payload, dict) else "?"
    if to is not None and (type(to) is not int or to < 1):
        raise InvalidInput('the rollback request must be {"to": REVISION} with REVISION >= 1')
    return to
