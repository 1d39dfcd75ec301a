"""A notebook file as bytes on disk: its cells' sources read, and written back in place.

Only the structure down to each cell's keys is walked here; every other value (outputs,
attachments, metadata) is handed whole to the C JSON decoder, so a notebook with megabytes
of images costs about what its sources cost. Writing replaces the text of edited ``source``
values and nothing else: indentation, key order, escapes, the trailing newline and every
other byte stay as they were.
"""

from __future__ import annotations

import bisect
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from json.decoder import scanstring  # type: ignore[attr-defined]

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
#: A ``\\uXXXX`` escape of a character beyond ASCII: the file was written with ensure_ascii.
_NON_ASCII_ESCAPE = re.compile(r"\\u(?!00[0-7])[0-9a-fA-F]{4}")
_BOM = "\ufeff"


class NotebookError(Exception):
    """A file that is not a notebook amplint can read (bad JSON, not nbformat 4)."""


@dataclass
class RawCell:
    #: 0-based position in the notebook's ``cells`` list.
    index: int
    cell_type: str
    source: str
    #: where the ``source`` value (list or string) lies in the file's text.
    span: tuple[int, int]
    is_list: bool
    #: spans of the list's string elements (empty for a string source).
    elements: list[tuple[int, int]] = field(default_factory=list)

    @property
    def number(self) -> int:
        """1-based, counting every cell, as Jupyter and ruff show it (``cell 4``)."""
        return self.index + 1


@dataclass
class NotebookFile:
    text: str
    cells: list[RawCell]
    #: top-level ``metadata``.
    metadata: Mapping[str, object]
    bom: bool = False
    #: (line start offset, 1-based row) pairs counted so far, sorted.
    _rows_at: list[tuple[int, int]] = field(default_factory=lambda: [(0, 1)], repr=False)
    #: cell index -> the cell's row each element of its source list starts on.
    _first_rows: dict[int, list[int]] = field(default_factory=dict, repr=False)

    def file_position(self, number: int, row: int, column: int) -> tuple[int, int]:
        """Where (1-based row, column of the file's text) character ``column`` of line
        ``row`` of cell ``number`` is stored: inside its JSON string, escapes counted."""
        cell = self.cells[number - 1]
        lines = split_source(cell.source)
        stored = self._element_of_row(cell, row) if cell.is_list else None
        if stored is not None:
            # Usually one element a line; sphinx-gallery's notebooks hold several lines in
            # one element, so the element is found by counting the lines of those before.
            start, before = stored
            prefix = (
                "".join(lines[row - 1 - before : row - 1]) + lines[row - 1][: max(column - 1, 0)]
            )
        else:
            start = cell.span[0]
            if cell.is_list:  # past the last line: the list's closing bracket
                return self._row_column(cell.span[1] - 1)
            prefix = (
                "".join(lines[: row - 1])
                + (lines[row - 1] if row <= len(lines) else "")[: max(column - 1, 0)]
            )
        # Only text beyond ASCII escapes differently in a file written with ensure_ascii.
        ascii_only = not prefix.isascii() and self._ascii_only
        escaped = len(json.dumps(prefix, ensure_ascii=ascii_only)) - 2
        return self._row_column(start + 1 + escaped)

    def code_layout(self) -> str:
        """Where the code cells' sources lie in the file (row and column of each stored
        string): what, beside the code itself, decides the file positions of findings."""
        places = []
        for cell in self.cells:
            if cell.cell_type == "code":
                starts = [start for start, _ in cell.elements] or [cell.span[0]]
                for start in starts:
                    row, column = self._row_column(start)
                    places.append(f"{row}:{column}")
        return " ".join(places)

    def _element_of_row(self, cell: RawCell, row: int) -> tuple[int, int] | None:
        """(where the list element holding line ``row`` starts, how many of the cell's
        lines that element holds before it); None past the last line."""
        if not 0 < row <= len(split_source(cell.source)):
            return None
        first_rows = self._first_rows.get(cell.index)
        if first_rows is None:
            first_rows, counted = [], 1
            for start, end in cell.elements:
                first_rows.append(counted)
                counted += len(split_source(json.loads(self.text[start:end])))
            self._first_rows[cell.index] = first_rows
        index = bisect.bisect_right(first_rows, row) - 1
        if index < 0:
            return None
        return cell.elements[index][0], row - first_rows[index]

    @cached_property
    def _ascii_only(self) -> bool:
        return self.text.isascii() and _NON_ASCII_ESCAPE.search(self.text) is not None

    def _row_column(self, offset: int) -> tuple[int, int]:
        line_start = self.text.rfind("\n", 0, offset) + 1
        # Rows are counted from the nearest offset counted before: megabytes of outputs
        # between two findings are counted once, not once per finding.
        known = self._rows_at
        index = bisect.bisect_right(known, (line_start, sys.maxsize)) - 1
        base, row = known[index]
        row += self.text.count("\n", base, line_start)
        bisect.insort(known, (line_start, row))
        return row, offset - line_start + 1

    @property
    def language(self) -> str | None:
        """The kernel's language, lower case, where the notebook names one (an empty name,
        as some exporters write, names none: the kernel spec's is asked next)."""
        info = self.metadata.get("language_info")
        if isinstance(info, dict) and isinstance(info.get("name"), str) and info["name"]:
            return info["name"].lower()
        spec = self.metadata.get("kernelspec")
        if isinstance(spec, dict) and isinstance(spec.get("language"), str) and spec["language"]:
            return spec["language"].lower()
        return None


