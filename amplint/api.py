"""amplint as a Python API: what the CLI, the language server and the tests all call."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from amplint.cache import CACHE_DIR_ENV, CACHE_DIRECTORY, FindingsCache, RunRecord, content_hash
from amplint.catalog import INTERNAL_ERROR_CODE
from amplint.config import Settings, codes_ignored_for, load_settings, resolve_selection
from amplint.discovery import discover, is_excluded, is_notebook
from amplint.engine.source import SourceError, error_finding, read_bytes, write_atomic
from amplint.findings import Finding, Fix

if TYPE_CHECKING:
    from amplint.engine.project import FileView, Project

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
    """What a run over paths found, could not use, left out, fixed and checked."""

    findings: list[Finding] = field(default_factory=list)
    #: paths that could not be used at all (missing paths), with one-line reasons.
    errors: list[tuple[Path, str]] = field(default_factory=list)
    #: files left out on purpose (a notebook whose kernel is not Python), with the reason.
    notes: list[tuple[Path, str]] = field(default_factory=list)
    #: display filename -> number of fixes applied (``fix`` only).
    fixed: dict[str, int] = field(default_factory=dict)
    #: unified diffs (``fix --diff`` only).
    diffs: list[str] = field(default_factory=list)
    files_checked: int = 0

    @property
    def failed(self) -> bool:
        """A path could not be used, or amplint itself failed on a file (exit status 2)."""
        return bool(self.errors) or any(f.code == INTERNAL_ERROR_CODE for f in self.findings)


class Selection(NamedTuple):
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
    if not path.is_absolute() and ".." not in path.parts:
        return path.as_posix()  # what a walk from a relative argument yields: shown as is
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return path.as_posix() if relative.startswith("..") else Path(relative).as_posix()


def codes_for_file(settings: Settings, path: Path, codes: Collection[str]) -> frozenset[str]:
    from amplint.catalog import known_codes

    return frozenset(codes) - codes_ignored_for(settings, path, known_codes=known_codes())


def check_source(
    data: bytes,
    filename: str,
    codes: Collection[str],
    *,
    with_edits: bool = True,
    project: FileView | None = None,
    any_syntax_error: bool = False,
) -> list[Finding]:
    """Findings for one file's bytes.

    Without ``with_edits`` a fixable finding's fix carries its title and applicability but
    no edits: what `[*]` and the summary need, at a fraction of the cost on large files.
    ``project`` is the file's view of the project it belongs to (see :func:`project_for`).
    ``any_syntax_error``: report a syntax error also in a file that says nothing of AMP
    (the files named on the command line; see :func:`check_paths`).
    """
    from amplint.engine.run import lint_bytes

    if is_notebook(filename):
        from amplint.notebook import check_notebook_file

        checked = check_notebook_file(data, filename, codes, with_edits, project=project)
        if checked.error is not None:
            return [error_finding(filename, SourceError(checked.error))]
        return checked.findings
    if with_edits:
        return lint_bytes(
            data, filename, codes, project=project, any_syntax_error=any_syntax_error
        ).findings
    result = lint_bytes(
        data,
        filename,
        codes,
        fixes=False,
        project=project,
        sliced=True,
        any_syntax_error=any_syntax_error,
    )
    findings = []
    for finding in result.findings:
        summary = result.fix_summary(finding) if finding.fix is None else None
        if summary is not None:
            finding = replace(finding, fix=Fix(summary[1], summary[0], ()))
        findings.append(finding)
    return findings


@dataclass(frozen=True)
class _Outcome:
    """One file's result, as a pool worker hands it back."""

    findings: list[Finding]
    #: content hash of what was read; None when the file could not be read (not cached).
    digest: str | None
    stat: os.stat_result | None
    #: the cached entry still applies: the content is unchanged although its stat moved.
    unchanged: bool = False
    #: the file is not usable (a broken notebook): a one-line reason, reported as an error.
    error: str | None = None
    #: the file was left out on purpose (a notebook of another language).
    note: str | None = None
    #: project files the findings were made from (path -> digest), and files looked for.
    deps: dict[str, str] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)


