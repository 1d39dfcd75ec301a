"""``path:row:col: CODE [*] message``, one line per finding, then the summary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from amplint.findings import Finding
from amplint.output._common import EmitOptions, header
from amplint.output.summary import write_summary


def write(findings: Sequence[Finding], stream: TextIO, options: EmitOptions) -> None:
    for finding in findings:
        stream.write(header(finding, options.unsafe_fixes) + "\n")
    write_summary(findings, stream, options)
