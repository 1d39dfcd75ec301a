"""The findings registry and the three ways of showing a finding: warn, raise, log.

Every check ends in :func:`emit`. The registry is keyed by ``(code, filename, line)``: the
first occurrence at a call site is shown, later ones only increase ``count``, so a bug in
a loop body is reported once and not once per step. ``mode="raise"`` raises on every
occurrence: an error that stopped being an error on its second hit would hide bugs.

After a failure of amplint's own code (:func:`internal_error`) its bookkeeping may be off,
and a finding could be a false one: from then on findings are recorded and shown, but
never raised into the training, whatever the mode or the warnings filter
(:func:`may_raise`). ``reset()`` or a new ``install()`` restores the normal behaviour.

The findings, the internal errors, the mode and the ignored codes live in the session
(``session.py``); this module is how they are written and read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from .findings import AmpUsageError, AmpWarning, Finding, message_for
from .frames import Site, user_frame, user_site
from .ranks import rank_info
from .session import SESSION, StepCounter

__all__ = [
    "MODES",
    "USER_FACING",
    "add_flusher",
    "check_mode",
    "deprecated_api",
    "emit",
    "get_ignored",
    "get_mode",
    "internal_error",
    "internal_errors",
    "is_ignored",
    "may_raise",
    "recorded",
    "report",
    "run_check",
    "set_ignored",
    "set_mode",
    "steps",
]

MODES = ("warn", "raise", "log")

logger = logging.getLogger("amplint.runtime")

# Guards SESSION.results (the findings and the internal errors).
_lock = threading.Lock()

_T = TypeVar("_T")

# Processes forked by the script (a multiprocessing pool, DataLoader workers with the fork
# start method) inherit amplint with the memory. They must behave as under plain python:
# no findings shown, no summary, no report; only the process amplint started reports.
_forked = False


def _after_fork_in_child() -> None:
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def forked_child() -> bool:
    """Whether this process was forked from the one amplint was installed in."""
    return _forked


def steps() -> StepCounter:
    """This session's step counter (read it afresh: a new session has a new one)."""
    return SESSION.history.steps


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def set_mode(mode: str) -> None:
    check_mode(mode)
    SESSION.live.mode = mode


def get_mode() -> str:
    return SESSION.live.mode


def set_ignored(codes: Iterable[str]) -> None:
    SESSION.live.ignored = frozenset(code.upper() for code in codes)


def get_ignored() -> frozenset[str]:
    return SESSION.live.ignored


def is_ignored(code: str) -> bool:
    return code in SESSION.live.ignored


def emit(
    code: str,
    message: str,
    site: Site,
    *,
    raise_now: bool = True,
    step: int | None = None,
    occurrences: int = 1,
) -> None:
    """Record a finding at ``site`` and show it according to the mode.

    ``raise_now=False`` lets a caller that is about to see torch raise for the same misuse
    raise one combined error itself (see ``scaler.py``), and lets findings read lazily at
    report time be recorded without raising there. ``step`` is the training step the
    finding belongs to when it is reported later than it happened (numerical health);
    ``occurrences``, how many times it happened, where it is known only after some
    (AMP010: a scaler rebuilt every step is a pattern of several constructions).
    """
    live = SESSION.live
    if code in live.ignored or _forked:
        return
    filename, line = site
    key = (code, filename, line)
    with _lock:
        results = SESSION.results
        finding = results.findings.get(key)
        first = finding is None
        first_step = SESSION.history.steps.current if step is None else step
        if finding is None:
            results.findings[key] = Finding(code, message, filename, line, occurrences, first_step)
        else:
            finding.count += occurrences
        for watcher in results.watchers:
            watcher.setdefault(key, (first_step, message))
        mode = live.mode
        if results.internal:
            # amplint failed before: this finding may come from its broken bookkeeping,
            # so it is shown without stopping the training (see may_raise()).
            raise_now = False
            if mode == "raise":
                mode = "warn"
    where = f"{filename}:{line}" if live.place is None else live.place(filename, line)
    if mode == "raise":
        if raise_now:
            raise AmpUsageError(f"{where}: {message}", code)
        return
    if not first:
        return
    if mode == "warn":
        if raise_now:
            # Under `-W error` this raises at the user's line: the user asked for that.
            warnings.warn_explicit(AmpWarning(message, code), AmpWarning, filename, line)
            return
        # Not at a call the user is making (report time), or torch is about to raise for
        # the same misuse: a warnings filter must not turn it into an exception here.
        try:
            warnings.warn_explicit(AmpWarning(message, code), AmpWarning, filename, line)
        except Warning:
            logger.warning("%s: %s", where, message)
    else:
        logger.warning("%s: %s", where, message)