_worker_job: tuple[Settings, frozenset[str], bool, Project | None, bool] | None = None


def _start_worker(
    settings: Settings,
    codes: frozenset[str],
    with_edits: bool = True,
    project: Project | None = None,
    any_syntax_error: bool = False,
) -> None:
    global _worker_job
    _worker_job = (settings, codes, with_edits, project, any_syntax_error)


def project_for(paths: Sequence[Path], files: Sequence[Path]) -> Project | None:
    """The project of a run: the files found, when a directory or several files were given;
    None for a single file, which is checked on its own, as it always was."""
    if not _is_project_run(paths, len(files)):
        return None
    from amplint.engine.project import Project

    return Project(os.path.abspath(path) for path in files)


def _lint_one(item: tuple[Path, str | None]) -> _Outcome:
    """Read, hash and lint one file (runs in a pool worker or in the main process)."""
    assert _worker_job is not None
    settings, codes, with_edits, project, any_syntax_error = _worker_job
    path, cached_digest = item
    name = display_name(path)
    try:
        stat = os.stat(path)
        data = read_bytes(path)
    except (OSError, SourceError) as error:
        source_error = error if isinstance(error, SourceError) else SourceError(str(error))
        return _Outcome([error_finding(name, source_error)], None, None)
    view = project.view(str(path)) if project is not None else None
    if is_notebook(name):
        file_codes = codes_for_file(settings, path, codes)
        return _lint_notebook(data, name, file_codes, with_edits, stat, cached_digest, view)
    digest = content_hash(data)
    if digest == cached_digest:
        return _Outcome([], digest, stat, unchanged=True)
    findings = check_source(
        data,
        name,
        codes_for_file(settings, path, codes),
        with_edits=with_edits,
        project=view,
        any_syntax_error=any_syntax_error,
    )
    if view is None:
        return _Outcome(findings, digest, stat)
    return _Outcome(findings, digest, stat, deps=view.deps, missing=view.missing)


def _lint_notebook(
    data: bytes,
    name: str,
    codes: frozenset[str],
    with_edits: bool,
    stat: os.stat_result,
    cached_digest: str | None,
    view: FileView | None = None,
) -> _Outcome:
    from amplint.notebook import check_notebook_file

    checked = check_notebook_file(data, name, codes, with_edits, cached_digest, view)
    return _Outcome(
        checked.findings,
        checked.digest,
        stat if checked.digest is not None else None,
        unchanged=checked.unchanged,
        error=checked.error,
        note=checked.skipped,
        deps=view.deps if view is not None else {},
        missing=view.missing if view is not None else set(),
    )


def _lint_all(
    items: list[tuple[Path, str | None]],
    settings: Settings,
    codes: frozenset[str],
    jobs: int,
    progress: Callable[[int, int], None] | None,
    with_edits: bool = True,
    project: Project | None = None,
    any_syntax_error: bool = False,
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
            initargs=(settings, codes, with_edits, project, any_syntax_error),
        ) as pool:
            # Workers read the files themselves and send back only small findings: no large
            # bytes or syntax trees cross the process boundary.
            batches = _batches(items, jobs)
            done = 0
            for batch, outcomes in zip(batches, pool.map(_lint_batch, batches), strict=True):
                for item, outcome in zip(batch, outcomes, strict=True):
                    done += 1
                    if progress:
                        progress(done, total)
                    yield item[0], outcome
        return
    _start_worker(settings, codes, with_edits, project, any_syntax_error)
    for done, item in enumerate(items, 1):
        outcome = _lint_one(item)
        if progress:
            progress(done, total)
        yield item[0], outcome


def _lint_batch(batch: list[tuple[Path, str | None]]) -> list[_Outcome]:
    return [_lint_one(item) for item in batch]


#: Batches per worker, at least: enough that the last ones to finish are small.
_BATCHES_PER_JOB = 16


