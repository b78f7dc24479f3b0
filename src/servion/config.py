"""Typed settings, loaded once in ``cli/`` (or a test) and passed down explicitly.

Every section reads its own ``SERVION_<SECTION>_*`` environment variables;
nothing else in servion reads ``os.environ``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from servion.errors import ConfigError, printable

GB = 1024**3


class RegistrySettings(BaseSettings):
    """Where the registry keeps its metadata and artifacts, and what it admits."""

    model_config = SettingsConfigDict(env_prefix="SERVION_REGISTRY_", frozen=True)

    max_artifact_bytes: int = 10 * GB
    """Largest artifact admitted without ``--allow-large`` (and a recorded reason)."""
    probe_timeout_s: float = 120.0
    """A model that takes longer than this to load and answer a smoke inference is refused."""
    max_archive_bytes: int = 20 * GB
    """Cap on the bytes an archived model may expand to (against archive bombs)."""
    max_expansion_ratio: float = Field(default=100.0, gt=0)
    """Most bytes an archive may expand to per byte it occupies, as a whole and per zip
    member (plus 1 MiB, for small padded files): a 1 MB bomb stops at 101 MB, not the cap."""


class RuntimeSettings(BaseSettings):
    """How runtimes use the machine."""

    model_config = SettingsConfigDict(env_prefix="SERVION_RUNTIME_", frozen=True)

    onnx_intra_op_threads: int = 1
    """Threads one ONNX inference may use. One per worker process keeps cores for other workers."""
    onnx_inter_op_threads: int = 1
    """Threads for running independent ONNX graph branches in parallel."""
    torch_threads: int = Field(default=1, ge=1, le=1024)
    """Threads torch uses for one worker process's inference (it applies to the whole process)."""
    trusted_globals: tuple[str, ...] = ()
    """Extra pickle globals ("pkg.module.Name", or "pkg.module.*") admitted besides the defaults."""


class BatchingSettings(BaseSettings):
    """Server-wide batching defaults; a model's own settings (``servion models batching``) win."""

    model_config = SettingsConfigDict(env_prefix="SERVION_BATCHING_", frozen=True)

    dynamic: bool = True
    """Merge concurrent requests into one execution. Costs one event-loop turn at concurrency 1."""
    max_batch_size: int = 128
    """Most rows in one request (larger: 413) and in one execution."""
    max_queue_delay_us: int = 0
    """Longest wait for a fuller batch; spent only when recent load says more are coming."""
    max_queue_size: int = 1024
    """Requests waiting per model version; beyond it, 503 with Retry-After."""
    latency_budget_us: int = 0
    """Cap on the added wait (0: only max_queue_delay_us caps it)."""
    default_timeout_us: int = 0
    """Deadline of requests that name none (0: none)."""


