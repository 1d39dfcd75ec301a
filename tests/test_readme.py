"""README promises that tests keep true."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from amplint.catalog import CATALOG, documentation
from amplint.cli import cli, rules_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PAGES = ROOT / "docs" / "rules"


def test_rules_table_is_generated_from_the_catalog() -> None:
    block = re.search(r"<!-- rules:start -->\n(.*?)<!-- rules:end -->", README, re.S)
    assert block is not None
    assert block.group(1) == rules_table(markdown=True)
    listed = re.findall(r"^\| \[(AMP\d{3})\]\(docs/rules/\1\.md\) \|", block.group(1), re.M)
    assert listed == sorted(item.code for item in CATALOG)


def test_every_code_has_its_generated_page() -> None:
    """docs/rules/CODE.md is `amplint rule CODE`; regenerate with docs/regenerate.py."""
    expected = {f"{item.code}.md": documentation(item, fixable=item.fixable) for item in CATALOG}
    found = {path.name: path.read_text(encoding="utf-8") for path in PAGES.glob("*.md")}
    assert sorted(found) == sorted(expected), "pages and catalog codes differ"
    stale = [name for name in expected if found[name] != expected[name]]
    assert stale == [], f"out of date: {stale} (see this test's docstring)"
    runner = CliRunner()
    assert runner.invoke(cli, ["rule", "AMP104"]).stdout == found["AMP104.md"]


def test_every_check_option_is_shown_in_the_readme() -> None:
    check = cli.commands["check"]
    names = [
        name
        for param in check.params
        for name in (*param.opts, *param.secondary_opts)
        if name.startswith("--") and name not in ("--help", "--no-force-exclude")
    ]
    assert len(names) > 15
    missing = [name for name in names if f"`{name}" not in README]
    assert missing == []


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"\.venv/bin/python -m pytest[^\n`]*", README)
    assert command is not None
    assert command.group(0) in ci
    assert "pip install torch==2.13.0" in README and "pip install --quiet torch==2.13.0" in ci