def _batches(
    items: list[tuple[Path, str | None]], jobs: int
) -> list[list[tuple[Path, str | None]]]:
    """The files in batches for the pool: the files of one folder together, as they import
    the same modules (each worker summarises a module it is asked about once: a folder
    split between workers is summarised by each), a large folder in pieces, largest
    batches first (one huge file must not end up last, with the other workers idle)."""
    sizes = {item[0]: _size(item) for item in items}
    cap = max(sum(sizes.values()) // (jobs * _BATCHES_PER_JOB), 1)
    folders: dict[str, list[tuple[Path, str | None]]] = {}
    for item in items:
        folders.setdefault(os.path.dirname(item[0]), []).append(item)
    batches: list[list[tuple[Path, str | None]]] = []
    for members in folders.values():
        members.sort(key=lambda item: sizes[item[0]], reverse=True)
        batch: list[tuple[Path, str | None]] = []
        weight = 0
        for item in members:
            if batch and weight + sizes[item[0]] > cap:
                batches.append(batch)
                batch, weight = [], 0
            batch.append(item)
            weight += sizes[item[0]]
        batches.append(batch)
    batches.sort(key=lambda batch: sum(sizes[item[0]] for item in batch), reverse=True)
    return batches


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
    cache_dir: Path | None = None,
) -> RunResult:
    """Check files; unchanged files are answered from the cache, the rest by a process pool.

    ``codes`` may be a :class:`Selection`, resolved only when some file must be analysed.
    Without ``with_edits`` fixes are described but their edits are not computed (see
    :func:`check_source`); such results are cached apart from complete ones. The cache
    lives in ``cache_dir``, by default :func:`cache_directory`'s.

    Files named one by one (an editor's file, pre-commit's list) are checked for syntax
    errors whatever they say, as ruff does. In a folder's walk only the files that say
    something of AMP are: parsing every module of a large tree would cost more than the
    whole analysis, and a module that never mentions AMP is not amplint's to judge.
    """
    found = discover(paths, settings)
    any_syntax_error = _files_named_one_by_one(paths)
    result = RunResult(errors=list(found.errors), files_checked=len(found.absolutes))
    if isinstance(codes, Selection):
        selection_key = codes.key()
    else:
        codes = frozenset(codes)
        selection_key = ",".join(sorted(codes))
    if not with_edits:
        selection_key += "|without-edits"
    if _is_project_run(paths, len(found.absolutes)):
        # Findings made with the project's modules in view differ from a file's own.
        selection_key += "|project"
    if any_syntax_error:
        selection_key += "|any-syntax-error"
    record = signature = None
    key = FindingsCache.key_for(settings.fingerprint(), selection_key) if use_cache else ""
    if use_cache:
        cache_dir = cache_dir or cache_directory(settings)
        record = RunRecord(cache_dir, key)
        # The findings' names are spelled after the arguments and the working directory.
        command = repr(([str(path) for path in paths], os.getcwd()))
        signature = RunRecord.signature(command, found.absolutes)
        recorded = record.findings(signature) if signature is not None else None
        if recorded is not None:
            result.findings = recorded
            return result
    project = project_for(paths, found.files)
    cache = FindingsCache(cache_dir, key) if use_cache else None
    #: whether every file's verdict holds until its stat changes: a file that could not be
    #: read may be readable next time with nothing changed on disk (permissions, locks).
    repeatable = True
    pending: list[tuple[Path, str | None]] = []
    for path in found.files:
        entry = None
        if cache is not None:
            with contextlib.suppress(OSError):
                absolute = os.path.abspath(path)
                entry = cache.lookup_by_stat(absolute, os.stat(absolute))
                if (
                    entry is not None
                    and project is not None
                    and not cache.dependencies_hold(entry, project.is_module)
                ):
                    pending.append((path, None))  # a module it imports changed
                    continue
                if entry is not None:
                    if entry.findings:  # most files have none: skip naming them
                        result.findings.extend(cache.findings_of(entry, display_name(path)))
                    continue
        pending.append((path, _cached_digest(cache, os.path.abspath(path), project)))
    if pending and isinstance(codes, Selection):
        codes = codes.codes(settings)
    enabled = frozenset(codes) if not isinstance(codes, Selection) else frozenset()
    for path, outcome in _lint_all(
        pending,
        settings,
        enabled,
        jobs or default_jobs(),
        progress,
        with_edits,
        project,
        any_syntax_error,
    ):
        absolute = os.path.abspath(path)
        if cache is not None and outcome.unchanged and outcome.stat is not None:
            entry = cache.lookup_by_content(absolute, outcome.digest or "", outcome.stat)
            if entry is not None:
                result.findings.extend(cache.findings_of(entry, display_name(path)))
                continue
        repeatable = repeatable and outcome.digest is not None
        if outcome.error is not None:
            result.errors.append((path, outcome.error))
        if outcome.note is not None:
            result.notes.append((path, outcome.note))
        result.findings.extend(outcome.findings)
        if cache is not None and outcome.digest is not None and outcome.stat is not None:
            cache.store(absolute, outcome.stat, outcome.digest, outcome.findings)
            if outcome.deps or outcome.missing:
                cache.store_dependencies(absolute, outcome.deps, outcome.missing)
    if cache is not None:
        cache.save()
    result.findings.sort(key=Finding.sort_key)
    if record is not None:
        if signature is not None and repeatable and not (result.failed or result.notes):
            record.save(signature, result.findings)
        else:
            # An outcome a re-run must reach again (a broken notebook, an unreadable file).
            record.forget()
    return result


