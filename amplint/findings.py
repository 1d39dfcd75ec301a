"""The one finding type every part of amplint speaks: rules produce it, emitters print it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Applicability = Literal["safe", "unsafe"]

# The small immutable records are named tuples, not frozen dataclasses: a frozen dataclass
# compiles half a dozen methods when its module is imported (1-2 ms each class on a slow
# core), a cost every one-file run paid before reading its file (issue 21).


class Position(NamedTuple):
    """A place in a source file; ``row`` and ``column`` are both 1-based (ordered by row,
    then column)."""

    row: int
    column: int


class Edit(NamedTuple):
    """Replace the text between ``location`` (inclusive) and ``end_location`` (exclusive)."""

    content: str
    location: Position
    end_location: Position
    #: in a notebook, the 1-based number of the cell the positions are in; else None.
    cell: int | None = None


class Fix(NamedTuple):
    applicability: Applicability
    message: str
    edits: tuple[Edit, ...]


@dataclass(frozen=True)
class Finding:
    """One problem at one place in one file, with the fix that would mend it (if any)."""

    code: str
    message: str
    filename: str
    location: Position
    end_location: Position
    fix: Fix | None = None
    #: kebab-case rule name (``backward-inside-autocast``); empty for parse errors.
    name: str = ""
    #: the physical source line the finding starts on, for the ``full`` output format.
    source_line: str = field(default="", compare=False)
    #: in a notebook, the 1-based number of the cell (counting every cell, as Jupyter
    #: shows them) that ``location`` is in; rows are then rows of that cell. Else None.
    cell: int | None = None
    #: in a notebook, where the finding's span is stored in the file on disk (inside the
    #: JSON strings of the cell's source), for formats that point into files (SARIF, GitHub).
    file_span: tuple[Position, Position] | None = field(default=None, compare=False)

    @property
    def fixable(self) -> bool:
        return self.fix is not None

    def sort_key(self) -> tuple[str, int, int, int, str]:
        return (self.filename, self.cell or 0, self.location.row, self.location.column, self.code)


def finding_to_dict(finding: Finding) -> dict[str, object]:
    """A JSON-ready form (the cache's); the filename is left to the reader to fill in."""
    fix = finding.fix
    return {
        "code": finding.code,
        "message": finding.message,
        "location": [finding.location.row, finding.location.column],
        "end_location": [finding.end_location.row, finding.end_location.column],
        "name": finding.name,
        "source_line": finding.source_line,
        "cell": finding.cell,
        "file_span": None
        if finding.file_span is None
        else [[p.row, p.column] for p in finding.file_span],
        "fix": None
        if fix is None
        else {
            "applicability": fix.applicability,
            "message": fix.message,
            "edits": [
                [
                    e.content,
                    e.location.row,
                    e.location.column,
                    e.end_location.row,
                    e.end_location.column,
                    e.cell,
                ]
                for e in fix.edits
            ],
        },
    }


def finding_from_dict(data: dict, filename: str) -> Finding:  # type: ignore[type-arg]
    fix_data = data["fix"]
    fix = None
    if fix_data is not None:
        fix = Fix(
            fix_data["applicability"],
            fix_data["message"],
            tuple(
                Edit(content, Position(r1, c1), Position(r2, c2), *cell)
                for content, r1, c1, r2, c2, *cell in fix_data["edits"]
            ),
        )
    return Finding(
        code=data["code"],
        message=data["message"],
        filename=filename,
        location=Position(*data["location"]),
        end_location=Position(*data["end_location"]),
        fix=fix,
        name=data["name"],
        source_line=data["source_line"],
        cell=data.get("cell"),
        file_span=None
        if data.get("file_span") is None
        else (Position(*data["file_span"][0]), Position(*data["file_span"][1])),
    )
