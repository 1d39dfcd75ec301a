"""Each static rule's documentation shows what it catches: its "Example" fires the rule and
its "Use instead" does not (read from the catalog, the text `amplint rule CODE` prints)."""

from __future__ import annotations

import pytest

from amplint.catalog import by_code
from amplint.engine.registry import all_rules
from amplint.engine.run import lint_bytes

#: what the snippets leave implied: the imports their names need.
PRELUDE = """\
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.functional import binary_cross_entropy
"""

STATIC = [pytest.param(rule.code, id=rule.code) for rule in all_rules()]


def _findings(code: str, snippet: str) -> list[int]:
    source = PRELUDE + snippet.strip("\n") + "\n"
    compile(source, f"{code}-docs.py", "exec")  # a documentation example must be Python
    findings = lint_bytes(source.encode(), f"{code}-docs.py", {code}).findings
    return [f.location.row for f in findings if f.code == code]


@pytest.mark.parametrize("code", STATIC)
def test_documentation_example_fires_the_rule(code: str) -> None:
    docs = by_code()[code].docs
    assert _findings(code, docs.example), f"{code}: the docs' Example does not fire the rule"


@pytest.mark.parametrize("code", STATIC)
def test_documentation_use_instead_is_quiet(code: str) -> None:
    docs = by_code()[code].docs
    assert _findings(code, docs.use_instead) == [], f"{code}: the docs' Use instead fires"
