"""Numerical health: fused, sync-free checks AMP101-AMP107 and the float16 overflow locator.

What is measured, and where (all on the device, with no host read in the training step):

* ``scale(loss)``: the loss before scaling is kept as a 0-d tensor (summed over
  micro-batches). The float16 outputs recorded by the forward hooks since the last
  ``scale()`` are reduced with one multi-tensor ``torch._foreach_norm(..., inf)`` (their
  largest magnitude, NaN/inf included) and the references dropped.
* ``unscale_(optimizer)`` (also the one ``step()`` makes): before torch unscales, the
  gradients, grouped by (device, dtype), go through multi-tensor reductions: largest
  magnitude, non-zero count, and the count at or above float16's smallest normal number
  (the rest are underflowing at the current scale).
* ``step(optimizer)`` after an explicit ``unscale_``: the largest gradient magnitude again,
  to catch gradients made non-finite in between (AMP106).
* ``update()``: one ``torch.stack(..., out=row)`` writes the step's statistics (scale used,
  ``found_inf`` summed as torch sums it, loss, gradient reductions) into a preallocated
  device ring; the activation maxima go into a preallocated float16 log.

Every ``every`` steps (and at report time) the ring and the log are handed to the host: on
CUDA by a non-blocking copy into pinned memory and an event that is polled (never waited
for) in later steps; on the CPU the ring is host memory already. The host then decides the
findings, each with the step it belongs to. Nothing here calls ``.item()``, ``.tolist()``,
``bool()`` or a synchronize inside a training step; fused optimizers
(``_step_supports_amp_scaling``) take torch's path unchanged.

Steps are 0-based optimizer steps of a scaler: the number of ``update()`` calls before it,
i.e. ``i`` in ``for i, batch in enumerate(loader)`` when there is no accumulation.

Everything here that runs inside the user's training (the forward hook, the LR-scheduler
patch, the GradScaler's calls in ``scaler.py``) turns a failure of its own into an
internal-error note (``reporting.internal_error``): the training goes on as torch's.
"""

from __future__ import annotations

import ctypes
import math
import struct
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import torch

from . import usage
from .findings import message_for
from .frames import Site, user_site
from .reporting import add_flusher, emit, internal_error, run_check, step_counter
from .state import thread_state, uses_scalers

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
    "reset",
    "summary",
]

FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0**-14
_INF = float("inf")

# Ring columns.
_SCALE, _FOUND_INF, _LOSS, _GMAX, _NNZ, _BIG, _G106 = range(7)
_COLUMNS = 7
_ACT_CAP = 4096  # float16 outputs held between scale() calls before they are reduced early


