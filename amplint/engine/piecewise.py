"""Parsing a large module with libcst a piece at a time, so the parser's memory stays small.

libcst's native parser holds about 350 bytes of working memory per byte of source while it
runs, though the tree it returns is a small fraction of that: torch's 460 KB
``distributed_test.py`` peaks at 160 MB, a 28k-line file at over a gigabyte. Parsing the
module in pieces of about :data:`PIECE_CHARS` bounds that peak by the piece size instead of the
file size; the pieces' statements are then put together into the one tree a whole parse gives.

Pieces start at statements of the module or of the bodies of classes, functions, ``if``,
``for``, ``while`` and ``with`` statements without an ``else`` (any depth). A piece that starts
inside a body is parsed behind *stand-in headers*: a ``class _:`` (``def _():``, ``if _:``...)
line at each enclosing header's own indentation, so the piece's lines keep their exact
indentation, and comments and blank lines are owned by the same nodes as in a whole parse. A
piece ends with a stand-in ``pass`` at the indentation of the statement that starts the next
piece, so the lines between the two are shared out between block footers and that
statement's leading lines exactly as a whole parse shares them. Every piece after the first
also starts with a small indented block that makes libcst detect the module's own default
indentation (blocks indented by it are stored without an explicit indent).

The assembled tree is checked by generating its code: anything but the original text, or any
piece that does not parse, sends the caller back to a whole parse.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import libcst as cst

from amplint.engine.cstparse import parse_module

#: Files larger than this (characters) are parsed in pieces.
PIECEWISE_ABOVE = 64 * 1024
#: The size a piece aims at; a statement with no place to cut inside can make it larger.
PIECE_CHARS = 48 * 1024

_NEWLINE = re.compile(r"\r\n|\n")


@dataclass(frozen=True)
class _Container:
    """A statement whose body a piece may start inside."""

    line: int  # first line, decorators included
    header: str  # its stand-in header ("class _:", "def _():", "if _:"...)


@dataclass(frozen=True)
class _Cut:
    """A piece starts at ``line``, the first line of a statement inside ``chain``."""

    line: int
    chain: tuple[_Container, ...]

    @property
    def path(self) -> tuple[int, ...]:
        return tuple(container.line for container in self.chain)


@dataclass
class _OpenBlock:
    """A block whose statements are still being gathered from pieces."""

    node: cst.BaseCompoundStatement | None  # None: the module itself
    statements: list[cst.BaseStatement] = field(default_factory=list)


def parse_piecewise(
    text: str,
    piece_chars: int = PIECE_CHARS,
    syntax: ast.Module | CutPlan | None = None,
    *,
    verify: bool = True,
) -> cst.Module | None:
    """The module libcst's ``parse_module(text)`` gives, parsed in pieces; ``None`` when the
    text offers no place to cut or the pieces do not add up to it.

    ``syntax`` is CPython's tree of the same text, or the :func:`plan_cuts` made from it,
    if the caller has one. ``verify=False``
    leaves out the final check that the assembled tree's code is the text (a code
    generation of the whole module, a third of the time): the caller must check it (see
    :attr:`amplint.engine.source.ParsedSource.verified`) before it trusts what it reports.
    """
    if "\r" in text.replace("\r\n", "") or "\f" in text or "\x00" in text:
        return None  # line counting and indentation rules that differ between parsers
    lines = _lines(text)
    cuts = _choose_cuts(text, lines, piece_chars, syntax)
    if not cuts:
        return None
    try:
        module = _assemble(text, lines, cuts)
    except (cst.ParserSyntaxError, RecursionError, _Mismatch):
        return None
    if module is None or (verify and module.code != text):
        return None
    return module


class _Mismatch(Exception):
    """A piece's tree is not shaped as its plan says."""


def _lines(text: str) -> list[str]:
    """The text's lines as CPython numbers them: ``str.splitlines`` also breaks at vertical
    tabs, file separators, U+2028 and more, which may sit in string literals."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    if not lines[-1]:
        lines.pop()
    return lines


def _line_starts(lines: list[str]) -> list[int]:
    """The offset where each line starts (index 0 is line 1), and the text's length."""
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    return starts


@dataclass(frozen=True)
class CutPlan:
    """Where a module may be cut, read from CPython's tree: kept instead of the tree when
    the tree itself must go before libcst's parse (it would add to the memory peak)."""

    candidates: tuple[_Cut, ...]


