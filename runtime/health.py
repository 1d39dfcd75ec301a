"""Numerical health: fused, sync-free checks AMP101-AMP107 and the float16 overflow locator.

This module holds the device side of each GradScaler (:class:`ScalerHealth`: the ring of
per-step statistics and its hand-over to the host) and the process-wide :class:`Monitor`.
Around it: ``health_config.py`` (thresholds), ``activations.py`` (the forward hook),
``reductions.py`` (the device reductions), ``health_findings.py`` (the host's reading of
the statistics: the findings and the summary's numbers).

What is measured, and where (all on the device, with no host read in the training step):

* ``scale(loss)``: the loss before scaling is kept as a 0-d tensor (summed over
  micro-batches). The float16 outputs recorded by the forward hooks since the last
  ``scale()`` are reduced to their largest magnitudes (NaN/inf included) and the
  references dropped (on the iterations AMP105 measures: see ``activations.py``).
* ``unscale_(optimizer)`` (also the one ``step()`` makes, and ``step()`` of a fused
  optimizer, which unscales in its own kernel): before torch unscales, the
  gradients, grouped by (device, dtype), go through multi-tensor reductions: largest
  magnitude, non-zero count, and the count at or above float16's smallest normal number
  (the rest are underflowing at the current scale), one step in ``underflow_every``, in
  scratch memory bounded by a fixed chunk or the largest gradient. A clip of the still
  scaled gradients before ``unscale_`` (AMP006) takes them first, as backward made them.
* ``step(optimizer)`` after an explicit ``unscale_``: a probe of the gradients again, to
  catch gradients made non-finite in between (AMP106).
* ``update()``: one ``torch.stack(..., out=row)`` writes the step's statistics (scale used,
  ``found_inf`` summed as torch sums it, loss, gradient reductions) into a preallocated
  device ring; the activation maxima go into a preallocated float16 log.

Every ``every`` steps (and at report time) the ring and the log are handed to the host: on
CUDA by a non-blocking copy into pinned memory and an event that is polled (never waited
for) in later steps; on the CPU the ring is host memory already. The host then decides the
findings, each with the step it belongs to. Nothing here calls ``.item()``, ``.tolist()``,
``bool()`` or a synchronize inside a training step; fused optimizers
(``_step_supports_amp_scaling``) take torch's path unchanged.

Steps are 0-based optimizer steps of a scaler: the number of ``update()`` calls before it that
followed inf checks (an ``update(new_scale)`` alone only sets the scale),
i.e. ``i`` in ``for i, batch in enumerate(loader)`` when there is no accumulation.

Everything here that runs inside the user's training (the forward hook, the LR-scheduler
patch, the GradScaler's calls in ``scaler.py``) turns a failure of its own into an
internal-error note (``reporting.internal_error``): the training goes on as torch's.
"""

from __future__ import annotations

import itertools
import threading
import types
import weakref
from collections import Counter, deque
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch

from . import compiled, usage
from .activations import ACT_CAP, Activations
from .findings import message_for
from .frames import Site, user_site
from .health_config import REBUILT_FROM, HealthConfig, config_fields
from .health_findings import COLUMNS, Chunk, HostReading, finite, host_values
from .reductions import gradient_stats, grads_by_device_dtype, nonfinite_probe
from .reporting import (
    add_flusher,
    emit,
    internal_error,
    run_check,
    steps,
    torch_warnings_at_user_line,
)
from .session import SESSION
from .state import thread_state

if TYPE_CHECKING:
    from .scaler import GradScaler

__all__ = [
    "HealthConfig",
    "active",
    "config_fields",
    "disable",
    "enable",
    "flush",
    "history",
    "restart",
    "summary",
]

# Activations: global forward hooks ---------------------------------------------------


# Per scaler -------------------------------------------------------------------------


