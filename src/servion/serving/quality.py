"""A request's data quality, judged by its model version's policy.

``accept`` counts what a request's inputs got wrong; ``flag`` also names it in the
response's ``servion_data_quality`` parameter; ``refuse`` answers 400 instead, naming it.
"""

from __future__ import annotations

from typing import Final

from servion.drift.quality import QualityCheck, describe
from servion.errors import InvalidInput
from servion.serving.loaded import LoadedModel
from servion.types import Arrays

ACTIONS: Final = {"accept": "accepted", "flag": "flagged", "refuse": "refused"}
PARAMETER: Final = "servion_data_quality"


def screen(model: LoadedModel, check: QualityCheck, arrays: Arrays) -> str | None:
    """The findings to flag in the response, if any; raises ``InvalidInput`` to refuse."""
    findings = check.inspect(arrays)
    if not findings:
        return None
    model.stats.record_quality(findings, ACTIONS[check.policy])
    if check.policy == "refuse":
        raise InvalidInput(
            f"data quality: model '{model.name}' version {model.version}"
            f" refuses {describe(findings)}"
            " (nan/inf: non-finite values; range: outside the reference's range; missing/extra:"
            " feature columns the reference has and the request lacks, or the reverse)"
        )
    return describe(findings) if check.policy == "flag" else None
