"""Turning CST fixes into text edits, and applying text edits to source text.

Code generation over a whole module is the expensive part of a fix (and of positions), so
:class:`ModuleLayout` works per top-level statement where it can: a fix is rendered by
transforming and generating only the statements it touches, spliced into the unchanged
text around them; positions are computed for the statements holding reported nodes only.
Every fast path checks its own preconditions and falls back to the whole-module way.
"""

from __future__ import annotations

import ast
import difflib
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property

import libcst as cst
from libcst._nodes.internal import CodegenState
from libcst._position import CodeRange
from libcst.metadata import MetadataWrapper, PositionProvider
from libcst.metadata.position_provider import PositionProvidingCodegenState

from amplint.engine.contract import FixPlan
from amplint.findings import Edit, Position

#: libcst's own idea of a line break (its position provider counts lines with it).
_NEWLINE = re.compile(r"\r\n?|\n")


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
    """The module's code after the plan's replacements (whole-module transform)."""
    return module.visit(_Replacer(plan)).code


class _Positions:
    """Stands in for libcst's provider: the codegen state writes ranges into ``_computed``."""

    def __init__(self) -> None:
        self._computed: dict[cst.CSTNode, CodeRange] = {}


class ModuleLayout:
    """Where each top-level statement of a parsed module lies in its text.

    ``parents`` maps nodes to their parents (the analysis index's map); a node it cannot
    lead to a top-level statement sends the caller down the whole-module path. A
    ``previous`` layout lends the code of statements both trees share (an incremental
    re-parse keeps the unchanged statement objects), so only new statements are generated.
    """

    def __init__(
        self,
        module: cst.Module,
        text: str,
        parents: Mapping[cst.CSTNode, cst.CSTNode],
        *,
        previous: ModuleLayout | None = None,
        syntax: ast.Module | None = None,
    ) -> None:
        self.module = module
        self.text = text
        self.parents = parents
        self._syntax = syntax
        self._known: Mapping[cst.CSTNode, str] = previous._codes if previous is not None else {}
        self._codes: dict[cst.CSTNode, str] = {}

    def statement_spans(self) -> dict[cst.CSTNode, tuple[int, int, int]] | None:
        """Top-level statement -> (start offset, end offset, 1-based start line).

        ``None`` when the statements' code does not add up to the text (then nothing here
        can be trusted, and every caller falls back).
        """
        return self._spans

    @cached_property
    def _spans(self) -> dict[cst.CSTNode, tuple[int, int, int]] | None:
        module = self.module
        state = CodegenState(
            default_indent=module.default_indent, default_newline=module.default_newline
        )
        for line in module.header:
            line._codegen(state)
        header = "".join(state.tokens)
        offset = len(header)
        row = 1 + len(_NEWLINE.findall(header))
        spans: dict[cst.CSTNode, tuple[int, int, int]] = {}
        pieces = [header]
        for statement in module.body:
            code = self._known.get(statement)
            if code is None:
                state.tokens = []
                statement._codegen(state)
                code = "".join(state.tokens)
            self._codes[statement] = code
            pieces.append(code)
            spans[statement] = (offset, offset + len(code), row)
            offset += len(code)
            row += len(_NEWLINE.findall(code))
        state.tokens = []
        for line in module.footer:
            line._codegen(state)
        pieces.append("".join(state.tokens))
        if not module.has_trailing_newline:
            # Module codegen drops the final newline token; the last statement keeps it here.
            if not pieces[-1] and module.body:
                last = pieces[-2]
                match = _NEWLINE.search(last, max(len(last) - 2, 0))
                if match is None or match.end() != len(last):
                    return None
                pieces[-2] = last[: match.start()]
            else:
                return None
        if "".join(pieces) != self.text:
            return None
        return spans

    def top_statement(self, node: cst.CSTNode) -> cst.CSTNode | None:
        spans = self._spans
        if spans is None:
            return None
        current: cst.CSTNode | None = node
        while current is not None and current not in spans:
            current = self.parents.get(current)
        return current

    def positions(self, nodes: Iterable[cst.CSTNode]) -> Mapping[cst.CSTNode, CodeRange]:
        """libcst's :class:`PositionProvider` ranges of ``nodes`` (and of their neighbours).

        Only the top-level statements holding ``nodes`` are generated: a top-level statement
        starts a line with no indentation, so its ranges do not depend on what precedes it
        beyond its first line number.
        """
        nodes = list(nodes)
        if "_spans" not in self.__dict__:
            # Offsets of every top-level statement cost a whole-module codegen; CPython's
            # line numbers give the few statements needed here, each checked against the text.
            quick = self._positions_from_ast_rows(nodes)
            if quick is not None:
                return quick
        statements = {self.top_statement(node) for node in nodes}
        spans = self._spans
        if spans is None or None in statements:
            return MetadataWrapper(self.module, unsafe_skip_copy=True).resolve(PositionProvider)
        found = _Positions()
        for statement in statements:
            assert statement is not None
            state = PositionProvidingCodegenState(
                default_indent=self.module.default_indent,
                default_newline=self.module.default_newline,
                provider=found,  # type: ignore[arg-type]
                line=spans[statement][2],
            )
            statement._codegen(state)
        return found._computed

    def _positions_from_ast_rows(
        self, nodes: list[cst.CSTNode]
    ) -> Mapping[cst.CSTNode, CodeRange] | None:
        if self._ast_lines_up is None:
            return None
        places: dict[cst.CSTNode, tuple[int, list[str]]] = {}
        for node in nodes:
            place = self._place(node)
            if place is None:
                return None
            places[place[0]] = place[1:]
        found = _Positions()
        for statement, (row, indents) in places.items():
            if row < 1 or row > len(self._line_starts):
                return None
            state = PositionProvidingCodegenState(
                default_indent=self.module.default_indent,
                default_newline=self.module.default_newline,
                provider=found,  # type: ignore[arg-type]
                line=row,
            )
            state.indent_tokens = list(indents)
            statement._codegen(state)
            code = "".join(state.tokens)
            start = self._line_starts[row - 1]
            if self.text[start : start + len(code)] != code:
                return None
        return found._computed

    def _place(self, node: cst.CSTNode) -> tuple[cst.CSTNode, int, list[str]] | None:
        """The smallest statement around ``node`` that CPython's line numbers can place
        (descending through class and function bodies only, which a 10k-line test class is
        made of), its first row, and the indentation its block adds."""
        chain: list[cst.CSTNode] = []
        current: cst.CSTNode | None = node
        while current is not None and current is not self.module:
            parent = self.parents.get(current)
            if isinstance(parent, (cst.Module, cst.IndentedBlock)):
                chain.append(current)
            current = parent
        if current is None or not chain:
            return None
        chain.reverse()
        assert self._ast_body is not None
        cst_body: Sequence[cst.CSTNode] = self.module.body
        ast_body: list[ast.stmt] = self._ast_body
        indents: list[str] = []
        for depth, statement in enumerate(chain):
            position = next((i for i, s in enumerate(cst_body) if s is statement), None)
            if position is None:
                return None
            counted = sum(
                len(s.body) if isinstance(s, cst.SimpleStatementLine) else 1
                for s in cst_body[:position]
            )
            if counted >= len(ast_body):
                return None
            counterpart = ast_body[counted]
            inner = chain[depth + 1] if depth + 1 < len(chain) else None
            block = getattr(statement, "body", None)
            if (
                inner is not None
                and isinstance(statement, (cst.FunctionDef, cst.ClassDef))
                and isinstance(counterpart, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and isinstance(block, cst.IndentedBlock)
                and any(s is inner for s in block.body)
            ):
                indents.append(block.indent if block.indent is not None else "")
                if block.indent is None:
                    indents[-1] = self.module.default_indent
                cst_body, ast_body = block.body, counterpart.body
                continue
            decorators = getattr(counterpart, "decorator_list", ())
            first = min([counterpart.lineno, *(d.lineno for d in decorators)])
            return statement, first - _lines_before_first_token(statement), indents
        return None

    @cached_property
    def _ast_body(self) -> list[ast.stmt] | None:
        if self.text.startswith("\ufeff"):
            return None
        if self._syntax is not None:
            return self._syntax.body
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return ast.parse(self.text).body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None

    @cached_property
    def _line_starts(self) -> list[int]:
        return [0, *(match.end() for match in _NEWLINE.finditer(self.text))]

    @cached_property
    def _ast_lines_up(self) -> bool | None:
        """Whether CPython's statements line up with libcst's top-level ones (None if not)."""
        statements = self._ast_body
        if statements is None:
            return None
        count = sum(
            len(s.body) if isinstance(s, cst.SimpleStatementLine) else 1 for s in self.module.body
        )
        return True if count == len(statements) else None

    def plan_change(self, plan: FixPlan) -> tuple[int, int, str] | None:
        """The plan as one text replacement ``(start, end, new code)``, generated only for
        the top-level statements it touches; ``None`` when that shortcut does not apply."""
        spans = self._spans
        if spans is None or not plan.replacements:
            return None
        statements = {self.top_statement(node) for node in plan.replacements}
        if None in statements:
            return None
        ordered = sorted(statements, key=lambda statement: spans[statement][0])  # type: ignore[index]
        last = self.module.body[-1] if self.module.body else None
        if not self.module.has_trailing_newline and last in statements:
            return None
        replacer = _Replacer(plan)
        start, end = spans[ordered[0]][0], spans[ordered[-1]][1]  # type: ignore[index]
        pieces = []
        cursor = start
        for statement in ordered:
            begin, finish, _ = spans[statement]  # type: ignore[index]
            pieces.append(self.text[cursor:begin])
            pieces.append(self._code(statement.visit(replacer)))  # type: ignore[union-attr]
            cursor = finish
        new = "".join(pieces)
        if not new.strip() and start == 0 and end == len(self.text):
            return None  # an emptied module has its own codegen rules
        return start, end, new

    def _code(self, node: cst.CSTNode | cst.FlattenSentinel | cst.RemovalSentinel) -> str:
        if isinstance(node, cst.RemovalSentinel):
            return ""
        if isinstance(node, cst.FlattenSentinel):
            return "".join(self._code(item) for item in node.nodes)
        return self.module.code_for_node(node)

    def fixed_text(self, plan: FixPlan) -> str:
        """The whole text after ``plan``: exactly :func:`apply_plan`'s result, usually faster."""
        change = self.plan_change(plan)
        if change is None:
            return apply_plan(self.module, plan)
        start, end, new = change
        return self.text[:start] + new + self.text[end:]

    def local_edits(self, plan: FixPlan) -> tuple[Edit, ...]:
        """Edits for ``plan`` diffed over the statements it touches only (not the file).

        They produce the same text as :func:`text_edits` over the whole file, though a
        diff of a region may cut its hunks differently; use it where only the result
        matters (the language server's quick fixes).
        """
        change = self.plan_change(plan)
        if change is None:
            return text_edits(self.text, apply_plan(self.module, plan))
        start, end, new = change
        # The region starts a line, so its rows are the file's rows shifted by the lines
        # before it, counted as text_edits counts them.
        shift = len(self.text[:start].splitlines())
        edits = text_edits(self.text[start:end], new)
        return tuple(
            Edit(
                edit.content,
                Position(edit.location.row + shift, edit.location.column),
                Position(edit.end_location.row + shift, edit.end_location.column),
            )
            for edit in edits
        )


def _lines_before_first_token(statement: cst.CSTNode) -> int:
    """Blank and comment lines a top-level statement's code starts with."""
    lines = len(getattr(statement, "leading_lines", ()))
    decorators = getattr(statement, "decorators", ())
    if decorators:
        lines += len(decorators[0].leading_lines)
    return lines


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