def read_notebook(data: bytes) -> NotebookFile:
    """The cells of a notebook's bytes; raises NotebookError with a one-line reason."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotebookError(f"not valid UTF-8 ({error.reason} at byte {error.start})") from error
    bom = text.startswith(_BOM)
    if bom:
        text = text[1:]
    if not text.strip():
        # What an editor's "new notebook" leaves on disk until the first save: no cells.
        return NotebookFile(text, [], {}, bom)
    try:
        top, cells = _scan(text)
    except json.JSONDecodeError as error:
        raise NotebookError(
            f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from error
    except RecursionError as error:
        raise NotebookError("not valid JSON: nested too deeply") from error
    except _NotAnObject as error:
        raise NotebookError("not a Jupyter notebook (valid JSON, but not an object)") from error
    version = top.get("nbformat")
    if isinstance(version, bool) or not isinstance(version, int):
        raise NotebookError("not a Jupyter notebook (no integer 'nbformat' key)")
    if version != 4:
        raise NotebookError(
            f"nbformat {version} is not supported (amplint reads nbformat 4; convert it with "
            "`jupyter nbconvert --to notebook --inplace`)"
        )
    if cells is None:
        raise NotebookError("not an nbformat 4 notebook: 'cells' is missing or not a list")
    metadata = top.get("metadata", {})
    return NotebookFile(text, cells, metadata if isinstance(metadata, dict) else {}, bom)


class _NotAnObject(Exception):
    """Valid JSON whose top-level value is no object: a JSON file, not a notebook."""


def _scan(text: str) -> tuple[dict[str, object], list[RawCell] | None]:
    top: dict[str, object] = {}
    cells: list[RawCell] | None = None

    def member(key: str, pos: int) -> int:
        nonlocal cells
        if key == "cells" and text.startswith("[", pos):
            cells = []
            return _array(text, pos, lambda at: _cell(text, at, cells))  # type: ignore[arg-type]
        value, end = _DECODER.raw_decode(text, pos)
        top[key] = value
        return end

    pos = _skip(text, 0)
    if not text.startswith("{", pos):
        if pos < len(text):
            _DECODER.raw_decode(text, pos)  # a valid JSON value that is no object
            raise _NotAnObject
        raise json.JSONDecodeError("Expecting a JSON object", text, pos)
    end = _skip(text, _object(text, pos, member))
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return top, cells


def _cell(text: str, pos: int, cells: list[RawCell]) -> int:
    index = len(cells)
    found: dict[str, object] = {}

    def member(key: str, at: int) -> int:
        if key == "source":
            if text.startswith("[", at):
                elements: list[tuple[int, int]] = []
                parts: list[object] = []

                def element(start: int) -> int:
                    value, end = _DECODER.raw_decode(text, start)
                    parts.append(value)
                    elements.append((start, end))
                    return end

                end = _array(text, at, element)
                found["source"] = (parts, (at, end), elements)
                return end
            value, end = _DECODER.raw_decode(text, at)
            found["source"] = (value, (at, end), [])
            return end
        value, end = _DECODER.raw_decode(text, at)
        if key == "cell_type":
            found[key] = value
        return end

    if not text.startswith("{", pos):
        _DECODER.raw_decode(text, pos)
        raise NotebookError(f"not an nbformat 4 notebook: cell {index + 1} is not an object")
    end = _object(text, pos, member)
    cell_type = found.get("cell_type")
    if not isinstance(cell_type, str):
        raise NotebookError(f"not an nbformat 4 notebook: cell {index + 1} has no cell_type")
    if "source" not in found:
        raise NotebookError(f"not an nbformat 4 notebook: cell {index + 1} has no source")
    value, span, elements = found["source"]  # type: ignore[misc]
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        source, is_list = "".join(value), True
    elif isinstance(value, str):
        source, is_list = value, False
    else:
        raise NotebookError(
            f"not an nbformat 4 notebook: the source of cell {index + 1} is not text"
        )
    cells.append(RawCell(index, cell_type, source, span, is_list, elements))
    return end


def _skip(text: str, pos: int) -> int:
    return _WHITESPACE.match(text, pos).end()  # type: ignore[union-attr]


def _expect(text: str, pos: int, char: str, what: str) -> None:
    if not text.startswith(char, pos):
        raise json.JSONDecodeError(f"Expecting {what}", text, pos)


def _object(text: str, pos: int, member: Callable[[str, int], int]) -> int:
    """Walk the object at ``pos``; ``member(key, value_start)`` returns the value's end."""
    pos = _skip(text, pos + 1)
    if text.startswith("}", pos):
        return pos + 1
    while True:
        _expect(text, pos, '"', "property name enclosed in double quotes")
        key, pos = scanstring(text, pos + 1)
        pos = _skip(text, pos)
        _expect(text, pos, ":", "':' delimiter")
        pos = _skip(text, member(key, _skip(text, pos + 1)))
        if text.startswith("}", pos):
            return pos + 1
        _expect(text, pos, ",", "',' delimiter")
        pos = _skip(text, pos + 1)