def _is_project_run(paths: Sequence[Path], files: int) -> bool:
    """Whether the ``files`` found under ``paths`` are analysed as one project (see
    :func:`project_for`)."""
    return files >= 2 or any(path.is_dir() for path in paths)


def _files_named_one_by_one(paths: Sequence[Path]) -> bool:
    """Whether the run was given files only (no folder): each then gets its syntax checked
    whatever it says (see :func:`check_paths`)."""
    return bool(paths) and not any(path.is_dir() for path in paths)


def _cached_digest(cache: FindingsCache | None, path: str, project: Project | None) -> str | None:
    """The content hash the cache holds for ``path``, unless its entry no longer applies
    because a project module it was made from changed."""
    if cache is None:
        return None
    digest = cache.digest_of(path)
    if digest is not None and project is not None:
        entry = cache.entry(path)
        if entry is not None and not cache.dependencies_hold(entry, project.is_module):
            return None
    return digest


def cache_root(settings: Settings) -> Path:
    """The project root, where ``.amplint_cache`` goes: the configuration's directory, else the
    nearest directory with a ``pyproject.toml`` above the checked paths, else the working
    directory (never a subfolder the command happened to start in)."""
    if settings.config_path is not None:
        return settings.config_path.parent
    start = Path(os.path.abspath(settings.project_root))
    for directory in (start, *start.parents):
        if (directory / "pyproject.toml").is_file():
            return directory
    return Path.cwd()


def cache_directory(settings: Settings, override: Path | None = None) -> Path:
    """The cache directory: ``override`` (``--cache-dir``), else ``AMPLINT_CACHE_DIR``, else
    ``.amplint_cache`` at the project root."""
    if override is not None:
        return Path(os.path.abspath(override))
    from_environment = os.environ.get(CACHE_DIR_ENV)
    if from_environment:
        return Path(os.path.abspath(from_environment))
    return cache_root(settings) / CACHE_DIRECTORY


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
    project = project_for(paths, found.files)
    any_syntax_error = _files_named_one_by_one(paths)
    for path in found.files:
        name = display_name(path)
        try:
            data = read_bytes(path)
        except SourceError as error:
            result.findings.append(error_finding(name, error))
            continue
        file_codes = codes_for_file(settings, path, codes)
        if is_notebook(name):
            from amplint.notebook import fix_notebook_file

            view = project.view(str(path)) if project is not None else None
            fixed = fix_notebook_file(data, name, file_codes, unsafe=unsafe, project=view)
            result.errors.extend((path, error) for error in fixed.errors)
            result.notes.extend((path, note) for note in fixed.notes)
        else:
            # A file fixed on its own is fixed exactly as before (no project argument).
            extra = {"project": project.view(str(path))} if project is not None else {}
            fixed = fix_bytes(
                data,
                name,
                file_codes,
                unsafe=unsafe,
                any_syntax_error=any_syntax_error,
                **extra,
            )
        result.findings.extend(fixed.remaining)
        if fixed.data is None:
            continue
        if write:
            try:
                _replace_if_unchanged(path, data, fixed.data)
            except SourceError as error:
                result.findings.append(error_finding(name, error))
                continue
        elif is_notebook(name):
            result.diffs.append(fixed.diff)  # type: ignore[union-attr]  # per cell
        else:
            result.diffs.append(unified_diff(name, data, fixed.data))
        result.fixed[name] = fixed.applied
    result.findings.sort(key=Finding.sort_key)
    return result


