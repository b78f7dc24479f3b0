"""Drift verdicts in the audit trail, once per change rather than once per window.

A model version starts *drifting* when a judged window flags a feature; ``drift_detected``
is written then, and again whenever a window flags a feature not yet flagged since it
started. ``drift_cleared`` is written when a judged window flags nothing. A feature that
flips in and out while others still drift is not written again. An event's resources list
the features drifting (or, cleared, that were) with the window's PSI and p-value, those
that began or stopped drifting marked ``changed``, and the window's rows, reference,
thresholds and worker.

Every worker judges its own window, so what is known to drift lives in one small file
beside the audit files (``drift.state``, changed under ``drift.lock``): the first worker to
see a change records it and writes the event, the others find it recorded. The file, like
the audit files, is per audit directory: servers on several machines sharing one
PostgreSQL registry each write their own events into their own trail. It outlives a
restart, so drift that persists across one is not written again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

from servion.audit import Auditor
from servion.config import Settings

log = logging.getLogger("servion.drift")

STATE_FILE = "drift.state"
LOCK_FILE = "drift.lock"


def _key(feature: dict[str, Any]) -> str:
    # An output may share an input's name: the source keeps them apart.
    return f"{feature['source']}:{feature['feature']}"


class DriftAudit:
    """Audits the changes in what drifts (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.directory = settings.audit_dir
        self.auditor = Auditor(settings, command="servion serve")

    def close(self) -> None:
        self.auditor.close()

    def judged(self, window: dict[str, Any]) -> None:
        """Take one judged window's verdict; audit it if it changes what is known to drift.
        Never raises: a read-only audit folder must not stop drift watching."""
        try:
            self._judged(window)
        except OSError as exc:
            log.warning("drift_audit_failed", extra={"error": str(exc)})

    def _judged(self, window: dict[str, Any]) -> None:
        version = f"{window['model']}:{window['version']}"
        features = {_key(f): f for f in window["features"]}
        drifting = {k for k, f in features.items() if f["drifted"]}
        with self._locked():
            state = self._read()
            before = set(state.get(version, []))
            new = drifting - before
            cleared = not drifting and bool(before)
            if not new and not cleared:
                return
            if cleared:
                del state[version]
            else:
                state[version] = sorted(before | drifting)
            self._write(state)
        if cleared:
            self._record("drift_cleared", window, features, before, before)
        else:
            self._record("drift_detected", window, features, drifting, new)

    def _record(
        self,
        operation: str,
        window: dict[str, Any],
        features: dict[str, dict[str, Any]],
        listed: set[str],
        changed: set[str],
    ) -> None:
        """Each of ``listed`` with this window's verdict, ``changed`` marking those that
        began (or stopped) drifting."""

        def verdict(key: str) -> dict[str, Any]:
            found = features.get(key)
            source, _, name = key.partition(":")
            return {
                "feature": name,
                "source": source,
                "psi": None if found is None else round(found["psi"], 4),
                "pvalue": None if found is None else found["pvalue"],
                "changed": key in changed,
            }

        self.auditor.record(
            operation,
            model_name=window["model"],
            model_version=window["version"],
            resources={
                "features": [verdict(k) for k in sorted(listed)],
                "rows": window["rows"],
                "reference": window["reference"],
                "thresholds": window["thresholds"],
                "worker": window["worker"],
            },
            resources_affected=[f"model:{window['model']}:{window['version']}"],
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / LOCK_FILE).open("ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, list[str]]:
        try:
            value = json.loads((self.directory / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(value, dict):
            return {}
        return {str(k): [str(f) for f in v] for k, v in value.items() if isinstance(v, list)}

    def _write(self, state: dict[str, list[str]]) -> None:
        path = self.directory / STATE_FILE
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(state, sort_keys=True))
        os.replace(temporary, path)
