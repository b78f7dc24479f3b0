"""The model manager: which model versions this worker serves, and their life.

The registry is the source of truth; ``reconcile`` brings this worker in line
with it (version policies, load/unload requests, new and deleted versions).
Loading runs in a thread so the event loop keeps answering; the new set of
models is swapped in with one assignment, so a request sees either the old
set or the new one, never half of each.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass
from typing import Any

from servion.batching import BatchingConfig
from servion.deploy import Deployments, Revision
from servion.errors import ModelNotFound, ModelNotReady, ServionError
from servion.registry import ModelRegistry, ModelVersion, VersionPolicy
from servion.routing import (
    ArmStats,
    Bulkhead,
    CircuitBreaker,
    EndpointRouter,
    ResponseCache,
    RetryBudget,
    Route,
    ShadowRoute,
    ShadowStats,
)
from servion.server.loaded import LoadedModel

log = logging.getLogger("servion.server")

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ModelState:
    """A registered version's state here, as the repository index reports it."""

    name: str
    version: str
    state: str
    reason: str
    wanted: bool
    """True when the registry says this version should be served here."""

    @property
    def failed(self) -> bool:
        return self.wanted and self.state == "UNAVAILABLE"


class ModelManager:
    """Loads, serves and unloads model versions in one worker process."""

    def __init__(self, registry: ModelRegistry, batching: BatchingConfig) -> None:
        self.registry = registry
        self.batching = batching
        self.models: dict[Key, LoadedModel] = {}
        self.latest: dict[str, LoadedModel] = {}
        self.served: dict[str, list[str]] = {}
        self.failures: dict[Key, str] = {}
        self.states: list[ModelState] = []
        self.endpoints: dict[str, EndpointRouter] = {}
        """Deployed endpoints by name, each at its current revision."""
        self.deployments = Deployments(registry)
        self.generation = -1
        self._all_loaded = False
        self._lock = asyncio.Lock()

    # -- hot path -------------------------------------------------------------

    def resolve(self, name: str, version: str | None) -> LoadedModel:
        """The loaded model for a request, or the precise reason there is none."""
        if version is None:
            model = self.latest.get(name)
            if model is not None:
                return model
        else:
            model = self.models.get((name, version))
            if model is not None:
                return model
        raise self._why_missing(name, version)

    def _why_missing(self, name: str, version: str | None) -> ServionError:
        states = [s for s in self.states if s.name == name]
        if not states:
            return ModelNotFound(name)
        if version is not None:
            states = [s for s in states if s.version == version]
            if not states:
                return ModelNotFound(name, version)
            if states[0].state == "LOADING":
                return ModelNotReady(name, version, "loading")
            return ModelNotFound(name, version, f"is not served ({states[0].reason})")
        if any(s.state == "LOADING" for s in states):
            return ModelNotReady(name, None, "loading")
        return ModelNotReady(name, None, states[-1].reason)

    # -- state ------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once every version that should be served has loaded (strict, as Triton)."""
        return self._all_loaded

    async def reconcile(self) -> None:
        """Load what the registry says should be served; unload the rest."""
        async with self._lock:
            generation = await asyncio.to_thread(self.registry.generation)
            versions = await asyncio.to_thread(self.registry.list_versions)
            policies = await asyncio.to_thread(self.registry.policies)
            configs = await asyncio.to_thread(self._configs)
            serving = await asyncio.to_thread(self.deployments.serving)
            wanted = self._wanted(versions, policies)
            by_key = {(mv.name, mv.version): mv for mv in versions}
            required = set(wanted)

            def want(model: str, version: str | None, serves: bool) -> None:
                mv = by_key.get((model, version or ""))
                if mv is not None:
                    wanted[(mv.name, mv.version)] = mv
                    if serves:  # answers requests: gates readiness
                        required.add((mv.name, mv.version))

            # Versions behind an endpoint are served whatever their policy, and so
            # are those of the revision before, so that a rollback loads nothing.
            for current, previous in serving:
                spec = current.spec
                for arm in spec.models:
                    want(arm.model, arm.version, True)
                for arm in previous.spec.models if previous else ():
                    want(arm.model, arm.version, False)
                for step in spec.ensemble.steps if spec.ensemble else ():
                    want(step.model, step.version, True)
                for stage in spec.cascade.then if spec.cascade else ():
                    want(stage.model, stage.version, True)
                # Shadows and the fallback load too, but an endpoint serves without them.
                for shadow in spec.shadows:
                    want(shadow.model, shadow.version, False)
                if spec.fallback is not None and spec.fallback.model is not None:
                    want(spec.fallback.model, spec.fallback.version, False)
            models = {
                k: m.rebatched(configs.get(k[0], self.batching))
                if m.config != configs.get(k[0], self.batching)
                else m
                for k, m in self.models.items()
                if k in wanted
            }
            self.states = self._states(versions, policies, wanted, models, loading=True)
            for key, mv in wanted.items():
                if key not in models:
                    loaded = await self._load(mv, configs.get(mv.name, self.batching))
                    if loaded is not None:
                        models[key] = loaded
            self._swap(models, self._routers([current for current, _ in serving], models))
            # Readiness waits for what is served, not for the rollback standby.
            self._all_loaded = all(k in models for k in required)
            # Loaded models live until the next change: keep them out of the
            # collector's full passes, which would stall requests for milliseconds.
            gc.freeze()
            self.states = self._states(versions, policies, wanted, models, loading=False)
            self.generation = generation

    @staticmethod
    def _wanted(
        versions: list[ModelVersion], policies: dict[str, tuple[VersionPolicy, bool]]
    ) -> dict[Key, ModelVersion]:
        by_name: dict[str, list[ModelVersion]] = {}
        for mv in versions:  # already ordered oldest to newest
            by_name.setdefault(mv.name, []).append(mv)
        wanted: dict[Key, ModelVersion] = {}
        for name, mvs in by_name.items():
            policy, loaded = policies.get(name, (VersionPolicy("latest"), True))
            if not loaded:
                continue
            chosen = set(policy.select([mv.version for mv in mvs]))
            wanted.update({(name, mv.version): mv for mv in mvs if mv.version in chosen})
        return wanted

    def _states(
        self,
        versions: list[ModelVersion],
        policies: dict[str, tuple[VersionPolicy, bool]],
        wanted: dict[Key, ModelVersion],
        models: dict[Key, LoadedModel],
        loading: bool,
    ) -> list[ModelState]:
        states = []
        for mv in versions:
            key = (mv.name, mv.version)
            policy, loaded = policies.get(mv.name, (VersionPolicy("latest"), True))
            if key in models:
                states.append(ModelState(mv.name, mv.version, "READY", "", True))
            elif key in wanted and loading:
                states.append(ModelState(mv.name, mv.version, "LOADING", "loading", True))
            elif key in wanted:
                reason = self.failures.get(key, "failed to load")
                states.append(ModelState(mv.name, mv.version, "UNAVAILABLE", reason, True))
            else:
                why = "unloaded" if not loaded else f"not selected by version policy {policy}"
                states.append(ModelState(mv.name, mv.version, "UNAVAILABLE", why, False))
        return states

    def _configs(self) -> dict[str, BatchingConfig]:
        """Each model's batching: its own settings over the server's defaults."""
        configs = {}
        for name, own in self.registry.batching().items():
            try:
                configs[name] = BatchingConfig.from_dict(own, base=self.batching)
            except ServionError as exc:  # stored before a rule tightened: serve on defaults
                log.error("batching_config_invalid", extra={"model": name, "error": exc.message})
        return configs

    async def _load(self, mv: ModelVersion, config: BatchingConfig) -> LoadedModel | None:
        key = (mv.name, mv.version)
        try:
            runtime = await asyncio.to_thread(self.registry.open_runtime, mv)
            await asyncio.to_thread(runtime.warmup)
        except ServionError as exc:
            # Reasons reach HTTP clients (index, load): no paths of this machine.
            self.failures[key] = exc.message.replace(
                str(self.registry.settings.home), "$SERVION_HOME"
            )
            log.error(
                "model_load_failed",
                extra={"model": mv.name, "version": mv.version, "error": exc.message},
            )
            return None
        except Exception as exc:  # a model's own code may raise anything
            self.failures[key] = f"failed to load: {type(exc).__name__}"
            log.exception("model_load_failed", extra={"model": mv.name, "version": mv.version})
            return None
        self.failures.pop(key, None)
        log.info("model_loaded", extra={"model": mv.name, "version": mv.version})
        return LoadedModel(mv, runtime, config)

    def _routers(
        self, revisions: list[Revision], models: dict[Key, LoadedModel]
    ) -> dict[str, EndpointRouter]:
        """A router per endpoint; an arm's counters survive a new revision."""
        kept: dict[tuple[str, str], ArmStats] = {
            (name, route.label): route.stats
            for name, router in self.endpoints.items()
            for route in router.routes
        }
        kept_shadows: dict[tuple[str, str], ShadowStats] = {
            (name, shadow.label): shadow.stats
            for name, router in self.endpoints.items()
            for shadow in router.shadows
        }
        routers = {}
        for rev in revisions:
            spec = rev.spec
            refs: list[tuple[str, str, float]] = [
                (a.model, a.version, a.weight) for a in spec.models
            ]
            if spec.ensemble is not None:  # its steps, counted like arms but never drawn
                refs = [(s.model, s.version, 0.0) for s in spec.ensemble.steps]
            routes = [
                Route(m, v, w, kept.get((spec.endpoint, f"{m}:{v}"), ArmStats()))
                for m, v, w in refs
            ]
            shadows = [
                ShadowRoute(
                    s.model,
                    s.version,
                    s.sample,
                    kept_shadows.get((spec.endpoint, s.label), ShadowStats()),
                )
                for s in spec.shadows
            ]
            sticky = spec.sticky.header if spec.sticky else None
            old = self.endpoints.get(spec.endpoint)
            cache = None
            if spec.cache is not None:
                cache = ResponseCache[Any](spec.cache.max_entries, spec.cache.ttl_s)
            bulkhead = None
            if spec.concurrency is not None:
                limit, queue = spec.concurrency.limit, spec.concurrency.queue
                bulkhead = old.bulkhead if old is not None else None
                # Keep the one in use (its running count) unless its limits changed.
                if bulkhead is None or (bulkhead.limit, bulkhead.queue) != (limit, queue):
                    bulkhead = Bulkhead(spec.endpoint, limit, queue)
            breakers: dict[str, CircuitBreaker] = {}
            if spec.circuit_breaker is not None:
                cb = spec.circuit_breaker
                wanted = (cb.error_rate, cb.window_s, cb.min_requests, cb.open_s)
                for arm in spec.models:
                    found = old.breakers.get(arm.label) if old is not None else None
                    # An arm keeps its breaker (and its state) across revisions.
                    breakers[arm.label] = (
                        found
                        if found is not None and found.settings == wanted
                        else CircuitBreaker(*wanted)
                    )
            timeout_s = spec.timeout_ms / 1e3 if spec.timeout_ms else None
            retries = None
            if spec.retries is not None:
                retries = old.retries if old is not None else None
                # The budget carries over a new revision with the same settings.
                if retries is None or (retries.attempts, retries.share) != (
                    spec.retries.attempts,
                    spec.retries.budget,
                ):
                    retries = RetryBudget(spec.retries.attempts, spec.retries.budget)
            own: dict[str, LoadedModel] = {}
            if spec.batching is not None:
                # The endpoint's own queues over the same loaded runtimes; statistics shared.
                config = BatchingConfig.from_dict(spec.batching.settings(), base=self.batching)
                for arm in spec.models:
                    base = models.get((arm.model, arm.version))
                    if base is not None:
                        own[arm.label] = LoadedModel(base.meta, base.runtime, config, base.stats)
            routers[spec.endpoint] = EndpointRouter(
                spec.endpoint,
                rev.revision,
                routes,
                sticky,
                shadows=shadows,
                cache=cache,
                bulkhead=bulkhead,
                breakers=breakers,
                fallback=spec.fallback,
                timeout_s=timeout_s,
                cascade=spec.cascade,
                retries=retries,
                ensemble=spec.ensemble,
                models=own,
            )
        return routers

    def _swap(self, models: dict[Key, LoadedModel], endpoints: dict[str, EndpointRouter]) -> None:
        gone = [m for k, m in self.models.items() if k not in models]
        latest: dict[str, LoadedModel] = {}
        served: dict[str, list[str]] = {}
        for model in sorted(models.values(), key=lambda m: m.meta.semver):
            latest[model.name] = model
            served.setdefault(model.name, []).append(model.version)
        self.models, self.latest, self.served = models, latest, served
        self.endpoints = endpoints
        # Inference runs on the event loop between two awaits, and so does
        # this swap: no request can be inside a runtime being unloaded.
        for model in gone:
            model.batcher.drain()
            model.runtime.unload()
            log.info("model_unloaded", extra={"model": model.name, "version": model.version})
