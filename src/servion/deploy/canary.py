"""Drives canary rollouts: one task per rollout, in the worker that holds its lease.

Each step is written as a revision, which every worker applies as it applies any
deploy; the task then watches the per-arm counters of all workers (through
their reports) and judges the step. Its state is in the registry, so ``pause``,
``resume`` and ``abort`` work through any worker; ``abort`` restores the stable
revision itself. The driving worker renews a lease in the database as it goes;
when the lease runs out (the worker was killed), any other worker takes the
rollout over at its current step (``adopt``), so a rollout never stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from servion.audit import Auditor
from servion.deploy.fleet import Fleet
from servion.deploy.gates import Verdict, judge
from servion.deploy.rollout import Rollouts, RolloutState, combine, delta, step_spec
from servion.deploy.spec import DeploymentSpec, Rollout
from servion.deploy.store import Deployments, EndpointNotFound
from servion.errors import InvalidInput, ModelNotFound, quoted
from servion.routing import BUCKETS_MS

log = logging.getLogger("servion.deploy")

TICK_S = 0.25
LEASE_S = 3.0
"""How long a driver's claim holds without renewal: a dead driver's rollout waits this long."""
RENEW_EVERY_S = 1.0


class RolloutNotFound(ModelNotFound):
    """The endpoint has had no canary rollout (404)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint)
        self.message = f"endpoint {quoted(endpoint)} has no rollout"


