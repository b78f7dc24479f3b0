"""The model registry: validated, versioned, content-addressed models.

Registration validates at the door (name, version, path, format, size,
checksum, pickle allow-list, ONNX external data), stores the artifact under
its SHA-256, probes it in a child process, and records its signature and the
environment it was registered with. Loading re-verifies the checksum.
"""

from __future__ import annotations

import getpass
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from servion.config import Settings
from servion.errors import (
    ChecksumMismatch,
    DuplicateVersion,
    ModelNotFound,
    ValidationFailed,
    quoted,
)
from servion.registry import tables
from servion.registry.archive import extract_archive, is_archive
from servion.registry.environment import recorded_environment
from servion.registry.holds import hold_for
from servion.registry.lineage import LineageStore, forget_lineage, record_lineage
from servion.registry.mlflow import mlflow_model_in
from servion.registry.naming import Version, check_digest, check_name, check_source, parse_version
from servion.registry.policy import VersionPolicy
from servion.registry.probe import probe
from servion.registry.profiles import DriftStore, forget_version
from servion.registry.store import ArtifactStore, StoredArtifact, source_size
from servion.registry.tables import REGISTRY
from servion.registry.versions import ModelVersion, RegisterRequest, row_to_version
from servion.runtime import (
    PICKLE_FORMATS,
    Runtime,
    Signature,
    check_options,
    check_static,
    entrypoint,
    is_model_file,
    make_runtime,
)
from servion.runtime.onnx_checks import check_external_data
from servion.state import Database, utcnow

DeleteGuard = Callable[[sa.Connection, str, str], None]
"""Asked before a version is deleted (connection, name, version); raises to refuse."""
NameGuard = Callable[[sa.Connection, str], None]
"""Asked before a new model name is registered (connection, name); raises to refuse."""


