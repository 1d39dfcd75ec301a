"""Turning CST fixes into text edits, and applying text edits to source text."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import libcst as cst

from amplint.findings import Edit, Position
from amplint.rules.base import FixPlan


class _Replacer(cst.CSTTransformer):
    def __init__(self, plan: FixPlan) -> None:
        super().__init__()
        self._replacements = plan.replacements

    def on_leave(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        replacement = self._replacements.get(original_node)
        if replacement is None:
            return updated_node
        if callable(replacement):
            return replacement(updated_node)
        return replacement


def apply_plan(module: cst.Module, plan: FixPlan) -> str:
    """The module's code after the plan's replacements."""
    return module.visit(_Replacer(plan)).code


def text_edits(before: str, after: str) -> tuple[Edit, ...]:
    """Minimal-ish edits that turn ``before`` into ``after`` (whole lines, trimmed)."""
    old_lines = before.splitlines(keepends=True)
    new_lines = after.splitlines(keepends=True)
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    edits = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        old_chunk = "".join(old_lines[i1:i2])
        new_chunk = "".join(new_lines[j1:j2])
        edits.append(_trimmed_edit(old_chunk, new_chunk, start_row=i1 + 1))
    return tuple(edits)


def _trimmed_edit(old: str, new: str, start_row: int) -> Edit:
    """An edit over whole lines, narrowed to the characters that actually differ."""
    prefix = 0
    limit = min(len(old), len(new))
    while prefix < limit and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and old[len(old) - 1 - suffix] == new[len(new) - 1 - suffix]:
        suffix += 1
    start = _advance(Position(start_row, 1), old[:prefix])
    end = _advance(start, old[prefix : len(old) - suffix])
    return Edit(new[prefix : len(new) - suffix], start, end)


def _advance(position: Position, text: str) -> Position:
    row, column = position.row, position.column
    for line in text.splitlines(keepends=True):
        if line.endswith(("\n", "\r")):
            row, column = row + 1, 1
        else:
            column += len(line)
    return Position(row, column)


def _offsets(text: str) -> list[int]:
    """Offset of the first character of each 1-based row (index 0 unused)."""
    starts = [0, 0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def apply_edits(text: str, edits: Iterable[Edit]) -> str:
    """Apply non-overlapping edits (any order) to ``text``."""
    starts = _offsets(text)

    def offset(position: Position) -> int:
        if position.row >= len(starts):
            return len(text)
        return starts[position.row] + position.column - 1

    result = text
    for edit in sorted(edits, key=lambda e: (e.location, e.end_location), reverse=True):
        result = (
            result[: offset(edit.location)] + edit.content + result[offset(edit.end_location) :]
        )
    return result


def overlaps(a: Sequence[Edit], b: Sequence[Edit]) -> bool:
    """Whether two fixes touch the same text (touching at one point counts, like ruff)."""
    for first in a:
        for second in b:
            if first.location <= second.end_location and second.location <= first.end_location:
                return True
    return False
