"""Findings as LSP diagnostics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lsprotocol import types

from amplint.catalog import PARSE_ERROR_CODE
from amplint.findings import Applicability, Finding
from amplint.lsp.convert import UTF16, code_units, to_lsp_range
from amplint.lsp.docs import DocLinks

SOURCE = "amplint"

#: Rules about APIs torch deprecated: editors strike those through.
_DEPRECATION_CODES = frozenset({"AMP007"})


def finding_range(lines: Sequence[str], finding: Finding, encoding: str = UTF16) -> types.Range:
    rng = to_lsp_range(lines, finding.location, finding.end_location, encoding)
    if rng.start == rng.end and rng.start.line < len(lines):
        # Parse errors point at one spot; an empty range is invisible in most editors, so
        # underline the rest of the line (or at least the line) instead.
        line = lines[rng.start.line]
        end = code_units(line, encoding)
        start = rng.start if rng.start.character < end else types.Position(rng.start.line, 0)
        rng = types.Range(start=start, end=types.Position(rng.start.line, end))
    return rng


#: A fix's title and applicability, known without its edits (``LintResult.fix_summary``).
FixSummary = tuple[str, Applicability]


def diagnostic_data(finding: Finding, fix: FixSummary | None = None) -> dict[str, Any]:
    """What a client may want without asking again: the fix's title and whether it is safe.

    ``fix`` describes a fix whose edits are not computed yet; without it, the finding's own.
    """
    if fix is None and finding.fix is not None:
        fix = (finding.fix.message, finding.fix.applicability)
    return {
        "code": finding.code,
        "name": finding.name,
        "fix": None if fix is None else fix[0],
        "applicability": None if fix is None else fix[1],
    }


def to_diagnostic(
    lines: Sequence[str],
    finding: Finding,
    links: DocLinks,
    encoding: str = UTF16,
    fix: FixSummary | None = None,
) -> types.Diagnostic:
    is_error = finding.code == PARSE_ERROR_CODE
    href = links.href(finding)
    return types.Diagnostic(
        range=finding_range(lines, finding, encoding),
        message=finding.message,
        severity=types.DiagnosticSeverity.Error if is_error else types.DiagnosticSeverity.Warning,
        code=finding.code,
        code_description=types.CodeDescription(href=href) if href else None,
        source=SOURCE,
        tags=[types.DiagnosticTag.Deprecated] if finding.code in _DEPRECATION_CODES else None,
        data=diagnostic_data(finding, fix),
    )
