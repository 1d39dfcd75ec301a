"""The findings registry and the three ways of showing a finding: warn, raise, log.

Every check ends in :func:`emit`. The registry is keyed by ``(code, filename, line)``: the
first occurrence at a call site is shown, later ones only increase ``count``, so a bug in
a loop body is reported once and not once per step. ``mode="raise"`` raises on every
occurrence: an error that stopped being an error on its second hit would hide bugs.

After a failure of amplint's own code (:func:`internal_error`) its bookkeeping may be off,
and a finding could be a false one: from then on findings are recorded and shown, but
never raised into the training, whatever the mode or the warnings filter
(:func:`may_raise`). ``reset()`` restores the normal behaviour.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .findings import AmpUsageError, AmpWarning, Finding, message_for
from .frames import Site, user_frame
from .ranks import rank_info

__all__ = [
    "MODES",
    "USER_FACING",
    "add_flusher",
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
    "reset",
    "run_check",
    "set_ignored",
    "set_mode",
    "step_counter",
]

MODES = ("warn", "raise", "log")

logger = logging.getLogger("amplint.runtime")

_lock = threading.Lock()
_findings: dict[tuple[str, str, int], Finding] = {}
_mode = "warn"
_ignored: frozenset[str] = frozenset()

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


class _StepCounter:
    """Counts training steps, for ``first_step``: 0-based, the iteration a finding was seen in.

    ``current`` is the number of optimizer steps taken before the current iteration (the
    most any one optimizer took, so two optimizers stepping once per iteration count one).
    A step is counted at once (``latest``) but moves ``current`` only when the next
    iteration begins (its first ``scale()``, backward or autocast region): a finding at
    the step, the update or the zero_grad of iteration 0 belongs to iteration 0. Plain
    ints under the GIL; an off-by-one across threads only blurs a diagnostic number.
    """

    def __init__(self) -> None:
        self.current = 0
        self.latest = 0
        self._per_optimizer: dict[int, int] = {}

    def count(self, optimizer: object) -> None:
        key = id(optimizer)
        n = self._per_optimizer.get(key, 0) + 1
        self._per_optimizer[key] = n
        if n > self.latest:
            self.latest = n

    def commit(self) -> None:
        self.current = self.latest

    def reset(self) -> None:
        self.current = self.latest = 0
        self._per_optimizer.clear()


step_counter = _StepCounter()


def set_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    global _mode
    _mode = mode


def get_mode() -> str:
    return _mode


def set_ignored(codes: Iterable[str]) -> None:
    global _ignored
    _ignored = frozenset(code.upper() for code in codes)


def get_ignored() -> frozenset[str]:
    return _ignored


def is_ignored(code: str) -> bool:
    return code in _ignored


def emit(
    code: str, message: str, site: Site, *, raise_now: bool = True, step: int | None = None
) -> None:
    """Record a finding at ``site`` and show it according to the mode.

    ``raise_now=False`` lets a caller that is about to see torch raise for the same misuse
    raise one combined error itself (see ``scaler.py``), and lets findings read lazily at
    report time be recorded without raising there. ``step`` is the training step the
    finding belongs to when it is reported later than it happened (numerical health).
    """
    if code in _ignored or _forked:
        return
    filename, line = site
    key = (code, filename, line)
    with _lock:
        finding = _findings.get(key)
        first = finding is None
        if finding is None:
            first_step = step_counter.current if step is None else step
            _findings[key] = Finding(code, message, filename, line, 1, first_step)
        else:
            finding.count += 1
        mode = _mode
        if _internal:
            # amplint failed before: this finding may come from its broken bookkeeping,
            # so it is shown without stopping the training (see may_raise()).
            raise_now = False
            if mode == "raise":
                mode = "warn"
    if mode == "raise":
        if raise_now:
            raise AmpUsageError(f"{filename}:{line}: {message}", code)
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
            logger.warning("%s:%d: %s", filename, line, message)
    else:
        logger.warning("%s:%d: %s", filename, line, message)


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
        findings = [Finding(**f.to_dict()) for f in _findings.values()]
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
        return [Finding(**f.to_dict()) for f in list(_findings.values())]
    finally:
        if locked:
            _lock.release()


def reset() -> None:
    """Forget all findings, internal errors and the step count (e.g. between experiments
    or tests)."""
    with _lock:
        _findings.clear()
        _internal.clear()
    step_counter.reset()


# amplint's own failures ------------------------------------------------------------------

# Exceptions a check may let through to the user: a finding in mode="raise", and a finding
# (or torch's own deprecation warning, which amplint's stand-ins repeat) that the user's
# warnings filter turned into an error. Anything else a check raises is amplint's bug.
USER_FACING: tuple[type[BaseException], ...] = (AmpUsageError, AmpWarning, FutureWarning)

_internal: dict[str, str] = {}


def internal_error(where: str, error: BaseException) -> None:
    """Note that amplint's own code failed in ``where``; the training goes on.

    Shown once per place on stderr (never as a warning: a warnings filter set to "error"
    must not turn amplint's bug into the user's crash) and kept for the JSON report.
    """
    text = f"{type(error).__name__}: {error}"
    with _lock:
        if where in _internal:
            return
        _internal[where] = text
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
    return not _internal


def internal_errors() -> list[str]:
    """``"where: ExceptionType: message"`` for each place amplint's own code failed."""
    with _lock:
        return [f"{where}: {text}" for where, text in _internal.items()]


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