@dataclass
class StdinResult:
    """What checking (or fixing) a source read from standard input gave."""

    findings: list[Finding] = field(default_factory=list)
    #: the fixed source (``fix``): also the unchanged source when nothing was fixed.
    output: bytes | None = None
    applied: int = 0
    #: the ``--stdin-filename`` is excluded (``force-exclude``): nothing was checked.
    excluded: bool = False
    #: a notebook's diff, one hunk group per changed cell (a source's is made from output).
    diff: str | None = None


def lint_stdin(
    data: bytes,
    path: Path | None,
    settings: Settings,
    codes: Collection[str],
    *,
    fix: bool = False,
    unsafe: bool = False,
) -> StdinResult:
    """Check (or fix) source read from standard input, as if it were the file ``path``.

    ``path`` (``--stdin-filename``) decides the name findings carry, the ``per-file-ignores``
    that apply and, with ``force-exclude``, whether the source is excluded; with ``fix`` the
    output is the fixed source, to be written back to standard output.
    """
    name = display_name(path) if path is not None else "-"
    if path is not None and settings.force_exclude and is_excluded(path, settings):
        return StdinResult(output=data if fix else None, excluded=True)
    enabled = codes_for_file(settings, path, codes) if path is not None else frozenset(codes)
    if not fix:
        return StdinResult(findings=check_source(data, name, enabled))
    if is_notebook(name):
        from amplint.notebook import fix_notebook_file

        notebook = fix_notebook_file(data, name, enabled, unsafe=unsafe)
        if notebook.error is not None:
            return StdinResult(
                findings=[error_finding(name, SourceError(notebook.error))], output=data
            )
        return StdinResult(
            findings=sorted(notebook.remaining, key=Finding.sort_key),
            output=data if notebook.data is None else notebook.data,
            applied=notebook.applied if notebook.data is not None else 0,
            diff=notebook.diff,
        )
    from amplint.engine.run import fix_bytes

    fixed = fix_bytes(data, name, enabled, unsafe=unsafe)
    output = data if fixed.data is None else fixed.data
    applied = fixed.applied if fixed.data is not None else 0
    return StdinResult(
        findings=sorted(fixed.remaining, key=Finding.sort_key), output=output, applied=applied
    )


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


def unified_diff(name: str, before: bytes, after: bytes) -> str:
    """``before`` -> ``after`` as a unified diff between ``a/name`` and ``b/name`` (an
    absolute path is shown as it is on both sides, as ``diff`` and ruff show it)."""
    import difflib  # only diffs need it
    import os

    old = before.decode("utf-8", errors="replace").splitlines(keepends=True)
    new = after.decode("utf-8", errors="replace").splitlines(keepends=True)
    old_name, new_name = (name, name) if os.path.isabs(name) else (f"a/{name}", f"b/{name}")
    lines = difflib.unified_diff(old, new, fromfile=old_name, tofile=new_name)
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


__all__ = [
    "RunResult",
    "Settings",
    "StdinResult",
    "check_paths",
    "check_source",
    "fix_paths",
    "lint_stdin",
    "load_settings",
    "selected_codes",
]