class CanaryDriver:
    """Starts, steps, judges, pauses, resumes and aborts canary rollouts."""

    def __init__(self, deployments: Deployments, fleet: Fleet, audit: Auditor) -> None:
        self.deployments = deployments
        self.fleet = fleet
        self.audit = audit
        self.rollouts = Rollouts(deployments.registry)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.observed: dict[str, dict[str, Any]] = {}
        """Per endpoint this worker drives: the step's share and the gates' results so far
        (``{"percent": 10.0, "gates": {"passed": 1, "failed": 0}}``), for the metrics."""

    async def start(self, spec: DeploymentSpec, user: str) -> dict[str, Any]:
        """Check a canary spec against the endpoint and start moving traffic."""
        endpoint = spec.endpoint
        existing = await asyncio.to_thread(self.rollouts.find, endpoint)
        if existing is not None and existing.active:
            raise InvalidInput(
                f"endpoint {quoted(endpoint)} has a rollout {existing.state}: resume or"
                " abort it first (servion rollout)"
            )
        await asyncio.to_thread(self.deployments.check, spec)
        try:
            current = await asyncio.to_thread(self.deployments.current, endpoint)
        except EndpointNotFound:
            raise InvalidInput(
                f"endpoint {quoted(endpoint)} is not deployed: a canary needs a stable"
                " revision to compare with (deploy it once without rollout)"
            ) from None
        canary = spec.models[0]
        if any(a.label == canary.label for a in current.spec.models):
            raise InvalidInput(
                f"rollout: {quoted(canary.label)} already serves endpoint {quoted(endpoint)}"
            )
        # Checked as a step will serve it: beside the stable arms, answering the same requests.
        await asyncio.to_thread(self.deployments.check, step_spec(current.spec, spec, 50))
        state = await asyncio.to_thread(
            self.rollouts.start, spec, current.revision, user, self.fleet.worker_id, LEASE_S
        )
        self._drive_here(endpoint, user)
        return state.to_dict()

    async def adopt(self) -> None:
        """Take over every active rollout whose driver's lease has run out."""
        for endpoint in await asyncio.to_thread(self.rollouts.orphans):
            task = self._tasks.get(endpoint)
            if task is not None and not task.done():
                continue
            held = await asyncio.to_thread(
                self.rollouts.hold, endpoint, self.fleet.worker_id, LEASE_S
            )
            if held:
                state = await self._need(endpoint)
                log.warning(
                    "rollout_adopted",
                    extra={"endpoint": endpoint, "previous_driver": state.driver},
                )
                self._drive_here(endpoint, state.created_by)

    def _drive_here(self, endpoint: str, user: str) -> None:
        task = asyncio.create_task(self._drive(endpoint, user))
        self._tasks[endpoint] = task
        keeper = asyncio.create_task(self._keep_lease(endpoint, task))
        task.add_done_callback(lambda _: keeper.cancel())

    async def _keep_lease(self, endpoint: str, task: asyncio.Task[None]) -> None:
        """Renew the lease while the driver runs; stop the driver if another took it."""
        while not task.done():
            await asyncio.sleep(RENEW_EVERY_S)
            try:
                held = await asyncio.to_thread(
                    self.rollouts.hold, endpoint, self.fleet.worker_id, LEASE_S
                )
            except Exception:  # the database is busy: try again, the lease has slack
                log.exception("rollout_lease_renewal_failed", extra={"endpoint": endpoint})
                continue
            if not held:
                state = await self._need(endpoint)
                if state.active:
                    log.warning("rollout_lease_lost", extra={"endpoint": endpoint})
                task.cancel()
                return

    async def status(self, endpoint: str) -> dict[str, Any]:
        state = await asyncio.to_thread(self.rollouts.find, endpoint)
        if state is None:
            raise RolloutNotFound(endpoint)
        return state.to_dict()

    async def pause(self, endpoint: str) -> dict[str, Any]:
        return await self._move(endpoint, "running", "paused")

    async def resume(self, endpoint: str, user: str) -> dict[str, Any]:
        answer = await self._move(endpoint, "paused", "running")
        task = self._tasks.get(endpoint)
        if task is None or task.done():  # the worker that drove it is gone: drive it here
            held = await asyncio.to_thread(
                self.rollouts.hold, endpoint, self.fleet.worker_id, LEASE_S
            )
            if held:
                self._drive_here(endpoint, user)
        return answer

    async def abort(self, endpoint: str, user: str) -> dict[str, Any]:
        state = await self._need(endpoint)
        if not state.active:
            raise InvalidInput(f"the rollout of {quoted(endpoint)} is already {state.state}")
        await asyncio.to_thread(
            self.rollouts.update, endpoint, state="aborted", reason=f"aborted by {user}"
        )
        await self._restore(state, user)
        return (await self._need(endpoint)).to_dict()

    async def _move(self, endpoint: str, from_state: str, to_state: str) -> dict[str, Any]:
        state = await self._need(endpoint)
        if state.state != from_state:
            raise InvalidInput(
                f"the rollout of {quoted(endpoint)} is {state.state}, not {from_state}"
            )
        await asyncio.to_thread(self.rollouts.update, endpoint, state=to_state)
        return (await self._need(endpoint)).to_dict()

    async def _need(self, endpoint: str) -> RolloutState:
        state = await asyncio.to_thread(self.rollouts.find, endpoint)
        if state is None:
            raise RolloutNotFound(endpoint)
        return state

    async def _restore(self, state: RolloutState, user: str) -> None:
        current = await asyncio.to_thread(self.deployments.current, state.endpoint)
        if current.revision != state.base_revision:
            await asyncio.to_thread(
                self.deployments.rollback, state.endpoint, state.base_revision, user
            )
            await self.fleet.converge()

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()

    # -- the driver --------------------------------------------------------------------

    async def _drive(self, endpoint: str, user: str) -> None:
        try:
            await self._steps(endpoint, user)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("rollout_failed", extra={"endpoint": endpoint})
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    self.rollouts.update, endpoint, state="aborted", reason="the driver failed"
                )

    async def _steps(self, endpoint: str, user: str) -> None:
        state = await self._need(endpoint)
        rollout = state.spec.rollout
        assert rollout is not None
        base = await asyncio.to_thread(self.deployments.get, endpoint, state.base_revision)
        canary_label = state.spec.models[0].label
        stable_labels = [a.label for a in base.spec.models]
        for index in range(max(state.step, 0), len(rollout.steps)):
            percent = rollout.steps[index]
            state = await self._need(endpoint)
            if not state.active:
                return
            if index != state.step:
                spec = step_spec(base.spec, state.spec, percent)
                action = "promote" if percent >= 100 else "rollout"
                canary = state.spec.models[0]
                with self.audit.operation(
                    "promote" if percent >= 100 else "rollout_step",
                    user=user,
                    environment=state.spec.environment,
                    endpoint=endpoint,
                    command=f"canary rollout of {canary.label} on {endpoint}",
                    model_name=canary.model,
                    model_version=canary.version,
                    previous_version=base.spec.models[0].version if base.spec.models else None,
                    deployment_strategy="canary",
                    rollback_available=True,
                ) as op:
                    await asyncio.to_thread(self.deployments.append, spec, action, None, user)
                    await self.fleet.converge()
                    op.resources_affected = [f"endpoint:{endpoint}", f"canary:{percent:g}%"]
                await asyncio.to_thread(
                    self.rollouts.update,
                    endpoint,
                    step=index,
                    step_started_at=time.time(),
                    reason=f"step {index + 1}/{len(rollout.steps)}: canary at {percent:g} %",
                )
            seen = self.observed.setdefault(endpoint, {"gates": {"passed": 0, "failed": 0}})
            seen["percent"] = percent
            if percent >= 100:
                seen.pop("percent")  # a share of a running rollout; this one has ended
                await asyncio.to_thread(
                    self.rollouts.update,
                    endpoint,
                    state="promoted",
                    reason=f"{canary_label} serves all traffic",
                )
                log.info("rollout_promoted", extra={"endpoint": endpoint, "canary": canary_label})
                return
            verdict = await self._watch(endpoint, canary_label, stable_labels, rollout)
            if verdict is None:
                seen.pop("percent", None)
                return  # aborted or paused-and-gone; the state says which
            seen["gates"]["passed" if verdict.go_on else "failed"] += 1
            if not verdict.go_on:
                seen.pop("percent", None)
            log.info(
                "rollout_step_judged",
                extra={
                    "endpoint": endpoint,
                    "step": index + 1,
                    "go_on": verdict.go_on,
                    "reason": verdict.reason,
                },
            )
            if not verdict.go_on:
                await asyncio.to_thread(
                    self.rollouts.update,
                    endpoint,
                    state="rolled_back",
                    reason=f"step {index + 1} at {percent:g} %: {verdict.reason}",
                )
                with self.audit.operation(
                    "rollback",
                    user=user,
                    environment=state.spec.environment,
                    endpoint=endpoint,
                    command=f"canary gate failed: {verdict.reason}",
                    model_name=state.spec.models[0].model,
                    model_version=base.spec.models[0].version if base.spec.models else None,
                    previous_version=state.spec.models[0].version,
                    deployment_strategy="canary",
                    rollback_available=False,
                ) as op:
                    await self._restore(await self._need(endpoint), user)
                    op.resources_affected = [f"endpoint:{endpoint}"]
                log.warning(
                    "rollout_rolled_back", extra={"endpoint": endpoint, "reason": verdict.reason}
                )
                return

    async def _watch(
        self, endpoint: str, canary: str, stable: list[str], rollout: Rollout
    ) -> Verdict | None:
        """Wait out one step and judge it; None when the rollout stopped meanwhile."""
        # Counters from other workers arrive within a second: start from a settled view.
        await asyncio.sleep(1.0)
        before = await self._totals(endpoint)
        started = time.monotonic()
        paused_for = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            state = await self._need(endpoint)
            if state.state == "paused":
                paused_for += TICK_S
                continue
            if state.state != "running":
                return None
            elapsed = time.monotonic() - started - paused_for
            if elapsed < rollout.interval_s:
                continue
            now = await self._totals(endpoint)
            seen, base = _step(before, now, [canary]), _step(before, now, stable)
            needed = rollout.gates.min_requests
            if min(seen["requests"], base["requests"]) >= needed or (
                # A stable arm short of samples leaves latency unjudged; errors still count.
                seen["requests"] >= needed and elapsed >= rollout.max_wait_s
            ):
                return judge(seen, base, rollout.gates)
            if elapsed >= rollout.max_wait_s:
                return Verdict(
                    False,
                    f"only {seen['requests']} canary requests in {elapsed:.0f} s"
                    f" (the gate needs {rollout.gates.min_requests})",
                )

    async def _totals(self, endpoint: str) -> dict[str, dict[str, dict[str, Any]]]:
        """Cumulative per-arm counters, by live worker."""
        counters = await self.fleet.endpoint_counters(endpoint)
        return {worker: stats.get("arms", {}) for worker, stats in counters.items()}


def _step(
    before: dict[str, dict[str, dict[str, Any]]],
    now: dict[str, dict[str, dict[str, Any]]],
    labels: list[str],
) -> dict[str, Any]:
    """What ``labels`` did between two snapshots, over the workers alive in both: a worker
    that died (or started) meanwhile would make a difference of totals meaningless."""
    parts = [
        delta(arms.get(label, _EMPTY), before[worker].get(label))
        for worker, arms in now.items()
        if worker in before
        for label in labels
    ]
    return combine(parts)


_EMPTY: dict[str, Any] = {"requests": 0, "errors": 0, "latency": [0] * (len(BUCKETS_MS) + 1)}
