"""amplint as a Python API: what the CLI, the language server and the tests all call."""

from __future__ import annotations

import difflib
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from amplint.config import Settings, codes_ignored_for, load_settings, resolve_selection
from amplint.discovery import discover
from amplint.engine import error_finding, fix_bytes, lint_bytes
from amplint.findings import Finding
from amplint.registry import default_codes, known_codes
from amplint.source import SourceError, read_bytes, write_atomic


@dataclass
class RunResult:
    findings: list[Finding] = field(default_factory=list)
    #: paths that could not be used at all (missing paths), with one-line reasons.
    errors: list[tuple[Path, str]] = field(default_factory=list)
    #: display filename -> number of fixes applied (``fix`` only).
    fixed: dict[str, int] = field(default_factory=dict)
    #: unified diffs (``fix --diff`` only).
    diffs: list[str] = field(default_factory=list)
    files_checked: int = 0


def selected_codes(
    settings: Settings,
    *,
    select: Sequence[str] | None = None,
    ignore: Sequence[str] | None = None,
    extend_select: Sequence[str] | None = None,
) -> frozenset[str]:
    return resolve_selection(
        settings,
        select=select,
        ignore=ignore,
        extend_select=extend_select,
        known_codes=known_codes(),
        default_codes=default_codes(),
    )


def display_name(path: Path) -> str:
    """The path as ruff shows it: relative to the working directory when below it."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return path.as_posix() if relative.startswith("..") else Path(relative).as_posix()


def codes_for_file(settings: Settings, path: Path, codes: Collection[str]) -> frozenset[str]:
    return frozenset(codes) - codes_ignored_for(settings, path, known_codes=known_codes())


def check_source(data: bytes, filename: str, codes: Collection[str]) -> list[Finding]:
    """Findings for one file's bytes (the language server's entry point)."""
    return lint_bytes(data, filename, codes).findings


def check_paths(paths: Sequence[Path], settings: Settings, codes: Collection[str]) -> RunResult:
    found = discover(paths, settings)
    result = RunResult(errors=list(found.errors), files_checked=len(found.files))
    for path in found.files:
        name = display_name(path)
        try:
            data = read_bytes(path)
        except SourceError as error:
            result.findings.append(error_finding(name, error))
            continue
        result.findings.extend(check_source(data, name, codes_for_file(settings, path, codes)))
    result.findings.sort(key=Finding.sort_key)
    return result


def fix_paths(
    paths: Sequence[Path],
    settings: Settings,
    codes: Collection[str],
    *,
    unsafe: bool = False,
    write: bool = True,
) -> RunResult:
    """Fix files in place (``write``) or collect unified diffs of the fixes instead."""
    found = discover(paths, settings)
    result = RunResult(errors=list(found.errors), files_checked=len(found.files))
    for path in found.files:
        name = display_name(path)
        try:
            data = read_bytes(path)
        except SourceError as error:
            result.findings.append(error_finding(name, error))
            continue
        fixed = fix_bytes(data, name, codes_for_file(settings, path, codes), unsafe=unsafe)
        result.findings.extend(fixed.remaining)
        if fixed.data is None:
            continue
        if write:
            try:
                _replace_if_unchanged(path, data, fixed.data)
            except SourceError as error:
                result.findings.append(error_finding(name, error))
                continue
        else:
            result.diffs.append(_unified_diff(name, data, fixed.data))
        result.fixed[name] = fixed.applied
    result.findings.sort(key=Finding.sort_key)
    return result


def _replace_if_unchanged(path: Path, original: bytes, fixed: bytes) -> None:
    """Write the fix unless someone changed the file since it was read."""
    try:
        current = path.read_bytes()
    except OSError as error:
        raise SourceError(f"cannot re-read file before writing: {error.strerror}") from error
    if current != original:
        raise SourceError("file changed while it was being fixed; not written")
    try:
        write_atomic(path, fixed)
    except OSError as error:
        raise SourceError(f"cannot write fixed file: {error.strerror or error}") from error


def _unified_diff(name: str, before: bytes, after: bytes) -> str:
    old = before.decode("utf-8", errors="replace").splitlines(keepends=True)
    new = after.decode("utf-8", errors="replace").splitlines(keepends=True)
    lines = difflib.unified_diff(old, new, fromfile=f"a/{name}", tofile=f"b/{name}")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


__all__ = [
    "RunResult",
    "Settings",
    "check_paths",
    "check_source",
    "fix_paths",
    "load_settings",
    "selected_codes",
]
