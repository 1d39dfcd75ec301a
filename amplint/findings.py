"""The one finding type every part of amplint speaks: rules produce it, emitters print it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Applicability = Literal["safe", "unsafe"]


@dataclass(frozen=True, order=True)
class Position:
    """A place in a source file; ``row`` and ``column`` are both 1-based."""

    row: int
    column: int


@dataclass(frozen=True)
class Edit:
    """Replace the text between ``location`` (inclusive) and ``end_location`` (exclusive)."""

    content: str
    location: Position
    end_location: Position


@dataclass(frozen=True)
class Fix:
    applicability: Applicability
    message: str
    edits: tuple[Edit, ...]


@dataclass(frozen=True)
class Finding:
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

    @property
    def fixable(self) -> bool:
        return self.fix is not None

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.filename, self.location.row, self.location.column, self.code)


#: Code of the diagnostic given to a file that cannot be read, decoded or parsed.
PARSE_ERROR_CODE = "AMP999"
