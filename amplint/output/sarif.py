"""SARIF 2.1.0, the format code-scanning services (GitHub's among them) ingest."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import quote

from amplint import __version__
from amplint.catalog import HOMEPAGE, documentation, entry
from amplint.findings import Finding, Fix, Position
from amplint.output._common import EmitOptions, relative_posix, rule_name, rule_url

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"


def write(findings: Sequence[Finding], stream: TextIO, options: EmitOptions) -> None:
    del options
    json.dump(document(findings), stream, indent=2, ensure_ascii=False)
    stream.write("\n")


def document(findings: Sequence[Finding]) -> dict[str, Any]:
    rules = _rules(findings)
    index = {rule["id"]: position for position, rule in enumerate(rules)}
    run = {
        "tool": {
            "driver": {
                "name": "amplint",
                "informationUri": HOMEPAGE,
                "version": __version__,
                "semanticVersion": __version__,
                "rules": rules,
            }
        },
        # libcst columns count code points; SARIF's default would be UTF-16 code units.
        "columnKind": "unicodeCodePoints",
        "results": [_result(finding, index[finding.code]) for finding in findings],
    }
    return {"$schema": SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def _rules(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    first_by_code: dict[str, Finding] = {}
    for finding in findings:
        first_by_code.setdefault(finding.code, finding)
    return [_rule(first_by_code[code]) for code in sorted(first_by_code)]


def _rule(finding: Finding) -> dict[str, Any]:
    """A reportingDescriptor: the catalog's name, summary and documentation of the code."""
    name = rule_name(finding)
    rule: dict[str, Any] = {"id": finding.code, "name": name}
    known = entry(finding.code)
    if known is None:
        rule["shortDescription"] = {"text": name.replace("-", " ").capitalize()}
    else:
        rule["shortDescription"] = {"text": _plain(known.summary)}
        docs = known.docs
        rule["fullDescription"] = {
            "text": " ".join(_plain(docs.what_it_does).split()),
            "markdown": docs.what_it_does.strip(),
        }
        page = documentation(known, fixable=known.fixable)
        rule["help"] = {"text": page, "markdown": page}
        rule["properties"] = {"caught": known.caught, "fixable": known.fixable}
    rule["defaultConfiguration"] = {"level": "error"}
    url = rule_url(finding)
    if url is not None:
        rule["helpUri"] = url
    return rule


def _plain(markdown: str) -> str:
    # Code spans read the same without their backticks in a plain-text field.
    return markdown.strip().replace("`", "")


def _result(finding: Finding, rule_index: int) -> dict[str, Any]:
    uri = _uri(finding.filename)
    result: dict[str, Any] = {
        "ruleId": finding.code,
        "ruleIndex": rule_index,
        "level": "error",
        "message": {"text": finding.message},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": uri},
                    "region": _region(finding.location, finding.end_location),
                }
            }
        ],
    }
    if finding.cell is not None:
        # A notebook is JSON on disk: the region is where the code is stored in that JSON
        # (its cell and the row and column in the cell go in properties). Replacements are
        # left out: they are edits of cells, not of the file's JSON text.
        result["properties"] = {
            "cell": finding.cell,
            "cellLocation": {"row": finding.location.row, "column": finding.location.column},
        }
        result["message"]["text"] = f"cell {finding.cell}: {finding.message}"
        if finding.file_span is not None:
            region = _region(*finding.file_span)
            result["locations"][0]["physicalLocation"]["region"] = region
    # SARIF requires at least one replacement per fix, so an edit-less fix is left out.
    elif finding.fix is not None and finding.fix.edits:
        result["fixes"] = [_fix(finding.fix, uri)]
    return result


def _uri(filename: str) -> str:
    # A relative reference with `/` separators; spaces and the like are percent-encoded.
    return quote(relative_posix(filename), safe="/")


def _region(start: Position, end: Position) -> dict[str, int]:
    return {
        "startLine": start.row,
        "startColumn": start.column,
        "endLine": end.row,
        "endColumn": end.column,
    }


def _fix(fix: Fix, uri: str) -> dict[str, Any]:
    replacements = [
        {
            "deletedRegion": _region(edit.location, edit.end_location),
            "insertedContent": {"text": edit.content},
        }
        for edit in fix.edits
    ]
    return {
        "description": {"text": f"{fix.message} ({fix.applicability} fix)"},
        "artifactChanges": [{"artifactLocation": {"uri": uri}, "replacements": replacements}],
    }
