"""Drift verdicts in the audit trail: one event per change in what drifts, however many
workers judge windows and however often."""

from __future__ import annotations

from typing import Any

from servion.audit import read_events
from servion.config import Settings
from servion.serving.drift_audit import DriftAudit


def window(worker: str, *drifted: str) -> dict[str, Any]:
    features = [
        {"feature": f"X[{j}]", "source": "input", "psi": 0.5, "pvalue": 1e-9, "drifted": False}
        for j in range(4)
    ]
    features.append(
        {"feature": "X[0]", "source": "output", "psi": 0.01, "pvalue": 0.5, "drifted": False}
    )
    for f in features:
        f["drifted"] = f"{f['source']}:{f['feature']}" in drifted
    return {
        "model": "m",
        "version": "v1.0.0",
        "time": 1.0,
        "worker": worker,
        "rows": 500,
        "reference": "file:train.npz",
        "thresholds": {"psi": 0.2, "alpha": 0.01},
        "features": features,
    }


def changes(settings: Settings) -> list[tuple[str, list[str]]]:
    """Each event's operation and the features it says began or stopped drifting."""
    return [
        (e["operation"], [f["feature"] for f in e["resources"]["features"] if f["changed"]])
        for e in read_events(settings.audit_dir)
    ]


def test_two_workers_write_each_change_once(settings: Settings) -> None:
    first, second = DriftAudit(settings), DriftAudit(settings)
    for verdicts in [
        (),  # nothing drifts: nothing to write
        ("input:X[1]",),
        ("input:X[1]",),  # the other worker's window says the same
        ("input:X[1]", "input:X[2]"),  # X[2] joins
        ("input:X[2]",),  # X[1] wavers while X[2] drifts: not a change worth an event
        ("input:X[1]", "input:X[2]"),
        (),  # back to normal
        (),
    ]:
        for audit in (first, second):
            audit.judged(window("w1" if audit is first else "w2", *verdicts))
    first.close()
    second.close()
    assert changes(settings) == [
        ("drift_detected", ["X[1]"]),
        ("drift_detected", ["X[2]"]),
        ("drift_cleared", ["X[1]", "X[2]"]),
    ]


def test_an_event_says_what_drifts_and_against_what(settings: Settings) -> None:
    audit = DriftAudit(settings)
    audit.judged(window("w1", "input:X[3]"))
    audit.close()
    (event,) = read_events(settings.audit_dir)
    assert (event["operation"], event["outcome"]) == ("drift_detected", "success")
    assert (event["model_name"], event["model_version"]) == ("m", "v1.0.0")
    assert event["resources_affected"] == ["model:m:v1.0.0"]
    resources = event["resources"]
    assert resources["features"] == [
        {"feature": "X[3]", "source": "input", "psi": 0.5, "pvalue": 1e-9, "changed": True}
    ]
    assert (resources["rows"], resources["worker"]) == (500, "w1")
    assert resources["thresholds"] == {"psi": 0.2, "alpha": 0.01}


def test_drift_that_outlasts_a_restart_is_not_written_again(settings: Settings) -> None:
    before = DriftAudit(settings)
    before.judged(window("w1", "input:X[0]"))
    before.close()
    after = DriftAudit(settings)  # a restarted server: a new worker, the same audit folder
    after.judged(window("w3", "input:X[0]"))
    after.judged(window("w3", "input:X[0]", "output:X[0]"))  # an output of the same name
    after.close()
    (_, joined) = read_events(settings.audit_dir)
    assert [(f["source"], f["changed"]) for f in joined["resources"]["features"]] == [
        ("input", False),
        ("output", True),
    ]
