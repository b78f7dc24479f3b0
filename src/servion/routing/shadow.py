"""Shadow traffic: copies of live requests to other model versions, compared, never answered.

The comparison is per output the primary and the shadow both produce: floating
outputs agree when they are close (``rtol=1e-5, atol=1e-6``), other outputs when
they are equal. A request's shadow agrees when every shared output does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from servion.routing.stats import ShadowStats
from servion.types import Arrays


@dataclass(slots=True)
class ShadowRoute:
    model: str
    version: str
    sample: float
    stats: ShadowStats = field(default_factory=ShadowStats)

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version}"


def compare(primary: Arrays, shadow: Arrays) -> tuple[bool, float]:
    """(every shared output agrees, the largest absolute difference among numeric ones)."""
    agree = True
    worst = 0.0
    shared = [name for name in primary if name in shadow]
    if not shared:
        return False, math.nan
    for name in shared:
        a, b = np.asarray(primary[name]), np.asarray(shadow[name])
        if a.shape != b.shape:
            agree, worst = False, math.inf
            continue
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0))
            worst = max(worst, diff)
            agree = agree and bool(np.allclose(a, b, rtol=1e-5, atol=1e-6))
        elif a.dtype.kind in "iub" and b.dtype.kind in "iub":
            diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0))
            worst = max(worst, diff)
            agree = agree and diff == 0
        else:
            agree = agree and bool(np.array_equal(a, b))
    return agree, worst
