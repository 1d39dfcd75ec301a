"""GitHub Actions workflow commands: an ``::error`` annotation per finding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from amplint.findings import Finding
from amplint.output._common import EmitOptions, place


def write(findings: Sequence[Finding], stream: TextIO, options: EmitOptions) -> None:
    del options
    for finding in findings:
        stream.write(annotation(finding) + "\n")


def annotation(finding: Finding) -> str:
    # In a notebook, the annotation goes where the code is stored in the file's JSON; the
    # title and the text name the cell and the row in it.
    start, end = finding.file_span or (finding.location, finding.end_location)
    cell = "" if finding.cell is None else f" in cell {finding.cell}"
    properties = {
        "title": f"amplint ({finding.code}){cell}",
        "file": finding.filename,
        "line": str(start.row),
        "col": str(start.column),
        "endLine": str(end.row),
        "endColumn": str(end.column),
    }
    joined = ",".join(f"{key}={escape_property(value)}" for key, value in properties.items())
    text = f"{place(finding)}: {finding.code} {finding.message}"
    return f"::error {joined}::{escape_data(text)}"


def escape_data(text: str) -> str:
    # `%` first, or the escapes added for the other characters would be escaped again.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")
