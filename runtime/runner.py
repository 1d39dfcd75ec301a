"""``amplint run``: run a training script as ``python SCRIPT ARGS`` would, with checks on.

The CLI (``amplint run``) calls :func:`run_script`; ``python -m amplint.runtime.runner``
is the same without click.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import importlib.machinery
import io
import json
import os
import runpy
import signal
import sys
import threading
import traceback
import types
import zipfile
from collections.abc import Iterator
from types import TracebackType
from typing import Any, NoReturn

from . import health as _health
from . import rank_reports as _distributed
from .findings import Finding
from .install import install, installed, uninstall
from .ranks import rank_info
from .reporting import MODES, forked_child, internal_error, internal_errors, recorded, report
from .summary_text import format_health_summary

__all__ = ["exit_as_python", "format_summary", "main", "run_script"]

# The latest run_script() ended in an uncaught KeyboardInterrupt (see exit_as_python).
_interrupted = False
# The scripts' __main__ modules, kept alive until shutdown (see _run_main).
_script_modules: list[Any] = []


def run_script(
    script: str,
    args: list[str],
    mode: str = "warn",
    report_path: str | None = None,
    *,
    health: bool = False,
    thresholds: dict[str, Any] | None = None,
    plot_path: str | None = None,
    module: bool = False,
) -> int:
    """Run ``script`` as ``__main__`` with amplint installed; return its exit status.

    With ``module``, ``script`` is a module name run as ``python -m`` runs it (torchrun's
    ``-m``): found on ``sys.path`` with the current folder first, a package's ``__main__``.

    Prints a findings table to stderr at the end (nothing when there is none), and writes
    the JSON report to ``report_path`` whatever the script did. With ``health`` (the
    default of ``amplint run``) the numerical-health checks run too (``thresholds``: the
    fields of ``HealthConfig``), their summary is printed and goes into the report under
    ``"summary"``, and ``plot_path`` gets a PNG of the loss scale and skipped steps.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    thresholds = dict(thresholds or {})
    _health.HealthConfig(**thresholds)  # a bad threshold is an error before the script runs
    if plot_path is not None:
        from .plot import missing_matplotlib

        # Found out now, not after an hour of training.
        missing = missing_matplotlib()
        if missing is not None:
            print(missing, file=sys.stderr)
            return 2
    if module:
        return _run_module(script, args, mode, report_path, health, thresholds, plot_path)
    path = os.path.abspath(script)
    refusal = _nothing_to_run(script, path)
    if refusal is not None:
        message, status = refusal
        print(f"{sys.executable}: {message}", file=sys.stderr)
        if report_path is not None:
            _write_report(report_path, [], mode, path, status, None)
        return status
    # `python SCRIPT` puts the script's folder first on sys.path, in place of the
    # interpreter's own choice.
    return _run_checked(
        lambda: _run_main(path, script),
        path,
        [script, *args],
        os.path.dirname(path),
        mode,
        report_path,
        health,
        thresholds,
        plot_path,
    )


def _run_module(
    name: str,
    args: list[str],
    mode: str,
    report_path: str | None,
    health: bool,
    thresholds: dict[str, Any],
    plot_path: str | None,
) -> int:
    """``python -m NAME ARGS`` with amplint installed."""
    saved_path0 = sys.path[0] if sys.path else None
    # `python -m` puts the current folder first on sys.path.
    _set_path0(os.getcwd())
    try:
        _, spec, code = runpy._get_module_details(name)  # type: ignore[attr-defined]
    except ImportError as error:
        # Python's own words and status for a module it cannot run.
        print(f"{sys.executable}: {error}", file=sys.stderr)
        status = 1
        if report_path is not None:
            _write_report(report_path, [], mode, name, status, None)
        return status
    finally:
        if saved_path0 is not None:
            sys.path[0] = saved_path0
    path = spec.origin or name

    def run() -> None:
        # As `python -m` runs it: the module's code in a __main__ module of its own, which
        # lives on until shutdown (see _run_main); sys.argv[0] is its file already.
        module = types.ModuleType("__main__")
        with _as_main(module):
            runpy._run_code(code, module.__dict__, None, "__main__", spec)  # type: ignore[attr-defined]

    return _run_checked(
        run, path, [path, *args], os.getcwd(), mode, report_path, health, thresholds, plot_path
    )


def _set_path0(folder: str) -> None:
    if sys.path:
        sys.path[0] = folder
    else:
        sys.path.append(folder)


