"""The findings registry and the three ways of showing a finding: warn, raise, log.

Every check ends in :func:`emit`. The registry is keyed by ``(code, filename, line)``: the
first occurrence at a call site is shown, later ones only increase ``count``, so a bug in
a loop body is reported once and not once per step. ``mode="raise"`` raises on every
occurrence: an error that stopped being an error on its second hit would hide bugs.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Iterable

from .findings import AmpUsageError, AmpWarning, Finding, message_for
from .frames import Site

__all__ = [
    "MODES",
    "add_flusher",
    "deprecated_api",
    "emit",
    "get_ignored",
    "get_mode",
    "is_ignored",
    "report",
    "reset",
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


class _StepCounter:
    """Counts training steps, for ``first_step``: the most steps any one optimizer took.

    Counting per optimizer keeps two optimizers stepping once per iteration at one step
    per iteration. Plain ints under the GIL; an off-by-one across threads only blurs a
    diagnostic number.
    """

    def __init__(self) -> None:
        self.current = 0
        self._per_optimizer: dict[int, int] = {}

    def count(self, optimizer: object) -> None:
        key = id(optimizer)
        n = self._per_optimizer.get(key, 0) + 1
        self._per_optimizer[key] = n
        if n > self.current:
            self.current = n

    def reset(self) -> None:
        self.current = 0
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
    if code in _ignored:
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
    if mode == "raise":
        if raise_now:
            raise AmpUsageError(f"{filename}:{line}: {message}", code)
        return
    if not first:
        return
    if mode == "warn":
        warnings.warn_explicit(AmpWarning(message, code), AmpWarning, filename, line)
    else:
        logger.warning("%s:%d: %s", filename, line, message)


def deprecated_api(api: str, replacement: str, site: Site) -> None:
    """AMP007 for a deprecated ``torch.cuda.amp`` / ``torch.cpu.amp`` constructor.

    torch's deprecated classes emit a FutureWarning of their own; the stand-ins keep it,
    with torch's wording, at the user's line rather than ours.
    """
    warnings.warn_explicit(
        f"`{api}(args...)` is deprecated. Please use `{replacement}` instead.",
        FutureWarning,
        site[0],
        site[1],
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
        flush()
    with _lock:
        return [Finding(**f.to_dict()) for f in _findings.values()]


def reset() -> None:
    """Forget all findings and the step count (e.g. between experiments or tests)."""
    with _lock:
        _findings.clear()
    step_counter.reset()
