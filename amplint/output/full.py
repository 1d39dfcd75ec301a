"""The header line, the source around the finding with its span underlined, and the fix as a
diff of the lines it changes."""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Sequence
from typing import TextIO

from amplint.findings import Finding
from amplint.output._common import EmitOptions, header
from amplint.output.source import apply_edits, read_text
from amplint.output.summary import write_summary

_TAB_WIDTH = 4
#: Lines shown before and after the finding's line, and around each changed line of a fix.
CONTEXT = 2


def write(findings: Sequence[Finding], stream: TextIO, options: EmitOptions) -> None:
    texts: dict[str, list[str] | None] = {}
    for finding in findings:
        if finding.filename not in texts:
            text = read_text(finding.filename, options.sources)
            texts[finding.filename] = None if text is None else text.splitlines(keepends=True)
        lines = texts[finding.filename]
        stream.write(render(finding, unsafe_fixes=options.unsafe_fixes, lines=lines))
        stream.write("\n")
    write_summary(findings, stream, options)


def render(finding: Finding, *, unsafe_fixes: bool = False, lines: list[str] | None = None) -> str:
    """One finding; ``lines`` is its file's text (kept line ends) when it could be read."""
    out = [header(finding, unsafe_fixes)]
    row = finding.location.row
    current = _line(lines, row)
    if lines is None or current is None or _strip(current) != _strip(finding.source_line):
        # Without the file as it was checked, the finding's own line is all there is.
        lines, current = None, finding.source_line
    source = _strip(current)
    if source:
        out.extend(_snippet(finding, source, lines))
    fix = finding.fix
    if fix is not None and fix.message:
        out.append(f"  = help: {fix.message}")
    if fix is not None and fix.edits and lines is not None:
        diff = _fix_diff(lines, finding)
        if diff:
            out += ["", f"  {fix.applicability.capitalize()} fix:", *diff]
    return "\n".join(out) + "\n"


def _line(lines: list[str] | None, row: int) -> str | None:
    if lines is None or not 1 <= row <= len(lines):
        return None
    return lines[row - 1]


def _strip(line: str) -> str:
    return line.rstrip("\r\n")


def _snippet(finding: Finding, source: str, lines: list[str] | None) -> list[str]:
    row = finding.location.row
    first = max(1, row - CONTEXT) if lines is not None else row
    last = min(len(lines), row + CONTEXT) if lines is not None else row
    width = len(str(last))
    gutter = " " * width
    start, span = _underline(finding, source)
    out = [f"{gutter} |"]
    for number in range(first, last + 1):
        text = source if number == row else _strip(lines[number - 1]) if lines else ""
        out.append(f"{number:>{width}} | {_expand(text)}".rstrip())
        if number == row:
            out.append(f"{gutter} | {' ' * start}{'^' * span} {finding.code}")
    out.append(f"{gutter} |")
    return out


def _fix_diff(lines: list[str], finding: Finding) -> list[str]:
    """The fix's changed lines with ``CONTEXT`` lines around them, numbered before and after."""
    assert finding.fix is not None
    fixed = apply_edits("".join(lines), finding.fix.edits)
    if fixed is None:
        return []
    after = fixed.splitlines(keepends=True)
    matcher = difflib.SequenceMatcher(None, lines, after, autojunk=False)
    groups = list(matcher.get_grouped_opcodes(CONTEXT))
    if not groups:
        return []
    width = len(str(max(len(lines), len(after))))
    blank = " " * width
    out: list[str] = []
    for index, group in enumerate(groups):
        if index:
            out.append(f"  {blank} {blank} | ...")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                for offset in range(i2 - i1):
                    old, new = i1 + offset + 1, j1 + offset + 1
                    out.append(f"  {old:>{width}} {new:>{width}} |  {_show(lines[i1 + offset])}")
                continue
            for number in range(i1, i2):
                out.append(f"  {number + 1:>{width}} {blank} | -{_show(lines[number])}")
            for number in range(j1, j2):
                out.append(f"  {blank} {number + 1:>{width}} | +{_show(after[number])}")
    return [line.rstrip() for line in out]


def _show(line: str) -> str:
    return _expand(_strip(line))


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