def _run_checked(
    run: Any,
    path: str,
    argv: list[str],
    path0: str,
    mode: str,
    report_path: str | None,
    health: bool,
    thresholds: dict[str, Any],
    plot_path: str | None,
) -> int:
    """Install amplint, ``run()`` the user's code as ``__main__``, report; its status."""
    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    sys.argv = argv
    _set_path0(path0)
    global _interrupted
    _interrupted = False
    was_installed = installed()
    _distributed.begin(report_path)
    install(mode, health=health, **thresholds)
    status = 0
    summary = None
    previous_sigterm = _catch_sigterm(mode, path, report_path, health)
    try:
        run()
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException as exc:
        _print_exception(exc, path)
        # An uncaught KeyboardInterrupt ends Python as SIGINT would: status 130 in a shell.
        status = 130 if isinstance(exc, KeyboardInterrupt) else 1
        _interrupted = isinstance(exc, KeyboardInterrupt)
    finally:
        # A child the script forked (os.fork() returning into the script) ends as under
        # plain python: without amplint's summary or report.
        child = forked_child()
        findings = [] if child else report()
        if health and not child:
            try:
                summary = _health.summary()
            except Exception as error:
                internal_error("the numerical-health summary", error)
        if not was_installed:
            try:
                uninstall()
            except Exception as error:
                internal_error("uninstall()", error)
        sys.argv = saved_argv
        if saved_path0 is not None:
            sys.path[0] = saved_path0
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
    if child:
        return status
    _show_and_write(report_path, findings, mode, path, status, summary)
    # Until the report is written, SIGTERM still writes it (under torchrun, the launcher
    # stops the other ranks as soon as one fails: rank 0 may be merging then).
    _restore_sigterm(previous_sigterm)
    if plot_path is not None:
        from .plot import write_plot

        print(write_plot(plot_path, _health.histories()), file=sys.stderr)
    return status


def _catch_sigterm(mode: str, script: str, report_path: str | None, health: bool) -> Any:
    """Write the report when the script is killed by SIGTERM, then die of SIGTERM as Python
    would (status -15 to a parent, 143 in a shell; no ``finally`` of the script runs).

    Only where Python's default (die at once) is in force and this is the main thread;
    returns the handler to put back, or None when nothing was changed.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
            return None  # the caller's own handler keeps its say

        def on_sigterm(signum: int, frame: types.FrameType | None) -> None:
            _report_and_die(signum, mode, script, report_path, health)

        on_sigterm.amplint_report_and_die = True  # type: ignore[attr-defined]
        return signal.signal(signal.SIGTERM, on_sigterm)
    except (AttributeError, ValueError, OSError):  # no SIGTERM here, or not allowed
        return None


def _default_sigterm_in_child() -> None:
    """A forked child (a pool worker) dies of SIGTERM as under plain python: in the kernel,
    at once. A Python-level handler runs only between bytecodes, so a worker that took the
    signal just before blocking on its task queue's lock never ran it: the pool's exit
    waited for it forever (seen under load, about one run in thirty)."""
    with contextlib.suppress(ValueError, OSError, AttributeError):
        # amplint's own handler only (marked in _catch_sigterm): the script's stay.
        if getattr(signal.getsignal(signal.SIGTERM), "amplint_report_and_die", False):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_default_sigterm_in_child)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signal.SIGTERM, previous)


def _report_and_die(
    signum: int, mode: str, script: str, report_path: str | None, health: bool
) -> None:
    if forked_child():
        # Inherited by a forked child (pool workers are stopped with SIGTERM): die of the
        # signal at once, as plain python does.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    # This runs between two bytecodes of the main thread, which may hold amplint's locks:
    # read the findings in a helper thread and fall back to the registry as it stands.
    findings: list[Finding] = []
    summary: dict[str, Any] | None = None

    def collect() -> None:
        nonlocal findings, summary
        findings = report()
        if health:
            summary = _health.summary()

    reader = threading.Thread(target=collect, name="amplint-report", daemon=True)
    reader.start()
    reader.join(timeout=2.0)
    if reader.is_alive():
        findings, summary = recorded(timeout=0.1), None
    _show_and_write(
        report_path, findings, mode, script, 128 + signum, summary, signal.Signals(signum).name
    )
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _show_and_write(
    report_path: str | None,
    findings: list[Finding],
    mode: str,
    script: str,
    status: int,
    summary: dict[str, Any] | None,
    killed_by: str | None = None,
) -> None:
    """Print the summaries to stderr and write the report.

    Under torchrun with a report path, the report is written first: rank 0 then prints the
    merged summary of every rank, the other ranks one line pointing at their own file.
    """
    distributed = False
    if report_path is not None:
        try:
            distributed = rank_info() is not None
        except Exception as error:
            internal_error("finding this process's rank", error)
    if not distributed:
        _print_summaries(findings, summary)
        if report_path is not None:
            _write_report(report_path, findings, mode, script, status, summary, killed_by)
        return
    assert report_path is not None
    written = _write_report(report_path, findings, mode, script, status, summary, killed_by)
    try:
        if written is None:  # this rank's file could not be written: its own summary then
            _print_summaries(findings, summary)
        elif written.merged is None:
            sys.stderr.write(_distributed.pointer_line(written) + "\n")
        else:
            merged = written.merged
            text = [_distributed.format_merged_summary(merged)] if merged["findings"] else []
            if merged.get("summary") is not None:
                text.append(format_health_summary(merged["summary"]))
            if text:
                sys.stderr.write("\n".join(text) + "\n")
    except Exception as error:
        internal_error("the distributed summary", error)


def _print_summaries(findings: list[Finding], summary: dict[str, Any] | None) -> None:
    with contextlib.suppress(Exception):
        if findings:
            print(format_summary(findings), file=sys.stderr)
        if summary is not None:
            print(format_health_summary(summary), file=sys.stderr)


def _nothing_to_run(script: str, path: str) -> tuple[str, int] | None:
    """Python's own words and exit status where ``python SCRIPT`` finds nothing to run."""
    if not os.path.exists(path):
        return f"can't open file {path!r}: [Errno 2] No such file or directory", 2
    if os.path.isdir(path) and not any(
        os.path.isfile(os.path.join(path, name)) for name in ("__main__.py", "__main__.pyc")
    ):
        # The folder as typed, made absolute: a trailing slash stays.
        shown = script if os.path.isabs(script) else os.path.join(os.getcwd(), script)
        return f"can't find '__main__' module in {shown!r}", 1
    return None


