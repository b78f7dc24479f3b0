"""The model manager: which model versions this worker serves, and their life.

The registry is the source of truth; ``reconcile`` brings this worker in line
with it (version policies, load/unload requests, new and deleted versions).
Loading runs in a thread so the event loop keeps answering; the new set of
models is swapped in with one assignment, so a request sees either the old
set or the new one, never half of each.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from servion.batching import BatchingConfig
from servion.drift.quality import QualityCheck
from servion.errors import ModelNotFound, ModelNotReady, ServionError
from servion.registry import ModelRegistry, ModelVersion, VersionPolicy
from servion.routing import EndpointPolicy, EndpointRouter
from servion.serving.loaded import LoadedModel, RuntimeHandle, timed_warmup
from servion.serving.process import resident_bytes, trim_heap
from servion.serving.selection import Key, selected
from servion.serving.sleep import Sleep

log = logging.getLogger("servion.serving")

PlanSource = Callable[[], list[tuple[EndpointPolicy, EndpointPolicy | None]]]
"""Each deployed endpoint's current policy and the one before it (kept loaded for rollback)."""

SERVES = ("arm", "stage", "step")
"""Parts of an endpoint that answer requests: their versions gate readiness."""


def _no_endpoints() -> list[tuple[EndpointPolicy, EndpointPolicy | None]]:
    return []


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

    def __init__(
        self,
        registry: ModelRegistry,
        batching: BatchingConfig,
        plans: PlanSource = _no_endpoints,
    ) -> None:
        self.registry = registry
        self.plans = plans
        self.batching = batching
        self.models: dict[Key, LoadedModel] = {}
        self.latest: dict[str, LoadedModel] = {}
        self.served: dict[str, list[str]] = {}
        self.failures: dict[Key, str] = {}
        self.states: list[ModelState] = []
        self.endpoints: dict[str, EndpointRouter] = {}
        """Deployed endpoints by name, each at its current revision."""
        self.generation = -1
        self.on_retire: list[Callable[[LoadedModel], None]] = []
        """Told of each version leaving service (its counters, for the metrics to keep)."""
        self.on_unloaded: list[Callable[[str, str, float], None]] = []
        """Told of each version's runtime unloaded, and how many seconds that took."""
        self.on_endpoints: list[Callable[[dict[str, EndpointRouter]], None]] = []
        """Told of the endpoints' routers after each swap (the payload logger's channels)."""
        self._all_loaded = False
        self.lock = asyncio.Lock()
        """Held while the set of loaded versions changes."""
        self.pinned: set[Key] = set()
        """Versions endpoints serve (or served a revision ago): never scaled to zero."""
        self.sleep: Sleep | None = None
        """Scale to zero, when the server has it on (see ``servion.serving.sleep``)."""
        self._quality: dict[Key, tuple[str, QualityCheck | None]] = {}
        """Each version's data quality check and the settings and profile stamp it was
        built from (profiles are large: one is read again only when it changed)."""

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

    def wakeable(self, name: str, version: str | None) -> bool:
        """Whether a request that ``resolve`` refused would load a version not loaded."""
        return self.sleep is not None and self.sleep.find(name, version) is not None

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
        async with self.lock:
            generation = await asyncio.to_thread(self.registry.database.generation)
            versions = await asyncio.to_thread(self.registry.list_versions)
            policies = await asyncio.to_thread(self.registry.policies)
            configs = await asyncio.to_thread(self._configs)
            plans = await asyncio.to_thread(self.plans)
            wanted = selected(versions, policies)
            required = set(wanted)
            by_key = {(mv.name, mv.version): mv for mv in versions}
            # Versions behind an endpoint are served whatever their policy, and so
            # are those of the revision before, so that a rollback loads nothing.
            # Shadows and the fallback load too, but an endpoint serves without them.
            pinned: set[Key] = set()
            for current, previous in plans:
                for role, ref in current.model_refs():
                    mv = by_key.get((ref.model, ref.version))
                    if mv is not None:
                        wanted[(mv.name, mv.version)] = mv
                        pinned.add((mv.name, mv.version))
                        if role in SERVES:
                            required.add((mv.name, mv.version))
                for arm in previous.arms if previous else ():
                    mv = by_key.get((arm.ref.model, arm.ref.version))
                    if mv is not None:
                        wanted[(mv.name, mv.version)] = mv
                        pinned.add((mv.name, mv.version))
            self.pinned = pinned
            asleep = self.sleep.asleep if self.sleep is not None else {}
            if self.sleep is not None:
                self.sleep.forget(set(wanted) - self.pinned)
            models = {
                k: m
                if m.config == configs.get(k[0], self.batching)
                else m.rebatched(configs.get(k[0], self.batching))
                for k, m in self.models.items()
                if k in wanted
            }
            self.states = self._states(versions, policies, wanted, models, loading=True)
            for key, mv in wanted.items():
                if key not in models and key not in asleep:
                    if self.sleep is not None and self.sleep.budget and key not in pinned:
                        self.sleep.park(mv)  # the cache loads it on its first request
                        continue
                    loaded = await self._load(mv, configs.get(mv.name, self.batching))
                    if loaded is not None:
                        models[key] = loaded
            routers = self._routers([current for current, _ in plans], models)
            checks = await asyncio.to_thread(self._quality_checks, set(models))
            for view in [
                *models.values(),
                *(m for r in routers.values() for m in r.models.values()),
            ]:
                view.quality = checks.get((view.name, view.version))
            self._swap(models, routers)
            # Readiness waits for what is served, not for the rollback standby.
            self._all_loaded = all(k in models or k in asleep for k in required)
            # Loaded models live until the next change: keep them out of the
            # collector's full passes, which would stall requests for milliseconds.
            gc.freeze()
            self.states = self._states(versions, policies, wanted, models, loading=False)
            self.generation = generation

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
            elif self.sleep is not None and key in self.sleep.asleep:
                reason = self.sleep.asleep[key].reason
                states.append(ModelState(mv.name, mv.version, "READY", reason, True))
            elif key in wanted and loading:
                states.append(ModelState(mv.name, mv.version, "LOADING", "loading", True))
            elif key in wanted:
                reason = self.failures.get(key, "failed to load")
                states.append(ModelState(mv.name, mv.version, "UNAVAILABLE", reason, True))
            else:
                why = "unloaded" if not loaded else f"not selected by version policy {policy}"
                if loaded and mv.held and policy.kind == "latest":
                    why = (
                        f"held: its signature changes; confirm with servion models confirm"
                        f" {mv.label}"
                    )
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

    def _quality_checks(self, keys: set[Key]) -> dict[Key, QualityCheck | None]:
        """Each served version's data quality check, from its profile and its model's
        policy (or the server's)."""
        default = self.registry.settings.quality
        own = self.registry.drift.quality()
        stamps = self.registry.drift.stamps()
        built: dict[Key, tuple[str, QualityCheck | None]] = {}
        for key in keys:
            policy, margin = own.get(key[0], (default.policy, default.range_margin))
            stamp = f"{policy} {margin} {stamps.get(key, '')}"
            known = self._quality.get(key)
            if known is not None and known[0] == stamp:
                built[key] = known
                continue
            profile = self.registry.drift.profile(*key) if key in stamps else None
            check = QualityCheck.from_profile(profile, policy, margin) if profile else None
            built[key] = (stamp, check)
        self._quality = built
        return {key: check for key, (_, check) in built.items()}

    async def _load(self, mv: ModelVersion, config: BatchingConfig) -> LoadedModel | None:
        key = (mv.name, mv.version)
        try:
            if self.sleep is not None and self.sleep.budget:  # the cache counts what it adds
                await asyncio.to_thread(trim_heap)
            rss_before = resident_bytes()
            started = time.perf_counter()
            runtime = await asyncio.to_thread(self.registry.open_runtime, mv)
            loaded = time.perf_counter()
            rss_after = resident_bytes()
            execution_ns = await asyncio.to_thread(timed_warmup, runtime)
            warmed = time.perf_counter()
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
        handle = RuntimeHandle(runtime, mv.label, execution_ns)
        handle.on_unloaded = functools.partial(self._unloaded, mv.name, mv.version)
        handle.load_s, handle.warmup_s = loaded - started, warmed - loaded
        handle.memory_bytes = max(0, rss_after - rss_before)
        log.info(
            "model_loaded",
            extra={
                "model": mv.name,
                "version": mv.version,
                "load_s": round(handle.load_s, 4),
                "warmup_s": round(handle.warmup_s, 4),
            },
        )
        return LoadedModel(mv, handle, config)

    async def load_version(self, mv: ModelVersion) -> LoadedModel | None:
        """Load one version with its batching and quality check (a woken one)."""
        config = (await asyncio.to_thread(self._configs)).get(mv.name, self.batching)
        loaded = await self._load(mv, config)
        if loaded is not None:
            key = (mv.name, mv.version)
            checks = await asyncio.to_thread(self._quality_checks, {*self.models, key})
            loaded.quality = checks.get(key)
        return loaded

    def replace(self, models: dict[Key, LoadedModel]) -> None:
        """Serve ``models`` (the endpoints unchanged); call holding ``lock``."""
        self._swap(models, self.endpoints)
        asleep = self.sleep.asleep if self.sleep is not None else {}
        self.states = [
            replace(s, state="READY", reason=asleep[(s.name, s.version)].reason)
            if (s.name, s.version) in asleep
            else replace(s, state="READY", reason="")
            if (s.name, s.version) in models
            else s
            for s in self.states
        ]

    def batching_of(self, name: str) -> BatchingConfig:
        """A model's batching settings in effect (its own over the server's)."""
        return self._configs().get(name, self.batching)

    def _unloaded(self, name: str, version: str, unload_s: float) -> None:
        for hook in self.on_unloaded:
            hook(name, version, unload_s)

    def _routers(
        self, plans: list[EndpointPolicy], models: dict[Key, LoadedModel]
    ) -> dict[str, EndpointRouter]:
        """A router per endpoint, each carrying over the live state of the one before."""
        routers = {}
        for policy in plans:
            old = self.endpoints.get(policy.name)
            router = EndpointRouter(policy, old)
            if policy.batching is not None:
                config = BatchingConfig.from_dict(dict(policy.batching), base=self.batching)
                for route in router.routes:
                    base = models.get((route.model, route.version))
                    if base is None:
                        continue
                    kept = old.models.get(route.label) if old is not None else None
                    # The endpoint's own queue over the same runtime, kept while unchanged.
                    if kept is not None and kept.config == config and kept.handle is base.handle:
                        router.models[route.label] = kept
                    else:
                        router.models[route.label] = LoadedModel(
                            base.meta, base.handle, config, base.stats
                        )
            routers[policy.name] = router
        return routers

    def _swap(self, models: dict[Key, LoadedModel], endpoints: dict[str, EndpointRouter]) -> None:
        latest: dict[str, LoadedModel] = {}
        served: dict[str, list[str]] = {}
        for model in sorted(models.values(), key=lambda m: m.meta.semver):
            latest[model.name] = model
            served.setdefault(model.name, []).append(model.version)
        for (name, _), asleep in self.sleep.asleep.items() if self.sleep is not None else ():
            if name in latest and latest[name].meta.semver < asleep.meta.semver:
                del latest[name]  # a request for the name's latest wakes the newer one
        kept_views = {id(m) for m in models.values()}
        kept_views |= {id(m) for r in endpoints.values() for m in r.models.values()}
        old_views = [*self.models.values()]
        old_views += [m for r in self.endpoints.values() for m in r.models.values()]
        live = {id(m.handle) for m in models.values()}
        for name, router in endpoints.items():
            old = self.endpoints.get(name)
            if old is None or old.policy.revision != router.policy.revision:
                log.info(
                    "endpoint_applied", extra={"endpoint": name, "revision": router.policy.revision}
                )
        for name in self.endpoints.keys() - endpoints.keys():
            log.info("endpoint_removed", extra={"endpoint": name})
        self.models, self.latest, self.served = models, latest, served
        self.endpoints = endpoints
        for told in self.on_endpoints:
            told(endpoints)
        # A request resolves its model and submits to it between two awaits, and
        # this swap runs between two awaits too: from here on no request can
        # reach a view left behind. What such a view has queued still runs, and
        # a runtime no view serves is unloaded once its last execution ends.
        retired: set[int] = set()
        for view in old_views:
            if id(view) not in kept_views:
                view.batcher.close()
                if id(view.handle) not in live:
                    view.handle.retire()
                    if id(view.stats) not in retired:  # views of one version share stats
                        retired.add(id(view.stats))
                        for hook in self.on_retire:
                            hook(view)