class ServerSettings(BaseSettings):
    """How ``servion serve`` listens and what it accepts."""

    model_config = SettingsConfigDict(env_prefix="SERVION_SERVER_", frozen=True)

    host: str = "127.0.0.1"
    """Loopback by default: listening elsewhere requires an admin token."""
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1)
    """Worker processes sharing the port; one per core by default."""
    admin_token: str | None = None
    """Bearer token for control operations (repository load/unload)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level of the JSON log lines on stderr."""
    access_log: bool = False
    """One JSON line per REST answer (method, path, status, bytes, latency, request id)."""
    access_log_sample: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of answers the access log writes (5xx and slow ones are always written)."""
    slow_request_ms: float = Field(default=1000.0, ge=0.0)
    """Answers slower than this are logged as ``slow_request`` (0: never)."""
    metrics: bool = True
    """Count for ``GET /metrics`` (off: the hot path counts nothing for it)."""
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """Also answer ``GET /metrics`` on this port (the supervisor serves it)."""
    metrics_dir: str | None = None
    """Where workers leave their metrics for each other; set by the supervisor per run."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names answered besides the loopback ones on a loopback bind ('*': any); when
    given on a network bind, only these are answered."""
    max_body_bytes: int = 10 * 1024 * 1024
    """Larger request bodies are answered 413 before being read."""
    max_json_depth: int = 32
    """Deepest JSON nesting accepted in a request."""
    graceful_timeout_s: float = 30.0
    """How long in-flight requests may run after SIGTERM before workers exit anyway."""
    sync_interval_s: float = 0.2
    """How often each worker checks the registry for load/unload changes."""
    http: Literal["native", "uvicorn"] = "native"
    """HTTP front end: servion's own (httptools) or uvicorn running the ASGI app."""
    drain_delay_s: float = Field(default=5.0, ge=0, le=600)
    """On SIGTERM, readiness turns false at once while the listener keeps accepting and
    serving for this long, so load balancers stop sending before connections close."""
    scale_to_zero_after_s: float | None = Field(default=None, gt=0, le=30 * 86_400)
    """Unload a model version that answered nothing for this long; its next request loads
    it again and waits (versions behind endpoints stay loaded). None: never."""
    model_memory_bytes: int | None = Field(default=None, ge=1 << 20)
    """The model cache: versions load on their first request, and the least recently used
    are unloaded before loading one would pass this many resident bytes. None: every
    version loads at start."""
    keep_alive_s: float = Field(default=5.0, gt=0)
    """Idle keep-alive connections are closed after this many seconds."""
    inference_auth: bool = False
    """Inference needs a bearer token too (any role; see ``servion tokens``)."""
    grpc: bool = True
    """Serve the Open Inference Protocol over gRPC as well, on ``grpc_port``."""
    grpc_port: int = Field(default=8081, ge=0, le=65535)
    grpc_max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=2**31 - 1)
    """Largest gRPC message either way; larger ones get RESOURCE_EXHAUSTED."""
    tracing: bool = False
    """OpenTelemetry spans for every inference, sent over OTLP/HTTP (needs ``servion[otel]``).
    The exporter, sampler and service name follow the standard ``OTEL_*`` variables."""
    otlp_endpoint: str | None = None
    """Base URL of the OTLP/HTTP collector (spans go to ``{url}/v1/traces``); unset, the
    ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` variables or http://localhost:4318 decide."""


class DeploySettings(BaseSettings):
    """Bounds on the resources a deployment spec may request."""

    model_config = SettingsConfigDict(env_prefix="SERVION_DEPLOY_", frozen=True)

    max_gpus: int = Field(default=8, ge=0)
    max_memory_gb: float = Field(default=256.0, gt=0)
    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(default=100, ge=1)


class DriftSettings(BaseSettings):
    """Live sampling of inputs and outputs and the windows they are compared in."""

    model_config = SettingsConfigDict(env_prefix="SERVION_DRIFT_", frozen=True)

    enabled: bool = True
    sample_every: int = Field(default=10, ge=1)
    """Every k-th request per model version is copied for drift; the others cost a count."""
    max_samples_per_s: float = Field(default=50.0, gt=0)
    """Under heavy traffic the sampling thins out (k doubles) so that a worker copies about
    this many requests a second: a window needs a few thousand rows, not every request."""
    reservoir_rows: int = Field(default=2000, ge=10)
    """Rows kept per model version and window (reservoir sampling beyond that)."""
    reference_rows: int = Field(default=1000, ge=10)
    """Sampled rows that become the reference of a version registered without one."""
    window_s: float = Field(default=60.0, gt=0)
    """How often each worker compares its window with the reference."""
    psi: float = Field(default=0.2, gt=0)
    """A feature drifts when its PSI is above this (and the test rejects at ``alpha``)."""
    alpha: float = Field(default=0.01, gt=0, lt=1)