class ModelRegistry:
    """Registered models and their artifacts.

    >>> reg = ModelRegistry(Settings.load(home=tmp))                      # doctest: +SKIP
    >>> reg.register(RegisterRequest("demo", Path("m.onnx"), "v1.0.0"))   # doctest: +SKIP
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.home.mkdir(parents=True, exist_ok=True)
        self.database = Database(settings.db_url)
        """The shared metadata database (generation, worker heartbeats, other tracks)."""
        self.database.migrate(REGISTRY)
        self.engine = self.database.engine
        self.store = ArtifactStore(settings.artifacts_dir)
        self.drift = DriftStore(self.engine)
        """Drift reference profiles and thresholds."""
        self.lineage = LineageStore(self.engine)
        """Where derived versions came from."""
        self._delete_guards: list[DeleteGuard] = []
        self._name_guards: list[NameGuard] = []

    def close(self) -> None:
        self.database.close()

    # -- registration -------------------------------------------------------

    def register(
        self, req: RegisterRequest, on_step: Callable[[str], None] | None = None
    ) -> ModelVersion:
        """Validate, store, probe and record a model version; ``on_step`` hears each stage
        as it starts (for a progress display)."""
        step = on_step or (lambda _: None)
        step("checking the name, version and file")
        check_name(req.name)
        semver = parse_version(req.version)
        source = check_source(req.path)
        checksum = check_digest(req.checksum)
        self._refuse_duplicate(req.name, req.version)
        with self._unpacked(source) as unpacked:
            origin = mlflow_model_in(unpacked, req.format)
            unpacked = origin.artifact if origin else unpacked
            fmt = origin.format if origin else (req.format or _detect(unpacked))
            if fmt == "python" and not req.trust_code:
                raise ValidationFailed("custom Python models run arbitrary code: add --trust-code")
            options = check_options(fmt, req.runtime_options, req.sample)
            if req.trust_code:
                options["trust_code"] = True
            self._check_size(unpacked, req.large_reason)
            step("copying into the store and computing its SHA-256")
            stored = self.store.put(unpacked)
        try:
            if checksum and checksum != stored.sha256:
                raise ChecksumMismatch(
                    f"sha256 of the file is {stored.sha256}, not the expected {checksum}"
                )
            entry = entrypoint(self.store.path(stored.key), fmt)
            step("checking the file without running it")
            self._static_checks(fmt, entry)
            step("loading it in a child process and running a smoke inference")
            result = probe(
                fmt,
                self.store.path(stored.key),
                self.settings.runtime,
                options,
                req.sample,
                self.settings.registry.probe_timeout_s,
            )
            step("recording the version")
            recorded = origin.record if origin else None
            return self._insert(
                req, semver, fmt, stored, result.signature, options, source, recorded
            )
        except BaseException:
            self._forget_artifact(stored.sha256)
            raise

    @contextmanager
    def _unpacked(self, source: Path) -> Iterator[Path]:
        # A model format that happens to be a zip (skops) is a model, not an archive.
        if source.is_dir() or is_model_file(source) or not is_archive(source):
            yield source
            return
        tmp = Path(tempfile.mkdtemp(prefix="servion-unpack-"))
        try:
            limits = self.settings.registry
            root = extract_archive(
                source,
                tmp / "x",
                max_total_bytes=limits.max_archive_bytes,
                max_expansion_ratio=limits.max_expansion_ratio,
            )
            children = list(root.iterdir())
            # An archive of one folder means "this folder is the model".
            yield children[0] if len(children) == 1 and children[0].is_dir() else root
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _check_size(self, path: Path, large_reason: str | None) -> None:
        size = source_size(path)
        limit = self.settings.registry.max_artifact_bytes
        if size > limit and not large_reason:
            raise ValidationFailed(
                f"the model is {size} bytes, over the {limit}-byte limit: pass "
                "--allow-large REASON to register it anyway (the reason is recorded)"
            )

    def _static_checks(self, fmt: str, entry: Path) -> None:
        # Checks that need no code execution run here, before the probe child
        # ever opens the file.
        if fmt in PICKLE_FORMATS:
            from servion.runtime.pickle_check import check_pickle_file
            from servion.runtime.safe_pickle import AllowList

            allow = AllowList.default().extended(self.settings.runtime.trusted_globals)
            check_pickle_file(entry, allow)
        elif fmt == "onnx":
            check_external_data(entry)
        else:
            check_static(fmt, entry)

    def _refuse_duplicate(self, name: str, version: str) -> None:
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(tables.model_versions.c.id).where(
                    tables.model_versions.c.name == name, tables.model_versions.c.version == version
                )
            ).first()
        if found:
            raise DuplicateVersion(f"{name}:{version} is already registered")

    def _insert(
        self,
        req: RegisterRequest,
        semver: Version,
        fmt: str,
        stored: StoredArtifact,
        signature: Signature,
        options: dict[str, Any],
        source: Path,
        mlflow: dict[str, Any] | None,
    ) -> ModelVersion:
        now = utcnow()
        user = req.user or _os_user()
        try:
            with self.engine.begin() as conn:
                exists = conn.execute(
                    sa.select(tables.models.c.name).where(tables.models.c.name == req.name)
                ).first()
                if not exists:
                    for guard in self._name_guards:
                        guard(conn, req.name)
                    conn.execute(tables.models.insert().values(name=req.name, created_at=now))
                held = None if req.allow_signature_change else hold_for(conn, req, signature)
                conn.execute(
                    tables.model_versions.insert().values(
                        name=req.name,
                        version=req.version,
                        major=semver.major,
                        minor=semver.minor,
                        patch=semver.patch,
                        format=fmt,
                        sha256=stored.sha256,
                        size_bytes=stored.size_bytes,
                        artifact=stored.key,
                        signature=signature.to_dict(),
                        environment=recorded_environment(mlflow),
                        options=options,
                        large_reason=req.large_reason,
                        source_name=source.name,
                        registered_at=now,
                        registered_by=user,
                        held=held,
                    )
                )
                if req.lineage is not None:
                    record_lineage(conn, req.name, req.version, req.lineage)
                Database.bump(conn)
        except sa.exc.IntegrityError:
            raise DuplicateVersion(f"{req.name}:{req.version} is already registered") from None
        return self.get(req.name, req.version)

    def confirm(self, name: str, version: str) -> ModelVersion:
        """Lift a version's signature hold: ``latest:N`` policies serve it from now on."""
        mv = self.get(name, version)
        if mv.held is None:
            raise ValidationFailed(f"{mv.label} is not held: nothing to confirm")
        with self.engine.begin() as conn:
            mv_t = tables.model_versions
            conn.execute(
                mv_t.update()
                .where((mv_t.c.name == name) & (mv_t.c.version == version))
                .values(held=None)
            )
            Database.bump(conn)
        return self.get(name, version)

    def _forget_artifact(self, sha256: str) -> None:
        with self.engine.connect() as conn:
            used = conn.execute(
                sa.select(tables.model_versions.c.id).where(
                    tables.model_versions.c.sha256 == sha256
                )
            ).first()
        if not used:
            self.store.remove(sha256)

    # -- queries ------------------------------------------------------------

    def list_versions(self, name: str | None = None) -> list[ModelVersion]:
        """Every registered version (of one model), oldest first by semantic version."""
        query = sa.select(tables.model_versions).order_by(
            tables.model_versions.c.name,
            tables.model_versions.c.major,
            tables.model_versions.c.minor,
            tables.model_versions.c.patch,
        )
        if name is not None:
            query = query.where(tables.model_versions.c.name == name)
        with self.engine.connect() as conn:
            return [row_to_version(r) for r in conn.execute(query)]

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """One version, or the latest when ``version`` is None."""
        versions = self.list_versions(name)
        if version is not None:
            versions = [v for v in versions if v.version == version]
        if not versions:
            raise ModelNotFound(name, version)
        return versions[-1]

    def batching(self) -> dict[str, dict[str, Any]]:
        """Each model's own batching settings (overlaid on the server's defaults)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tables.models.c.name, tables.models.c.batching)).all()
        return {r.name: dict(r.batching or {}) for r in rows}

    def set_batching(self, name: str, settings: dict[str, Any]) -> None:
        """Store a model's batching settings (validated by the caller); running servers follow."""
        self._update_model(name, batching=settings)

    def policies(self) -> dict[str, tuple[VersionPolicy, bool]]:
        """Each model's version policy and whether it should be loaded."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tables.models)).all()
        return {r.name: (VersionPolicy.parse(r.version_policy), bool(r.loaded)) for r in rows}

    # -- changes workers must apply ----------------------------------------

    def add_delete_guard(self, guard: DeleteGuard) -> None:
        """Ask ``guard`` before any version is deleted; it raises to refuse. Guards run
        inside the delete's transaction, so nothing can start using the version meanwhile."""
        if guard not in self._delete_guards:
            self._delete_guards.append(guard)

    def add_name_guard(self, guard: NameGuard) -> None:
        """Ask ``guard`` before a new model name is registered; it raises to refuse."""
        if guard not in self._name_guards:
            self._name_guards.append(guard)

    def delete(self, name: str, version: str) -> ModelVersion:
        """Remove a version; its artifact goes too unless another version shares it.

        A version that a deployed endpoint serves, or would restore on rollback,
        cannot be deleted.
        """
        found = self.get(name, version)
        with self.engine.begin() as conn:
            for guard in self._delete_guards:
                guard(conn, name, version)
            conn.execute(
                tables.model_versions.delete().where(
                    tables.model_versions.c.name == name, tables.model_versions.c.version == version
                )
            )
            forget_version(conn, name, version)
            forget_lineage(conn, name, version)
            left = conn.execute(
                sa.select(tables.model_versions.c.id).where(tables.model_versions.c.name == name)
            ).first()
            if not left:
                conn.execute(tables.models.delete().where(tables.models.c.name == name))
            Database.bump(conn)
        self._forget_artifact(found.sha256)
        return found

    def set_loaded(self, name: str, loaded: bool) -> None:
        """Ask every worker to load (or unload) a model."""
        self._update_model(name, loaded=loaded)

    def set_policy(self, name: str, policy: VersionPolicy) -> None:
        """Choose which versions of a model are served; every version it names must exist."""
        have = [mv.version for mv in self.list_versions(name)]
        if not have:
            raise ModelNotFound(name)
        missing = [v for v in policy.versions if v not in have]
        if missing:
            raise ValidationFailed(
                f"version policy {policy} names {', '.join(missing)}, which {quoted(name)}"
                f" does not have (it has {', '.join(have)})"
            )
        self._update_model(name, version_policy=str(policy))

    def _update_model(self, name: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            result = conn.execute(
                tables.models.update().where(tables.models.c.name == name).values(**values)
            )
            if result.rowcount == 0:
                raise ModelNotFound(name)
            Database.bump(conn)

    # -- loading --------------------------------------------------------------

    def open_runtime(self, mv: ModelVersion) -> Runtime:
        """Verify the artifact's checksum, then create and load its runtime (no warm-up)."""
        path = self.store.verify(mv.artifact, mv.sha256, mv.label)
        # No separate scan here: each runtime's loader is itself the gate
        # (restricted unpickler, skops trusted types, ONNX external-data check).
        runtime = make_runtime(mv.format, path, self.settings.runtime, mv.options)
        runtime.load()
        return runtime


def _detect(path: Path) -> str:
    from servion.runtime import detect_format

    return detect_format(path)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"
