"""What ``amplint check`` and ``amplint fix`` do with their options, without click.

The click command line (:mod:`amplint.cli`) parses every form of the options; the console
script (:mod:`amplint.launch`) parses the plain form editors and pre-commit use (``check``,
a few flags, files) itself, so that a file with nothing to report never waits for click.
Both hand an :class:`Options` to :func:`lint`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from amplint import api
from amplint.cache import CACHE_DIR_ENV
from amplint.config import ConfigError, Settings, load_settings
from amplint.output import emit, emit_statistics
from amplint.output.source import decode
from amplint.progress import Progress

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
#: What Ctrl-C ends amplint with, as a shell reports a SIGINT.
EXIT_INTERRUPTED = 130

#: The path argument that means "read the source from standard input".
STDIN = "-"


class UserError(Exception):
    """A one-line error for the user; exits 2 like every amplint error."""


def error_line(message: str) -> str:
    """How every amplint error is printed: one line, whatever the message held."""
    return f"amplint: error: {' '.join(message.split())}"


def echo(message: str, *, err: bool = False, nl: bool = True) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(message + "\n" if nl else message)
    stream.flush()


def guarded(command: Callable[[], int]) -> int:
    """Run a command the way the console script ends every command: a user error is one
    line and exit 2, Ctrl-C exit 130, a closed pipe (``| head``) a quiet exit."""
    try:
        return command()
    except UserError as error:
        echo(error_line(str(error)), err=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        echo("\namplint: aborted", err=True)  # after the ^C, as click writes it
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_CLEAN


def _split(values: Sequence[str], *, upper: bool = True) -> tuple[str, ...] | None:
    if not values:
        return None
    parts = (part.strip() for value in values for part in value.split(","))
    return tuple(part.upper() if upper else part for part in parts if part)


class Options(NamedTuple):
    """``check``'s and ``fix``'s options, as given; the defaults are click's (a test keeps
    them so). A named tuple: cheaper to define than a frozen dataclass, on the path of
    every one-file run."""

    paths: tuple[Path, ...] = ()
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    extend_select: tuple[str, ...] = ()
    config: Path | None = None
    output_format: str = "concise"
    unsafe_fixes: bool = False
    diff: bool = False
    show_fixes: bool = False
    exit_zero: bool = False
    exit_non_zero_on_fix: bool = False
    statistics: bool = False
    quiet: bool = False
    exclude: tuple[str, ...] = ()
    extend_exclude: tuple[str, ...] = ()
    force_exclude: bool | None = None
    stdin_filename: Path | None = None
    no_cache: bool = False
    cache_dir: Path | None = None
    fix: bool = False


def _settings(options: Options, start: Path) -> tuple[Settings, api.Selection]:
    api.tune_collector()
    try:
        settings = load_settings(options.config, start)
    except ConfigError as error:
        raise UserError(str(error)) from error
    # Command-line exclusions layer over the configuration's, as ruff's do.
    exclude = _split(options.exclude, upper=False)
    settings = replace(
        settings,
        exclude=settings.exclude if exclude is None else exclude,
        extend_exclude=(
            *settings.extend_exclude,
            *(_split(options.extend_exclude, upper=False) or ()),
        ),
        force_exclude=settings.force_exclude
        if options.force_exclude is None
        else options.force_exclude,
    )
    selection = api.Selection(
        _split(options.select), _split(options.ignore), _split(options.extend_select)
    )
    return settings, selection


def _resolve(selection: api.Selection, settings: Settings) -> frozenset[str]:
    try:
        return selection.codes(settings)
    except ConfigError as error:
        raise UserError(str(error)) from error


def lint(options: Options) -> int:
    """``check`` and ``fix``: report, fix in place, or show fixes as a diff."""
    reads_stdin = STDIN in (str(path) for path in options.paths) or (
        not options.paths and options.stdin_filename is not None
    )
    if reads_stdin:
        if len(options.paths) > 1:
            raise UserError("'-' (standard input) cannot be combined with other paths")
        return _lint_stdin(options)
    targets = list(options.paths) or [Path(".")]
    settings, selection = _settings(options, targets[0] if len(targets) == 1 else Path("."))
    if options.diff or options.fix:
        return _fix(options, targets, settings, _resolve(selection, settings))
    interactive = (
        options.output_format in ("concise", "full")
        and not options.statistics
        and not options.quiet
    )
    with Progress(enabled=interactive) as progress:
        try:
            result = api.check_paths(
                targets,
                settings,
                selection,
                use_cache=not options.no_cache,
                progress=progress.update,
                # The text formats need a fix's title only; the rest show its edits.
                with_edits=options.output_format in ("json", "sarif", "full"),
                cache_dir=api.cache_directory(settings, options.cache_dir),
            )
        except ConfigError as error:
            raise UserError(str(error)) from error
    _report(result, options)
    return _exit_status(result, options)


def _fix(options: Options, targets: list[Path], settings: Settings, codes: frozenset[str]) -> int:
    result = api.fix_paths(
        targets, settings, codes, unsafe=options.unsafe_fixes, write=not options.diff
    )
    if not options.diff:
        _report(result, options, fixed=result.fixed)
        return _exit_status(result, options)
    _errors(result)
    echo("".join(result.diffs), nl=False)
    fixes = sum(result.fixed.values())
    if fixes and not options.quiet:
        echo(f"Would fix {fixes} error{'s' if fixes != 1 else ''}.", err=True)
    if result.failed:
        return EXIT_ERROR
    return EXIT_FINDINGS if result.diffs and not options.exit_zero else EXIT_CLEAN


def _lint_stdin(options: Options) -> int:
    path = options.stdin_filename
    start = path.parent if path is not None else Path(".")
    settings, selection = _settings(options, start)
    codes = _resolve(selection, settings)
    data = sys.stdin.buffer.read()
    fixing = options.fix or options.diff
    result = api.lint_stdin(data, path, settings, codes, fix=fixing, unsafe=options.unsafe_fixes)
    name = api.display_name(path) if path is not None else STDIN
    stdout = sys.stdout.buffer
    if result.excluded:
        if options.fix:
            stdout.write(data)  # a formatter pipeline must get its source back untouched
        return EXIT_CLEAN
    if options.diff:
        if result.output is not None and result.output != data:
            diff = result.diff or api.unified_diff(name, data, result.output)
            echo(diff, nl=False)
            return EXIT_CLEAN if options.exit_zero else EXIT_FINDINGS
        return EXIT_CLEAN
    sources = {name: _decoded(result.output if result.output is not None else data)}
    run = api.RunResult(findings=result.findings, files_checked=1)
    if options.fix:
        assert result.output is not None
        stdout.write(result.output)
        stdout.flush()
        # The source owns standard output; what remains is reported on standard error.
        run.fixed = {name: result.applied}
        _report(run, options, fixed=run.fixed, sources=sources, stream=sys.stderr)
    else:
        _report(run, options, sources=sources)
    return _exit_status(run, options)


def _decoded(data: bytes) -> str:
    try:
        return decode(data)
    except (SyntaxError, UnicodeDecodeError, LookupError):
        return data.decode("utf-8", errors="replace")


def _errors(result: api.RunResult) -> None:
    for path, reason in result.notes:
        echo(f"amplint: note: {path}: {reason}", err=True)
    for path, reason in result.errors:
        echo(f"amplint: error: {path}: {reason}", err=True)


def _report(
    result: api.RunResult,
    options: Options,
    *,
    fixed: dict[str, int] | None = None,
    sources: dict[str, str] | None = None,
    stream: Any = None,
) -> None:
    _errors(result)
    stream = stream or sys.stdout
    if options.statistics:
        fmt = "json" if options.output_format == "json" else "text"
        emit_statistics(result.findings, stream, unsafe_fixes=options.unsafe_fixes, fmt=fmt)
        return
    emit(
        options.output_format,
        result.findings,
        stream,
        show_fixes=options.show_fixes,
        fixed=fixed,
        unsafe_fixes=options.unsafe_fixes,
        quiet=options.quiet,
        unchecked=len(result.errors),
        sources=sources,
    )


def _exit_status(result: api.RunResult, options: Options) -> int:
    if result.failed:
        return EXIT_ERROR
    if options.exit_zero:
        return EXIT_CLEAN
    if result.findings or (options.exit_non_zero_on_fix and any(result.fixed.values())):
        return EXIT_FINDINGS
    return EXIT_CLEAN


#: ``check``'s flags that the plain command line may carry: flag -> (option, value). Every
#: other form goes to click; a test keeps each flag's meaning equal to click's.
QUICK_FLAGS: dict[str, tuple[str, bool]] = {
    "--no-cache": ("no_cache", True),
    "--force-exclude": ("force_exclude", True),
    "--no-force-exclude": ("force_exclude", False),
    "-q": ("quiet", True),
    "--quiet": ("quiet", True),
    "--exit-zero": ("exit_zero", True),
    "--statistics": ("statistics", True),
    "--show-fixes": ("show_fixes", True),
}


def quick_options(args: Sequence[str]) -> Options | None:
    """The options of ``amplint check [FLAGS] PATHS`` with only :data:`QUICK_FLAGS`, as
    click would parse them; None for anything else (click's to parse and to judge)."""
    if not args or args[0] != "check" or CACHE_DIR_ENV in os.environ:
        return None  # the environment variable is click's to read (and to check)
    paths: list[Path] = []
    chosen: dict[str, Any] = {}
    for arg in args[1:]:
        flag = QUICK_FLAGS.get(arg)
        if flag is not None:
            chosen[flag[0]] = flag[1]
        elif not arg or arg.startswith("-") or not _readable_or_absent(arg):
            # An option of click's, ``--``, ``--help``, standard input; or a path click
            # refuses as unreadable, with its own message.
            return None
        else:
            paths.append(Path(arg))
    return Options(paths=tuple(paths), **chosen)


def _readable_or_absent(path: str) -> bool:
    """What click's ``Path`` type lets through: a path that does not exist (amplint says
    so), or one the user may read."""
    return not os.path.exists(path) or os.access(path, os.R_OK)
