"""Code actions: one quick fix per fixable finding, noqa comments, and fix-all."""

from __future__ import annotations

import io
import tokenize
from collections.abc import Collection, Sequence

from lsprotocol import types

from amplint.catalog import PARSE_ERROR_CODE

# The engine's own pattern, so that the action writes exactly what the engine will honour.
from amplint.engine.noqa import _NOQA as NOQA_PATTERN
from amplint.engine.run import LintResult, fix_bytes
from amplint.findings import Edit, Finding, Fix, Position
from amplint.lsp.convert import UTF16, minimal_edits, ranges_intersect, to_text_edits
from amplint.lsp.diagnostics import finding_range, to_diagnostic
from amplint.lsp.docs import DocLinks
from amplint.lsp.document import Snapshot

FIX_ALL_KIND = f"{types.CodeActionKind.SourceFixAll.value}.amplint"
FIX_ALL_TITLE = "Fix all amplint findings"
QUICK_FIX = types.CodeActionKind.QuickFix
#: What the server advertises in ``codeActionProvider.codeActionKinds``.
KINDS = [QUICK_FIX, types.CodeActionKind.SourceFixAll, FIX_ALL_KIND]


def wanted(kind: str, only: Sequence[str] | None) -> bool:
    """LSP kinds are hierarchical: asking for ``source.fixAll`` includes ``source.fixAll.x``."""
    if not only:
        # Source actions only when asked for: they would clutter the light bulb menu.
        return not kind.startswith("source")
    return any(kind == base or kind.startswith(f"{base}.") for base in only)


def _workspace_edit(snapshot: Snapshot, edits: list[types.TextEdit]) -> types.WorkspaceEdit:
    # documentChanges carries the version, so a client drops an edit made for older text.
    return types.WorkspaceEdit(
        document_changes=[
            types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(
                    uri=snapshot.uri, version=snapshot.version
                ),
                edits=edits,  # type: ignore[arg-type]
            )
        ]
    )


def quick_fix(
    snapshot: Snapshot,
    finding: Finding,
    diagnostic: types.Diagnostic,
    encoding: str = UTF16,
    fix: Fix | None = None,
) -> types.CodeAction | None:
    """The finding's fix as a code action; ``fix`` when computed apart from the finding."""
    fix = fix or finding.fix
    if fix is None:
        return None
    safe = fix.applicability == "safe"
    title = f"{fix.message} ({finding.code})" if safe else f"{fix.message} ({finding.code}, unsafe)"
    return types.CodeAction(
        title=title,
        kind=QUICK_FIX,
        diagnostics=[diagnostic],
        is_preferred=safe,
        edit=_workspace_edit(snapshot, to_text_edits(snapshot.lines, fix.edits, encoding)),
    )


def noqa_edit(text: str, row: int, code: str) -> Edit | None:
    """The edit that silences ``code`` on ``row``, or ``None`` where a comment cannot go.

    Tokens, not a regex over the line, decide: a ``#`` inside a string is no comment, and a
    line that ends inside a string or with a backslash cannot take one.
    """
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return None
    lines = text.split("\n")
    if row > len(lines):
        return None
    line = lines[row - 1].rstrip("\r")
    comment = None
    for token in tokens:
        if token.start[0] <= row < token.end[0] and token.type not in _LINE_END_TOKENS:
            return None
        if token.type == tokenize.COMMENT and token.start[0] == row:
            comment = token
    if comment is not None:
        match = NOQA_PATTERN.search(comment.string)
        if match is not None:
            if match.group("codes") is None:
                return None  # a bare noqa already silences everything
            column = comment.start[1] + match.end("codes") + 1
            return Edit(f", {code}", Position(row, column), Position(row, column))
    elif line.rstrip().endswith("\\"):
        return None
    content_end = len(line.rstrip()) + 1
    return Edit(f"  # noqa: {code}", Position(row, content_end), Position(row, len(line) + 1))


_LINE_END_TOKENS = frozenset(
    {tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT}
)


def noqa_action(
    snapshot: Snapshot, finding: Finding, diagnostic: types.Diagnostic, encoding: str = UTF16
) -> types.CodeAction | None:
    if finding.code == PARSE_ERROR_CODE:
        return None
    # The engine reads noqa on the row a finding starts on.
    edit = noqa_edit(snapshot.text, finding.location.row, finding.code)
    if edit is None:
        return None
    return types.CodeAction(
        title=f"Disable {finding.code} for this line",
        kind=QUICK_FIX,
        diagnostics=[diagnostic],
        edit=_workspace_edit(snapshot, to_text_edits(snapshot.lines, [edit], encoding)),
    )


def fix_all_action(
    snapshot: Snapshot,
    codes: Collection[str],
    encoding: str = UTF16,
    linted: LintResult | None = None,
) -> types.CodeAction | None:
    """Every safe fix, to a fixed point, exactly as ``amplint fix`` would apply them.

    ``linted`` is the check of exactly this snapshot and these codes: its syntax tree and
    findings serve the first pass, so nothing is parsed twice.
    """
    result = fix_bytes(snapshot.data, snapshot.filename, codes, unsafe=False, linted=linted)
    if result.data is None:
        return None
    edits = minimal_edits(snapshot.text, snapshot.decode(result.data), encoding)
    if not edits:
        return None
    return types.CodeAction(
        title=FIX_ALL_TITLE, kind=FIX_ALL_KIND, edit=_workspace_edit(snapshot, edits)
    )


def code_actions(
    snapshot: Snapshot,
    linted: LintResult,
    codes: Collection[str],
    request: types.Range,
    only: Sequence[str] | None,
    links: DocLinks,
    encoding: str = UTF16,
) -> list[types.CodeAction]:
    """Quick fixes (edits computed now, for the requested range only), noqa, fix-all.

    ``linted`` is the check of ``snapshot`` with ``codes`` (fixes may still be plans).
    """
    findings = linted.findings
    actions: list[types.CodeAction] = []
    if wanted(QUICK_FIX, only):
        fixes, silencers = [], []
        for finding in findings:
            if not ranges_intersect(finding_range(snapshot.lines, finding, encoding), request):
                continue
            summary = linted.fix_summary(finding)
            diagnostic = to_diagnostic(snapshot.lines, finding, links, encoding, summary)
            fix = linted.fix_of(finding) if summary is not None else None
            fixes.append(quick_fix(snapshot, finding, diagnostic, encoding, fix))
            silencers.append(noqa_action(snapshot, finding, diagnostic, encoding))
        # Fixes first: the light bulb's first entry should be the one that repairs the code.
        actions.extend(action for action in (*fixes, *silencers) if action is not None)
    if wanted(FIX_ALL_KIND, only) and any(linted.fix_summary(f) is not None for f in findings):
        action = fix_all_action(snapshot, codes, encoding, linted)
        if action is not None:
            actions.append(action)
    return actions
