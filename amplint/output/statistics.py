"""``--statistics``: one line per code with its count, most frequent first."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TextIO

from amplint.findings import Finding
from amplint.output._common import is_applicable, rule_name


def write_statistics(
    findings: Sequence[Finding], stream: TextIO, *, unsafe_fixes: bool = False
) -> None:
    counts = Counter(finding.code for finding in findings)
    if not counts:
        return
    names = {finding.code: rule_name(finding) for finding in findings}
    fixable = {f.code for f in findings if is_applicable(f.fix, unsafe_fixes)}
    count_width = len(str(max(counts.values())))
    code_width = max(len(code) for code in counts)
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    for code, count in rows:
        mark = _mark(code in fixable, any_fixable=bool(fixable))
        stream.write(f"{count:>{count_width}}\t{code:<{code_width}}\t{mark}{names[code]}\n")


def _mark(fixable: bool, *, any_fixable: bool) -> str:
    # The `[ ]` keeps names aligned once any row carries a `[*]`.
    if not any_fixable:
        return ""
    return "[*] " if fixable else "[ ] "
