"""Fixtures for the runtime tests: every test starts from a clean amplint state."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Slow runtime tests (torch.compile with inductor) run only when asked for with
    # `-m slow`: the default suite stays fast.
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    here = str(Path(__file__).parent)
    for item in items:
        if "slow" in item.keywords and str(item.path).startswith(here):
            item.add_marker(skip)
