"""Code cells as one Python module: IPython syntax masked, positions mapped back to cells.

The code cells, in order, form one module (a scaler made in cell 2 is the scaler a loop in
cell 5 steps), as the kernel runs them. IPython's own syntax is not Python, so each such
line is *masked*: replaced by a ``pass`` statement at the same indentation carrying a
marker comment, which puts the original line back after a fix. Rows stay rows: a masked
line is still one line, so a finding's row in the module is a row in one cell.

What is masked (only in a cell that does not parse as Python already):

- line magics (``%matplotlib inline``, ``%pip install torch``), shell escapes
  (``!nvidia-smi``, ``files = !ls``), help (``model?``, ``?model``, ``model??``) and
  automagics (``pip install torch``);
- ``%time STMT``, ``%timeit STMT`` and ``%prun STMT`` run STMT as Python, so STMT is kept
  (the prefix is masked, columns shift back when mapped).

A cell that starts with a cell magic is part of the module only where IPython runs the
cell's body as Python in the kernel's namespace: ``%%time``, ``%%timeit``, ``%%capture``,
``%%prun``, ``%%debug`` (the magic line is masked). Every other cell magic (``%%bash``,
``%%writefile``, ``%%html``, ``%%python`` in a subprocess, ...) leaves its cell out.
"""

from __future__ import annotations

import ast
import difflib
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from amplint.findings import Edit, Position

#: Cell magics whose body is Python run in the kernel's own namespace.
PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug"})
#: Line magics whose argument is a Python statement run in the kernel's namespace.
_PYTHON_LINE_MAGICS = frozenset({"time", "timeit", "prun"})
#: Magics IPython runs without a ``%`` (automagic) that notebooks commonly use that way.
_AUTOMAGICS = frozenset(
    {"pip", "conda", "cd", "ls", "pwd", "env", "set_env", "load_ext", "matplotlib", "mkdir"}
)
_MARKER = "  # amplint-ipython:"
_MARKED = re.compile(r"^([ \t]*)(.*?)  # amplint-ipython:(\d+)$")
_CELL_MAGIC = re.compile(r"^%%(\w+)")
_MAGIC_ASSIGNMENT = re.compile(r"^[\w.\[\], ()*]+=\s*[%!]")
_LINE_MAGIC = re.compile(r"^%(\w+)\s+(\S.*)$")
_AUTOMAGIC = re.compile(r"^(\w+)\s")
_MAGIC_NAME = re.compile(r"^%%?[A-Za-z_]")
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class CodeCell:
    #: 1-based number among all the notebook's cells (what ``cell 4`` names).
    number: int
    text: str


@dataclass(frozen=True)
class _Mask:
    #: the original line without its line end.
    original: str
    #: the indentation the masked line was given.
    indent: str
    #: for a ``%time STMT`` line: the text before STMT (``%time ``); else None.
    prefix: str | None
    #: for such a line: what follows STMT (``  # is it slow?``), put back after it.
    suffix: str = ""


