"""The closing lines of the text formats: how many findings, how many fixable, what was fixed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from amplint.findings import Finding
from amplint.output._common import EmitOptions, is_applicable, plural


def write_summary(findings: Sequence[Finding], stream: TextIO, options: EmitOptions) -> None:
    if options.quiet:
        return
    fixed_total = sum(options.fixed.values()) if options.fixed else 0
    if options.show_fixes and fixed_total:
        _write_fixed(options, fixed_total, stream)
    if not findings and not fixed_total and not options.unchecked:
        stream.write("All checks passed!\n")
        return
    if findings or fixed_total:
        stream.write(_found_line(len(findings), fixed_total, options.fixed is not None))
    if options.unchecked:
        # The pass line would be false: these paths were not checked at all.
        paths = plural(options.unchecked, "path")
        verb, errors = ("was", "error") if options.unchecked == 1 else ("were", "errors")
        stream.write(f"{paths} {verb} not checked: see the {errors} above.\n")
    fixable_line = _fixable_line(findings, options.unsafe_fixes)
    if fixable_line:
        stream.write(fixable_line)


def _found_line(remaining: int, fixed_total: int, fix_mode: bool) -> str:
    if not fix_mode or not fixed_total:
        return f"Found {plural(remaining, 'error')}.\n"
    total = remaining + fixed_total
    return f"Found {plural(total, 'error')} ({fixed_total} fixed, {remaining} remaining).\n"


def _fixable_line(findings: Sequence[Finding], unsafe_fixes: bool) -> str:
    applicable = sum(is_applicable(f.fix, unsafe_fixes) for f in findings)
    hidden = sum(f.fix is not None for f in findings) - applicable
    command = "amplint fix --unsafe-fixes" if unsafe_fixes else "amplint fix"
    hidden_fixes = plural(hidden, "hidden fix", "hidden fixes")
    hint = f"{hidden_fixes} can be enabled with the `--unsafe-fixes` option" if hidden else ""
    if applicable and hint:
        return f"[*] {applicable} fixable with the `{command}` command ({hint}).\n"
    if applicable:
        return f"[*] {applicable} fixable with the `{command}` command.\n"
    if hint:
        return f"No fixes available ({hint}).\n"
    return ""


def _write_fixed(options: EmitOptions, fixed_total: int, stream: TextIO) -> None:
    assert options.fixed is not None
    stream.write(f"Fixed {plural(fixed_total, 'error')}:\n")
    for filename in sorted(options.fixed):
        count = options.fixed[filename]
        if count:
            stream.write(f"- {filename}: {plural(count, 'fix', 'fixes')}\n")
    stream.write("\n")
