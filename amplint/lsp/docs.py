"""Rule documentation for editors: the diagnostic's link and the hover text, from the catalog
(so runtime codes and the syntax-error code have docs too).

By default a diagnostic links to a Markdown copy of ``amplint rule CODE`` written once per
amplint version into the user's cache directory (``file:`` URL), not to the published page:
the copy matches the installed version. It works offline, always matches the installed rules, and
needs no command URI (which Neovim and Helix would not understand). A client can replace it
with its own URL template through the ``docsUrl`` initialization option.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from amplint import __version__
from amplint.catalog import documentation, entry
from amplint.findings import Finding


def rule_markdown(code: str) -> str | None:
    """The documentation of any catalog code (``amplint rule CODE``), or ``None``."""
    found = entry(code)
    return None if found is None else documentation(found, fixable=found.fixable)


def cache_root() -> Path:
    """Where the Markdown copies go; ``AMPLINT_CACHE_DIR`` wins, then the platform default."""
    override = os.environ.get("AMPLINT_CACHE_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = str(Path.home() / "Library" / "Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "amplint"


class DocLinks:
    """Builds ``codeDescription.href`` for findings, writing each rule's page at most once."""

    def __init__(self, template: str | None = None, root: Path | None = None) -> None:
        self._template = template
        self._root = (root or cache_root()) / "rules" / __version__
        self._links: dict[str, str | None] = {}

    def href(self, finding: Finding) -> str | None:
        found = entry(finding.code)
        if found is None:
            return None
        if self._template:
            return self._template.format(code=found.code, name=found.name)
        if found.code not in self._links:
            page = documentation(found, fixable=found.fixable)
            self._links[found.code] = self._write_page(found.code, page)
        return self._links[found.code]

    def _write_page(self, code: str, markdown: str) -> str | None:
        path = self._root / f"{code}.md"
        try:
            if not path.is_file() or path.read_text(encoding="utf-8") != markdown:
                path.parent.mkdir(parents=True, exist_ok=True)
                # Write-then-rename: two servers starting together never show a half page.
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{code}.", suffix=".md")
                with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                    handle.write(markdown)
                os.replace(tmp, path)
        except OSError:
            # A read-only home only costs the link, never the diagnostic.
            return None
        return path.as_uri()