@dataclass
class NotebookModule:
    """The module the code cells form, and the way back from its rows to cells."""

    cells: list[CodeCell]
    #: the masked module text the engine lints.
    text: str
    #: the module with every masked line as it was in the cell (what fixes are diffed to).
    plain_text: str
    #: module row (0-based) -> (cell number, 1-based row in the cell).
    rows: list[tuple[int, int]]
    #: module row (0-based) -> columns a kept ``%time`` prefix shifts the line by.
    shifts: dict[int, int] = field(default_factory=dict)
    masks: list[_Mask] = field(default_factory=list)
    #: cell number -> the line end added to a cell's text to join the next one (the cell's
    #: own style: a CRLF cell gets ``\r\n``).
    terminated: dict[int, str] = field(default_factory=dict)

    @classmethod
    def build(cls, cells: Iterable[CodeCell]) -> NotebookModule:
        kept: list[CodeCell] = []
        masked_parts: list[str] = []
        plain_parts: list[str] = []
        rows: list[tuple[int, int]] = []
        shifts: dict[int, int] = {}
        masks: list[_Mask] = []
        terminated: dict[int, str] = {}
        for cell in cells:
            lines = _cell_lines(cell.text)
            if lines is None:
                continue  # a cell magic whose body is not kernel Python
            kept.append(cell)
            text = cell.text
            if text and not text.endswith(("\n", "\r")):
                terminated[cell.number] = _line_end(text)
                text += terminated[cell.number]
            plain = text.splitlines(keepends=True)
            masked = _mask(plain, lines, masks, shifts, len(rows))
            masked_parts.extend(masked)
            plain_parts.extend(plain)
            rows.extend((cell.number, row) for row in range(1, len(plain) + 1))
        return cls(
            kept, "".join(masked_parts), "".join(plain_parts), rows, shifts, masks, terminated
        )

    # -- positions

    def cell_position(self, position: Position) -> tuple[int, Position]:
        """(cell number, position in that cell) of a position in the module."""
        if not self.rows:
            return (self.cells[0].number if self.cells else 1), position
        index = position.row - 1
        if index >= len(self.rows):
            cell, row = self.rows[-1]
            return cell, Position(row + index - len(self.rows) + 1, 1)
        cell, row = self.rows[max(index, 0)]
        column = position.column
        shift = self.shifts.get(index)
        if shift is not None:
            line = self.text.splitlines()[index]
            indent = len(line) - len(line.lstrip(" \t"))
            if column > indent:
                column += shift
        return cell, Position(row, column)

    def moves_between_cells(self, edits: Sequence[Edit], text: str | None = None) -> bool:
        """Whether the edits, made to ``text`` (the module's own, or as earlier fixes left
        it), take lines out of one cell and put lines into another (``scaler.update()`` moved
        into the loop's cell): that rewrites the notebook's layout, which is the user's, and
        the cell left behind no longer does what it did when run alone. Edits in place in
        several cells (an import and its uses) move nothing."""
        from amplint.engine.fixes import apply_edits

        text = self.text if text is None else text
        before = self.cell_texts(text) if text != self.text else {}
        after = self.cell_texts(apply_edits(text, list(edits)))
        if before is None or after is None:
            return True
        original = {cell.number: cell.text for cell in self.cells}
        grown = shrunk = False
        for number in set(before) | set(after):
            old = len(before.get(number, original[number]).splitlines())
            new = len(after.get(number, original[number]).splitlines())
            grown = grown or new > old
            shrunk = shrunk or new < old
        return grown and shrunk

    def cell_line(self, number: int, row: int) -> str:
        for cell in self.cells:
            if cell.number == number:
                lines = cell.text.splitlines()
                return lines[row - 1] if 0 < row <= len(lines) else ""
        return ""

    # -- fixes

    def unmask(self, text: str) -> str | None:
        """Masked module text (after a fix) with the IPython lines put back; None when a
        fix dropped or doubled a masked line."""
        seen: set[int] = set()
        out: list[str] = []
        for line in text.splitlines(keepends=True):
            body = line.rstrip("\r\n")
            match = _MARKED.match(body)
            if match is None or _MARKER not in body:
                out.append(line)
                continue
            number = int(match.group(3))
            if number >= len(self.masks) or number in seen:
                return None
            seen.add(number)
            mask = self.masks[number]
            indent, statement = match.group(1), match.group(2)
            if mask.prefix is not None:
                restored = indent + mask.prefix + statement + mask.suffix
            else:
                original = mask.original
                rest = (
                    original[len(mask.indent) :]
                    if original.startswith(mask.indent)
                    else original.lstrip(" \t")
                )
                restored = indent + rest
            out.append(restored + line[len(body) :])
        if len(seen) != len(self.masks):
            return None
        return "".join(out)

    def cell_texts(self, fixed_masked: str) -> dict[int, str] | None:
        """New text of each cell a fix changed (by cell number), from the fixed module;
        None where the fix cannot be put back into cells (it crosses a cell boundary)."""
        fixed = self.unmask(fixed_masked)
        if fixed is None:
            return None
        old_lines = self.plain_text.splitlines(keepends=True)
        new_lines = fixed.splitlines(keepends=True)
        owners = [cell for cell, _ in self.rows]
        if len(owners) != len(old_lines):
            return None
        by_cell: dict[int, list[str]] = {cell.number: [] for cell in self.cells}
        # Lines a fix writes take the line end of the cell they land in.
        endings = {cell.number: _line_end(cell.text) for cell in self.cells}
        matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                for offset in range(i2 - i1):
                    by_cell[owners[i1 + offset]].append(new_lines[j1 + offset])
                continue
            touched = set(owners[i1:i2])
            if len(touched) > 1 and i2 - i1 == j2 - j1:
                # Changed lines next to each other in two cells: each keeps its own cell.
                for offset in range(i2 - i1):
                    by_cell[owners[i1 + offset]].append(new_lines[j1 + offset])
                continue
            if len(touched) > 1:
                return None
            if touched:
                owner = touched.pop()
            elif not owners:
                return None
            else:
                owner = _insertion_owner(owners, i1, new_lines[j1:j2])
            ending = endings[owner]
            by_cell[owner].extend(_ending_with(line, ending) for line in new_lines[j1:j2])
        _continue_blocks(self.cells, by_cell)
        changed: dict[int, str] = {}
        for cell in self.cells:
            text = "".join(by_cell[cell.number])
            added = self.terminated.get(cell.number)
            if added is not None and text.endswith(added):
                text = text[: -len(added)]
            if text != cell.text:
                if _runs_alone(cell.text) and not _runs_alone(text):
                    return None  # Jupyter runs cells one by one: each must stay whole
                changed[cell.number] = text
        return changed


