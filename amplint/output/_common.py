"""What the emitters share: their options and a few small facts about a finding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol, TextIO

from amplint.catalog import docs_url, entry
from amplint.findings import Finding, Fix


class EmitOptions(NamedTuple):
    #: print the files ``amplint fix`` changed (``--show-fixes``)
    show_fixes: bool = False
    #: filename -> number of fixes ``amplint fix`` applied to it; ``None`` outside ``fix``
    fixed: Mapping[str, int] | None = None
    #: whether unsafe fixes would be applied (``--unsafe-fixes``), which decides ``[*]``
    unsafe_fixes: bool = False
    #: print the findings and nothing else (``--quiet``): no summary lines
    quiet: bool = False
    #: paths that could not be checked at all (missing, not Python); never "All checks passed!"
    unchecked: int = 0
    #: filename -> text for sources that are not files (standard input)
    sources: Mapping[str, str] | None = None


class Emitter(Protocol):
    def __call__(
        self, findings: Sequence[Finding], stream: TextIO, options: EmitOptions
    ) -> None: ...


def is_applicable(fix: Fix | None, unsafe_fixes: bool) -> bool:
    """Whether ``amplint fix`` would apply ``fix``: unsafe ones only with ``--unsafe-fixes``."""
    if fix is None:
        return False
    return fix.applicability == "safe" or unsafe_fixes


def fix_mark(finding: Finding, unsafe_fixes: bool) -> str:
    """``"[*] "`` before the message of a finding that ``amplint fix`` would fix."""
    return "[*] " if is_applicable(finding.fix, unsafe_fixes) else ""


def rule_name(finding: Finding) -> str:
    """The catalog's name of the finding's code (the finding's own for unknown codes)."""
    known = entry(finding.code)
    if known is not None:
        return known.name
    return finding.name or finding.code


def rule_url(finding: Finding) -> str | None:
    """The documentation page of the finding's code; ``None`` for a code not in the catalog."""
    return docs_url(finding.code) if entry(finding.code) is not None else None


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {nouns or noun + 's'}"


def place(finding: Finding) -> str:
    """``path:row:col``, or ``path:cell 4:row:col`` in a notebook (rows of that cell)."""
    location = finding.location
    cell = "" if finding.cell is None else f"cell {finding.cell}:"
    return f"{finding.filename}:{cell}{location.row}:{location.column}"


def header(finding: Finding, unsafe_fixes: bool) -> str:
    """The editor-style line ``path:row:col: CODE [*] message`` shared by the text formats."""
    mark = fix_mark(finding, unsafe_fixes)
    return f"{place(finding)}: {finding.code} {mark}{finding.message}"


def relative_posix(filename: str) -> str:
    """``filename`` as a POSIX path, relative to the working directory when it lies below it."""
    path = Path(filename)
    if path.is_absolute():
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            return path.as_posix()
    return path.as_posix()