def _run_main(path: str, typed: str) -> None:
    """Execute the file at ``path`` (``typed`` on the command line) as the ``__main__``
    module, as ``python SCRIPT`` does.

    ``runpy.run_path`` would set ``sys.argv[0]`` to the absolute path; Python keeps the
    path as typed there and makes only ``__file__`` absolute, so a plain source file is
    run here directly. Folders and zip files (``__main__.py`` inside) go to runpy, as
    typed, which is what python shows of them.
    """
    if not os.path.isfile(path) or zipfile.is_zipfile(path):
        runpy.run_path(typed, run_name="__main__")
        return
    with io.open_code(path) as handle:
        source = handle.read()
    code = compile(source, path, "exec", dont_inherit=True)
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__cached__ = None
    module.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    module.__builtins__ = builtins
    with _as_main(module):
        exec(code, module.__dict__)


@contextlib.contextmanager
def _as_main(module: types.ModuleType) -> Iterator[None]:
    """``module`` is ``sys.modules["__main__"]`` while the script runs.

    The script's globals live until the interpreter shuts down, as __main__'s do under
    plain python: objects whose finalizers expect that (a multiprocessing pool left open)
    must not be collected earlier, after their resources were closed at exit; and
    :func:`exit_as_python` makes the module __main__ again, so that Python's shutdown
    clears it as it clears __main__ (finalizers of its objects run, as they do there).
    """
    saved_main = sys.modules.get("__main__")
    sys.modules["__main__"] = module
    _script_modules.append(module)
    try:
        yield
    finally:
        if saved_main is not None:
            sys.modules["__main__"] = saved_main


def _exit_status(exc: SystemExit) -> int:
    # Python's own rules: None is 0, an int is itself, anything else is printed and is 1.
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _print_exception(exc: BaseException, script: str) -> None:
    # Python's traceback starts at the script; drop the frames of runpy and this runner.
    tb: TracebackType | None = exc.__traceback__
    start = tb
    while start is not None and start.tb_frame.f_code.co_filename != script:
        start = start.tb_next
    if start is not None:
        start = _without_stand_ins(start)
        # Hooks that print the exception's own traceback (torch.distributed's rank-prefixing
        # one reads ``exc.__traceback__``) must see the trimmed one too.
        exc.__traceback__ = start
    # The script's own sys.excepthook (torchrun's rank prefix, rich, wandb) reports it, as
    # under plain python; Python's default prints what it would.
    hook = sys.excepthook
    if hook is not sys.__excepthook__:
        try:
            hook(type(exc), exc, start if start is not None else tb)
            return
        except Exception:  # a failing hook: Python prints both, the original last
            traceback.print_exc()
    traceback.print_exception(type(exc), exc, start if start is not None else tb)


