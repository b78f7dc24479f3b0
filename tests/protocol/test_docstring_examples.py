"""The examples in servion.protocol's docstrings run and hold."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import servion.protocol

MODULES = sorted(
    info.name for info in pkgutil.iter_modules(servion.protocol.__path__, "servion.protocol.")
)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_pass(module_name: str) -> None:
    result = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
