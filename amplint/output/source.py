"""The source text behind findings, for the ``full`` format's context lines and fix diffs."""

from __future__ import annotations

import io
import tokenize
from collections.abc import Iterable, Mapping

from amplint.findings import Edit, Position


def read_text(filename: str, sources: Mapping[str, str] | None = None) -> str | None:
    """The text of ``filename`` as it was checked: given (standard input), else from disk.

    ``None`` when it cannot be read or decoded; the emitters then show less, never fail.
    """
    if sources is not None and filename in sources:
        return sources[filename]
    try:
        with open(filename, "rb") as stream:
            return decode(stream.read())
    except (OSError, SyntaxError, UnicodeDecodeError, LookupError):
        return None


def decode(data: bytes) -> str:
    """Source bytes as text, by their own coding cookie or BOM (as the linter decodes them);
    raises ``SyntaxError``, ``UnicodeDecodeError`` or ``LookupError`` when they cannot be."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return data.decode(encoding)


def apply_edits(text: str, edits: Iterable[Edit]) -> str | None:
    """``text`` with ``edits`` applied; ``None`` when an edit does not fit the text (the file
    changed after it was checked)."""
    starts = _line_starts(text)
    spans = []
    for edit in edits:
        begin, end = _offset(starts, text, edit.location), _offset(starts, text, edit.end_location)
        if begin is None or end is None or end < begin:
            return None
        spans.append((begin, end, edit.content))
    spans.sort()
    pieces, cursor = [], 0
    for begin, end, content in spans:
        if begin < cursor:
            return None  # overlapping edits: not a fix this text can take
        pieces += [text[cursor:begin], content]
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)


def _line_starts(text: str) -> list[int]:
    starts, offset = [0], 0
    for line in text.splitlines(keepends=True):
        offset += len(line)
        starts.append(offset)
    return starts


def _offset(starts: list[int], text: str, position: Position) -> int | None:
    row = position.row - 1
    if row < 0 or row >= len(starts):
        return None
    offset = starts[row] + position.column - 1
    limit = starts[row + 1] if row + 1 < len(starts) else len(text)
    return offset if position.column >= 1 and offset <= limit else None
