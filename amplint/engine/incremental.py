"""Re-parsing only the top-level statements an edit touched (the language server's path).

An editor sends the whole document after every keystroke, and libcst needs a noticeable
share of a check to parse a large file. Most edits change one statement, so the previous
version's tree is reused: the changed top-level statements are parsed on their own, with
one unchanged statement on each side, and spliced between the untouched ones.

Every shortcut is checked and a full parse is the answer whenever one check fails: the
statements on both edges of the re-parsed region must come out exactly as before (so
comment ownership at the seams is what a full parse gives), the inferred indentation and
newline must match, and the resulting tree's code must equal the new text byte for byte.
"""

from __future__ import annotations

import libcst as cst

from amplint.engine.fixes import ModuleLayout
from amplint.engine.piecewise import PIECEWISE_ABOVE, parse_piecewise
from amplint.engine.source import ParsedSource

#: Edits in the first lines may change the coding cookie (or the BOM): always re-parse.
_COOKIE_LINES = 2


def reparse(
    text: str, previous: ParsedSource, layout: ModuleLayout
) -> tuple[ParsedSource, ModuleLayout] | None:
    """``text`` parsed by splicing into ``previous`` (with the new tree's layout, parents
    still to be filled in); ``None`` when a full parse is needed."""
    old_text = previous.text
    module = previous.module
    spans = layout.statement_spans()
    if spans is None or len(module.body) < 3 or text == old_text:
        return None
    start = _common_prefix(old_text, text)
    suffix = _common_suffix(old_text, text, limit=min(len(old_text), len(text)) - start)
    if _line_index(old_text, start) < _COOKIE_LINES:
        return None
    old_end = len(old_text) - suffix  # the change is old_text[start:old_end]
    body = list(module.body)
    bounds = [spans[statement][:2] for statement in body]
    # First statement the change may touch (the one holding ``start``, or the one it ends)
    # and the last one; one unchanged neighbour on each side is re-parsed as a witness.
    first = next((i for i, (_, end) in enumerate(bounds) if end >= start), None)
    last = next((i for i in range(len(bounds) - 1, -1, -1) if bounds[i][0] <= old_end), None)
    if first is None or last is None:
        return None
    last = max(last, first)
    before, after = first - 1, last + 1
    if before < 1 or after >= len(body):
        return None
    if bounds[before][1] > start or bounds[after][0] < old_end:
        return None
    shift = len(text) - len(old_text)
    region_start, region_end = bounds[before][0], bounds[after][1] + shift
    fragment_text = text[region_start:region_end]
    try:
        # A 10k-line class is one top-level statement: large regions go in pieces too.
        fragment = (
            parse_piecewise(fragment_text) if len(fragment_text) > PIECEWISE_ABOVE else None
        ) or cst.parse_module(fragment_text)
    except (cst.ParserSyntaxError, RecursionError, SyntaxError):
        return None
    if (
        fragment.default_indent != module.default_indent
        or fragment.default_newline != module.default_newline
        or fragment.footer
        or not fragment.has_trailing_newline
        or len(fragment.body) < 2
    ):
        return None
    fresh = list(fragment.body)
    if fragment.header:
        # A module keeps its leading comments as a header; mid-file they lead the statement.
        head = fresh[0]
        fresh[0] = head.with_changes(leading_lines=[*fragment.header, *head.leading_lines])
    if not fresh[0].deep_equals(body[before]) or not fresh[-1].deep_equals(body[after]):
        return None
    new_body = [*body[: before + 1], *fresh[1:-1], *body[after:]]
    new_module = module.with_changes(body=new_body)
    # The byte-for-byte check: the spliced tree must generate exactly the new text.
    new_layout = ModuleLayout(new_module, text, {}, previous=layout)
    if new_layout.statement_spans() is None:
        return None
    return ParsedSource(new_module, text), new_layout


def _common_prefix(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    low, high = 0, limit
    # Binary search on slice equality: C-speed comparisons, O(log n) of them.
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _common_suffix(a: str, b: str, limit: int) -> int:
    low, high = 0, max(limit, 0)
    while low < high:
        middle = (low + high + 1) // 2
        if a[len(a) - middle :] == b[len(b) - middle :]:
            low = middle
        else:
            high = middle - 1
    return low


def _line_index(text: str, offset: int) -> int:
    """0-based line of ``offset``, stopping early: only small answers matter here."""
    return text.count("\n", 0, offset) + text.count("\r", 0, offset) - text.count("\r\n", 0, offset)
