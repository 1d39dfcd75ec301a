"""The usage state machine: the one place that knows the legal order of AMP calls.

Per GradScaler and per optimizer the legal order within one iteration is::

    scaler.scale(loss).backward()      (any number of times: accumulation, several losses)
    scaler.unscale_(optimizer)         (optional, at most once)
    scaler.step(optimizer)             (once)
    scaler.update()                    (once, after the steps of all optimizers)

:class:`ScalerUsage` mirrors torch's own ``OptState`` (READY / UNSCALED / STEPPED) and adds
what torch does not track: whether a scaled backward happened since the last update, which
optimizers a scaler manages, and where the scaler was created. It only answers questions
("is this call out of order, and why?"); the callers report.

:class:`ThreadState` holds what belongs to the training thread: the autocast regions it
entered and the backward passes it ran. Autocast state is thread-local in torch, so a
check made in one thread must never look at another thread's calls.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import torch

from . import frameworks
from .frames import Site

if TYPE_CHECKING:
    from .scaler import GradScaler

__all__ = [
    "ScalerUsage",
    "Stage",
    "ThreadState",
    "UnscaledBackward",
    "autocast_active",
    "forget_autocast_history",
    "forget_construction_sites",
    "note_autocast_entered",
    "note_construction",
    "note_enabled_scaler",
    "only_bfloat16_seen",
    "thread_state",
    "uses_scalers",
]


class Stage(Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


class ScalerUsage:
    """What one GradScaler has been asked to do in the current iteration."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self._stages: dict[int, Stage] = {}
        # ids of optimizers this scaler has unscaled or stepped: the optimizers it manages.
        self.managed: set[int] = set()
        self.fp16_checked: set[int] = set()
        self.scaled_backward_pending = False
        # scale() got an iterable it could not tag (e.g. a generator): from then on this
        # iteration, a backward we cannot attribute must not be blamed on the user.
        self.untracked_scale = False
        self.bf16_reported = False
        # get_scale() was read since the last scaled backward: a clip that follows may be
        # scaling its max_norm by hand (torch's own tests do), so AMP006 stays quiet.
        self.scale_read = False

    def stage(self, optimizer: object) -> Stage:
        return self._stages.get(id(optimizer), Stage.READY)

    # Questions ------------------------------------------------------------------------

    def unscale_problem(self, optimizer: object) -> str | None:
        """``None`` if ``unscale_(optimizer)`` is legal now, else what is wrong (AMP011)."""
        stage = self.stage(optimizer)
        if stage is Stage.UNSCALED:
            return "twice before scaler.update()"
        if stage is Stage.STEPPED:
            return "after scaler.step()"
        return None

    def step_problem(self, optimizer: object) -> bool:
        """True if ``step(optimizer)`` already ran since the last ``update()`` (AMP002)."""
        return self.stage(optimizer) is Stage.STEPPED

    def mid_iteration(self) -> bool:
        return any(stage is not Stage.READY for stage in self._stages.values())

    def grads_still_scaled(self) -> bool:
        """A scaled backward ran and no optimizer of this scaler was unscaled since (AMP006)."""
        return self.scaled_backward_pending and not self.scale_read and not self.mid_iteration()

    def bypassed_by(self, optimizer: object) -> bool:
        """True if a direct ``optimizer.step()`` now would apply scaled gradients (AMP004).

        Once the scaler manages some optimizers, an optimizer it never saw is taken to be
        an unrelated model's: a false alarm costs more than a missed hint.
        """
        if not self.scaled_backward_pending:
            return False
        if self.managed and id(optimizer) not in self.managed:
            return False
        return self.stage(optimizer) is not Stage.STEPPED

    # Transitions (called after torch's method succeeded) -------------------------------

    def scaled(self, tracked: bool) -> None:
        if not tracked:
            self.untracked_scale = True

    def scaled_backward(self) -> None:
        self.scaled_backward_pending = True
        self.scale_read = False

    def read_scale(self) -> None:
        if self.scaled_backward_pending:
            self.scale_read = True

    def unscaled(self, optimizer: object) -> None:
        self._stages[id(optimizer)] = Stage.UNSCALED
        self.managed.add(id(optimizer))

    def stepped(self, optimizer: object) -> None:
        self._stages[id(optimizer)] = Stage.STEPPED
        self.managed.add(id(optimizer))

    def updated(self) -> None:
        self._stages.clear()
        self.scaled_backward_pending = False
        self.untracked_scale = False
        self.scale_read = False