def _line_end(text: str) -> str:
    """The line end a cell's lines use (its first one's); ``\n`` for a one-line cell."""
    match = _LINE_END.search(text)
    return match.group() if match is not None else "\n"


def _ending_with(line: str, ending: str) -> str:
    body = line.rstrip("\r\n")
    return body + ending if len(body) < len(line) else line


def _continue_blocks(cells: Sequence[CodeCell], by_cell: dict[int, list[str]]) -> None:
    """Indented lines a fix left at the top of a cell (a statement moved into the loop the
    previous cell ends with) belong to that previous cell."""
    for previous, cell in itertools.pairwise(cells):
        lines = by_cell[cell.number]
        if _starts_indented(cell.text.splitlines(keepends=True)) or not _starts_indented(lines):
            continue
        count = 0
        while count < len(lines) and (not lines[count].strip() or lines[count][:1] in " \t"):
            count += 1
        by_cell[previous.number].extend(lines[:count])
        del lines[:count]


def _starts_indented(lines: Sequence[str]) -> bool:
    first = next((line for line in lines if line.strip()), "")
    return first[:1] in (" ", "\t")


def _runs_alone(text: str) -> bool:
    """Whether a cell's text, IPython syntax masked, is Python on its own."""
    return _parses(NotebookModule.build([CodeCell(1, text)]).text)


def _insertion_owner(owners: Sequence[int], before: int, lines: Sequence[str]) -> int:
    """The cell that takes lines inserted before old line ``before``.

    Inside a cell, that cell. Between two cells: indented lines continue the block the
    previous cell ends in (``scaler.update()`` after a loop's last line); lines at the top
    level go with the statement they precede (a scaler hoisted above a loop).
    """
    if before >= len(owners):
        return owners[-1]
    if before == 0 or owners[before - 1] == owners[before]:
        return owners[before]
    first = next((line for line in lines if line.strip()), "")
    return owners[before - 1] if first[:1] in (" ", "\t") else owners[before]


def _cell_lines(text: str) -> list[str] | None:
    """The cell's lines, or None for a cell whose cell magic makes it not kernel Python."""
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    match = _CELL_MAGIC.match(first.lstrip())
    if match is not None and match.group(1) not in PYTHON_CELL_MAGICS:
        return None
    return lines