@dataclass(frozen=True)
class HealthConfig:
    """Thresholds of the numerical-health findings (``install(health=True, **these)``)."""

    #: steps between two hand-overs of the device statistics to the host
    every: int = 16
    #: AMP105: a float16 output at or above ``65504 * (1 - overflow_margin)``, or non-finite
    overflow_margin: float = 0.5
    #: AMP102: the loss scale fell below this ...
    min_scale: float = 1.0
    #: ... or backed off on this many consecutive steps
    max_backoffs: int = 12
    #: AMP103: at least this share of the last ``skip_window`` steps were skipped
    skip_rate: float = 0.25
    skip_window: int = 100
    #: AMP104: share of gradient values below float16's smallest normal at the current scale
    underflow_share: float = 0.1
    #: the gradient statistics of AMP104 (counts over every gradient value) are taken on
    #: one step in this many, starting with step 0
    underflow_every: int = 16
    #: AMP107 stays silent during the first steps, where backoffs are normal
    startup_steps: int = 100
    #: forward hooks on every module for AMP105
    activations: bool = True

    def __post_init__(self) -> None:
        for name in ("every", "max_backoffs", "skip_window", "underflow_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.startup_steps < 0:
            raise ValueError(f"startup_steps must be >= 0, got {self.startup_steps!r}")
        for name in ("overflow_margin", "skip_rate", "underflow_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        if self.min_scale < 0:
            raise ValueError(f"min_scale must be >= 0, got {self.min_scale!r}")

    @property
    def activation_limit(self) -> float:
        return FP16_MAX * (1.0 - self.overflow_margin)


def config_fields() -> tuple[str, ...]:
    return tuple(field.name for field in fields(HealthConfig))


# Host reads of host memory (CPU tensors, pinned copies): plain memory, no device involved.


def _host_values(tensor: torch.Tensor, fmt: str) -> tuple[float, ...]:
    count = tensor.numel()
    if count == 0:
        return ()
    raw = (ctypes.c_char * (count * tensor.element_size())).from_address(tensor.data_ptr())
    return struct.unpack_from(f"{count}{fmt}", raw)


def _finite(value: float) -> bool:
    return math.isfinite(value)


# Activations: global forward hooks ---------------------------------------------------


# Modules that pass values through (scaled by at most 1/(1-p)), and elementwise
# activations whose output is never larger in magnitude than their float16 input: an
# overflow is never theirs to fix (it was measured where their input was produced), and
# measuring them would add a full pass over each of their outputs to every step.
_PASS_THROUGH = (
    torch.nn.Identity,
    torch.nn.modules.dropout._DropoutNd,
    torch.nn.ReLU,
    torch.nn.GELU,
    torch.nn.SiLU,
    torch.nn.Tanh,
    torch.nn.Sigmoid,
    torch.nn.Softmax,
)


def _max_abs(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Largest magnitude of each tensor (NaN if it holds a NaN), stacked: a multi-tensor
    ``_foreach_norm`` on CUDA (one fused kernel per dtype); on the CPU, where that op is a
    slow per-tensor loop, one ``aminmax`` pass per tensor, several times faster."""
    if tensors[0].device.type == "cpu":
        pairs = [torch.aminmax(tensor) for tensor in tensors]
        highs = torch.stack([pair[1] for pair in pairs])
        lows = torch.stack([pair[0] for pair in pairs])
        return torch.maximum(highs, lows.neg())  # maximum propagates NaN
    return torch.stack(torch._foreach_norm(tensors, _INF))


def _nonfinite_probe(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A 0-d value that is non-finite iff some element of ``tensors`` is (NaN and inf
    propagate through sums; finite gradients summing past float32's range do not occur)."""
    if tensors[0].device.type == "cpu":
        return torch.stack([tensor.sum(dtype=torch.float32) for tensor in tensors]).sum()
    return torch.stack(torch._foreach_norm(tensors, _INF)).amax().float()


class _Activations:
    """Float16 outputs of every module, reduced per ``scale()`` with one multi-tensor op."""

    def __init__(self) -> None:
        self.modules: list[weakref.ref[torch.nn.Module]] = []
        self.kinds: list[str] = []
        # id(module) -> (slot, weak reference): a plain dict is several times faster than a
        # WeakKeyDictionary in a hook that runs on every module call; the reference tells a
        # reused id from the module it belonged to.
        self.slot_of: dict[int, tuple[int, weakref.ref[torch.nn.Module]]] = {}
        self.pending: list[torch.Tensor] = []
        self.pending_slots: list[int] = []
        self.partials: list[torch.Tensor] = []  # reduced maxima, float16, this step
        self.slots: list[int] = []  # slot of each reduced maximum, in forward order
        self.last: torch.Tensor | None = None
        self.names: dict[int, str] = {}  # slot -> qualified name, refreshed as slots appear
        self.named = 0

    def refresh_names(self) -> None:
        """Name every slot while its model is alive (findings are read later, lazily).

        Runs when modules were seen for the first time: in the first step, and after that
        only when a module joins (e.g. one used for the first time).
        """
        if self.named == len(self.modules):
            return
        self.named = len(self.modules)
        best: dict[int, str] = {}
        for ref in self.modules:
            root = ref()
            if root is None:
                continue
            for name, sub in root.named_modules(remove_duplicate=False):
                if len(name) >= len(best.get(id(sub), "")):
                    best[id(sub)] = name
        for slot, ref in enumerate(self.modules):
            module = ref()
            if module is not None:
                self.names[slot] = best.get(id(module)) or f"<root {self.kinds[slot]}>"

    def hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        """The global forward hook: runs after every module's forward, in the user's step.

        The body is one ``try`` rather than a call through ``run_check``: this runs on every
        module call, and a ``try`` costs nothing until it catches.
        """
        try:
            # Inside a graph torch is tracing, outputs are symbolic: nothing to measure,
            # and nothing may be added to the graph.
            if torch.compiler.is_compiling() or not torch.is_grad_enabled() or not uses_scalers():
                return
            # Every module seen gets a slot, also those not measured: the outermost ones are
            # the roots that give the others their qualified names.
            entry = self.slot_of.get(id(module))
            if entry is None or entry[1]() is not module:
                slot = len(self.modules)
                ref = weakref.ref(module)
                self.slot_of[id(module)] = (slot, ref)
                self.modules.append(ref)
                self.kinds.append(type(module).__name__)
            else:
                slot = entry[0]
            if isinstance(output, torch.Tensor):
                tensor = output
            elif (
                isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor)
            ):
                tensor = output[0]
            else:
                return
            # A parent returning its last child's output (Sequential, a block ending in a norm)
            # is the same tensor: measured once, attributed to the child, which ran first.
            if (
                tensor.dtype is not torch.float16
                or tensor is self.last
                or tensor.is_sparse
                or isinstance(module, _PASS_THROUGH)
                or tensor.numel() == 0
            ):
                return
            self.last = tensor
            self.pending.append(tensor)
            self.pending_slots.append(slot)
            if len(self.pending) >= _ACT_CAP:
                self.reduce()
        except Exception as error:  # amplint's bug: the forward's output stays torch's
            internal_error("the activation check (forward hook)", error)

    def reduce(self) -> None:
        """Reduce the held outputs to their maxima (one multi-tensor op per device) and let
        the outputs go."""
        pending, self.pending = self.pending, []
        self.last = None
        if not pending:
            return
        with torch.no_grad():
            by_device: dict[torch.device, list[int]] = {}
            for index, tensor in enumerate(pending):
                by_device.setdefault(tensor.device, []).append(index)
            if len(by_device) == 1:
                self.partials.append(_max_abs(pending))
                self.slots.extend(self.pending_slots)
            else:  # model parallel: one reduction per device, kept per device
                for indices in by_device.values():
                    group = [pending[i] for i in indices]
                    self.partials.append(_max_abs(group))
                    self.slots.extend(self.pending_slots[i] for i in indices)
        self.pending_slots = []

    def take(self) -> tuple[list[torch.Tensor], list[int]]:
        self.reduce()
        partials, slots = self.partials, self.slots
        self.partials, self.slots = [], []
        return partials, slots

    def name(self, slot: int) -> str:
        """The module's qualified name in the outermost module seen that contains it."""
        self.refresh_names()
        if slot in self.names:
            return self.names[slot]
        module = self.modules[slot]()
        if module is None:
            return f"<freed {self.kinds[slot]}>"
        best: str | None = None
        for ref in self.modules:
            root = ref()
            if root is None:
                continue
            for name, sub in root.named_modules(remove_duplicate=False):
                if sub is module and (best is None or len(name) > len(best)):
                    best = name
                    break
        return best or f"<root {self.kinds[slot]}>"


# Per scaler -------------------------------------------------------------------------


@dataclass
class _Chunk:
    first_step: int
    rows: torch.Tensor  # [n, _COLUMNS] float32, host memory
    log: torch.Tensor  # [m] float16, host memory
    numels: list[int]
    spans: list[tuple[int, list[int]]]  # per step: (offset in log, slots)
    event: Any = None


class ScalerHealth:
    """Device statistics of one GradScaler, and the host's reading of them."""

    def __init__(self, monitor: Monitor, scaler: GradScaler) -> None:
        self.monitor = monitor
        self.scaler_ref = weakref.ref(scaler)
        # Where the scaler was constructed: its label in the summary, the report and plot.
        record = scaler.__dict__.get("_amplint")
        self.construction: Site = getattr(record, "site", None) or ("<unknown>", 0)
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
        self.spans: list[tuple[int, list[int]]] = []
        self.inflight: deque[_Chunk] = deque()
        self.step = 0  # steps written so far
        self.read_steps = 0  # steps the host has read
        # Host-side results
        self.scales: list[float] = []
        self.skipped: list[bool] = []
        self.consecutive = 0
        self.window: deque[bool] = deque()
        self.window_skips = 0
        self.nonfinite_loss_steps = 0
        self.underflow: list[float] = []
        self.zeros: list[float] = []
        self.grad_max = 0.0
        self.act_max: dict[int, float] = {}
        self.reported: set[str] = set()
        self.scale_tensor: torch.Tensor | None = None

    # Device side ----------------------------------------------------------------------

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
        self.rows = torch.zeros((every, _COLUMNS), dtype=torch.float32, device=self.device)
        self.log = torch.zeros(_ACT_CAP, dtype=torch.float16, device=self.device)
        self.zero = torch.zeros((), dtype=torch.float32, device=self.device)

    def on_scale(self, loss: Any, scaler: GradScaler) -> None:
        self._site("scale")
        self.monitor.activations.reduce()
        if not isinstance(loss, torch.Tensor) or scaler._scale is None:
            return
        self._ensure(scaler._scale)
        value = loss.detach()
        if value.numel() != 1:
            value = value.sum()
        elif value.dim():
            value = value.reshape(())
        if value.dtype is not torch.float32:
            value = value.float()
        if value.device != self.device:
            value = value.to(self.device, non_blocking=True)
        self.loss = value if self.loss is None else self.loss + value

    def due(self, scaler: GradScaler) -> bool:
        """Whether this step takes the gradient statistics (one step in ``underflow_every``)."""
        return scaler._scale is not None and not self.step % self.monitor.config.underflow_every

    def on_unscale(self, optimizer: torch.optim.Optimizer, scaler: GradScaler) -> None:
        """Gradient statistics on the scaled gradients, before torch unscales them."""
        if not self.due(scaler):
            return
        # Gradients measured before a clip of the scaled gradients are not measured again.
        groups = _grads_by_device_dtype(optimizer.param_groups, self.measured)
        self._measure(groups, scaler)

    def before_clip(self, params: list[torch.Tensor], scaler: GradScaler) -> None:
        """A clip of still-scaled gradients (AMP006) is about to change them: take the
        statistics of ``params`` now, as backward produced them; ``unscale_`` then skips
        them. Advice drawn from clipped gradients would be wrong: clipping shrinks them
        towards underflow."""
        groups = _grads_by_device_dtype([{"params": params}], self.measured)
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
                gmax.append(_max_abs(grads).amax().float())
                nnz.append(torch.stack(torch._foreach_norm(grads, 0)).sum().float())
                big.append(_count_normal(grads))
            step_max = self._combine(gmax, max_=True)
            step_nnz = self._combine(nnz)
            step_big = self._combine(big)
            self.gmax = step_max if self.gmax is None else torch.maximum(self.gmax, step_max)
            self.nnz = step_nnz if self.nnz is None else self.nnz + step_nnz
            self.big = step_big if self.big is None else self.big + step_big
        return True

    def on_step_after_unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """The gradients the optimizer is about to apply, after an explicit unscale_ (AMP106)."""
        self._site("step")
        if self.rows is None:
            return
        groups = _grads_by_device_dtype(optimizer.param_groups)
        if not groups:
            return
        with torch.no_grad():
            parts = [_nonfinite_probe(grads) for grads in groups.values()]
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
        if not found and new_scale is None:
            return  # torch raises: no inf checks were recorded
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
            partials, slots = activations.take()
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
        self.spans.append((self.log_used, slots))
        self.log_used += len(slots)
        self.numels.append(self.numel)
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
        if self.cuda:
            host_rows = torch.empty(rows.shape, dtype=rows.dtype, pin_memory=True)
            host_log = torch.empty(log.shape, dtype=log.dtype, pin_memory=True)
            host_rows.copy_(rows, non_blocking=True)
            host_log.copy_(log, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            chunk = _Chunk(
                self.step - self.row, host_rows, host_log, self.numels, self.spans, event
            )
        else:
            # CPU: the ring is host memory; read it now, before it is written again.
            chunk = _Chunk(self.step - self.row, rows, log, self.numels, self.spans)
        self.inflight.append(chunk)
        self.row = self.log_used = 0
        self.numels, self.spans = [], []
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
            self._read(chunk, pending)
        if defer:
            self.monitor.deferred.extend(pending)
            return
        self.monitor.emit_all(pending, raise_now)

    # Host side ------------------------------------------------------------------------

    def _read(self, chunk: _Chunk, out: list[tuple[str, str, Site, int]]) -> None:
        config = self.monitor.config
        rows = _host_values(chunk.rows, "f")
        log = _host_values(chunk.log, "e")
        limit = config.activation_limit
        acts = self.monitor.activations
        for index in range(len(chunk.numels)):
            step = chunk.first_step + index
            base = index * _COLUMNS
            scale, found_inf, loss, gmax, nnz, big, g106 = rows[base : base + _COLUMNS]
            numel = chunk.numels[index]
            skipped = found_inf != 0.0
            self.scales.append(scale)
            self.skipped.append(skipped)
            # AMP101
            if not _finite(loss):
                self.nonfinite_loss_steps += 1
                what = "nan" if math.isnan(loss) else "inf"
                out.append(
                    (
                        "AMP101",
                        message_for("AMP101", value=what, step=step),
                        self._site_or("scale"),
                        step,
                    )
                )
            # AMP105: the first float16 output over the limit, in forward order
            offset, slots = chunk.spans[index]
            for position, slot in enumerate(slots):
                value = log[offset + position]
                if not _finite(value):
                    self.act_max[slot] = _INF
                elif value > self.act_max.get(slot, -1.0):
                    self.act_max[slot] = value
                if self.monitor.first_overflow is None and not value < limit:
                    name = acts.name(slot)
                    kind = acts.kinds[slot]
                    if _finite(value):
                        what = f"reached {value:g}, within {config.overflow_margin:.0%} of 65504"
                    else:
                        what = f"was {'nan' if math.isnan(value) else 'inf'}"
                    self.monitor.first_overflow = {
                        "module": name,
                        "kind": kind,
                        "step": step,
                        "value": value if _finite(value) else str(value),
                    }
                    message = message_for("AMP105", module=name, kind=kind, what=what, step=step)
                    out.append(("AMP105", message, self._site_or("scale"), step))
            # AMP102: scale collapse
            self.consecutive = self.consecutive + 1 if skipped else 0
            if "AMP102" not in self.reported:
                why = None
                if scale < config.min_scale:
                    why = f"the scale is {scale:g}, below {config.min_scale:g}"
                elif self.consecutive >= config.max_backoffs:
                    why = f"it backed off on {self.consecutive} consecutive steps (now {scale:g})"
                if why is not None:
                    self.reported.add("AMP102")
                    out.append(
                        (
                            "AMP102",
                            message_for("AMP102", step=step, why=why),
                            self._site_or("update"),
                            step,
                        )
                    )
            # AMP103: skipped-step rate over a window
            self.window.append(skipped)
            self.window_skips += skipped
            if len(self.window) > config.skip_window:
                self.window_skips -= self.window.popleft()
            if (
                "AMP103" not in self.reported
                and len(self.window) == config.skip_window
                and self.window_skips >= config.skip_rate * config.skip_window
                and self.window_skips > 0
            ):
                self.reported.add("AMP103")
                message = message_for(
                    "AMP103", skipped=self.window_skips, window=config.skip_window, step=step
                )
                out.append(("AMP103", message, self._site_or("update"), step))
            # AMP104 and the gradient summary (unskipped steps with gradient statistics)
            if numel and not skipped and _finite(gmax):
                share = max(nnz - big, 0.0) / numel
                self.underflow.append(share)
                self.zeros.append(max(numel - nnz, 0.0) / numel)
                if scale:
                    self.grad_max = max(self.grad_max, gmax / scale)
                if share > config.underflow_share and "AMP104" not in self.reported:
                    self.reported.add("AMP104")
                    message = message_for("AMP104", share=share, step=step, scale=scale)
                    out.append(("AMP104", message, self._site_or("scale"), step))
            # AMP106: applied non-finite gradients
            if not skipped and not _finite(g106):
                out.append(
                    ("AMP106", message_for("AMP106", step=step), self._site_or("step"), step)
                )
            self.read_steps = step + 1

    def _site_or(self, key: str) -> Site:
        return self.sites.get(key) or self.sites.get("scale") or ("<unknown>", 0)

    def summary(self) -> dict[str, Any]:
        """This scaler's part of the summary (``summary["scalers"]``)."""
        final = self.final_scale()
        scales = [*self.scales, *([final] if final is not None else [])]
        entry: dict[str, Any] = {
            "site": f"{self.construction[0]}:{self.construction[1]}",
            "steps": len(self.scales),
            "skipped_steps": sum(self.skipped),
            "scale": None,
            "grad_underflow_share": None,
            "grad_zero_share": None,
            "nonfinite_loss_steps": self.nonfinite_loss_steps,
        }
        if scales:
            entry["scale"] = {
                "min": min(scales),
                "max": max(scales),
                "final": scales[-1] if final is None else final,
            }
        if self.underflow:
            entry["grad_underflow_share"] = sum(self.underflow) / len(self.underflow)
            entry["grad_zero_share"] = sum(self.zeros) / len(self.zeros)
            entry["grad_max"] = self.grad_max
        return entry

    def final_scale(self) -> float | None:
        if self.scale_tensor is not None:
            # Report time, not a training step: this read may wait for the device.
            return float(self.scale_tensor.item())
        return None


# The largest scratch buffer the gradient counts allocate, in elements (4 MiB of float32),
# unless a single gradient is larger: then that gradient's size. Never the sum of all
# gradients, which on a large model near its memory limit would be an out-of-memory error
# of amplint's making.
_SCRATCH_NUMEL = 1 << 20


def _chunks(tensors: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """``tensors`` in runs whose total size stays within ``_SCRATCH_NUMEL`` (a tensor larger
    than that alone in its run)."""
    run: list[torch.Tensor] = []
    size = 0
    for tensor in tensors:
        if run and size + tensor.numel() > _SCRATCH_NUMEL:
            yield run
            run, size = [], 0
        run.append(tensor)
        size += tensor.numel()
    if run:
        yield run


def _count_normal(grads: list[torch.Tensor]) -> torch.Tensor:
    """How many gradient values are at or above float16's smallest normal in magnitude,
    a 0-d float32 tensor; scratch memory bounded as ``_chunks`` says."""
    counts = []
    for run in _chunks(grads):
        magnitudes = torch._foreach_abs(run)
        torch._foreach_sub_(magnitudes, FP16_MIN_NORMAL)
        torch._foreach_clamp_min_(magnitudes, 0.0)
        counts.append(torch.stack(torch._foreach_norm(magnitudes, 0)).sum().float())
        del magnitudes  # freed before the next run is allocated
    return counts[0] if len(counts) == 1 else torch.stack(counts).sum()


def _grads_by_device_dtype(
    param_groups: list[dict[str, Any]], exclude: set[int] | frozenset[int] = frozenset()
) -> dict[tuple[Any, Any], list[torch.Tensor]]:
    """The gradients of the parameters in ``param_groups``, but those whose parameter's id
    is in ``exclude``, grouped by (device, dtype)."""
    groups: dict[tuple[Any, Any], list[torch.Tensor]] = {}
    dtensor = _dtensor_type()
    for group in param_groups:
        for param in group["params"]:
            if exclude and id(param) in exclude:
                continue
            grad = param.grad
            if grad is None or grad.is_sparse:
                continue
            if dtensor is not None and isinstance(grad, dtensor):
                # FSDP2 / tensor parallel: this rank's shard. Reducing the DTensor itself
                # would add collectives to the step; the ranks' shares meet in the report.
                grad = grad.to_local()
            if grad.numel() == 0:  # an empty shard: nothing to measure (aminmax rejects it)
                continue
            groups.setdefault((grad.device, grad.dtype), []).append(grad)
    return groups


def _dtensor_type() -> Any:
    module = sys.modules.get("torch.distributed.tensor")
    return None if module is None else getattr(module, "DTensor", None)


# The process-wide monitor -------------------------------------------------------------


class Monitor:
    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self.activations = _Activations()
        self.scalers: list[ScalerHealth] = []
        self.first_overflow: dict[str, Any] | None = None
        self.deferred: list[tuple[str, str, Site, int]] = []
        self.last_step: dict[int, tuple[bool, int]] = {}  # optimizer id -> (skipped, step)
        self.scheduler_after_skip = 0
        self.lock = threading.RLock()

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
            self.emit_all([], raise_now=False)

    def note_step(
        self, optimizer: torch.optim.Optimizer, health: ScalerHealth, skipped: bool
    ) -> None:
        self.last_step[id(optimizer)] = (skipped, health.step)

    def scheduler_stepped(self, scheduler: Any) -> None:
        optimizer = getattr(scheduler, "optimizer", None)
        entry = self.last_step.pop(id(optimizer), None)
        if entry is None:
            return
        skipped, step = entry
        if skipped:
            self.scheduler_after_skip += 1
            if step >= self.config.startup_steps:
                emit("AMP107", message_for("AMP107", step=step), user_site(), step=step)

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
            "optimizer_steps": step_counter.latest,
            "activations_measured": any(scaler.act_max for scaler in self.scalers),
            "scalers": [],
            "config": asdict(self.config),
        }
        # One entry per scaler that updated, labelled by where it was constructed; the
        # top-level fields are the main scaler's (the one that stepped most), as before.
        result["scalers"] = [
            scaler.summary() for scaler in self.scalers if scaler.scales or scaler.step
        ]
        if health is None:
            return result
        main = health.summary()
        for key in ("steps", "skipped_steps", "scale", "nonfinite_loss_steps"):
            result[key] = main[key]
        for key in ("grad_underflow_share", "grad_zero_share", "grad_max"):
            if main.get(key) is not None:
                result[key] = main[key]
        top = sorted(health.act_max.items(), key=lambda item: -item[1])[:3]
        result["closest_to_overflow"] = [
            {
                "module": self.activations.name(slot),
                "max_abs": value if _finite(value) else str(value),
            }
            for slot, value in top
        ]
        return result


_current: Monitor | None = None  # while enabled
_last: Monitor | None = None  # the latest, kept after disable() for summary()/history()
_hook_handle: Any = None
_scheduler_patch: tuple[Any, Any, Any] | None = None


def active() -> Monitor | None:
    return _current


def hook_id() -> int | None:
    """The id of the global forward hook in torch's table, None when there is none."""
    handle = _hook_handle
    return None if handle is None else handle.id


def enable(config: HealthConfig | None = None) -> Monitor:
    """Turn the checks on (``install(health=True)`` calls this). A new config keeps the data."""
    global _current, _last, _hook_handle
    config = config or HealthConfig()
    if _current is not None:
        _current.config = config
        return _current
    # Re-enabling with the same settings continues the same run's record.
    monitor = _last if _last is not None and _last.config == config else Monitor(config)
    _current = _last = monitor
    if config.activations:
        _hook_handle = torch.nn.modules.module.register_module_forward_hook(
            monitor.activations.hook
        )
    _patch_scheduler()
    add_flusher(flush)
    return monitor


def disable() -> None:
    """Turn the checks off; what was measured stays readable through summary()."""
    global _current, _hook_handle
    if _current is None:
        return
    try:
        _current.flush()
    finally:
        if _hook_handle is not None:
            _hook_handle.remove()
            _hook_handle = None
        _unpatch_scheduler()
        _current = None


def flush() -> None:
    monitor = _current or _last
    if monitor is not None:
        monitor.flush()


def reset() -> None:
    """Forget all measurements (``amplint.runtime.reset()``)."""
    global _last, _current
    config = (_current or _last or Monitor(HealthConfig())).config
    if _current is not None:
        hook = _hook_handle
        fresh = Monitor(config)
        if hook is not None:
            hook.remove()
            globals()["_hook_handle"] = torch.nn.modules.module.register_module_forward_hook(
                fresh.activations.hook
            )
        _current = _last = fresh
    else:
        _last = None


def summary() -> dict[str, Any] | None:
    """The run's numerical summary, or None when health checks never ran."""
    monitor = _current or _last
    return None if monitor is None else monitor.summary()


def history() -> dict[str, list[Any]]:
    """Per step of the main scaler: the loss scale used and whether the step was skipped."""
    for entry in histories():
        if entry["main"]:
            return {key: entry[key] for key in ("step", "scale", "skipped")}
    return {"step": [], "scale": [], "skipped": []}


def histories() -> list[dict[str, Any]]:
    """:func:`history` of every scaler that stepped, each with its ``site`` and ``main``."""
    monitor = _current or _last
    if monitor is None:
        return []
    monitor.flush()
    main = monitor.main()
    return [
        {
            "site": f"{health.construction[0]}:{health.construction[1]}",
            "main": health is main,
            "step": list(range(len(health.scales))),
            "scale": list(health.scales),
            "skipped": list(health.skipped),
        }
        for health in monitor.scalers
        if health.scales
    ]


def before_clip(parameters: Any) -> Any:
    """Before ``clip_grad_norm_`` / ``clip_grad_value_``: when the gradients are still
    scaled (AMP006) on a statistics step, measure them before the clip changes them (see
    ``ScalerHealth.before_clip``). Returns the parameters to hand torch: a list when an
    iterator had to be read."""
    monitor = _current
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
        health.before_clip([p for p in params if isinstance(p, torch.Tensor)], scaler)
    return params


# AMP107: the scheduler ------------------------------------------------------------------


def _patch_scheduler() -> None:
    global _scheduler_patch
    if _scheduler_patch is not None:
        return
    owner = torch.optim.lr_scheduler.LRScheduler
    original = owner.__dict__["step"]

    def step(self: Any, *args: Any, **kwargs: Any) -> Any:
        monitor = _current
        # The constructor's own first step (_step_count still 0) is not the user's.
        if monitor is not None and getattr(self, "_step_count", 0) > 0:
            run_check("the LR-scheduler check", monitor.scheduler_stepped, self)
        return original(self, *args, **kwargs)

    step.__wrapped__ = original  # type: ignore[attr-defined]
    owner.step = step
    _scheduler_patch = (owner, original, step)


def _unpatch_scheduler() -> None:
    global _scheduler_patch
    if _scheduler_patch is None:
        return
    owner, original, ours = _scheduler_patch
    if owner.__dict__.get("step") is ours:
        owner.step = original
    _scheduler_patch = None


# Hooks the GradScaler calls (kept tiny: one global read when health is off) -----------


def scaler_step_begin(scaler: GradScaler, optimizer: torch.optim.Optimizer, unscaled: bool) -> None:
    monitor = _current
    if monitor is None:
        return
    health = monitor.for_scaler(scaler)
    if unscaled:
        health.on_step_after_unscale(optimizer)
    thread_state().inner_step_ran = False


def scaler_step_end(scaler: GradScaler, optimizer: torch.optim.Optimizer) -> None:
    monitor = _current
    if monitor is None or getattr(optimizer, "_step_supports_amp_scaling", False):
        return
    # Not fused: torch called optimizer.step() only if found_inf was zero (it read it).
    skipped = not thread_state().inner_step_ran
    monitor.note_step(optimizer, monitor.for_scaler(scaler), skipped)