# GradScaler construction sites (AMP010) ---------------------------------------------


@dataclass
class _SiteRecord:
    constructions: int = 0
    step_at_last: int = 0  # training step count when this site last built a scaler
    short_lived: int = 0  # consecutive scalers from this site that lived for one step


_sites_lock = threading.Lock()
_sites: dict[Site, _SiteRecord] = {}
# A loop that re-creates its scaler builds one per training step. Two such scalers in a
# row from one line, then a third, is the pattern; a sweep of runs (many steps per
# scaler) or a loop that builds scalers without training (no step at all) is not.
_RECREATED_AFTER = 2


def note_construction(site: Site, step: int) -> bool:
    """Record a GradScaler built at ``site`` at training step ``step``; True if that line
    re-creates its scaler every step."""
    with _sites_lock:
        record = _sites.get(site)
        if record is None:
            record = _sites[site] = _SiteRecord()
        if record.constructions and step - record.step_at_last == 1:
            record.short_lived += 1
        else:
            record.short_lived = 0
        record.constructions += 1
        record.step_at_last = step
        return record.short_lived >= _RECREATED_AFTER


def forget_construction_sites() -> None:
    with _sites_lock:
        _sites.clear()


# Autocast regions seen --------------------------------------------------------------

_DEFAULT_DEVICES = ("cpu", "cuda")
_devices: tuple[str, ...] = _DEFAULT_DEVICES
_dtypes_seen: set[torch.dtype] = set()
_enabled_scalers = 0


def note_autocast_entered(device: str, dtype: torch.dtype) -> None:
    global _devices
    if device not in _devices:
        _devices = (*_devices, device)
    _dtypes_seen.add(dtype)
    if dtype is torch.float16:
        thread_state().fp16_forward = True


def autocast_active() -> bool:
    """Whether an enabled autocast region is active in this thread, on any device seen."""
    if not any(torch.is_autocast_enabled(device) for device in _devices):
        return False
    # Lightning's region around `training_step` is the framework's design, not the user's.
    return not frameworks.framework_region_only()


def only_bfloat16_seen() -> bool:
    return _dtypes_seen == {torch.bfloat16}


def note_enabled_scaler() -> None:
    global _enabled_scalers
    _enabled_scalers += 1


def uses_scalers() -> bool:
    """Whether any enabled GradScaler was ever built: only then is an unscaled backward news."""
    return _enabled_scalers > 0


def forget_autocast_history() -> None:
    global _devices
    _devices = _DEFAULT_DEVICES
    _dtypes_seen.clear()


# Per-thread -------------------------------------------------------------------------


@dataclass
class UnscaledBackward:
    site: Site
    fp16: bool
    # ids of the leaf tensors these backward passes accumulate into; None when unknown
    # (graph too large to walk), which counts as "may touch any optimizer".
    leaves: set[int] | None

    def touches(self, optimizer: torch.optim.Optimizer) -> bool:
        if self.leaves is None:
            return True
        return any(
            id(p) in self.leaves for group in optimizer.param_groups for p in group["params"]
        )


class ThreadState(threading.local):
    def __init__(self) -> None:
        # An enabled float16 autocast region was entered since this thread's last backward.
        self.fp16_forward = False
        # The first backward since the last step/zero_grad whose loss was not scaled.
        self.unscaled_backward: UnscaledBackward | None = None
        # Scalers whose scaled loss this thread back-propagated since their update().
        self.pending: weakref.WeakSet[GradScaler] = weakref.WeakSet()
        # >0 while GradScaler.step runs: the optimizer.step() inside it is the legal one.
        self.in_scaler_step = 0
        # The optimizer.step() inside the current GradScaler.step ran (it was not skipped).
        self.inner_step_ran = False


_thread_state = ThreadState()


def thread_state() -> ThreadState:
    return _thread_state
