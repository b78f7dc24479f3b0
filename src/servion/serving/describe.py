"""What a model or an endpoint says about itself (metadata, configuration, readiness),
protocol-neutral: REST writes these as JSON, gRPC as its messages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from servion.routing import EndpointRouter
from servion.runtime.formats import platform_of
from servion.serving.loaded import LoadedModel
from servion.serving.manager import ModelManager
from servion.serving.sleep import Asleep

if TYPE_CHECKING:
    from servion.registry import ModelVersion


def metadata(manager: ModelManager, name: str, version: str | None) -> dict[str, Any]:
    """The Open Inference Protocol's model metadata, for a model version or an endpoint."""
    router = manager.endpoints.get(name) if version is None else None
    if router is None:
        asleep = _asleep(manager, name, version)
        if asleep is not None:
            versions = sorted({*manager.served.get(name, []), *_sleeping(manager, name)})
            said = asleep.metadata or _unloaded_metadata(asleep.meta)
            return {**said, "versions": versions}
        model = manager.resolve(name, version)
        return model.metadata(manager.served[model.name])
    models = _models(manager, router)
    if router.ensemble is not None:
        return _ensemble_metadata(router, models)
    # Versions as /v2/models/{endpoint}/versions/{v} takes them: bare when they are unique.
    versions = [r.version for r in router.routes]
    if len(set(versions)) < len(versions):
        versions = [r.label for r in router.routes]
    meta = models[0].metadata(versions)
    return {**meta, "name": name}


def config(manager: ModelManager, name: str, version: str | None) -> dict[str, Any]:
    """Triton's model configuration subset, for a model version or an endpoint's first arm."""
    asleep = _asleep(manager, name, version) if name not in manager.endpoints else None
    if asleep is not None:
        return {**(asleep.config or _unloaded_config(manager, asleep.meta)), "name": name}
    return {**model_config(configured(manager, name, version)), "name": name}


def configured(manager: ModelManager, name: str, version: str | None) -> LoadedModel:
    """The model whose configuration ``name`` reports: itself, or an endpoint's first arm."""
    router = manager.endpoints.get(name) if version is None else None
    if router is None:
        return manager.resolve(name, version)
    return _models(manager, router)[0]


def ready(manager: ModelManager, name: str, version: str | None) -> None:
    """Nothing when ``name`` answers now; the reason it does not, raised, otherwise."""
    router = manager.endpoints.get(name) if version is None else None
    if router is None:
        if _asleep(manager, name, version) is None:  # asleep, it answers (after its load)
            manager.resolve(name, version)
    else:
        _models(manager, router)


def _asleep(manager: ModelManager, name: str, version: str | None) -> Asleep | None:
    """The version scaled to zero that a request for ``name[:version]`` would wake."""
    sleep = manager.sleep
    if sleep is None or (version is None and name in manager.latest):
        return None
    key = sleep.find(name, version)
    return sleep.asleep[key] if key is not None else None


def _unloaded_metadata(meta: ModelVersion) -> dict[str, Any]:
    """What a version never loaded here says of itself: its registered signature."""
    return {
        "name": meta.name,
        "platform": platform_of(meta.format),
        "inputs": [s.to_dict() for s in meta.signature.inputs],
        "outputs": [s.to_dict() for s in meta.signature.outputs],
    }


def _unloaded_config(manager: ModelManager, meta: ModelVersion) -> dict[str, Any]:
    batching = manager.batching_of(meta.name)
    batched = meta.signature.batched
    return {
        "name": meta.name,
        "version": meta.version,
        "platform": platform_of(meta.format),
        "format": meta.format,
        "max_batch_size": batching.max_batch_size if batched else 0,
        "dynamic_batching": batching.to_dict() if batched else None,
        "input": [s.to_dict() for s in meta.signature.inputs],
        "output": [s.to_dict() for s in meta.signature.outputs],
        "sha256": meta.sha256,
    }


def _sleeping(manager: ModelManager, name: str) -> list[str]:
    return manager.sleep.versions(name) if manager.sleep is not None else []


def model_config(model: LoadedModel) -> dict[str, Any]:
    return {
        "name": model.name,
        "version": model.version,
        "platform": model.runtime.platform,
        "format": model.meta.format,
        "max_batch_size": model.max_batch_size if model.batched else 0,
        "dynamic_batching": model.batcher.config.to_dict() if model.batched else None,
        "input": [s.to_dict() for s in model.signature.inputs],
        "output": [s.to_dict() for s in model.signature.outputs],
        "sha256": model.meta.sha256,
    }


def _models(manager: ModelManager, router: EndpointRouter) -> list[LoadedModel]:
    return [manager.resolve(r.model, r.version) for r in router.routes]


def _ensemble_metadata(router: EndpointRouter, models: list[LoadedModel]) -> dict[str, Any]:
    """The ensemble's own inputs (what its steps read from the request) and outputs."""
    ensemble = router.ensemble
    assert ensemble is not None
    inputs: dict[str, dict[str, Any]] = {}
    produced: dict[str, dict[str, Any]] = {}
    for step, model in zip(ensemble.steps, models, strict=True):
        specs = {t.name: t for t in model.signature.inputs}
        for model_input, source in step.inputs:
            origin, _, name = source.partition(".")
            if origin == "$request" and name not in inputs:
                inputs[name] = {**specs[model_input].to_dict(), "name": name}
        for t in model.signature.outputs:
            produced[f"{step.name}.{t.name}"] = t.to_dict()
    outputs = [{**produced[src], "name": name} for name, src in ensemble.outputs]
    return {
        "name": router.name,
        "versions": [str(router.revision)],
        "platform": "ensemble",
        "inputs": list(inputs.values()),
        "outputs": outputs,
    }
