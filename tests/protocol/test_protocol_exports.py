"""servion.protocol's public names: sorted, importable, nothing private."""

from __future__ import annotations

import servion.protocol as protocol


def test_public_names_are_sorted_and_exist() -> None:
    assert protocol.__all__ == sorted(protocol.__all__)
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None
        assert not name.startswith("_")
