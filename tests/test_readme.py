"""README promises that tests keep true."""

from __future__ import annotations

import re
from pathlib import Path

from amplint.cli import rules_table

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_rules_table_is_generated_from_the_registry() -> None:
    block = re.search(r"<!-- rules:start -->\n(.*?)<!-- rules:end -->", README, re.S)
    assert block is not None
    assert block.group(1) == rules_table(markdown=True)


def test_ci_runs_the_readme_test_command() -> None:
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    command = re.search(r"\.venv/bin/python -m pytest[^\n`]*", README)
    assert command is not None
    assert command.group(0) in ci
    assert "pip install torch==2.13.0" in README and "pip install --quiet torch==2.13.0" in ci
