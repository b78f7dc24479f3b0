"""The deploy service: every change to an endpoint, audited, applied everywhere.

Deploy (blue-green, or the start of a canary), rollback, undeploy and the rollout
actions each write their started and finished audit events under the environment's
policy, change the registry, and answer once every live worker serves the result.
The transport (the admin API) only authorizes and decodes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from servion.audit import Auditor, change_ticket_policy
from servion.deploy.canary import CanaryDriver
from servion.deploy.fleet import Fleet
from servion.deploy.spec import DeploymentSpec
from servion.deploy.store import Deployments, EndpointNotFound
from servion.errors import InvalidInput, ModelNotReady, quoted

STRICTNESS = ("dev", "staging", "production")


@dataclass(frozen=True, slots=True)
class Change:
    """Who asks for a change, and how it is to be recorded."""

    user: str
    command: str
    change_ticket: str | None = None


class DeployService:
    def __init__(self, deployments: Deployments, fleet: Fleet, audit: Auditor) -> None:
        self.deployments = deployments
        self.fleet = fleet
        self.audit = audit
        self.canaries = CanaryDriver(deployments, fleet, audit)

    async def deploy(self, spec: DeploymentSpec, change: Change) -> dict[str, Any]:
        """Serve ``spec``: switched at once (blue-green), or stepped as a canary."""
        if spec.rollout is not None and spec.rollout.strategy == "canary":
            start = self.canaries.start(spec, change.user)
            return await self._audited("deploy", change, spec.endpoint, start, spec, "canary")
        await self._not_during_a_rollout(spec.endpoint, "a deploy")
        switch = self._blue_green(spec, change.user)
        result = await self._audited("deploy", change, spec.endpoint, switch, spec, "blue_green")
        await self._supersede(spec.endpoint, f"revision {result['revision']} deployed after it")
        return result

    async def rollback(self, endpoint: str, to: int | None, change: Change) -> dict[str, Any]:
        """Serve an earlier revision again (default: the last good one from before any
        canary rollout's steps)."""
        await self._not_during_a_rollout(endpoint, "a rollback")
        work = self._rollback(endpoint, to, change)
        result = await self._audited("rollback", change, endpoint, work)
        await self._supersede(endpoint, f"rolled back to revision {result['source_revision']}")
        return result

    async def undeploy(self, endpoint: str, change: Change) -> dict[str, Any]:
        await self._not_during_a_rollout(endpoint, "an undeploy")
        result = await self._audited("undeploy", change, endpoint, self._undeploy(endpoint))
        await self._supersede(endpoint, "the endpoint was undeployed")
        return result

    async def _not_during_a_rollout(self, endpoint: str, what: str) -> None:
        """A rollout is one operation: nothing else changes its endpoint while it runs."""
        state = await asyncio.to_thread(self.canaries.rollouts.find, endpoint)
        if state is not None and state.active:
            raise InvalidInput(
                f"endpoint {quoted(endpoint)} has a canary rollout {state.state}"
                f" ({state.reason or 'starting'}): {what} now would fight it. Abort it first"
                f" (servion rollout abort {endpoint}), or let it finish"
            )

    async def _supersede(self, endpoint: str, why: str) -> None:
        """A finished rollout's state no longer describes what is served: say so."""
        state = await asyncio.to_thread(self.canaries.rollouts.find, endpoint)
        if state is not None and state.state in ("promoted", "rolled_back", "aborted"):
            await asyncio.to_thread(
                self.canaries.rollouts.update, endpoint, state="superseded", reason=why
            )

    async def rollout(self, endpoint: str, action: str, change: Change) -> dict[str, Any]:
        """``pause``, ``resume`` or ``abort`` the endpoint's canary rollout."""
        actions: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            "pause": lambda: self.canaries.pause(endpoint),
            "resume": lambda: self.canaries.resume(endpoint, change.user),
            "abort": lambda: self.canaries.abort(endpoint, change.user),
        }
        if action not in actions:
            raise InvalidInput(f"a rollout can be paused, resumed or aborted, not {quoted(action)}")
        operation = "rollback" if action == "abort" else f"rollout_{action}"
        return await self._audited(operation, change, endpoint, actions[action]())

    async def _blue_green(self, spec: DeploymentSpec, user: str) -> dict[str, Any]:
        """Record a revision, apply it in every worker, and answer once all serve it.

        If an arm fails to load, the previous revision is restored (as a new
        revision) and the deploy is refused: a failed deploy leaves the old one serving.
        """
        started = time.perf_counter()
        revision = await asyncio.to_thread(self.deployments.deploy, spec, user)
        await self.fleet.converge()
        failures = self.fleet.load_failures()
        failed = [a for a in spec.models if (a.model, a.version) in failures]
        if failed:
            arm = failed[0]
            reason = f"{arm.label} failed to load: {failures[(arm.model, arm.version)]}"
            await asyncio.to_thread(self.deployments.mark_failed, spec.endpoint, revision.revision)
            if revision.revision > 1:
                await asyncio.to_thread(self.deployments.rollback, spec.endpoint, None, user)
            else:
                await asyncio.to_thread(self.deployments.undeploy, spec.endpoint)
            await self.fleet.converge()
            raise ModelNotReady(spec.endpoint, None, f"deploy refused: {reason}")
        return {**revision.to_dict(), "applied_ms": _ms_since(started)}

    async def _rollback(self, endpoint: str, to: int | None, change: Change) -> dict[str, Any]:
        started = time.perf_counter()
        revision = await asyncio.to_thread(self.deployments.rollback, endpoint, to, change.user)
        await self.fleet.converge()
        return {**revision.to_dict(), "applied_ms": _ms_since(started)}

    async def _undeploy(self, endpoint: str) -> dict[str, Any]:
        await asyncio.to_thread(self.deployments.undeploy, endpoint)
        await self.fleet.converge()
        return {"endpoint": endpoint, "deployed": False}

    async def _audited(
        self,
        operation: str,
        change: Change,
        endpoint: str,
        work: Awaitable[dict[str, Any]],
        spec: DeploymentSpec | None = None,
        strategy: str | None = None,
    ) -> dict[str, Any]:
        """Run a change under the environment policy, with its started and finished events."""
        try:
            current = await asyncio.to_thread(self.deployments.current, endpoint)
        except EndpointNotFound:
            current = None
        # The stricter of what serves now and what is asked for: a spec that leaves its
        # environment out (a canary) cannot take a production endpoint past the policy.
        environments = [s.environment for s in (spec, current.spec if current else None) if s]
        environment = max(environments, key=STRICTNESS.index) if environments else "dev"
        arms = [*(spec.models if spec else ())]
        first = arms[0] if arms else None
        previous = current.spec.models[0].version if current and current.spec.models else None
        try:
            with self.audit.operation(
                operation,
                user=change.user,
                change_ticket=change.change_ticket,
                environment=environment,
                command=change.command,
                endpoint=endpoint,
                model_name=first.model if first else endpoint,
                model_version=first.version if first else None,
                previous_version=previous,
                deployment_strategy=strategy,
                rollback_available=current is not None,
                resources=spec.resources.model_dump() if spec and spec.resources else None,
            ) as op:
                op.set(policy=change_ticket_policy(environment, change.change_ticket, operation))
                result = await work
                op.resources_affected = [f"endpoint:{endpoint}", *(a.label for a in arms)]
                if "applied_ms" in result:
                    op.performance_metrics = {"applied_ms": result["applied_ms"]}
        finally:
            if asyncio.iscoroutine(work):
                work.close()  # refused by the policy before it ran: no "never awaited"
        return result


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1e3, 1)
