"""A JSON list of findings with ruff's keys (``code``, ``location``, ``fix``, ...)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO

from amplint.catalog import PARSE_ERROR_CODE
from amplint.findings import Edit, Finding, Fix, Position
from amplint.output._common import EmitOptions, rule_url


def write(findings: Sequence[Finding], stream: TextIO, options: EmitOptions) -> None:
    del options  # the JSON carries every fix with its applicability; nothing to choose
    document = [finding_to_dict(finding) for finding in findings]
    json.dump(document, stream, indent=2, sort_keys=True, ensure_ascii=False)
    stream.write("\n")


def finding_to_dict(finding: Finding) -> dict[str, Any]:
    return {
        "code": finding.code,
        "message": finding.message,
        "filename": finding.filename,
        "location": _position(finding.location),
        "end_location": _position(finding.end_location),
        "fix": _fix(finding.fix),
        "url": rule_url(finding),
        # A parse error cannot be silenced by a suppression comment, so it has no row for one.
        "noqa_row": None if finding.code == PARSE_ERROR_CODE else finding.location.row,
        # In a notebook: the 1-based cell number (every cell counted, as Jupyter shows them);
        # rows are then rows of that cell. None in a Python file.
        "cell": finding.cell,
    }


def _position(position: Position) -> dict[str, int]:
    return {"row": position.row, "column": position.column}


def _fix(fix: Fix | None) -> dict[str, Any] | None:
    if fix is None:
        return None
    return {
        "applicability": fix.applicability,
        "message": fix.message,
        "edits": [_edit(edit) for edit in fix.edits],
    }


def _edit(edit: Edit) -> dict[str, Any]:
    result: dict[str, Any] = {
        "content": edit.content,
        "location": _position(edit.location),
        "end_location": _position(edit.end_location),
    }
    if edit.cell is not None:
        result["cell"] = edit.cell
    return result
