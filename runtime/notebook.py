"""The IPython extension: ``%load_ext amplint.runtime`` in a Jupyter kernel or IPython.

Loading it installs the runtime checks (``install(mode="warn")``). After each cell, the
findings that cell produced are printed under it, named by the cell as IPython names it in
tracebacks (``In [4], line 12``) rather than by the file name the kernel compiled it
under (``<ipython-input-4-…>``, ``/tmp/ipykernel_…/….py``).

    %amplint on [--mode warn|raise|log] [--ignore CODES] [--health] [--every 8] ...
                                 (re)install with install()'s options
    %amplint report              print every finding so far
    %amplint off                 print the report and uninstall (as %unload_ext does)

In warn mode the extension shows findings itself, so Python's own display of the
``AmpWarning`` (with the compiled file name) is turned off while it is loaded.
"""

from __future__ import annotations

import argparse
import atexit
import re
import shlex
import sys
import warnings
from dataclasses import replace
from typing import Any

from . import health as _health
from .findings import AmpWarning, Finding
from .install import install, installed, uninstall
from .reporting import get_mode, report
from .session import SESSION

__all__ = ["AmplintMagics", "load_ipython_extension", "unload_ipython_extension"]

_OLD_STYLE_NAME = re.compile(r"^<ipython-input-(\d+)-[0-9a-f]+>$")


def cell_label(shell: Any, filename: str) -> str | None:
    """``In [4]`` for a file name IPython compiled cell 4 under; None for a real file."""
    compiler = getattr(shell, "compile", None)
    numbers = getattr(compiler, "_filename_map", None)
    if isinstance(numbers, dict) and filename in numbers:
        return f"In [{numbers[filename]}]"
    match = _OLD_STYLE_NAME.match(filename)
    return f"In [{match.group(1)}]" if match else None


def place(shell: Any, finding: Finding) -> str:
    return place_of(shell, finding.filename, finding.line)


def place_of(shell: Any, filename: str, line: int) -> str:
    label = cell_label(shell, filename)
    if label is None:
        return f"{filename}:{line}"
    return f"{label}, line {line}"


def _key(finding: Finding) -> tuple[str, str, int]:
    return (finding.code, finding.filename, finding.line)


class _Session:
    """What the extension keeps between cells: the findings already shown."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.shown: set[tuple[str, str, int]] = set()
        self.events = False
        # `ipython script.ipy` runs its cells silently, with no post_run_cell event: what
        # they found is shown when the shell exits.
        atexit.register(self.after_cell)

    def start(self, mode: str = "warn", **options: Any) -> None:
        install(mode, **options)
        # Raised and logged findings name the cell too.
        SESSION.live.place = lambda filename, line: place_of(self.shell, filename, line)
        # Findings of an earlier session (before %reload_ext) were shown then.
        self.shown.update(_key(f) for f in report())
        # The extension shows warn-mode findings under the cell; Python's own warning
        # display would repeat each with the compiled file's name.
        warnings.filterwarnings("ignore", category=AmpWarning)
        if not self.events:
            self.shell.events.register("post_run_cell", self.after_cell)
            self.events = True

    def stop(self) -> None:
        if self.events:
            self.shell.events.unregister("post_run_cell", self.after_cell)
            self.events = False
        _remove_filter()
        uninstall()

    def after_cell(self, result: Any = None) -> None:
        del result
        if not installed():
            return
        new = [f for f in report() if _key(f) not in self.shown]
        self.shown.update(_key(f) for f in new)
        if get_mode() != "warn":
            return  # the cell's traceback, or the log, already names the finding
        for finding in new:
            print(f"amplint: {place(self.shell, finding)}: {finding.message}", file=sys.stderr)

    def report_text(self) -> str:
        findings = report()
        if not findings:
            text = "amplint: no AMP findings"
        else:
            from .runner import format_summary

            named = []
            for finding in findings:
                label = cell_label(self.shell, finding.filename)
                named.append(finding if label is None else replace(finding, filename=label))
            text = format_summary(named)
        summary = _health.summary()
        if summary is not None:
            from .summary_text import format_health_summary

            text += "\n" + format_health_summary(summary)
        return text


def _remove_filter() -> None:
    warnings.filters[:] = [
        entry
        for entry in warnings.filters
        if not (entry[0] == "ignore" and entry[2] is AmpWarning and entry[1] is None)
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="%amplint", add_help=False, exit_on_error=False)
    parser.add_argument("command", nargs="?", default="on", choices=("on", "off", "report"))
    parser.add_argument("--mode", choices=("warn", "raise", "log"), default="warn")
    parser.add_argument("--ignore", default="", help="comma-separated codes")
    parser.add_argument("--health", action=argparse.BooleanOptionalAction, default=None)
    for name in _health.config_fields():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=_number)
    return parser


def _number(text: str) -> int | float | bool:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        return float(text)


class AmplintMagics:
    """The ``%amplint`` line magic (registered by :func:`load_ipython_extension`)."""

    def __init__(self, session: _Session) -> None:
        self.session = session

    def __call__(self, line: str) -> None:
        try:
            args = _parser().parse_args(shlex.split(line))
        except (argparse.ArgumentError, ValueError, SystemExit) as error:
            print(f"amplint: {error}", file=sys.stderr)
            return
        if args.command == "report":
            print(self.session.report_text())
            return
        if args.command == "off":
            self.session.after_cell()
            print(self.session.report_text())
            self.session.stop()
            print("amplint: runtime checks off")
            return
        thresholds = {
            name: getattr(args, name)
            for name in _health.config_fields()
            if getattr(args, name) is not None
        }
        ignore = [code.strip().upper() for code in args.ignore.split(",") if code.strip()]
        try:
            self.session.start(args.mode, ignore=ignore, health=args.health, **thresholds)
        except (TypeError, ValueError) as error:
            print(f"amplint: {error}", file=sys.stderr)
            return
        print(f"amplint: runtime checks on (mode {args.mode})")


_sessions: dict[int, _Session] = {}


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext amplint.runtime``: install the checks and the ``%amplint`` magic."""
    session = _sessions.get(id(ipython))
    if session is None:
        session = _sessions[id(ipython)] = _Session(ipython)
        ipython.register_magic_function(AmplintMagics(session), "line", "amplint")
    session.start()
    print("amplint: runtime checks on (mode warn); `%amplint report`, `%amplint off`")


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext amplint.runtime``: uninstall the checks."""
    session = _sessions.pop(id(ipython), None)
    if session is not None:
        session.stop()
