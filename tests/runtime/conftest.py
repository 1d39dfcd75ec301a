"""Fixtures for the runtime tests: every test starts from a clean amplint state."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import amplint.runtime as ar
import pytest
from amplint.runtime import reporting


@pytest.fixture(autouse=True)
def clean_amplint() -> Iterator[None]:
    ar.uninstall()
    ar.reset()
    reporting.set_mode("warn")
    reporting.set_ignored(())
    yield
    ar.uninstall()
    ar.reset()


@pytest.fixture
def quiet() -> Iterator[None]:
    """Findings are asserted through report(); keep their warnings out of the output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ar.AmpWarning)
        yield
