"""The runtime's mutable state: one :class:`Session` object, ``SESSION``, in three parts.

* :class:`Live`: what ``install()`` put in place and ``uninstall()`` takes out again (the
  patches, the health monitor and its forward hook, the LR-scheduler patch, the import
  watcher for FSDP, the forward hook held out while compiled modules run) and the settings
  ``install()`` takes (mode, ignored codes: back to ``"warn"`` and none after it). Only
  the modules that put a piece in place take it out (``install.py``, ``health.py``,
  ``distributed.py``, ``compiled.py``): undoing is work on torch, not an assignment.
* :class:`Results`: what was found (the findings, amplint's internal errors, the latest
  health monitor for ``summary()`` / ``history()``). They outlive ``uninstall()``: the
  report is read after the run (``amplint run`` writes its plot, ``checking()``'s findings
  and the internal errors are read after torch is put back), a finding is shown once and
  an internal error said once per process whatever the installations, and the drop-in
  classes record findings with no installation at all. Only ``reset()`` forgets them.
* :class:`History`: the facts the checks consult while training (the step count, the
  lines that built scalers, the autocast devices and dtypes seen, whether the
  compiled-backward note was said, each thread's state).

``uninstall()`` ends with :meth:`Session.end`: live and history fresh, results kept.
``reset()`` is :meth:`Session.reset`: results and history fresh, the installation kept.
Both together (``uninstall(); reset()``) leave ``SESSION == Session()``.

State left where it is, on purpose (none of it belongs to one install/uninstall cycle):

* ``reporting._forked``: whether this process is a forked child, a fact of the process
  set once at fork; ``reporting._flushers``: the health module's flush, registered once.
* ``distributed._sharded_class`` / ``_torch_class``, ``frameworks._dirs``: caches of
  facts that never change in a process (a class built once, the framework folders).
  ``frames._SKIPPED_PREFIXES`` grows by those folders at the first ``install()``, once:
  framework code is machinery whether amplint is installed or not.
* ``frameworks._regions``: each thread's stack of open autocast regions, pushed and popped
  by the regions themselves, so it is balanced whatever the session does.
* ``state._enabled_scalers``: whether the process ever built an enabled GradScaler; a
  scaler outlives a session (a notebook cell's scaler trains after ``%amplint off``/``on``).
* ``rank_reports._started``: when this ``amplint run`` (not this install) started.
* ``runner._interrupted`` / ``_script_modules``: the runner's own run, around install().
* ``notebook._sessions``: one entry per IPython shell with the extension loaded; it lives
  from ``%load_ext`` to ``%unload_ext``, across ``%amplint off`` / ``on``.
* Locks (``reporting._lock``, ``install._lock``, ...): they guard the state, not hold it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .distributed import _ImportWatcher
    from .findings import Finding
    from .frames import Site
    from .health import Monitor
    from .install import _Installation
    from .usage import ScalerUsage

__all__ = [
    "SESSION",
    "History",
    "Live",
    "Results",
    "Session",
    "SiteRecord",
    "StepCounter",
    "ThreadState",
    "UnscaledBackward",
]


class StepCounter:
    """Counts training steps, for ``first_step``: 0-based, the iteration a finding was seen in.

    ``current`` is the number of optimizer steps taken before the current iteration (the
    most any one optimizer took, so two optimizers stepping once per iteration count one).
    A step is counted at once (``latest``) but moves ``current`` only when the next
    iteration begins (its first ``scale()``, backward or autocast region): a finding at
    the step, the update or the zero_grad of iteration 0 belongs to iteration 0. Plain
    ints under the GIL; an off-by-one across threads only blurs a diagnostic number.

    With several GradScalers (a GAN's discriminator and generator), one iteration holds a
    step of each: after the discriminator's step, the generator's half still belongs to
    the same iteration. So a forward or backward that no scaler is known for does not
    begin the next iteration while a scaler has yet to step in this one: one that stepped
    in the previous iteration (unless a scaler that did not has stepped in this one: a
    scaler rebuilt every iteration), or, in the first iteration, an enabled one built
    before the first step and not used before it (the generator's; until an optimizer
    steps twice: a scaler built and never used). A ``scale()`` of a scaler that stepped in
    this iteration begins the next one whatever the others do.
    """

    def __init__(self) -> None:
        self.current = 0
        self.latest = 0
        self._per_optimizer: dict[int, int] = {}
        self._first_iteration = True  # no iteration has ended yet
        # id(scaler's usage record) -> [weak reference, built at, first scaled at or None]
        self._scalers: dict[int, list[Any]] = {}
        self._stepped_now: set[int] = set()  # scalers that stepped in this iteration
        self._stepped_before: set[int] = set()  # ... and in the previous one

    def built(self, scaler: object) -> None:
        self._scalers[id(scaler)] = [weakref.ref(scaler), self.latest, None]

    def scaled(self, scaler: object) -> None:
        entry = self._scalers.get(id(scaler))
        if entry is not None and entry[2] is None:
            entry[2] = self.latest

    def count(self, optimizer: object, scaler: object | None = None) -> None:
        key = id(optimizer)
        n = self._per_optimizer.get(key, 0) + 1
        self._per_optimizer[key] = n
        if n > self.latest:
            self.latest = n
        if scaler is not None:
            if id(scaler) not in self._scalers:  # built before amplint was installed
                self._scalers[id(scaler)] = [weakref.ref(scaler), 0, 0]
            self._stepped_now.add(id(scaler))

    def commit(self, scaler: object | None = None) -> None:
        """The next iteration may have begun: a forward, a backward, or ``scaler``'s
        ``scale()``."""
        if self.latest == self.current:
            return
        begins_again = scaler is not None and id(scaler) in self._stepped_now
        if not begins_again and self._still_to_step():
            return
        self.current = self.latest
        self._first_iteration = False
        self._stepped_before, self._stepped_now = self._stepped_now, set()

    def next_iteration(self) -> int | None:
        """The iteration a forward would begin now; None while none was stepped since the
        current one began, or a scaler has yet to step in it."""
        if self.latest == self.current or self._still_to_step():
            return None
        return self.latest

    def _still_to_step(self) -> bool:
        """Whether a scaler has yet to step in the current iteration."""
        for key, (ref, _, _) in list(self._scalers.items()):
            if ref() is None:  # its id may be reused by a new scaler
                del self._scalers[key]
                self._stepped_now.discard(key)
                self._stepped_before.discard(key)
        if self._first_iteration:
            if self.latest > 1:
                return False  # an optimizer stepped twice: the first iteration is over
            return any(
                key not in self._stepped_now
                and built <= self.current
                and (scaled is None or scaled > self.current)
                for key, (_, built, scaled) in self._scalers.items()
            )
        if not self._stepped_now <= self._stepped_before:
            return False  # a scaler that did not step before stepped now: it took over
        return bool(self._stepped_before - self._stepped_now)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StepCounter):
            return NotImplemented
        return vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]  # mutable


@dataclass
class SiteRecord:
    """The GradScalers one line built (AMP010)."""

    constructions: int = 0
    step_at_last: int = 0  # training step count when this site last built a scaler
    short_lived: int = 0  # consecutive scalers from this site that lived for one step
    short_lived_since: int = 0  # training step at which the first of those was built
    #: the line was found to rebuild its scaler every step (AMP010 was reported there).
    recreated: bool = False


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
    """What belongs to one training thread. Autocast state is thread-local in torch, so a
    check made in one thread must never look at another thread's calls. A fresh
    :class:`History` holds a new one: every thread starts over."""

    def __init__(self) -> None:
        # An enabled float16 autocast region was entered since this thread's last backward.
        self.fp16_forward = False
        # The first backward since the last step/zero_grad whose loss was not scaled.
        self.unscaled_backward: UnscaledBackward | None = None
        # Usage records of the scalers whose scaled loss this thread back-propagated since
        # their update().
        self.pending: weakref.WeakSet[ScalerUsage] = weakref.WeakSet()
        # >0 while GradScaler.step runs: the optimizer.step() inside it is the legal one.
        self.in_scaler_step = 0
        # The optimizer.step() inside the current GradScaler.step ran (it was not skipped).
        self.inner_step_ran = False
        # The enabled autocast regions (amplint's) this thread is inside, innermost last, and
        # the one a backward ran in (AMP001): a step after it in the same region is AMP001's
        # to report, as the static rule leaves it (its fix moves the backward and the rest).
        self.autocast_regions: list[object] = []
        self.backward_region: object | None = None
        # For AMP016: zero_grad() calls (of any optimizer or module) and backward passes
        # seen, as running counts.
        self.zero_grads = 0
        self.backwards_run = 0
        # For AMP004 with an optimizer no scaler steps: backward passes of unscaled losses
        # seen, and that count at each optimizer's last step (id(optimizer) -> count).
        self.plain_backwards = 0
        self.plain_at_step: dict[int, int] = {}
        # For AMP016: what each scaler's last step of each optimizer left (usage.py's
        # AfterStep), by (id(scaler's usage), id(optimizer)): backward passes check that
        # nothing else wrote into those gradients since (an in-place zeroing loop).
        self.after_steps: dict[tuple[int, int], Any] = {}

    def __eq__(self, other: object) -> bool:
        # The calling thread's view: what a check made now would consult.
        if not isinstance(other, ThreadState):
            return NotImplemented
        mine, theirs = dict(vars(self)), dict(vars(other))
        return set(mine.pop("pending")) == set(theirs.pop("pending")) and mine == theirs

    __hash__ = None  # type: ignore[assignment]  # mutable


DEFAULT_AUTOCAST_DEVICES = ("cpu", "cuda")


@dataclass
class Live:
    """What ``install()`` put in place; ``uninstall()`` takes each piece out."""

    installation: _Installation | None = None  # install.py's patches; None: not installed
    mode: str = "warn"
    ignored: frozenset[str] = frozenset()
    monitor: Monitor | None = None  # while the health checks are on
    hook_handle: Any = None  # the global forward hook of the health checks
    scheduler_patch: tuple[Any, Any, Any] | None = None  # (owner, torch's step, ours)
    import_watcher: _ImportWatcher | None = None  # waiting for FSDP's import
    # (owner, name, torch's, ours) that the import watcher patched
    late_patches: list[tuple[Any, str, Any, Any]] = field(default_factory=list)
    # hook id -> (depth, hook): the health hook held out while compiled modules run
    suspended_hooks: dict[int, tuple[int, Any]] = field(default_factory=dict)
    # torch.compile() ran while installed, or Dynamo was seen to have compiled (compiled.py)
    compile_called: bool = False
    # how a raised or logged finding names its place (IPython's `In [4], line 3` for a
    # file a kernel compiled a cell under); None: `filename:line`
    place: Callable[[str, int], str] | None = None


@dataclass
class Results:
    """What was found: readable after ``uninstall()`` until the next session or ``reset()``."""

    findings: dict[tuple[str, str, int], Finding] = field(default_factory=dict)
    internal: dict[str, str] = field(default_factory=dict)  # where -> "Type: message"
    monitor: Monitor | None = None  # the latest, kept for summary()/history()
    # One per open ``checking()`` block: key -> (first_step, message) of the first finding
    # at that key while the block ran (a key seen before the block has its old ones).
    watchers: list[dict[tuple[str, str, int], tuple[int, str]]] = field(default_factory=list)


@dataclass
class History:
    """What the checks consult while training."""

    steps: StepCounter = field(default_factory=StepCounter)
    scaler_sites: dict[Site, SiteRecord] = field(default_factory=dict)
    autocast_devices: tuple[str, ...] = DEFAULT_AUTOCAST_DEVICES
    autocast_dtypes: set[torch.dtype] = field(default_factory=set)
    #: Dynamo traced a float16 autocast region with grad on: compiled code may run float16
    #: forwards that never enter amplint's autocast class (AMP003 then reads the graph).
    compiled_float16: bool = False
    backward_note_said: bool = False  # compiled.py's note about torch's backward autocast
    threads: ThreadState = field(default_factory=ThreadState)
    #: the first iteration whose optimizer.step() applied gradients still multiplied by
    #: the loss scale (AMP004): the weights took a step thousands of times too large.
    scaled_step_applied: int | None = None


@dataclass
class Session:
    live: Live = field(default_factory=Live)
    results: Results = field(default_factory=Results)
    history: History = field(default_factory=History)

    def end(self) -> None:
        """After ``uninstall()`` took its pieces out: only the results are kept."""
        self._renew("live", "history")

    def reset(self) -> None:
        """``amplint.runtime.reset()``: forget what was found and seen; an installation
        (and the health checks) stay in place."""
        self._renew("results", "history")

    def _renew(self, *parts: str) -> None:
        fresh = Session()
        for part in fields(self):
            if part.name in parts:
                setattr(self, part.name, getattr(fresh, part.name))


SESSION = Session()