def plan_cuts(tree: ast.Module, data: bytes) -> CutPlan:
    """The places ``data`` (the bytes ``tree`` was parsed from) may be cut. Its lines are
    split as :func:`_lines` splits the text: only their indentation, ASCII, is read."""
    candidates: list[_Cut] = []
    _collect_cuts(tree.body, (), data.split(b"\n"), candidates)
    return CutPlan(tuple(candidates))


def _choose_cuts(
    text: str, lines: list[str], piece_chars: int, tree: ast.Module | CutPlan | None
) -> list[_Cut]:
    if tree is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return []
    first_indent = _first_indent_line(text)
    if first_indent is None:
        return []
    if isinstance(tree, CutPlan):
        candidates = list(tree.candidates)
    else:
        candidates = []
        _collect_cuts(tree.body, (), lines, candidates)
    starts = _line_starts(lines)
    chosen: list[_Cut] = []
    piece_start = 0
    pending: _Cut | None = None
    # Piece 0 detects the module's default indentation: it must hold the first indented line.
    for cut in (cut for cut in candidates if cut.line > first_indent):
        offset = starts[cut.line - 1]
        if offset - piece_start > piece_chars and pending is not None:
            chosen.append(pending)
            piece_start = starts[pending.line - 1]
        pending = cut
    if pending is not None and len(text) - piece_start > piece_chars and pending not in chosen:
        chosen.append(pending)
    return chosen


def _collect_cuts(
    body: Sequence[ast.stmt],
    chain: tuple[_Container, ...],
    lines: Sequence[str] | Sequence[bytes],
    out: list[_Cut],
) -> None:
    previous_end: int | None = None
    for statement in body:
        first = _first_line(statement)
        if previous_end is not None and previous_end < first:
            out.append(_Cut(first, chain))
        header = _stand_in_header(statement)
        if header is not None and _body_on_own_lines(statement, lines):
            container = _Container(first, header)
            _collect_cuts(statement.body, (*chain, container), lines, out)  # type: ignore[attr-defined]
        previous_end = statement.end_lineno
        if previous_end is None:
            return


def _first_line(statement: ast.stmt) -> int:
    decorators = getattr(statement, "decorator_list", ())
    return min([statement.lineno, *(decorator.lineno for decorator in decorators)])


def _body_on_own_lines(statement: ast.stmt, lines: Sequence[str] | Sequence[bytes]) -> bool:
    """Whether the body is an indented block (not ``def f(): return 1``)."""
    first = statement.body[0]  # type: ignore[attr-defined]
    if getattr(first, "decorator_list", None):
        return True
    line = lines[first.lineno - 1]
    indentation = len(line) - len(line.lstrip(b" \t" if isinstance(line, bytes) else " \t"))
    return first.col_offset == indentation


def _stand_in_header(statement: ast.stmt) -> str | None:
    """The header that stands in for ``statement``'s when a piece starts inside its body;
    ``None`` for statements a piece never starts inside: those with a clause after the body
    (``else:``, ``except:``), which would follow the stand-in in the next piece."""
    kind = type(statement)
    if kind in (ast.If, ast.For, ast.While) and statement.orelse:  # type: ignore[attr-defined]
        return None
    return _STAND_INS.get(kind)


_STAND_INS: dict[type[ast.stmt], str] = {
    ast.ClassDef: "class _:",
    ast.FunctionDef: "def _():",
    ast.AsyncFunctionDef: "async def _():",
    ast.If: "if _:",
    ast.For: "for _ in _:",
    ast.While: "while _:",
    ast.With: "with _:",
}


def _first_indent_line(text: str) -> int | None:
    """The line of the module's first INDENT token (0 when it has none)."""
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.INDENT:
                return token.start[0]
    except (tokenize.TokenError, SyntaxError):
        return None
    return 0


