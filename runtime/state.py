"""Facts the usage checks consult (``usage.py`` decides; this module only remembers).

The facts themselves live in ``SESSION.history`` (``session.py``), so that ``uninstall()``
and ``reset()`` forget them in one call; here is how the checks read and write them.
:func:`thread_state` is what belongs to the calling training thread: autocast state is
thread-local in torch, so a check made in one thread must never look at another's calls.
"""

from __future__ import annotations

import threading

import torch

from . import frameworks
from .frames import Site
from .session import SESSION, SiteRecord, ThreadState

__all__ = [
    "autocast_active",
    "note_autocast_entered",
    "note_autocast_seen",
    "note_construction",
    "note_enabled_scaler",
    "only_bfloat16_seen",
    "thread_state",
    "uses_scalers",
]


# GradScaler construction sites (AMP010) ---------------------------------------------

_sites_lock = threading.Lock()
# A loop that re-creates its scaler builds one per training step. Two such scalers in a
# row from one line, then a third, is the pattern; a sweep of runs (many steps per
# scaler) or a loop that builds scalers without training (no step at all) is not.
_RECREATED_AFTER = 2


def note_construction(site: Site, step: int) -> tuple[int, int]:
    """Record a GradScaler built at ``site`` at training step ``step``.

    Returns how many re-creations this construction makes known, and the step of the
    first of them: ``(0, 0)`` while the line is not known to re-create its scaler every
    step; when it becomes known, every re-creation since the run of short-lived scalers
    began (the user counts those, not the constructions after the pattern was seen);
    then one each."""
    with _sites_lock:
        sites = SESSION.history.scaler_sites
        record = sites.get(site)
        if record is None:
            record = sites[site] = SiteRecord()
        if record.constructions and step - record.step_at_last == 1:
            record.short_lived += 1
            if record.short_lived == 1:
                record.short_lived_since = step
        else:
            record.short_lived = 0
        record.constructions += 1
        record.step_at_last = step
        if record.short_lived < _RECREATED_AFTER:
            return 0, 0
        record.recreated = True
        if record.short_lived == _RECREATED_AFTER:
            return record.short_lived, record.short_lived_since
        return 1, step


# Autocast regions seen --------------------------------------------------------------


def note_autocast_seen(device: str, dtype: torch.dtype) -> None:
    history = SESSION.history
    if device not in history.autocast_devices:
        history.autocast_devices = (*history.autocast_devices, device)
    history.autocast_dtypes.add(dtype)


def note_autocast_entered(device: str, dtype: torch.dtype) -> None:
    note_autocast_seen(device, dtype)
    history = SESSION.history
    # Only a forward that can be trained through: a float16 evaluation or a frozen
    # feature extractor under no_grad (a linear probe) leaves no float16 graph to scale.
    if dtype is torch.float16 and torch.is_grad_enabled():
        history.threads.fp16_forward = True


def autocast_active() -> bool:
    """Whether an enabled autocast region is active in this thread, on any device seen."""
    if not any(torch.is_autocast_enabled(device) for device in SESSION.history.autocast_devices):
        return False
    # Lightning's region around `training_step` is the framework's design, not the user's.
    return not frameworks.framework_region_only()


def only_bfloat16_seen() -> bool:
    return SESSION.history.autocast_dtypes == {torch.bfloat16}


# Whether this process ever built an enabled GradScaler. Not part of the session: a
# scaler outlives it (a notebook's scaler from an earlier cell trains after `%amplint off`
# and `on`), and reset() never forgot it either.
_enabled_scalers = 0


def note_enabled_scaler() -> None:
    global _enabled_scalers
    _enabled_scalers += 1


def uses_scalers() -> bool:
    """Whether any enabled GradScaler was ever built: only then is an unscaled backward news."""
    return _enabled_scalers > 0


def thread_state() -> ThreadState:
    return SESSION.history.threads
