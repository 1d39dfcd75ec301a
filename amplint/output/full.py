"""The header line, the source line with the span underlined, and the fix's help."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import TextIO

from amplint.findings import Finding
from amplint.output._common import EmitOptions, header
from amplint.output.summary import write_summary

_TAB_WIDTH = 4


def write(findings: Sequence[Finding], stream: TextIO, options: EmitOptions) -> None:
    for finding in findings:
        stream.write(render(finding, unsafe_fixes=options.unsafe_fixes))
        stream.write("\n")
    write_summary(findings, stream, options)


def render(finding: Finding, *, unsafe_fixes: bool = False) -> str:
    lines = [header(finding, unsafe_fixes)]
    source = finding.source_line.rstrip("\r\n")
    if source:
        lines.extend(_snippet(finding, source))
    if finding.fix is not None and finding.fix.message:
        lines.append(f"  = help: {finding.fix.message}")
    return "\n".join(lines) + "\n"


def _snippet(finding: Finding, source: str) -> list[str]:
    row = str(finding.location.row)
    gutter = " " * len(row)
    start, width = _underline(finding, source)
    return [
        f"{gutter} |",
        f"{row} | {_expand(source)}",
        f"{gutter} | {' ' * start}{'^' * width} {finding.code}",
        f"{gutter} |",
    ]


def _underline(finding: Finding, source: str) -> tuple[int, int]:
    """Display offset and width of the span, measured in terminal cells."""
    begin = max(finding.location.column - 1, 0)
    if finding.end_location.row == finding.location.row:
        end = max(finding.end_location.column - 1, begin)
    else:
        # A span running on to later rows is underlined to the end of its first row.
        end = max(len(source), begin)
    start = _cells(source[:begin])
    width = _cells(source[begin:end])
    return start, max(width, 1)


def _expand(text: str) -> str:
    return text.replace("\t", " " * _TAB_WIDTH)


def _cells(text: str) -> int:
    # Wide (CJK) characters take two cells; tabs are shown as _TAB_WIDTH spaces.
    return sum(_char_cells(char) for char in text)


def _char_cells(char: str) -> int:
    if char == "\t":
        return _TAB_WIDTH
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