def _array(text: str, pos: int, element: Callable[[int], int]) -> int:
    pos = _skip(text, pos + 1)
    if text.startswith("]", pos):
        return pos + 1
    while True:
        pos = _skip(text, element(pos))
        if text.startswith("]", pos):
            return pos + 1
        _expect(text, pos, ",", "',' delimiter")
        pos = _skip(text, pos + 1)


def split_source(text: str) -> list[str]:
    """A cell's text as nbformat stores it in a list: lines with their ends."""
    return text.splitlines(keepends=True)


def write_sources(notebook: NotebookFile, sources: Mapping[int, str]) -> bytes:
    """The notebook's bytes with the sources of the cells ``sources`` names (by 0-based
    index) replaced, each in the form it had (list of lines or one string)."""
    text = notebook.text
    ascii_only = text.isascii() and _NON_ASCII_ESCAPE.search(text) is not None
    style = _ListStyle.of(notebook)
    pieces: list[str] = []
    last = 0
    for index in sorted(sources):
        cell = notebook.cells[index]
        start, end = cell.span
        pieces.append(text[last:start])
        pieces.append(_encode(cell, sources[index], text, style, ascii_only))
        last = end
    pieces.append(text[last:])
    result = "".join(pieces)
    return ((_BOM if notebook.bom else "") + result).encode("utf-8")


def _dumps(value: str, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


def _encode(cell: RawCell, source: str, text: str, style: _ListStyle, ascii_only: bool) -> str:
    if not cell.is_list:
        return _dumps(source, ascii_only)
    lines = split_source(source)
    if not lines:
        return "[]"
    opening, separator, closing = style.around(cell, text)
    body = separator.join(_dumps(line, ascii_only) for line in lines)
    return "[" + opening + body + closing + "]"


@dataclass
class _ListStyle:
    """How this file lays out a list of source lines (taken from a cell that has one)."""

    opening: str | None
    separator: str | None
    closing: str | None
    newline: str

    @classmethod
    def of(cls, notebook: NotebookFile) -> _ListStyle:
        text = notebook.text
        newline = "\r\n" if "\r\n" in text else "\n"
        opening = separator = closing = None
        for cell in notebook.cells:
            if not cell.elements:
                continue
            if opening is None:
                opening, closing = _ends(cell, text)
            if separator is None and len(cell.elements) > 1:
                separator = text[cell.elements[0][1] : cell.elements[1][0]]
            if separator is not None:
                break
        return cls(opening, separator, closing, newline)

    def around(self, cell: RawCell, text: str) -> tuple[str, str, str]:
        """(after ``[``, between elements, before ``]``) for ``cell``'s list."""
        if cell.elements:
            opening, closing = _ends(cell, text)
            if len(cell.elements) > 1:
                separator = text[cell.elements[0][1] : cell.elements[1][0]]
            else:
                separator = "," + (opening if self.separator is None else self.separator[1:])
            return opening, separator, closing
        if self.opening is not None and self.closing is not None:
            opening, closing = self.opening, self.closing
        else:
            # nbformat's own layout: one indentation unit deeper than the "source" key.
            key_indent = _indent_of_line(text, cell.span[0])
            unit = " " * max(1, len(key_indent) // 3)
            opening = self.newline + key_indent + unit
            closing = self.newline + key_indent
        separator = self.separator if self.separator is not None else "," + opening
        return opening, separator, closing


def _ends(cell: RawCell, text: str) -> tuple[str, str]:
    start, end = cell.span
    return text[start + 1 : cell.elements[0][0]], text[cell.elements[-1][1] : end - 1]


def _indent_of_line(text: str, pos: int) -> str:
    line_start = text.rfind("\n", 0, pos) + 1
    line = text[line_start:pos]
    return line[: len(line) - len(line.lstrip(" \t"))]
