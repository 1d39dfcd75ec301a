"""``--statistics``: one entry per code with its count, most frequent first."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

from amplint.findings import Finding
from amplint.output._common import is_applicable, rule_name


def write_statistics(
    findings: Sequence[Finding], stream: TextIO, *, unsafe_fixes: bool = False, fmt: str = "text"
) -> None:
    """Text (count, code, ``[*]``, name), or with ``fmt="json"`` a JSON list of objects."""
    rows = statistics(findings, unsafe_fixes=unsafe_fixes)
    if fmt == "json":
        json.dump(rows, stream, indent=2, sort_keys=True)
        stream.write("\n")
        return
    if not rows:
        return
    any_fixable = any(row["fixable"] for row in rows)
    count_width = len(str(max(row["count"] for row in rows)))
    code_width = max(len(row["code"]) for row in rows)
    for row in rows:
        mark = _mark(row["fixable"], any_fixable=any_fixable)
        stream.write(
            f"{row['count']:>{count_width}}\t{row['code']:<{code_width}}\t{mark}{row['name']}\n"
        )


def statistics(findings: Sequence[Finding], *, unsafe_fixes: bool = False) -> list[dict[str, Any]]:
    """``{code, name, count, fixable, fixable_count}`` per code, most frequent first."""
    counts = Counter(finding.code for finding in findings)
    names = {finding.code: rule_name(finding) for finding in findings}
    fixable = Counter(f.code for f in findings if is_applicable(f.fix, unsafe_fixes))
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [
        {
            "code": code,
            "name": names[code],
            "count": count,
            "fixable": fixable[code] > 0,
            "fixable_count": fixable[code],
        }
        for code, count in ordered
    ]


def _mark(fixable: bool, *, any_fixable: bool) -> str:
    # The `[ ]` keeps names aligned once any row carries a `[*]`.
    if not any_fixable:
        return ""
    return "[*] " if fixable else "[ ] "
