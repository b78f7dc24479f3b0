"""The drift and data quality series of ``GET /metrics``.

Drift: per model version, the freshest window any live worker judged (a window describes
the present, so a dead worker's old one is left out). Data quality: counters, added up over
every worker's snapshot like the other counters (a dead worker's last counts stay)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from servion.drift import freshest
from servion.server.metric_families import Sums, counter


def drift_series(live: list[dict[str, Any]]) -> Iterable[Metric]:
    """``servion_drift_*`` gauges from the live workers' snapshots."""
    feature_labels = ["model", "version", "feature"]
    psi = GaugeMetricFamily(
        "servion_drift_psi",
        "Population stability index of a feature's last window against the reference.",
        labels=feature_labels,
    )
    pvalue = GaugeMetricFamily(
        "servion_drift_ks_pvalue",
        "p-value of the feature's last window against the reference (two-sample KS for"
        " numeric features, chi-square for categorical ones).",
        labels=feature_labels,
    )
    detected = GaugeMetricFamily(
        "servion_drift_detected",
        "1 when the feature drifted in the last window (PSI and the test both past their"
        " thresholds), else 0.",
        labels=feature_labels,
    )
    drifted = GaugeMetricFamily(
        "servion_drift_features_drifted",
        "Features of the model version that drifted in the last window.",
        labels=["model", "version"],
    )
    rows = GaugeMetricFamily(
        "servion_drift_window_rows",
        "Sampled rows the last judged window compared.",
        labels=["model", "version"],
    )
    windows = freshest(snap.get("drift", {}) for snap in live)
    for _, window in sorted(windows.items()):
        model, version = str(window["model"]), str(window["version"])
        count = 0
        for f in window["features"]:
            labels = [model, version, str(f["feature"])]
            psi.add_metric(labels, float(f["psi"]))
            pvalue.add_metric(labels, float(f["pvalue"]))
            detected.add_metric(labels, 1.0 if f["drifted"] else 0.0)
            count += bool(f["drifted"])
        drifted.add_metric([model, version], count)
        rows.add_metric([model, version], float(window["rows"]))
    return [psi, pvalue, detected, drifted, rows]


def quality_series(snapshots: list[dict[str, Any]]) -> Iterable[Metric]:
    """``servion_data_quality_*`` counters from every worker's snapshot."""
    findings, requests = Sums(), Sums()
    for snap in snapshots:
        for m in snap.get("models", []):
            for key, count in m.get("quality", {}).items():
                feature, _, check = key.partition("\t")
                findings.add((m["model"], m["version"], feature, check), count)
            for action, count in m.get("screened", {}).items():
                requests.add((m["model"], m["version"], action), count)
    yield counter(
        "servion_data_quality_findings",
        "Input values that failed a data quality check, by feature and check (nan, inf,"
        " range: outside the reference's; missing, extra: feature columns; type, shape:"
        " refused by the signature).",
        ["model", "version", "feature", "check"],
        findings,
    )
    yield counter(
        "servion_data_quality_requests",
        "Requests with at least one data quality finding, by what was done (accepted,"
        " flagged, refused).",
        ["model", "version", "action"],
        requests,
    )
