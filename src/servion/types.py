"""Type aliases shared across subsystems."""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy.typing as npt

Array: TypeAlias = npt.NDArray[Any]
Arrays: TypeAlias = dict[str, Array]
JSON: TypeAlias = dict[str, Any]

__all__ = ["JSON", "Array", "Arrays"]
