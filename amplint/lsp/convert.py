"""Translating amplint's 1-based character positions into LSP positions and back.

amplint counts columns in characters (code points) of the decoded line, 1-based. LSP counts
lines from 0 and columns in the *negotiated* position encoding: UTF-16 code units unless the
client offered something else. Everything position-related lives here so that the server
modules never do column arithmetic themselves.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence

from lsprotocol import types

from amplint.findings import Edit, Position

#: LSP's line terminators; ``str.splitlines`` would also split on \f, \v, \x1c, \u2028...
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

UTF8 = types.PositionEncodingKind.Utf8
UTF16 = types.PositionEncodingKind.Utf16
UTF32 = types.PositionEncodingKind.Utf32


def split_lines(text: str) -> list[str]:
    """The document's lines without terminators, as LSP numbers them (always at least one)."""
    return _LINE_BREAK.split(text)


def code_units(text: str, encoding: str = UTF16) -> int:
    """Length of ``text`` in the units of ``encoding``."""
    if encoding == UTF8:
        return len(text.encode("utf-8", errors="surrogatepass"))
    if encoding == UTF32:
        return len(text)
    # Characters outside the BMP take two UTF-16 units; everything else one.
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def to_lsp_position(
    lines: Sequence[str], position: Position, encoding: str = UTF16
) -> types.Position:
    """amplint's 1-based ``(row, column in characters)`` as a 0-based LSP position."""
    line = position.row - 1
    if line >= len(lines):
        # Positions just past the last line (end-of-file edits) are clamped to its end.
        last = len(lines) - 1
        return types.Position(line=last, character=code_units(lines[last], encoding))
    text = lines[max(line, 0)]
    index = max(position.column - 1, 0)
    overflow = max(index - len(text), 0)
    return types.Position(
        line=max(line, 0), character=code_units(text[:index], encoding) + overflow
    )


def to_lsp_range(
    lines: Sequence[str], start: Position, end: Position, encoding: str = UTF16
) -> types.Range:
    return types.Range(
        start=to_lsp_position(lines, start, encoding), end=to_lsp_position(lines, end, encoding)
    )


def to_text_edits(
    lines: Sequence[str], edits: Iterable[Edit], encoding: str = UTF16
) -> list[types.TextEdit]:
    return [
        types.TextEdit(
            range=to_lsp_range(lines, edit.location, edit.end_location, encoding),
            new_text=edit.content,
        )
        for edit in edits
    ]


def offset_position(text: str, offset: int, encoding: str = UTF16) -> types.Position:
    """The LSP position of character ``offset`` in ``text``."""
    before = text[:offset]
    line_starts = [match.end() for match in _LINE_BREAK.finditer(before)]
    line = len(line_starts)
    line_start = line_starts[-1] if line_starts else 0
    return types.Position(line=line, character=code_units(before[line_start:], encoding))


def minimal_edits(before: str, after: str, encoding: str = UTF16) -> list[types.TextEdit]:
    """Line-granular edits turning ``before`` into ``after``.

    Smaller than one whole-document replacement, so editors keep cursors, folds and
    breakpoints on the lines a fix-all does not touch.
    """
    old = before.splitlines(keepends=True)
    new = after.splitlines(keepends=True)
    # Character offsets of each old line's start, plus the end of the text.
    starts = [0]
    for line in old:
        starts.append(starts[-1] + len(line))
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    edits = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        edits.append(
            types.TextEdit(
                range=types.Range(
                    start=offset_position(before, starts[i1], encoding),
                    end=offset_position(before, starts[i2], encoding),
                ),
                new_text="".join(new[j1:j2]),
            )
        )
    return edits


def ranges_intersect(a: types.Range, b: types.Range) -> bool:
    """Closed-interval overlap, so an empty range (a cursor) touching a diagnostic counts."""
    return _key(a.start) <= _key(b.end) and _key(b.start) <= _key(a.end)


def contains(rng: types.Range, position: types.Position) -> bool:
    return _key(rng.start) <= _key(position) <= _key(rng.end)


def _key(position: types.Position) -> tuple[int, int]:
    return (position.line, position.character)