def _without_stand_ins(tb: TracebackType) -> TracebackType:
    """The traceback without the frames of amplint's stand-ins between the user's call and
    torch's (``scaler.step()`` raising torch's error): python shows torch's frames only."""
    kept: list[TracebackType] = []
    entry: TracebackType | None = tb
    while entry is not None:
        if not entry.tb_frame.f_code.co_filename.startswith(_RUNTIME_DIR):
            kept.append(entry)
        entry = entry.tb_next
    if not kept:
        return tb
    for before, after in zip(kept, [*kept[1:], None], strict=True):
        before.tb_next = after
    return kept[0]


_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def format_summary(findings: list[Finding]) -> str:
    rows = [(f"{f.filename}:{f.line}", f.code, str(f.count), str(f.first_step)) for f in findings]
    header = ("location", "code", "count", "first step")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = [f"amplint: {len(findings)} AMP finding(s)"]
    for row in [header, *rows]:
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    lines.append("")
    lines.extend(f"{f.filename}:{f.line}: {f.message}" for f in findings)
    return "\n".join(lines)


def _write_report(
    path: str,
    findings: list[Finding],
    mode: str,
    script: str,
    status: int,
    summary: dict[str, Any] | None,
    killed_by: str | None = None,
) -> _distributed.Written | None:
    """Write the JSON report; a path that cannot be written gets one line on stderr and
    changes nothing else (the script's output and exit status are the script's). Returns
    what was written under torchrun (see ``distributed.write_report``), else None."""
    document: dict[str, Any] = {
        "findings": [finding.to_dict() for finding in findings],
        "mode": mode,
        "script": script,
        "exit_status": status,
        "summary": summary,
        "internal_errors": internal_errors(),
    }
    if killed_by is not None:
        document["signal"] = killed_by
    try:
        # Under torchrun: this rank's file, and rank 0 merges (see distributed.py).
        written = _distributed.write_report(path, document)
        if written is not None:
            return written
        text = json.dumps(document, indent=2) + "\n"
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except (OSError, TypeError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        with contextlib.suppress(Exception):
            print(f"amplint: cannot write the report to {path!r}: {reason}", file=sys.stderr)
    return None


def build_parser() -> argparse.ArgumentParser:
    """``amplint run``'s options: one per health threshold (``--name-with-dashes``, and
    ``--no-name`` for a switch that is on by default), as the catalog documents them."""
    parser = argparse.ArgumentParser(
        prog="amplint run", description="Run a training script with amplint.runtime installed."
    )
    parser.add_argument("--mode", choices=MODES, default="warn")
    parser.add_argument("--report", dest="report_path", default=None)
    parser.add_argument("--no-health", dest="health", action="store_false")
    parser.add_argument("--plot", dest="plot_path", default=None)
    parser.add_argument("-m", dest="module", action="store_true", help="run SCRIPT as a module")
    for name, default in _health.HealthConfig().__dict__.items():
        option = name.replace("_", "-")
        if isinstance(default, bool):
            action = "store_false" if default else "store_true"
            flag = f"--no-{option}" if default else f"--{option}"
            parser.add_argument(flag, dest=name, action=action, default=None)
            continue
        parser.add_argument(f"--{option}", dest=name, type=type(default))
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    thresholds = {
        name: getattr(options, name)
        for name in _health.config_fields()
        if getattr(options, name, None) is not None
    }
    return run_script(
        options.script,
        options.args,
        options.mode,
        options.report_path,
        health=options.health,
        thresholds=thresholds,
        plot_path=options.plot_path,
        module=options.module,
    )


def exit_as_python(status: int) -> NoReturn:
    """End the process with ``status`` from :func:`run_script`, as ``python SCRIPT`` ends.

    After an uncaught KeyboardInterrupt Python dies of SIGINT (status -2 to a parent, 130
    in a shell, and a shell loop running it stops too); ``sys.exit(130)`` would not.
    """
    if _script_modules:
        # Shutdown frees __main__ as it drops sys.modules, running its objects' finalizers
        # (__del__) while their globals are still there: the script's module, as under
        # plain python, held by nothing else that would keep it for the later clearing of
        # every module's names to None.
        sys.modules["__main__"] = _script_modules[-1]
        _script_modules.clear()
    if _interrupted and status == 130 and os.name == "posix":
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(Exception):
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
    sys.exit(status)


if __name__ == "__main__":
    exit_as_python(main())