class ScalerHealth:
    """Device statistics of one GradScaler, and the host's reading of them."""

    def __init__(self, monitor: Monitor, scaler: GradScaler) -> None:
        self.monitor = monitor
        self.scaler_ref = weakref.ref(scaler)
        # Where the scaler was constructed: its label in the summary, the report and plot.
        record = scaler.__dict__.get("_amplint")
        self.construction: Site = getattr(record, "site", None) or ("<unknown>", 0)
        self.serial: int = getattr(record, "serial", 0)
        # Its usage record: what it saved and loaded (a resumed run, see _resumes).
        self.record = record
        # ids of the optimizers it stepped (AMP107 of fused ones)
        self.optimizers: set[int] = set()
        self.device: torch.device | None = None
        self.cuda = False
        self.sites: dict[str, Site] = {}
        # Per step, on the device
        self.loss: torch.Tensor | None = None
        self.gmax: torch.Tensor | None = None
        self.nnz: torch.Tensor | None = None
        self.big: torch.Tensor | None = None
        self.g106: torch.Tensor | None = None
        self.numel = 0
        # ids of the parameters whose gradients this step already measured (before a clip)
        self.measured: set[int] = set()
        # Chunk being filled
        self.rows: torch.Tensor | None = None
        self.log: torch.Tensor | None = None
        self.row = 0
        self.log_used = 0
        self.numels: list[int] = []
        # per step: an optimizer.step() bypassed the scaler (AMP004), so found_inf did not
        # skip it: non-finite gradients were applied, not skipped.
        self.bypassed: list[bool] = []
        self.spans: list[tuple[int, list[int], Site | None]] = []
        self.inflight: deque[Chunk] = deque()
        self.step = 0  # steps written so far
        # The run's iteration of this scaler's step 0: findings and histories count the
        # run's iterations, as the usage checks do, so a scaler built to resume from a
        # checkpoint, or rebuilt every step, reports the iteration the user sees.
        self.first_iteration = steps().current
        self.last_iteration = self.first_iteration  # the step counter's, at its last update
        # What the host has read, and the findings made (health_findings.py)
        self.host = HostReading()
        self.scale_tensor: torch.Tensor | None = None

    # Device side ----------------------------------------------------------------------

    def iteration_of(self, step: int) -> int:
        """The run's iteration of this scaler's step ``step`` (0-based, its own count),
        counted from where this scaler began: the step counter stands still after a resume
        on a new optimizer (it counts from 0 until it passes the old one's count)."""
        return self.first_iteration + step

    def _site(self, key: str) -> Site:
        site = self.sites.get(key)
        if site is None:
            site = self.sites[key] = user_site()
        return site

    def _ensure(self, scale: torch.Tensor) -> None:
        if self.rows is not None:
            return
        self.device = scale.device
        self.cuda = scale.device.type == "cuda"
        every = self.monitor.config.every
        self.rows = torch.zeros((every, COLUMNS), dtype=torch.float32, device=self.device)
        self.log = torch.zeros(ACT_CAP, dtype=torch.float16, device=self.device)
        self.zero = torch.zeros((), dtype=torch.float32, device=self.device)

    def on_scale(self, loss: Any, scaler: GradScaler) -> None:
        self._site("scale")
        self.monitor.activations.reduce()
        if not isinstance(loss, torch.Tensor) or scaler._scale is None:
            return
        self._ensure(scaler._scale)
        if usage.of(scaler).scaled_grad_taken:
            # A gradient penalty built from scaled gradients (PyTorch's recipe) overflows
            # as they do: the scaler skips that step; it says nothing of the model's loss.
            return
        value = loss.detach()
        if value.numel() != 1:
            value = value.sum()
        elif value.dim():
            value = value.reshape(())
        if value.dtype is not torch.float32:
            value = value.float()
        if value.device != self.device:
            value = value.to(self.device, non_blocking=True)
        if self.loss is None:
            self.loss = value
            return
        self.loss = self.loss + value
        # Several losses scaled in one step (PyTorch's recipe for several models and losses)
        # are summed: AMP101 names every line that scaled one, not only the first.
        site = user_site()
        if site != self.sites.get("scale") and site not in self.host.loss_sites:
            self.host.loss_sites.append(site)

    def due(self, scaler: GradScaler) -> bool:
        """Whether this step takes the gradient statistics (one step in ``underflow_every``)."""
        return scaler._scale is not None and not self.step % self.monitor.config.underflow_every

    def on_unscale(self, optimizer: torch.optim.Optimizer, scaler: GradScaler) -> None:
        """Gradient statistics on the scaled gradients, before torch unscales them."""
        if not self.due(scaler):
            return
        # Gradients measured before a clip of the scaled gradients are not measured again.
        groups = grads_by_device_dtype(optimizer.param_groups, self.measured)
        self._measure(groups, scaler)

    def before_clip(self, params: list[torch.Tensor], scaler: GradScaler) -> None:
        """A clip of still-scaled gradients (AMP006) is about to change them: take the
        statistics of ``params`` now, as backward produced them; ``unscale_`` then skips
        them. Advice drawn from clipped gradients would be wrong: clipping shrinks them
        towards underflow."""
        groups = grads_by_device_dtype([{"params": params}], self.measured)
        if self._measure(groups, scaler):
            self.measured.update(id(p) for p in params)

    def _measure(
        self, groups: dict[tuple[Any, Any], list[torch.Tensor]], scaler: GradScaler
    ) -> bool:
        if not groups or scaler._scale is None:
            return False
        self._ensure(scaler._scale)
        gmax, nnz, big = [], [], []
        with torch.no_grad():
            for grads in groups.values():
                self.numel += sum(g.numel() for g in grads)
                top, nonzero, normal = gradient_stats(grads)
                gmax.append(top)
                nnz.append(nonzero)
                big.append(normal)
            step_max = self._combine(gmax, max_=True)
            step_nnz = self._combine(nnz)
            step_big = self._combine(big)
            self.gmax = step_max if self.gmax is None else torch.maximum(self.gmax, step_max)
            self.nnz = step_nnz if self.nnz is None else self.nnz + step_nnz
            self.big = step_big if self.big is None else self.big + step_big
        return True

    def on_step_after_unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """The gradients the optimizer is about to apply, after an explicit unscale_ (AMP106).

        Every gradient is read again, also after a ``clip_grad_norm_`` whose norm would say
        the same: writes through ``.data`` and collectives do not move version counters, so
        nothing cheaper tells that a gradient is unchanged since that clip."""
        self._site("step")
        if self.rows is None:
            return
        groups = grads_by_device_dtype(optimizer.param_groups)
        if not groups:
            return
        with torch.no_grad():
            parts = [nonfinite_probe(grads) for grads in groups.values()]
            value = self._combine(parts, max_=True)
            self.g106 = value if self.g106 is None else torch.maximum(self.g106, value)

    def _combine(self, parts: list[torch.Tensor], max_: bool = False) -> torch.Tensor:
        parts = [
            p if p.device == self.device else p.to(self.device, non_blocking=True) for p in parts
        ]
        if len(parts) == 1:
            return parts[0]
        stacked = torch.stack(parts)
        return stacked.amax() if max_ else stacked.sum()

    def on_update(self, scaler: GradScaler, new_scale: Any = None) -> None:
        """Write this step's row (before torch's update changes the scale in place)."""
        self._site("update")
        scale = scaler._scale
        if scale is None:
            return
        self.scale_tensor = scale  # updated in place by torch; read at report time
        self._ensure(scale)
        found = [
            found_inf
            for state in scaler._per_optimizer_states.values()
            for found_inf in state["found_inf_per_device"].values()
        ]
        if not found:
            # No inf checks since the last update: torch raises, or, given a new scale, only
            # sets it (icefall pushes a small scale back up): no optimizer step, no row.
            return
        assert self.rows is not None and self.log is not None
        with torch.no_grad():
            if not found:
                found_inf = self.zero
            elif len(found) == 1 and found[0].device == self.device:
                found_inf = found[0]
            else:
                found_inf = torch.stack([f.to(self.device, non_blocking=True) for f in found]).sum()
            nan = self.zero  # placeholders are told apart by numel == 0 on the host
            items = [
                scale.reshape(()),
                found_inf.reshape(()),
                self.loss if self.loss is not None else nan,
                self.gmax if self.gmax is not None else nan,
                self.nnz if self.nnz is not None else nan,
                self.big if self.big is not None else nan,
                self.g106 if self.g106 is not None else nan,
            ]
            activations = self.monitor.activations
            partials, slots, forward = activations.take()
            if activations.named != len(activations.modules):
                activations.refresh_names()
            if slots and self.log_used + len(slots) > self.log.numel():
                self.ship()  # the log is full: hand over the steps before this one
                if len(slots) > self.log.numel():
                    self.log = torch.zeros(2 * len(slots), dtype=torch.float16, device=self.device)
            torch.stack(items, out=self.rows[self.row])
            if slots:
                target = self.log[self.log_used : self.log_used + len(slots)]
                partials = [
                    p if p.device == self.device else p.to(self.device, non_blocking=True)
                    for p in partials
                ]
                if len(partials) == 1:
                    target.copy_(partials[0])
                else:
                    torch.cat(partials, out=target)
        self.spans.append((self.log_used, slots, forward))
        self.log_used += len(slots)
        self.numels.append(self.numel)
        self.bypassed.append(usage.of(scaler).bypassed)
        # The counter's own view of this step marks the scaler's end (see _resumes).
        self.last_iteration = steps().current
        self.row += 1
        self.step += 1
        self.loss = self.gmax = self.nnz = self.big = self.g106 = None
        self.numel = 0
        self.measured = set()

    def after_update(self) -> None:
        if self.row >= self.monitor.config.every:
            self.ship()
        self.poll(wait=False, raise_now=True)

    def ship(self) -> None:
        """Hand the filled part of the ring and the log to the host."""
        if self.row == 0 or self.rows is None or self.log is None:
            return
        rows, log = self.rows[: self.row], self.log[: self.log_used]
        event = None
        if self.cuda:
            host_rows = torch.empty(rows.shape, dtype=rows.dtype, pin_memory=True)
            host_log = torch.empty(log.shape, dtype=log.dtype, pin_memory=True)
            host_rows.copy_(rows, non_blocking=True)
            host_log.copy_(log, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            rows, log = host_rows, host_log
        # On CPU the ring is host memory: it is read now (below), before it is written again.
        chunk = Chunk(
            self.iteration_of(self.step - self.row),
            rows,
            log,
            self.numels,
            self.spans,
            self.bypassed,
            event,
        )
        self.inflight.append(chunk)
        self.row = self.log_used = 0
        self.numels, self.spans, self.bypassed = [], [], []
        if not self.cuda:
            self.poll(wait=False, raise_now=False, defer=True)

    def poll(self, wait: bool, raise_now: bool, defer: bool = False) -> None:
        """Read every chunk whose copy has landed (all of them when ``wait``)."""
        pending: list[tuple[str, str, Site, int]] = []
        while self.inflight:
            chunk = self.inflight[0]
            if chunk.event is not None:
                if wait:
                    chunk.event.synchronize()
                elif not chunk.event.query():
                    break
            self.inflight.popleft()
            read_before = len(self.host.skipped)
            self.host.read(
                chunk,
                self.monitor.config,
                self.monitor.activations,
                self.monitor,
                self._site_or,
                pending,
            )
            if any(self.host.skipped[read_before:]):
                # A fused optimizer's skipped steps are known only here, up to `every`
                # steps late: the iterations until the next reading are measured.
                self.monitor.activations.step_skipped(self.monitor.config.every)
            pending.extend(self.monitor.schedules_read(self))
        if defer:
            self.monitor.deferred.extend(pending)
            return
        self.monitor.emit_all(pending, raise_now)

    # Host side ------------------------------------------------------------------------

    @property
    def site(self) -> str:
        """Where the scaler was constructed, "file:line"."""
        return f"{self.construction[0]}:{self.construction[1]}"

    def _site_or(self, key: str) -> Site:
        return self.sites.get(key) or self.sites.get("scale") or ("<unknown>", 0)

    @property
    def rebuilt_every_step(self) -> bool:
        """One of the scalers its line builds anew every step (AMP010), which the user sees
        as one: it ran one step at most (the same line may also build long-lived ones)."""
        record = self.monitor.history.scaler_sites.get(self.construction)
        return record is not None and record.recreated and len(self.host.scales) <= 1

    def summary(self) -> dict[str, Any]:
        """This scaler's part of the summary (``summary["scalers"]``)."""
        final = self.final_scale()
        scales = [*self.host.scales, *([final] if final is not None else [])]
        entry: dict[str, Any] = {
            "site": self.site,
            "rebuilt_every_step": self.rebuilt_every_step,
            "first_step": self.first_iteration,
            "steps": len(self.host.scales),
            "skipped_steps": sum(self.host.skipped),
            "scale": None,
            "grad_underflow_share": None,
            "grad_zero_share": None,
            "nonfinite_loss_steps": self.host.nonfinite_loss_steps,
        }
        if scales:
            entry["scale"] = {
                "min": min(scales),
                "max": max(scales),
                "final": scales[-1] if final is None else final,
            }
        if self.host.underflow:
            entry["grad_underflow_share"] = sum(self.host.underflow) / len(self.host.underflow)
            entry["grad_zero_share"] = sum(self.host.zeros) / len(self.host.zeros)
            entry["grad_max"] = self.host.grad_max
        return entry

    def final_scale(self) -> float | None:
        if self.scale_tensor is not None:
            # Report time, not a training step: this read may wait for the device.
            return float(self.scale_tensor.item())
        return None


# The process-wide monitor -------------------------------------------------------------


class Monitor:
    def __init__(self, config: HealthConfig) -> None:
        self.activations = Activations(config.activations_first, config.activations_every)
        self.configure(config)
        self.scalers: list[ScalerHealth] = []
        self.first_overflow: dict[str, Any] | None = None
        self.nonfinite_applied: int | None = None  # first step with AMP106 (or AMP004's)
        self.nonfinite_cause = "AMP106"  # the code that reported it
        self.deferred: list[tuple[str, str, Site, int]] = []
        # optimizer id -> (skipped, step, its scaler): skipped is None for a fused
        # optimizer, whose skip is known only when the statistics are read.
        self.last_step: dict[int, tuple[bool | None, int, ScalerHealth]] = {}
        # Scheduler steps after a fused optimizer's step, until its statistics are read:
        # (its scaler, the step, the optimizer's id, the scheduler's line).
        self.schedules_unread: list[tuple[ScalerHealth, int, int, Site]] = []
        self.scheduler_after_skip = 0
        # Per optimizer (by id): its schedulers' steps after its skipped steps since
        # startup_steps (AMP107). Two optimizers skip together on one scaler: each schedule
        # is one step ahead, not two.
        self.drift: dict[int, int] = {}
        self.lock = threading.RLock()
        # The session's optimizer step count while this monitor measured: its summary
        # still reads it after uninstall() gave the session a fresh one.
        self.steps = steps()
        # What the session saw while this monitor measured: the GradScalers built (the
        # summary of a run without any says so) and the autocast dtypes.
        self.history = SESSION.history
        #: something was compiled while this monitor ran (its summary outlives the session).
        self.compiled = False

    def configure(self, config: HealthConfig) -> None:
        self.config = config
        self.activations.first = config.activations_first
        self.activations.every = config.activations_every

    @property
    def scaled_step_applied(self) -> int | None:
        """The first iteration whose optimizer.step() applied still-scaled gradients."""
        return SESSION.history.scaled_step_applied

    def for_scaler(self, scaler: GradScaler) -> ScalerHealth:
        health = scaler.__dict__.get("_amplint_health")
        if health is None or health.monitor is not self:
            health = ScalerHealth(self, scaler)
            scaler.__dict__["_amplint_health"] = health
            self.scalers.append(health)
        return health

    def emit_all(self, pending: list[tuple[str, str, Site, int]], raise_now: bool) -> None:
        if self.deferred:
            pending = self.deferred + pending
            self.deferred = []
        for code, message, site, step in pending:
            emit(code, message, site, raise_now=raise_now, step=step)

    def flush(self) -> None:
        with self.lock:
            for health in self.scalers:
                health.ship()
                health.poll(wait=True, raise_now=False)
            pending: list[tuple[str, str, Site, int]] = []
            self._read_unfinished_step(pending)
            self.emit_all(pending, raise_now=False)

    def _read_unfinished_step(self, out: list[tuple[str, str, Site, int]]) -> None:
        """The float16 outputs measured since the last ``update()``, as the step in progress:
        a script that stops on a non-finite loss before ``scale()`` (MAE, DeiT and DINO
        exit there) stopped in the very step whose overflow AMP105 is for. Report time
        only: the host reads them here."""
        marks = self.activations.marks
        partials, slots, forward = self.activations.take()
        if not slots:
            return
        with torch.no_grad():
            log = torch.cat([partial.reshape(-1).to("cpu") for partial in partials])
        values = host_values(log.contiguous(), "e")
        main = self.main()
        site = forward or self.activations.first_site or ("<unknown>", 0)
        if main is None:
            # It stopped in its first step, before any scale(): step 0, at the forward.
            fallback = 0
        else:
            # Of the scalers that stepped in the last iteration, the one behind: a GAN
            # stopped in its generator's half has updated the discriminator's scaler.
            latest = main.step
            fallback = min(
                health.iteration_of(health.step)
                for health in self.scalers
                if health.step >= latest - 1
            )
        # Each scale() since the last update() marked the iteration its outputs belong to
        # (a loop that never calls update() hands them all over here); the outputs after
        # the last scale() are the step in progress.
        bounds = [*marks, (len(slots), fallback)]
        if bounds[0][0] != 0:
            bounds.insert(0, (0, fallback))
        reading = HostReading() if main is None else main.host
        for (begin, step), (end, _) in itertools.pairwise(bounds):
            if begin == end:
                continue
            reading.read_outputs(
                values,
                begin,
                slots[begin:end],
                step,
                self.config,
                self.activations,
                self,
                lambda _: site,
                out,
            )

    def note_step(
        self, optimizer: torch.optim.Optimizer, health: ScalerHealth, skipped: bool | None
    ) -> None:
        """``skipped`` None: a fused optimizer's step, skipped or not on the device."""
        self.compiled = self.compiled or SESSION.live.compile_called
        self.last_step[id(optimizer)] = (skipped, health.step, health)
        health.optimizers.add(id(optimizer))
        if skipped:
            self.activations.step_skipped()

    def scheduler_stepped(self, scheduler: Any) -> None:
        optimizer = getattr(scheduler, "optimizer", None)
        entry = self.last_step.pop(id(optimizer), None)
        if entry is None:
            return
        skipped, step, health = entry
        if skipped is None:
            self.schedules_unread.append((health, step, id(optimizer), user_site()))
        elif skipped:
            found = self._after_skipped_step(id(optimizer), step, user_site(), health)
            if found is not None:
                code, message, site, at = found
                emit(code, message, site, step=at)

    def schedules_read(self, health: ScalerHealth) -> list[tuple[str, str, Site, int]]:
        """The scheduler steps after fused steps of ``health`` that its statistics now say
        were skipped: AMP107's findings among them."""
        known = len(health.host.skipped)
        # The statistics say whether the scaler skipped, not which optimizer: with several
        # optimizers on one scaler (torch skips each by its own gradients), no verdict.
        shared = len(health.optimizers) > 1
        found = []
        waiting = []
        for entry in self.schedules_unread:
            owner, step, optimizer, site = entry
            if owner is not health or step >= known:
                waiting.append(entry)
            elif health.host.skipped[step] and not shared:
                finding = self._after_skipped_step(optimizer, step, site, health)
                if finding is not None:
                    found.append(finding)
        self.schedules_unread = waiting
        return found

    def _after_skipped_step(
        self, optimizer: int, step: int, site: Site, health: ScalerHealth
    ) -> tuple[str, str, Site, int] | None:
        """A scheduler stepped at ``site`` after the optimizer's step ``step`` of ``health``
        was skipped: the AMP107 finding when its schedule has drifted too far."""
        self.scheduler_after_skip += 1
        config = self.config
        if step < config.startup_steps:
            return None
        drift = self.drift[optimizer] = self.drift.get(optimizer, 0) + 1
        steps = step - config.startup_steps + 1
        # Judged over a window at least: two skips in the first three steps are no drift.
        if drift < config.schedule_drift * max(steps, config.skip_window):
            return None
        message = message_for(
            "AMP107", ahead=drift, since=config.startup_steps, share=drift / steps
        )
        return ("AMP107", message, site, health.iteration_of(step))

    def _seen_as_one(self, health: ScalerHealth) -> list[ScalerHealth]:
        """The scalers the user sees as the main one, ``health``: those its line built anew
        in the loop (AMP010), or scalers built at its line one after another, each loaded
        from the one before (``load_state_dict``: a run resumed from a checkpoint on a new
        scaler). Folds of a cross-validation, built at one line without loading, are
        separate runs: the main one is then one of them."""
        stepped = [
            scaler
            for scaler in self.scalers
            if scaler.construction == health.construction and (scaler.host.scales or scaler.step)
        ]
        rebuilt = [scaler for scaler in stepped if scaler.rebuilt_every_step]
        if health.rebuilt_every_step and len(rebuilt) > REBUILT_FROM:
            return rebuilt
        if health not in stepped:
            return [health]
        # Each scaler's predecessor: the one whose saved state it loaded (a GAN's two
        # scalers from one line each resume their own).
        before_of = {
            id(after): next((b for b in stepped if b is not after and _resumes(b, after)), None)
            for after in stepped
        }
        chain = [health]
        while (previous := before_of[id(chain[0])]) is not None and previous not in chain:
            chain.insert(0, previous)
        while True:
            following = next(
                (a for a in stepped if before_of[id(a)] is chain[-1] and a not in chain), None
            )
            if following is None:
                return chain
            chain.append(following)

    def main(self) -> ScalerHealth | None:
        if not self.scalers:
            return None
        return max(self.scalers, key=lambda health: health.step)

    def summary(self) -> dict[str, Any]:
        self.flush()
        health = self.main()
        result: dict[str, Any] = {
            "steps": 0,
            "skipped_steps": 0,
            "scale": None,
            "first_overflow": self.first_overflow,
            "grad_underflow_share": None,
            "grad_zero_share": None,
            "nonfinite_loss_steps": 0,
            "scheduler_steps_after_skip": self.scheduler_after_skip,
            "closest_to_overflow": [],
            "optimizer_steps": self.steps.latest,
            "gradscalers_built": sum(
                record.constructions for record in list(self.history.scaler_sites.values())
            ),
            "activations_measured": any(scaler.host.act_max for scaler in self.scalers),
            # Compiled code runs without the forward hook: its outputs are never measured.
            "compiled": self.compiled,
            # AMP105's sampling: iterations whose float16 outputs were measured, of those
            # that ended (every scaler stepped); None with the activation check off
            "activation_iterations_measured": (
                self.activations.iterations_measured if self.config.activations else None
            ),
            "activation_iterations": (
                self.activations.iterations_seen if self.config.activations else None
            ),
            "autocast_dtypes": sorted(
                str(dtype).removeprefix("torch.") for dtype in self.history.autocast_dtypes
            ),
            "scalers": [],
            "config": asdict(self.config),
        }
        # One entry per scaler that updated, labelled by where it was constructed; the
        # top-level fields are the main scaler's (the one that stepped most), as before.
        result["scalers"] = [
            {**scaler.summary(), "label": label}
            for scaler, label in labelled(
                [scaler for scaler in self.scalers if scaler.host.scales or scaler.step]
            )
        ]
        if health is None:
            return result
        # The top level gives the whole of what the user sees as one scaler, not a part.
        chain = self._seen_as_one(health)
        main = _combined(chain) if len(chain) > 1 else health.summary()
        for key in ("steps", "skipped_steps", "scale", "nonfinite_loss_steps"):
            result[key] = main[key]
        for key in ("grad_underflow_share", "grad_zero_share", "grad_max"):
            if main.get(key) is not None:
                result[key] = main[key]
        # By module name: a model rebuilt with its resumed scaler has new modules.
        act_max: dict[str, float] = {}
        for scaler in chain:
            for slot, value in scaler.host.act_max.items():
                name = self.activations.name(slot)
                # NaN compares false: a non-finite maximum is kept over any number.
                if name not in act_max or not value <= act_max[name]:
                    act_max[name] = value
        top = sorted(act_max.items(), key=lambda item: -item[1])[:3]
        result["closest_to_overflow"] = [
            {"module": name, "max_abs": value if finite(value) else str(value)}
            for name, value in top
        ]
        return result


def _resumes(before: ScalerHealth, after: ScalerHealth) -> bool:
    """Whether ``after`` took over from ``before``: it loaded a state ``before`` saved (its
    scale and growth tracker; folds that each load one pretrained checkpoint do not), and
    first stepped when ``before`` had stopped."""
    loaded = getattr(after.record, "loaded_state", None)
    return (
        loaded is not None
        and before.step > 0
        and after.step > 0
        and loaded in getattr(before.record, "saved_states", ())
        and before.last_iteration <= after.first_iteration
    )


def _combined(scalers: list[ScalerHealth]) -> dict[str, Any]:
    """The summaries of scalers built one after another at one line, as one scaler's."""
    entries = [scaler.summary() for scaler in scalers]
    scales = [entry["scale"] for entry in entries if entry["scale"] is not None]
    combined = {
        key: sum(entry[key] for entry in entries)
        for key in ("steps", "skipped_steps", "nonfinite_loss_steps")
    }
    combined["scale"] = (
        {
            "min": min(scale["min"] for scale in scales),
            "max": max(scale["max"] for scale in scales),
            "final": scales[-1]["final"],
        }
        if scales
        else None
    )
    underflow = [share for scaler in scalers for share in scaler.host.underflow]
    if underflow:
        zeros = [share for scaler in scalers for share in scaler.host.zeros]
        combined["grad_underflow_share"] = sum(underflow) / len(underflow)
        combined["grad_zero_share"] = sum(zeros) / len(zeros)
        combined["grad_max"] = max(
            scaler.host.grad_max for scaler in scalers if scaler.host.underflow
        )
    return combined


# The monitor while enabled is SESSION.live.monitor, with its forward hook; the latest one
# (kept after disable() for summary()/history()) is SESSION.results.monitor.


def active() -> Monitor | None:
    return SESSION.live.monitor


def hook_id() -> int | None:
    """The id of the global forward hook in torch's table, None when there is none."""
    handle = SESSION.live.hook_handle
    return None if handle is None else handle.id


def enable(config: HealthConfig | None = None) -> Monitor:
    """Turn the checks on (``install(health=True)`` calls this). A new config keeps the data."""
    live, results = SESSION.live, SESSION.results
    config = config or HealthConfig()
    if live.monitor is not None:
        live.monitor.configure(config)
        return live.monitor
    # Re-enabling with the same settings in the same session (no uninstall() or reset()
    # since) continues the same run's record.
    last = results.monitor
    same_run = last is not None and last.config == config and last.steps is steps()
    monitor = last if same_run else Monitor(config)
    live.monitor = results.monitor = monitor
    if config.activations:
        live.hook_handle = torch.nn.modules.module.register_module_forward_hook(
            monitor.activations.hook
        )
        monitor.activations.switch = _switch_hook
    _patch_scheduler()
    add_flusher(flush)
    return monitor


def disable() -> None:
    """Turn the checks off; what was measured stays readable through summary()."""
    live = SESSION.live
    if live.monitor is None:
        return
    try:
        live.monitor.flush()
    finally:
        if live.hook_handle is not None:
            live.hook_handle.remove()
            live.hook_handle = None
        _unpatch_scheduler()
        live.monitor = None


def _latest() -> Monitor | None:
    return SESSION.live.monitor or SESSION.results.monitor


def flush() -> None:
    monitor = _latest()
    if monitor is not None:
        monitor.flush()


def restart() -> None:
    """After ``SESSION.reset()`` (``amplint.runtime.reset()``) forgot the measurements: while
    the checks are on, they go on with a fresh monitor, the same settings and hook."""
    live = SESSION.live
    if live.monitor is None:
        return
    fresh = Monitor(live.monitor.config)
    if live.hook_handle is not None:
        # The fresh hook takes the old one's place (and id): ahead of the global hooks the
        # user registered since, which may replace the outputs it measures.
        compiled.replace_hook(live.hook_handle.id, fresh.activations.hook)
        fresh.activations.switch = _switch_hook
    live.monitor = SESSION.results.monitor = fresh
    if live.hook_handle is not None:
        _switch_hook(True)  # a fresh monitor measures from its first iteration


def _switch_hook(present: bool) -> None:
    """The forward hook in torch's table on the iterations AMP105 measures, out of it on
    the others (where it may step aside: see ``compiled.hook_may_step_aside``)."""
    live = SESSION.live
    handle, monitor = live.hook_handle, live.monitor
    if handle is None or monitor is None:
        return
    # Asked at every switch, also on the way in: what Dynamo compiled is remembered then.
    if not compiled.hook_may_step_aside() and not present:
        return
    compiled.set_hook_present(handle.id, monitor.activations.hook, present)


def keep_hook_in() -> None:
    """``torch.compile`` was called: the hook goes back into torch's table for good."""
    _switch_hook(True)


def summary() -> dict[str, Any] | None:
    """The run's numerical summary, or None when health checks never ran."""
    monitor = _latest()
    return None if monitor is None else monitor.summary()


def history() -> dict[str, list[Any]]:
    """Per step of the main scaler: the loss scale used and whether the step was skipped."""
    for entry in histories():
        if entry["main"]:
            return {key: entry[key] for key in ("step", "scale", "skipped")}
    return {"step": [], "scale": [], "skipped": []}


def histories() -> list[dict[str, Any]]:
    """:func:`history` of every scaler that stepped, each with its ``site`` and ``main``."""
    monitor = _latest()
    if monitor is None:
        return []
    monitor.flush()
    main = monitor.main()
    return [
        {
            "site": health.site,
            "label": label,
            "main": health is main,
            "step": [health.iteration_of(step) for step in range(len(health.host.scales))],
            "scale": list(health.host.scales),
            "skipped": list(health.host.skipped),
        }
        for health, label in labelled([health for health in monitor.scalers if health.host.scales])
    ]


def labelled(scalers: list[ScalerHealth]) -> list[tuple[ScalerHealth, str]]:
    """``scalers`` in construction order, each with its label: where it was constructed,
    "file:line", and where one line constructed several, which of them ("file:line, 2 of
    3")."""
    ordered = sorted(scalers, key=lambda health: health.serial)
    on_line = Counter(health.construction for health in ordered)
    seen: Counter[Site] = Counter()
    result = []
    for health in ordered:
        label = health.site
        if on_line[health.construction] > 1:
            seen[health.construction] += 1
            label += f", {seen[health.construction]} of {on_line[health.construction]}"
        result.append((health, label))
    return result


def before_clip(parameters: Any) -> Any:
    """Before ``clip_grad_norm_`` / ``clip_grad_value_``: when the gradients are still
    scaled (AMP006) on a statistics step, measure them before the clip changes them (see
    ``ScalerHealth.before_clip``). Returns the parameters to hand torch: the same kind of
    argument, read into a list (a generator: a new generator over it, so that torch still
    warns about an empty one) when they had to be read."""
    monitor: Monitor | None = SESSION.live.monitor
    if monitor is None:
        return parameters
    due = []
    for health in monitor.scalers:
        scaler = health.scaler_ref()
        if scaler is not None and health.due(scaler) and usage.of(scaler).grads_still_scaled():
            due.append((health, scaler))
    if not due:
        return parameters
    params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    for health, scaler in due:
        try:
            health.before_clip([p for p in params if isinstance(p, torch.Tensor)], scaler)
        except Exception as error:  # amplint's bug: torch still gets every parameter
            internal_error("the numerical-health check before clipping", error)
    if isinstance(parameters, types.GeneratorType):
        return (param for param in params)
    return parameters if isinstance(parameters, torch.Tensor) else params


# AMP107: the scheduler ------------------------------------------------------------------


def _patch_scheduler() -> None:
    if SESSION.live.scheduler_patch is not None:
        return
    owner = torch.optim.lr_scheduler.LRScheduler
    original = owner.__dict__["step"]

    def step(self: Any, *args: Any, **kwargs: Any) -> Any:
        monitor = SESSION.live.monitor
        # The constructor's own first step (_step_count still 0) is not the user's.
        count = getattr(self, "_step_count", 0)
        if monitor is not None and count > 0:
            run_check("the LR-scheduler check", monitor.scheduler_stepped, self)
        if count == 1:  # torch's "lr_scheduler.step() before optimizer.step()" is due now
            with torch_warnings_at_user_line():
                return original(self, *args, **kwargs)
        return original(self, *args, **kwargs)

    step.__wrapped__ = original  # type: ignore[attr-defined]
    owner.step = step
    SESSION.live.scheduler_patch = (owner, original, step)


def _unpatch_scheduler() -> None:
    live = SESSION.live
    if live.scheduler_patch is None:
        return
    owner, original, ours = live.scheduler_patch
    if owner.__dict__.get("step") is ours:
        owner.step = original
    live.scheduler_patch = None


# Hooks the GradScaler calls (kept tiny: one global read when health is off) -----------


def scaler_step_begin(scaler: GradScaler, optimizer: torch.optim.Optimizer, unscaled: bool) -> None:
    monitor: Monitor | None = SESSION.live.monitor
    if monitor is None:
        return
    health = monitor.for_scaler(scaler)
    if unscaled:
        health.on_step_after_unscale(optimizer)
    elif getattr(optimizer, "_step_supports_amp_scaling", False):
        # A fused optimizer unscales inside its own kernel: no unscale_() runs, so its
        # gradients are measured here, still scaled, as unscale_() would measure them.
        health.on_unscale(optimizer, scaler)
    thread_state().inner_step_ran = False


def scaler_step_end(scaler: GradScaler, optimizer: torch.optim.Optimizer) -> None:
    monitor: Monitor | None = SESSION.live.monitor
    if monitor is None:
        return
    if not getattr(optimizer, "_step_supports_amp_scaling", False):
        # Not fused: torch called optimizer.step() only if found_inf was zero (it read it).
        # A fused optimizer takes found_inf on the device, and torch reads nothing; nor does
        # amplint: its skipped steps are seen when the host reads the statistics.
        skipped = not thread_state().inner_step_ran
        monitor.note_step(optimizer, monitor.for_scaler(scaler), skipped)
    else:
        monitor.note_step(optimizer, monitor.for_scaler(scaler), None)
    upcoming = steps().next_iteration()
    if upcoming is not None:
        monitor.activations.iteration_ended(upcoming)
