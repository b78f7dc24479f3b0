"""Bounds the codecs enforce on untrusted request bodies.

Every limit is checked before the work it bounds is done, so a hostile body
costs at most one orjson parse of ``max_body_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Size and shape limits for one inference request.

    >>> Limits(max_body_bytes=1024).max_dims
    16
    """

    max_body_bytes: int = 10 * 1024 * 1024
    """Largest accepted body (JSON plus binary section), in bytes. Larger → 413."""

    max_json_depth: int = 32
    """Deepest nesting of arrays and objects accepted anywhere in a request.
    Tensor ``data`` sits 3 levels down, so nested data of ``max_dims`` dims
    needs ``3 + max_dims``; orjson itself stops at 1024."""

    max_elements: int = 1 << 26
    """Most elements one tensor (and any one dimension) may declare. Rejects
    absurd shapes before anything is allocated. Larger → 413."""

    max_dims: int = 16
    """Most dimensions one tensor's shape may have."""

    max_inputs: int = 64
    """Most input tensors per request. More → 413."""

    max_outputs: int = 64
    """Most requested outputs per request. More → 413."""


DEFAULT_LIMITS = Limits()

__all__ = ["DEFAULT_LIMITS", "Limits"]
