"""``path:row:col: CODE [*] message``, one line per finding, then the summary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from amplint.findings import Finding
from amplint.output._common import EmitOptions, header
from amplint.output.summary import write_summary


def write(findings: Sequence[Finding], stream: TextIO, options: EmitOptions) -> None:
    # `--show-fixes` before anything is fixed: say what each available fix would do.
    describe = options.show_fixes and options.fixed is None
    for finding in findings:
        stream.write(header(finding, options.unsafe_fixes) + "\n")
        if describe and finding.fix is not None:
            fix = finding.fix
            stream.write(f"  = help: {fix.message} ({fix.applicability} fix)\n")
    write_summary(findings, stream, options)