def _mask(
    plain: list[str],
    lines: Sequence[str],
    masks: list[_Mask],
    shifts: dict[int, int],
    first_row: int,
) -> list[str]:
    text = "".join(plain)
    if "%" not in text and "!" not in text and "?" not in text and not _has_automagic(lines):
        return plain
    if _parses(text):
        return plain
    masked = list(plain)
    continued_indent: str | None = None
    magic_seen = False
    for index, line in enumerate(plain):
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        stripped = body.strip()
        indent = body[: len(body) - len(body.lstrip(" \t"))]
        if continued_indent is not None:
            masks.append(_Mask(body, continued_indent, None))
            masked[index] = f"{continued_indent}pass{_MARKER}{len(masks) - 1}{ending}"
            continued_indent = continued_indent if stripped.endswith("\\") else None
            continue
        if not stripped or stripped.startswith("#"):
            continue
        if (
            stripped.startswith("%%")
            and not magic_seen
            and not any(p.strip() for p in plain[:index])
        ):
            magic_seen = True
            masks.append(_Mask(body, indent, None))
            masked[index] = f"{indent}pass{_MARKER}{len(masks) - 1}{ending}"
            continue
        if not _is_ipython_line(stripped):
            continue
        kept = _kept_statement(stripped)
        if kept is not None:
            prefix, statement, suffix = kept
            masks.append(_Mask(body, indent, prefix, suffix))
            masked[index] = f"{indent}{statement}{_MARKER}{len(masks) - 1}{ending}"
            shifts[first_row + index] = len(prefix)
            continue
        masks.append(_Mask(body, indent, None))
        masked[index] = f"{indent}pass{_MARKER}{len(masks) - 1}{ending}"
        if stripped.endswith("\\"):
            continued_indent = indent
    return masked


def _has_automagic(lines: Sequence[str]) -> bool:
    for line in lines:
        match = _AUTOMAGIC.match(line.lstrip())
        if match is not None and match.group(1) in _AUTOMAGICS:
            return True
    return False


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _is_ipython_line(stripped: str) -> bool:
    if stripped[0] == "%":
        # `% (a, b)` continuing a bracketed expression is Python's modulo, not a magic.
        return _MAGIC_NAME.match(stripped) is not None
    if stripped[0] == "!":
        return not stripped.startswith("!=")  # `!= -1` continues a comparison
    if stripped[0] == "?":
        return True
    if stripped.endswith("?") and "#" not in stripped:
        return True  # `model?`, `torch.amp.GradScaler??`
    if _MAGIC_ASSIGNMENT.match(stripped) and not _parses(stripped):
        return True  # `files = !ls`, `out = %sx ls`
    match = _AUTOMAGIC.match(stripped)
    return match is not None and match.group(1) in _AUTOMAGICS and not _parses(stripped)


def _kept_statement(stripped: str) -> tuple[str, str, str] | None:
    """(prefix, statement, suffix) of ``%time STMT  # note`` and kin, where STMT is one
    simple statement (its comment included; the suffix is empty)."""
    match = _LINE_MAGIC.match(stripped)
    if match is None or match.group(1) not in _PYTHON_LINE_MAGICS:
        return None
    statement = match.group(2)
    if statement.startswith("-") or statement.endswith("\\"):
        return None  # options (`%timeit -n 10 f()`) or a continued line: mask it whole
    try:
        tree = ast.parse(statement)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if len(tree.body) != 1 or isinstance(
        tree.body[0], ast.If | ast.For | ast.While | ast.With | ast.Try | ast.FunctionDef
    ):
        return None
    # A trailing comment stays with the statement: the marker follows it in the same
    # comment, and a noqa comment there is read as on any line.
    return stripped[: len(stripped) - len(statement)], statement, ""


def cell_edits(before: Mapping[int, str], after: Mapping[int, str]) -> tuple[Edit, ...]:
    """Edits (each naming its cell) that turn the cells' texts ``before`` into ``after``."""
    from amplint.engine.fixes import text_edits

    return tuple(
        Edit(edit.content, edit.location, edit.end_location, cell=number)
        for number in sorted(after)
        for edit in text_edits(before[number], after[number])
    )
