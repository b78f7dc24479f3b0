"""Everything in a worker that is not the hot path: start-up, keeping in step
with the registry (and so with the other workers), statistics across workers,
and the model repository's load and unload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from servion.audit import Auditor
from servion.audit.forward import start_forwarding, stop_forwarding
from servion.deploy import Deployments
from servion.drift import freshest
from servion.errors import Forbidden, InvalidInput, ModelNotFound, ModelNotReady, Unauthorized
from servion.registry import ModelRegistry
from servion.routing import merge_arm_stats, merge_shadow_stats
from servion.server.tokens import RANK, TokenTable
from servion.serving import ModelManager, merge, to_triton

log = logging.getLogger("servion.server")

REPORT_EVERY_S = 1.0
WORKER_TTL_S = 5.0
CONVERGE_TIMEOUT_S = 30.0


class Control:
    """Keeps one worker's models in step with the registry and answers control requests."""

    def __init__(
        self,
        registry: ModelRegistry,
        manager: ModelManager,
        deployments: Deployments,
        *,
        sync_interval_s: float,
        admin_token: str | None,
        admin_required: bool,
    ) -> None:
        self.registry = registry
        self.database = registry.database
        self.manager = manager
        self.deployments = deployments
        self.sync_interval_s = sync_interval_s
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        self.tokens = TokenTable(admin_token)
        self.audit = Auditor(registry.settings, command="servion serve")
        self._forwarding: Any = None
        self.admin_required = admin_required or admin_token is not None
        self.inference_auth = False
        """Inference needs a token too (any role) when set."""
        self._task: asyncio.Task[None] | None = None
        self.every_second: list[Callable[[], Awaitable[None]]] = []
        """Work for each report tick (a canary driver adopting orphaned rollouts)."""
        self.supervisor_pid: int | None = None
        """The process that started this worker; its disappearance stops the worker."""
        self.drift_results: Callable[[], dict[str, Any]] = dict
        """This worker's latest drift windows, reported for the admin API to merge."""

    # -- lifespan --------------------------------------------------------------

    async def startup(self) -> None:
        """Load what the registry says to serve, report, and start following it."""
        await self._reconcile()
        await asyncio.to_thread(self._report)
        self._task = asyncio.create_task(self._sync_loop())
        self._forwarding = start_forwarding(self.registry.settings)

    async def shutdown(self) -> None:
        self.audit.close()
        await asyncio.to_thread(stop_forwarding, self._forwarding)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.database.remove_worker, self.worker_id)

    async def _sync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_report = loop.time()
        while True:
            await asyncio.sleep(self.sync_interval_s)
            if self.supervisor_pid is not None and os.getppid() != self.supervisor_pid:
                # The supervisor is gone (killed hard): drain and exit rather
                # than serve on as an orphan nobody will stop.
                log.warning("supervisor_gone")
                os.kill(os.getpid(), signal.SIGTERM)
                return
            try:
                generation = await asyncio.to_thread(self.database.generation)
                changed = generation != self.manager.generation
                if changed:
                    await self._reconcile()
                if changed or loop.time() - last_report >= REPORT_EVERY_S:
                    await asyncio.to_thread(self._report)
                    last_report = loop.time()
                    for work in self.every_second:
                        await work()
            except Exception:  # keep serving what is loaded; try again next tick
                log.exception("registry_sync_failed")

    async def _reconcile(self) -> None:
        await asyncio.to_thread(self.tokens.refresh, self.registry)
        await self.manager.reconcile()

    def _report(self) -> None:
        report = {
            "models": self._own_stats(),
            "endpoints": self._own_arms(),
            "drift": self.drift_results(),
        }
        self.database.report_worker(self.worker_id, self.manager.generation, report)

    def _own_stats(self) -> dict[str, Any]:
        return {f"{m.name}:{m.version}": m.stats.to_dict() for m in self.manager.models.values()}

    def _own_arms(self) -> dict[str, Any]:
        return {name: router.stats() for name, router in self.manager.endpoints.items()}

    # -- authorization -----------------------------------------------------------

    @property
    def auth_required(self) -> bool:
        return self.admin_required or self.tokens.any

    def authorize(self, authorization: bytes | None, role: str) -> str:
        """The caller's principal if it holds ``role`` (401 / 403 otherwise)."""
        if not self.auth_required:
            return "anonymous"
        if authorization is None:
            raise Unauthorized(
                f"this operation needs a token with the {role} role: Authorization: Bearer TOKEN"
            )
        found = self.tokens.identify(authorization)
        if found is None:
            raise Unauthorized("the token is not valid")
        have, principal = found
        if RANK[have] < RANK[role]:
            raise Forbidden(f"this operation needs the {role} role; the token has {have}")
        return principal

    # -- statistics --------------------------------------------------------------

    async def stats(self, name: str | None, version: str | None) -> dict[str, Any]:
        """Triton statistics summed over every live worker (others lag by up to a second).

        For an endpoint's name: the statistics of the versions that answer it.
        """
        if name is not None and not any(s.name == name for s in self.manager.states):
            router = self.manager.endpoints.get(name)
            if router is None:
                raise ModelNotFound(name)
            picked = [
                r for r in router.routes if version is None or version in (r.version, r.label)
            ]
            if not picked:
                raise ModelNotFound(name, version)
            entries: list[dict[str, Any]] = []
            for route in picked:
                entries += (await self.stats(route.model, route.version))["model_stats"]
            return {"model_stats": entries}
        reports = await asyncio.to_thread(self.database.worker_reports, WORKER_TTL_S)
        parts: dict[str, list[dict[str, Any]]] = {}
        for worker_id, _, report in reports:
            if worker_id == self.worker_id:
                continue
            for key, value in report.get("models", {}).items():
                parts.setdefault(key, []).append(value)
        for key, value in self._own_stats().items():
            parts.setdefault(key, []).append(value)
        served = {f"{m.name}:{m.version}" for m in self.manager.models.values()}
        entries = []
        for key in sorted(served | set(parts)):
            model, _, ver = key.partition(":")
            if (name is None or model == name) and (version is None or ver == version):
                entries.append(to_triton(model, ver, merge(parts.get(key, []))))
        if name is not None and version is not None and not entries:
            raise ModelNotFound(name, version)
        return {"model_stats": entries}

    async def drift(self, name: str, version: str | None) -> dict[str, Any]:
        """A model's latest drift windows, per version, merged over every live worker."""
        reports = await asyncio.to_thread(self.database.worker_reports, WORKER_TTL_S)
        parts = [r.get("drift", {}) for w, _, r in reports if w != self.worker_id]
        windows = freshest([*parts, self.drift_results()])
        versions = [
            w
            for w in windows.values()
            if w["model"] == name and (version is None or w["version"] == version)
        ]
        if not versions and not any(s.name == name for s in self.manager.states):
            raise ModelNotFound(name, version)
        return {"model": name, "versions": sorted(versions, key=lambda w: str(w["version"]))}

    # -- model repository --------------------------------------------------------

    def index(self, body: bytes) -> list[dict[str, str]]:
        """The repository index for a REST body (``{"ready": true|false}`` or empty)."""
        only_ready = False
        if body.strip():
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"request body is not valid JSON: {exc}") from None
            if not isinstance(payload, dict) or not isinstance(payload.get("ready", False), bool):
                raise InvalidInput('the index request must be {"ready": true|false}')
            only_ready = payload.get("ready", False)
        return self.index_entries(only_ready)

    def index_entries(self, only_ready: bool) -> list[dict[str, str]]:
        return [
            {"name": s.name, "version": s.version, "state": s.state, "reason": s.reason}
            for s in self.manager.states
            if not only_ready or s.state == "READY"
        ]

    async def load(self, name: str) -> None:
        """Load a model (versions per its policy) in every worker; 400 if it fails."""
        await asyncio.to_thread(self.registry.set_loaded, name, True)
        await self.converge()
        failed = [s for s in self.manager.states if s.name == name and s.failed]
        if failed:
            raise ModelNotReady(name, failed[0].version, failed[0].reason)

    async def unload(self, name: str) -> None:
        """Unload every version of a model in every worker."""
        await asyncio.to_thread(self.registry.set_loaded, name, False)
        await self.converge()

    async def converge(self) -> None:
        """Apply the registry here, then wait until every live worker has applied it."""
        await self.manager.reconcile()
        await asyncio.to_thread(self._report)
        target = self.manager.generation
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONVERGE_TIMEOUT_S
        while loop.time() < deadline:
            reports = await asyncio.to_thread(self.database.worker_reports, WORKER_TTL_S)
            if all(gen >= target for _, gen, _ in reports):
                return
            await asyncio.sleep(self.sync_interval_s / 2)
        log.warning("workers_not_converged", extra={"generation": target})

    # -- what deploy asks of the fleet (deploy.Fleet) --------------------------------------

    def load_failures(self) -> dict[tuple[str, str], str]:
        return {(s.name, s.version): s.reason for s in self.manager.states if s.failed}

    async def endpoint_counters(self, endpoint: str) -> dict[str, dict[str, Any]]:
        """One endpoint's router counters by live worker, this one's live."""
        reports = await asyncio.to_thread(self.database.worker_reports, WORKER_TTL_S)
        counters = {
            worker_id: report.get("endpoints", {}).get(endpoint, {})
            for worker_id, _, report in reports
            if worker_id != self.worker_id
        }
        counters[self.worker_id] = self._own_arms().get(endpoint, {})
        return counters

    async def endpoint_report(self, endpoint: str) -> dict[str, Any]:
        """Requests, errors and latency per arm, summed over every live worker."""
        current = await asyncio.to_thread(self.deployments.current, endpoint)
        per_worker = list((await self.endpoint_counters(endpoint)).values())
        parts: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for stats in per_worker:
            for kind in ("arms", "shadows"):
                for label, value in stats.get(kind, {}).items():
                    parts.setdefault((kind, label), []).append(value)
        arms = [
            {
                "arm": a.label,
                "weight": a.weight,
                **merge_arm_stats(parts.get(("arms", a.label), [])),
            }
            for a in current.spec.models
        ]
        shadows = [
            {
                "shadow": s.label,
                "sample": s.sample,
                **merge_shadow_stats(parts.get(("shadows", s.label), [])),
            }
            for s in current.spec.shadows
        ]
        totals: dict[str, dict[str, int]] = {}
        for stats in per_worker:
            for kind in ("cache", "bulkhead", "retries", "payload_log"):
                for key, value in (stats.get(kind) or {}).items():
                    totals.setdefault(kind, {}).setdefault(key, 0)
                    totals[kind][key] += value
        fallbacks: dict[str, int] = {}
        cascade_rows: dict[str, int] = {}
        breakers: dict[str, dict[str, Any]] = {}
        for stats in per_worker:
            for label, rows in stats.get("cascade", {}).items():
                cascade_rows[label] = cascade_rows.get(label, 0) + rows
            for reason, count in stats.get("fallbacks", {}).items():
                fallbacks[reason] = fallbacks.get(reason, 0) + count
            for label, b in stats.get("breakers", {}).items():
                merged = breakers.setdefault(label, {"state": "closed", "opened": 0, "rejected": 0})
                merged["opened"] += b["opened"]
                merged["rejected"] += b["rejected"]
                # Each worker has its own breaker: the worst state is the one reported.
                order = ("closed", "half_open", "open")
                if order.index(b["state"]) > order.index(merged["state"]):
                    merged["state"] = b["state"]
        return {
            "endpoint": endpoint,
            "revision": current.revision,
            "arms": arms,
            "shadows": shadows,
            "cache": totals.get("cache"),
            "bulkhead": totals.get("bulkhead"),
            "retries": totals.get("retries"),
            "payload_log": totals.get("payload_log"),
            "breakers": breakers,
            "fallbacks": fallbacks,
            "cascade": cascade_rows,
        }
