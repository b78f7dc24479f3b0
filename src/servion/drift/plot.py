"""Reference against live histograms of the worst features of drift windows, as one PNG.

Drawn from the windows the admin API answers (each carries the histograms of its
highest-PSI features), with matplotlib's Agg canvas: no display and no pyplot state, and
matplotlib is imported only here (``pip install 'servion[drift]'``).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # matplotlib is an optional extra, imported only to draw
    from matplotlib.axes import Axes

COLUMNS = 3
PANEL_INCHES = (4.2, 3.0)
LABEL_CHARS = 12
"""Category labels are cut to this length under their bars."""


def panels(windows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(window, feature)`` of every feature with a histogram, per window highest PSI first.

    >>> panels([{"features": [{"psi": 1, "histogram": {}}, {"psi": 2}]}])[0][1]["psi"]
    1
    """
    return [
        (window, feature)
        for window in windows
        for feature in sorted(window["features"], key=lambda f: -f["psi"])
        if "histogram" in feature
    ]


def plot(model: str, windows: list[dict[str, Any]], path: Path) -> int:
    """Write the PNG of ``windows``' worst features to ``path``; the number of panels."""
    from matplotlib.figure import Figure

    drawn = panels(windows)
    rows = max(1, -(-len(drawn) // COLUMNS))
    columns = min(COLUMNS, max(len(drawn), 1))
    figure = Figure(
        figsize=(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows), layout="constrained"
    )
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (window, feature) in zip(axes, drawn, strict=False):
        _panel(ax, model, window, feature)
    for ax in axes[len(drawn) :]:
        ax.set_axis_off()
    figure.savefig(path, format="png", dpi=100)
    return len(drawn)


def _panel(ax: Axes, model: str, window: dict[str, Any], feature: dict[str, Any]) -> None:
    shape = feature["histogram"]
    if "edges" in shape:
        _numeric(ax, shape)
    else:
        _categorical(ax, shape)
    verdict = "DRIFT" if feature["drifted"] else "ok"
    ax.set_title(
        f"{model}:{window['version']}  {feature['feature']}\n"
        f"PSI {feature['psi']:.3f}  p {feature['pvalue']:.2g}  {verdict}",
        fontsize=9,
        color="tab:red" if feature["drifted"] else "black",
    )
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)


def _numeric(ax: Axes, shape: dict[str, Any]) -> None:
    edges = [float(e) for e in shape["edges"]]
    # An outer bin whose values all tie with its inner edge (a constant feature, a floor)
    # has no width to draw it with: give it a hundredth of the range, or 1.
    floor = (edges[-1] - edges[0]) / 100 or 1.0
    edges[0] = min(edges[0], edges[1] - floor)
    edges[-1] = max(edges[-1], edges[-2] + floor)
    widths = [max(b - a, floor) for a, b in itertools.pairwise(edges)]

    def density(name: str) -> list[float]:
        # Densities, not shares: the outer bins reach the extremes and are wide.
        return [s / w for s, w in zip(shape[name], widths, strict=True)]

    ax.stairs(density("reference"), edges, label="reference", fill=True, alpha=0.35)
    ax.stairs(density("live"), edges, label="live", linewidth=1.8)
    ax.set_ylabel("density", fontsize=7)


def _categorical(ax: Axes, shape: dict[str, Any]) -> None:
    positions = range(len(shape["labels"]))
    ax.bar([p - 0.2 for p in positions], shape["reference"], 0.4, label="reference", alpha=0.6)
    ax.bar([p + 0.2 for p in positions], shape["live"], 0.4, label="live")
    ax.set_xticks(list(positions), [str(s)[:LABEL_CHARS] for s in shape["labels"]])
    ax.tick_params(axis="x", rotation=45)
    ax.set_ylabel("share", fontsize=7)