@contextlib.contextmanager
def torch_warnings_at_user_line() -> Iterator[None]:
    """torch's own warnings raised inside (a stand-in calling torch's code) shown at the
    user's line, as they are without amplint, not at amplint's line that called torch.

    Python 3.11 has no ``skip_file_prefixes``: what torch's warning would show is taken
    (``warnings.showwarning``, the user's filters having decided already) and warned
    again under the user's module's warning registry. The filters themselves are left
    alone: changing them, even for a moment, makes Python forget which warnings every
    module has shown, and torch's FutureWarning for ``torch.cuda.amp.autocast()`` came
    back once more on the next iteration. Callers use it only where torch is about to
    warn (a configuration torch disables), never on every step.
    """
    frame = user_frame(3)
    caught: list[tuple[Warning | str, type[Warning], str, int]] = []

    def capture(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        caught.append((message, category, filename, lineno))

    shown = warnings.showwarning
    warnings.showwarning = capture
    try:
        yield
    finally:
        if warnings.showwarning is capture:
            warnings.showwarning = shown
    for message, category, filename, lineno in caught:
        if frame is None:
            warnings.warn_explicit(message, category, filename, lineno)
            continue
        module_globals = frame.f_globals
        warnings.warn_explicit(
            message,
            category,
            frame.f_code.co_filename,
            frame.f_lineno,
            module=module_globals.get("__name__"),
            registry=module_globals.setdefault("__warningregistry__", {}),
            module_globals=module_globals,
        )


# (what, user's line) whose "torch disables it" warning was shown: Python's once-per-location.
_disabled_shown: set[tuple[str, Site]] = set()


def torch_disabling(what: str) -> contextlib.AbstractContextManager[None] | None:
    """For a stand-in about to build ``what`` ("autocast", "GradScaler") that torch will
    disable with a warning: the context to build it in the first time on the user's line
    (torch's warning shown there, see :func:`torch_warnings_at_user_line`); None after
    that: build it disabled, as torch makes it, without the warning again."""
    key = (what, user_site(2))
    if key in _disabled_shown:
        return None
    _disabled_shown.add(key)
    return torch_warnings_at_user_line()


def deprecated_api(api: str, replacement: str, site: Site) -> None:
    """AMP007 for a deprecated ``torch.cuda.amp`` / ``torch.cpu.amp`` constructor.

    torch's deprecated classes emit a FutureWarning of their own; the stand-ins keep it,
    with torch's wording, at the user's line rather than ours.
    """
    # The user's module's warning registry keeps Python's once-per-location rule: plain
    # torch shows this warning once per call site, not once per call.
    frame = user_frame(2)
    registry = None
    module_globals = None
    if frame is not None and (frame.f_code.co_filename, frame.f_lineno) == site:
        module_globals = frame.f_globals
        registry = module_globals.setdefault("__warningregistry__", {})
    warnings.warn_explicit(
        f"`{api}(args...)` is deprecated. Please use `{replacement}` instead.",
        FutureWarning,
        site[0],
        site[1],
        module=None if module_globals is None else module_globals.get("__name__"),
        registry=registry,
        module_globals=module_globals,
    )
    emit("AMP007", message_for("AMP007", api=api, replacement=replacement), site)


# Callables run before report() answers: numerical health reads its lazily copied device
# statistics there (see health.py), so that report() is complete.
_flushers: list[Callable[[], None]] = []


def add_flusher(flush: Callable[[], None]) -> None:
    if flush not in _flushers:
        _flushers.append(flush)


def report() -> list[Finding]:
    """The findings so far, in the order first seen (copies, safe to keep)."""
    for flush in list(_flushers):
        try:
            flush()
        except Exception as error:
            internal_error("reading the numerical-health statistics", error)
    with _lock:
        findings = [Finding(**f.to_dict()) for f in SESSION.results.findings.values()]
    return _with_rank(findings)


def _with_rank(findings: list[Finding]) -> list[Finding]:
    """``findings`` with this process's rank when it is one of a distributed run's."""
    if not findings:
        return findings
    try:
        info = rank_info()
    except Exception as error:
        internal_error("finding this process's rank", error)
        return findings
    if info is not None:
        for finding in findings:
            finding.rank = info.rank
    return findings


def recorded(timeout: float) -> list[Finding]:
    """The findings recorded so far without flushing, waiting at most ``timeout`` seconds
    for the registry's lock: for a signal handler, which may have interrupted its holder."""
    locked = _lock.acquire(timeout=timeout)
    try:
        return [Finding(**f.to_dict()) for f in list(SESSION.results.findings.values())]
    finally:
        if locked:
            _lock.release()


# amplint's own failures ------------------------------------------------------------------

# Exceptions a check may let through to the user: a finding in mode="raise", and a finding
# (or torch's own deprecation warning, which amplint's stand-ins repeat) that the user's
# warnings filter turned into an error. Anything else a check raises is amplint's bug.
USER_FACING: tuple[type[BaseException], ...] = (AmpUsageError, AmpWarning, FutureWarning)


def internal_error(where: str, error: BaseException) -> None:
    """Note that amplint's own code failed in ``where``; the training goes on.

    Shown once per place on stderr (never as a warning: a warnings filter set to "error"
    must not turn amplint's bug into the user's crash) and kept for the JSON report.
    """
    text = f"{type(error).__name__}: {error}"
    with _lock:
        internal = SESSION.results.internal
        if where in internal:
            return
        internal[where] = text
    # A closed or broken stderr loses only the line: the note stays in internal_errors().
    with contextlib.suppress(Exception):
        print(
            f"amplint: internal error in {where} ({text}); that check was skipped, "
            "the training is unaffected. Please report this as an amplint bug.",
            file=sys.stderr,
        )


def may_raise() -> bool:
    """Whether a finding may still stop the training: not once amplint's own code failed
    (until ``reset()``), since a finding may then come from its broken bookkeeping."""
    return not SESSION.results.internal


def internal_errors() -> list[str]:
    """``"where: ExceptionType: message"`` for each place amplint's own code failed."""
    with _lock:
        return [f"{where}: {text}" for where, text in SESSION.results.internal.items()]


def run_check(where: str, check: Callable[..., _T], *args: Any, **kwargs: Any) -> _T | None:
    """Run ``check(*args, **kwargs)`` and return its result; a failure of amplint's own code
    becomes an internal-error note and None instead of an exception in the user's training
    step (see ``USER_FACING``)."""
    try:
        return check(*args, **kwargs)
    except USER_FACING:
        raise
    except Exception as error:
        internal_error(where, error)
        return None
