"""amplint as a Python API: what the CLI, the language server and the tests all call."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from amplint.cache import FindingsCache, content_hash
from amplint.config import Settings, codes_ignored_for, load_settings, resolve_selection
from amplint.discovery import discover
from amplint.engine.source import SourceError, error_finding, read_bytes, write_atomic
from amplint.findings import Finding, Fix

# The engine, the rules and libcst are imported on first use: a run answered entirely from
# the cache never needs them (they are most of amplint's start-up time).

#: Below this many files a process pool costs more than it saves.
_MIN_FILES_PER_POOL = 24

#: A large file's syntax tree is hundreds of thousands of objects made in one go and dropped
#: together, with no reference cycles among them: collecting the youngest generation every
#: 10,000 allocations instead of CPython's 700 took 12% off a cold single-core run over
#: torch's sources (12.3 s -> 10.7 s, same peak memory).
COLLECTOR_THRESHOLDS = (10_000, 10, 10)


def tune_collector() -> None:
    """Set the garbage collector for linting; for processes amplint owns (the CLI's check
    and fix, the language server), never for a user's program."""
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


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


@dataclass(frozen=True)
class Selection:
    """Rule selectors as given on the command line, resolved against the settings lazily."""

    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None
    extend_select: tuple[str, ...] | None = None

    def codes(self, settings: Settings) -> frozenset[str]:
        """The enabled codes; raises ConfigError for an unknown selector."""
        return selected_codes(
            settings, select=self.select, ignore=self.ignore, extend_select=self.extend_select
        )

    def key(self) -> str:
        return repr((self.select, self.ignore, self.extend_select))


def selected_codes(
    settings: Settings,
    *,
    select: Sequence[str] | None = None,
    ignore: Sequence[str] | None = None,
    extend_select: Sequence[str] | None = None,
) -> frozenset[str]:
    from amplint.catalog import default_codes, known_codes

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
    from amplint.catalog import known_codes

    return frozenset(codes) - codes_ignored_for(settings, path, known_codes=known_codes())


def check_source(
    data: bytes, filename: str, codes: Collection[str], *, with_edits: bool = True
) -> list[Finding]:
    """Findings for one file's bytes.

    Without ``with_edits`` a fixable finding's fix carries its title and applicability but
    no edits: what `[*]` and the summary need, at a fraction of the cost on large files.
    """
    from amplint.engine.run import lint_bytes

    if with_edits:
        return lint_bytes(data, filename, codes).findings
    result = lint_bytes(data, filename, codes, fixes=False)
    findings = []
    for finding in result.findings:
        summary = result.fix_summary(finding) if finding.fix is None else None
        if summary is not None:
            finding = replace(finding, fix=Fix(summary[1], summary[0], ()))
        findings.append(finding)
    return findings


@dataclass(frozen=True)
class _Outcome:
    findings: list[Finding]
    #: content hash of what was read; None when the file could not be read (not cached).
    digest: str | None
    stat: os.stat_result | None
    #: the cached entry still applies: the content is unchanged although its stat moved.
    unchanged: bool = False


_worker_job: tuple[Settings, frozenset[str], bool] | None = None


def _start_worker(settings: Settings, codes: frozenset[str], with_edits: bool = True) -> None:
    global _worker_job
    _worker_job = (settings, codes, with_edits)


def _lint_one(item: tuple[Path, str | None]) -> _Outcome:
    """Read, hash and lint one file (runs in a pool worker or in the main process)."""
    assert _worker_job is not None
    settings, codes, with_edits = _worker_job
    path, cached_digest = item
    name = display_name(path)
    try:
        stat = os.stat(path)
        data = read_bytes(path)
    except (OSError, SourceError) as error:
        source_error = error if isinstance(error, SourceError) else SourceError(str(error))
        return _Outcome([error_finding(name, source_error)], None, None)
    digest = content_hash(data)
    if digest == cached_digest:
        return _Outcome([], digest, stat, unchanged=True)
    findings = check_source(
        data, name, codes_for_file(settings, path, codes), with_edits=with_edits
    )
    return _Outcome(findings, digest, stat)


