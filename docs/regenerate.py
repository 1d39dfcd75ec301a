"""Regenerate what is written from the catalog: README's rules table and docs/rules/*.md.

Run after changing amplint/catalog.py: ``python docs/regenerate.py``. tests/test_readme.py
fails while either is out of date.
"""

from __future__ import annotations

import re
from pathlib import Path

from amplint.catalog import CATALOG, documentation
from amplint.cli import rules_table

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    pages = ROOT / "docs" / "rules"
    pages.mkdir(exist_ok=True)
    for stale in pages.glob("*.md"):
        stale.unlink()
    for entry in CATALOG:
        text = documentation(entry, fixable=entry.fixable)
        (pages / f"{entry.code}.md").write_text(text, encoding="utf-8")
    readme = ROOT / "README.md"
    table = rules_table(markdown=True)
    text = re.sub(
        r"(<!-- rules:start -->\n).*?(<!-- rules:end -->)",
        lambda match: match.group(1) + table + match.group(2),
        readme.read_text(encoding="utf-8"),
        count=1,
        flags=re.S,
    )
    readme.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