class QualitySettings(BaseSettings):
    """Data quality checks of requests against their version's reference profile, for
    models without a policy of their own (``servion drift quality``)."""

    model_config = SettingsConfigDict(env_prefix="SERVION_QUALITY_", frozen=True)

    policy: Literal["off", "accept", "flag", "refuse"] = "accept"
    """What a request whose inputs fail a check gets: nothing checked (``off``), counted
    (``accept``), also named in the response parameters (``flag``), or a 400 (``refuse``)."""
    range_margin: float = Field(default=0.0, ge=0, le=100)
    """A feature's range is the reference's [min, max] widened by this times its span on
    each side: a reference of a thousand rows rarely holds the extremes of live data."""


class CostSettings(BaseSettings):
    """What one replica costs to run, for ``servion_cost_*`` and ``servion status``.

    A replica is one ``servion serve`` (the supervisor and its workers) on one machine or
    pod, as ``resources.replicas`` of a deployment spec counts them."""

    model_config = SettingsConfigDict(env_prefix="SERVION_COST_", frozen=True)

    replica_hour: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """Price of running this replica for an hour (its machine or pod), GPUs aside."""
    gpu_hour: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """Price of one GPU for an hour, charged for every GPU NVML sees, on top of the replica."""
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    """ISO 4217 code of both prices; only ``servion status`` shows it."""
    window_s: float = Field(default=60.0, ge=1, le=3600)
    """Requests answered over the last this many seconds give the rate that turns the price
    per hour into a price per 1,000 requests."""


class AuditSettings(BaseSettings):
    """Where audit events go and how long they are kept."""

    model_config = SettingsConfigDict(env_prefix="SERVION_AUDIT_", frozen=True)

    directory: Path | None = None
    """JSON-lines files, one per UTC day (default: $SERVION_HOME/audit)."""
    retention_days: int = Field(default=90, ge=1, le=36_500)
    """Daily files older than this are deleted."""
    stdout: bool = False
    """Also print every event as a JSON line on standard output."""
    service: str = "ml-serving"
    team: str = "ml-engineering"
    forward_url: str | None = None
    """An Elasticsearch-compatible ``_bulk`` URL to forward events to (e.g. http://es:9200/_bulk)."""
    forward_index: str = "servion-audit"
    forward_batch: int = Field(default=200, ge=1, le=10_000)


class Settings(BaseModel):
    """The root of servion's configuration.

    >>> s = Settings.load(home=Path("/tmp/h"))
    >>> s.db_url
    'sqlite:////tmp/h/registry.db'
    """

    model_config = {"frozen": True}

    home: Path
    db_url: str
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    deploy: DeploySettings = Field(default_factory=DeploySettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    cost: CostSettings = Field(default_factory=CostSettings)

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def audit_dir(self) -> Path:
        return self.audit.directory or self.home / "audit"

    @classmethod
    def load(cls, home: Path | None = None, db_url: str | None = None) -> Settings:
        """Settings from arguments, then ``SERVION_HOME`` / ``SERVION_DB_URL``, then defaults."""
        resolved = home or Path(os.environ.get("SERVION_HOME") or ".servion")
        resolved = resolved.expanduser().absolute()
        url = db_url or os.environ.get("SERVION_DB_URL") or f"sqlite:///{resolved / 'registry.db'}"
        try:
            return cls(home=resolved, db_url=url)
        except ValidationError as exc:  # a section read a bad environment variable
            raise ConfigError(environment_problems(exc)) from None


def environment_problems(exc: ValidationError) -> str:
    """``exc`` of a settings section, told by the environment variables at fault.

    >>> try:
    ...     CostSettings(replica_hour=-1)
    ... except ValidationError as exc:
    ...     print(environment_problems(exc))
    SERVION_COST_REPLICA_HOUR=-1: Input should be greater than or equal to 0
    """
    section = next((c for c in BaseSettings.__subclasses__() if c.__name__ == exc.title), None)
    prefix = str(section.model_config.get("env_prefix", "")) if section else ""
    return "; ".join(
        f"{prefix}{'_'.join(str(p) for p in e['loc']).upper()}={printable(str(e['input']), 40)}: "
        f"{e['msg']}"
        for e in exc.errors()
    )