def _lint_all(
    items: list[tuple[Path, str | None]],
    settings: Settings,
    codes: frozenset[str],
    jobs: int,
    progress: Callable[[int, int], None] | None,
    with_edits: bool = True,
) -> Iterator[tuple[Path, _Outcome]]:
    total = len(items)
    if jobs > 1 and total >= _MIN_FILES_PER_POOL:
        method = "fork" if sys.platform == "linux" else "spawn"
        # Imported here: a run answered from the cache never starts a pool.
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=multiprocessing.get_context(method),
            initializer=_start_worker,
            initargs=(settings, codes, with_edits),
        ) as pool:
            # Workers read the files themselves and send back only small findings: no large
            # bytes or syntax trees cross the process boundary.
            # Largest files first, in small chunks: one huge file must not end up last.
            items = sorted(items, key=_size, reverse=True)
            outcomes = pool.map(_lint_one, items, chunksize=4)
            for done, (item, outcome) in enumerate(zip(items, outcomes, strict=True), 1):
                if progress:
                    progress(done, total)
                yield item[0], outcome
        return
    _start_worker(settings, codes, with_edits)
    for done, item in enumerate(items, 1):
        outcome = _lint_one(item)
        if progress:
            progress(done, total)
        yield item[0], outcome


def _size(item: tuple[Path, str | None]) -> int:
    try:
        return os.path.getsize(item[0])
    except OSError:
        return 0


def check_paths(
    paths: Sequence[Path],
    settings: Settings,
    codes: Collection[str] | Selection,
    *,
    use_cache: bool = True,
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    with_edits: bool = True,
) -> RunResult:
    """Check files; unchanged files are answered from the cache, the rest by a process pool.

    ``codes`` may be a :class:`Selection`, resolved only when some file must be analysed.
    Without ``with_edits`` fixes are described but their edits are not computed (see
    :func:`check_source`); such results are cached apart from complete ones.
    """
    found = discover(paths, settings)
    result = RunResult(errors=list(found.errors), files_checked=len(found.files))
    if isinstance(codes, Selection):
        selection_key = codes.key()
    else:
        codes = frozenset(codes)
        selection_key = ",".join(sorted(codes))
    if not with_edits:
        selection_key += "|without-edits"
    cache = (
        FindingsCache(
            cache_root(settings), FindingsCache.key_for(settings.fingerprint(), selection_key)
        )
        if use_cache
        else None
    )
    pending: list[tuple[Path, str | None]] = []
    for path in found.files:
        entry = None
        if cache is not None:
            with contextlib.suppress(OSError):
                absolute = os.path.abspath(path)
                entry = cache.lookup_by_stat(absolute, os.stat(absolute))
                if entry is not None:
                    if entry.findings:  # most files have none: skip naming them
                        result.findings.extend(cache.findings_of(entry, display_name(path)))
                    continue
        pending.append((path, cache.digest_of(os.path.abspath(path)) if cache else None))
    if pending and isinstance(codes, Selection):
        codes = codes.codes(settings)
    enabled = frozenset(codes) if not isinstance(codes, Selection) else frozenset()
    for path, outcome in _lint_all(
        pending, settings, enabled, jobs or default_jobs(), progress, with_edits
    ):
        absolute = os.path.abspath(path)
        if cache is not None and outcome.unchanged and outcome.stat is not None:
            entry = cache.lookup_by_content(absolute, outcome.digest or "", outcome.stat)
            if entry is not None:
                result.findings.extend(cache.findings_of(entry, display_name(path)))
                continue
        result.findings.extend(outcome.findings)
        if cache is not None and outcome.digest is not None and outcome.stat is not None:
            cache.store(absolute, outcome.stat, outcome.digest, outcome.findings)
    if cache is not None:
        cache.save()
    result.findings.sort(key=Finding.sort_key)
    return result


def cache_root(settings: Settings) -> Path:
    """Where ``.amplint_cache`` lives: beside the configuration, else the working directory."""
    if settings.config_path is not None:
        return settings.config_path.parent
    return Path.cwd()


def default_jobs() -> int:
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


def fix_paths(
    paths: Sequence[Path],
    settings: Settings,
    codes: Collection[str],
    *,
    unsafe: bool = False,
    write: bool = True,
) -> RunResult:
    """Fix files in place (``write``) or collect unified diffs of the fixes instead."""
    from amplint.engine.run import fix_bytes

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
    import difflib  # only `fix --diff` needs it

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
