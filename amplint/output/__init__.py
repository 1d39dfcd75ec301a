"""Output formats: one small emitter module per ``--output-format``, all over ``Finding``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import import_module
from typing import TextIO

from amplint.findings import Finding
from amplint.output._common import EmitOptions, Emitter

__all__ = ["FORMATS", "EmitOptions", "emit", "emit_statistics"]

#: The ``--output-format`` choices, the default first: each is the module of this package
#: whose ``write`` emits it, imported when chosen (a run prints one format: a one-file run
#: in an editor or pre-commit loads no other).
FORMATS: tuple[str, ...] = ("concise", "full", "json", "sarif", "github")


def _emitter(fmt: str) -> Emitter | None:
    if fmt not in FORMATS:
        return None
    write: Emitter = import_module(f"amplint.output.{fmt}").write
    return write


def emit(
    fmt: str,
    findings: Sequence[Finding],
    stream: TextIO,
    *,
    show_fixes: bool = False,
    fixed: Mapping[str, int] | None = None,
    unsafe_fixes: bool = False,
    quiet: bool = False,
    unchecked: int = 0,
    sources: Mapping[str, str] | None = None,
) -> None:
    """Write ``findings`` to ``stream`` in format ``fmt`` (one of ``FORMATS``).

    ``fixed`` (filename -> fixes applied) is given after fixing; with ``show_fixes`` the text
    formats list those files (before fixing: each finding's available fix). ``unsafe_fixes``
    says whether unsafe fixes count as fixable (``[*]``), as with ruff's ``--unsafe-fixes``.
    ``quiet`` leaves out the summary; ``unchecked`` paths that could not be checked keep the
    summary from saying that all checks passed; ``sources`` holds the text of findings'
    files that are not on disk (standard input).
    """
    emitter = _emitter(fmt)
    if emitter is None:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    options = EmitOptions(
        show_fixes=show_fixes,
        fixed=fixed,
        unsafe_fixes=unsafe_fixes,
        quiet=quiet,
        unchecked=unchecked,
        sources=sources,
    )
    # Sorting again is cheap and keeps every format deterministic whatever the caller did.
    emitter(sorted(findings, key=Finding.sort_key), stream, options)


def emit_statistics(
    findings: Sequence[Finding], stream: TextIO, *, unsafe_fixes: bool = False, fmt: str = "text"
) -> None:
    """ruff-style ``--statistics``: count, code, ``[*]`` when fixable, rule name; with
    ``fmt="json"`` (``--output-format json``) a JSON list of the same facts."""
    from amplint.output.statistics import write_statistics

    write_statistics(findings, stream, unsafe_fixes=unsafe_fixes, fmt=fmt)