def _indentation(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _assemble(text: str, lines: list[str], cuts: list[_Cut]) -> cst.Module | None:
    match = _NEWLINE.search(text)
    newline = match.group() if match else "\n"
    starts = _line_starts(lines)
    boundaries = [0, *(starts[cut.line - 1] for cut in cuts), len(text)]
    blocks = [_OpenBlock(None)]
    first_module: cst.Module | None = None
    module: cst.Module | None = None
    pending_lines: Sequence[cst.EmptyLine] = ()
    for index in range(len(cuts) + 1):
        chain = cuts[index - 1].chain if index else ()
        following = cuts[index] if index < len(cuts) else None
        source = text[boundaries[index] : boundaries[index + 1]]
        if first_module is not None:
            prefix = f"if 1:{newline}{first_module.default_indent}pass{newline}"
            headers = "".join(_indentation(lines[c.line - 1]) + c.header + newline for c in chain)
            source = prefix + headers + source
        if following is not None:
            source += _indentation(lines[following.line - 1]) + "pass" + newline
        module = parse_module(source)
        if first_module is None:
            first_module = module
            body = module.body
        else:
            if module.default_indent != first_module.default_indent or not module.body:
                raise _Mismatch
            body = module.body[1:]
        piece = _Piece(blocks, chain, following, pending_lines)
        piece.take(body, 0, ())
        pending_lines = piece.sentinel_lines
    if len(blocks) != 1 or first_module is None or module is None:
        return None
    return first_module.with_changes(
        body=tuple(blocks[0].statements),
        footer=module.footer,
        has_trailing_newline=module.has_trailing_newline,
    )


class _Piece:
    """Moves one parsed piece's statements into the blocks being assembled."""

    def __init__(
        self,
        blocks: list[_OpenBlock],
        chain: tuple[_Container, ...],
        following: _Cut | None,
        leading_lines: Sequence[cst.EmptyLine],
    ) -> None:
        self.blocks = blocks
        self.chain = chain
        self.following = following
        self.leading_lines = leading_lines
        self.sentinel_lines: Sequence[cst.EmptyLine] = ()

    def take(
        self, statements: Sequence[cst.BaseStatement], level: int, path: tuple[int, ...]
    ) -> None:
        """``statements`` are the piece's statements in the block at ``path`` (``level`` deep)."""
        rest = list(statements)
        chain_path = tuple(container.line for container in self.chain)
        if level < len(self.chain) and path == chain_path[:level]:
            if not rest:
                raise _Mismatch
            stand_in = rest.pop(0)
            inner_path = (*path, self.chain[level].line)
            self.take(_block(stand_in).body, level + 1, inner_path)
            if not self._continues(inner_path):
                self._close(_block(stand_in).footer)
        elif path == chain_path and self.leading_lines:
            if not rest:
                raise _Mismatch
            rest[0] = rest[0].with_changes(leading_lines=self.leading_lines)
            self.leading_lines = ()
        following = self.following
        if following is None or not rest:
            self.blocks[-1].statements.extend(rest)
            return
        if following.path == path:
            sentinel = rest.pop()
            if not isinstance(sentinel, cst.SimpleStatementLine):
                raise _Mismatch
            self.sentinel_lines = sentinel.leading_lines
            self.blocks[-1].statements.extend(rest)
        elif following.path[: len(path)] == path and len(following.path) > len(path):
            opened = rest.pop()
            if not isinstance(opened, _OPENABLE):
                raise _Mismatch
            self.blocks[-1].statements.extend(rest)
            self.blocks.append(_OpenBlock(opened))
            inner_path = (*path, following.path[len(path)])
            self.take(_block(opened).body, level + 1, inner_path)
        else:
            self.blocks[-1].statements.extend(rest)

    def _continues(self, path: tuple[int, ...]) -> bool:
        """Whether the block at ``path`` goes on in the next piece."""
        following = self.following
        return following is not None and following.path[: len(path)] == path

    def _close(self, footer: Sequence[cst.EmptyLine]) -> None:
        finished = self.blocks.pop()
        if finished.node is None or not self.blocks:
            raise _Mismatch
        block = _block(finished.node)
        node = finished.node.with_changes(
            body=block.with_changes(body=tuple(finished.statements), footer=footer)
        )
        self.blocks[-1].statements.append(node)


#: The libcst counterparts of the statements in ``_STAND_INS``.
_OPENABLE = (cst.ClassDef, cst.FunctionDef, cst.If, cst.For, cst.While, cst.With)


def _block(statement: cst.BaseStatement) -> cst.IndentedBlock:
    body = getattr(statement, "body", None)
    if not isinstance(body, cst.IndentedBlock):
        raise _Mismatch
    return body


def parse_large(
    data: bytes, syntax: ast.Module | CutPlan | None = None, *, verify: bool = True
) -> cst.Module | None:
    """:func:`parse_piecewise` for a file's bytes, honouring its coding cookie as
    ``libcst.parse_module`` does; ``None`` where the caller should parse it whole."""
    try:
        from libcst._parser.detect_config import convert_to_utf8
    except ImportError:  # a libcst that moved its internals: parse whole
        return None
    try:
        encoding, text = convert_to_utf8(data, partial=cst.PartialParserConfig())
    except (UnicodeDecodeError, LookupError, SyntaxError):
        return None  # the whole parse reports it
    if text.startswith("\ufeff"):
        return None
    try:
        module = parse_piecewise(text, syntax=syntax, verify=verify)
    except Exception:  # a whole parse follows, and it is the reference
        return None
    return module.with_changes(encoding=encoding) if module is not None else None
