"""The usage state machine: the one place that decides every usage finding.

Per GradScaler and per optimizer the legal order within one iteration is::

    scaler.scale(loss).backward()      (any number of times: accumulation, several losses)
    scaler.unscale_(optimizer)         (optional, at most once)
    scaler.step(optimizer)             (once)
    scaler.update()                    (once, after the steps of all optimizers)

The instrumented classes (``scaler.py``, ``autocast.py``) and the wrappers on torch's
functions (``hooks.py``) only report events here: ``on_*`` functions take the event, update
the state and return the findings it makes, each a :class:`Verdict` with its code, message
and the user's site. The callers show them (``reporting.emit``) and call torch.

:class:`ScalerUsage` mirrors torch's own ``OptState`` (READY / UNSCALED / STEPPED) and adds
what torch does not track: whether a scaled backward happened since the last update, which
optimizers a scaler manages, where the scaler was created and where it last stepped.
"""

from __future__ import annotations

import itertools
import sys
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch

from . import frameworks
from .compiled import note_backward_traced, tracing
from .findings import message_for
from .frames import Site, user_site
from .reporting import steps
from .session import SESSION, UnscaledBackward
from .state import autocast_active, only_bfloat16_seen, thread_state, uses_scalers

__all__ = [
    "ScalerUsage",
    "Stage",
    "Verdict",
    "inside_scaler_step",
    "leaves_of",
    "of",
    "on_backward",
    "on_clip",
    "on_get_scale",
    "on_grad",
    "on_module_zero_grad",
    "on_optimizer_step",
    "on_optimizer_zero_grad",
    "on_scale",
    "on_state_dict",
    "on_step",
    "on_stepped",
    "on_total_norm",
    "on_unscale",
    "on_unscaled",
    "on_update",
    "on_updated",
    "tag",
    "usage_of_tensors",
]


class Stage(Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


@dataclass(frozen=True)
class Verdict:
    """A finding decided here. ``rejected``: torch is about to raise for the same misuse
    (the caller combines the two in raise mode). ``step``: the step it belongs to, when
    that is not the current one."""

    code: str
    message: str
    site: Site
    rejected: bool = False
    step: int | None = None


_SERIALS = itertools.count()
#: (parameter, its gradient, the gradient's version counter), held weakly.
_GradSample = tuple["weakref.ref[torch.Tensor]", "weakref.ref[torch.Tensor]", int]
#: gradients sampled per step for AMP016: zero_grad() zeroes or drops every one alike.
_SAMPLED_GRADS = 4
#: scaled norms remembered per scaler and iteration, oldest forgotten first.
_NORMS_KEPT = 16
#: AfterStep records kept per thread before those of scalers no longer in use are dropped.
_AFTER_STEPS_KEPT = 64


class AfterStep:
    """What a scaler's step of an optimizer left, for AMP016: the zero_grad() calls and
    backward passes seen so far, and a few (parameter, its grad, the grad's version at the
    step). ``seen``: those versions as the last backward since left them; ``cleared``:
    something other than a backward wrote into the gradients between two backward passes
    (a ``p.grad.zero_()`` loop, ``_foreach_zero_``): they no longer hold what the step
    applied."""

    __slots__ = ("cleared", "samples", "seen", "writes", "zero_grads")

    def __init__(self, zero_grads: int, writes: int, samples: list[_GradSample]) -> None:
        self.zero_grads = zero_grads
        self.writes = writes
        self.samples = samples
        self.seen = [version for _, _, version in samples]
        self.cleared = False

    def before_backward(self) -> None:
        for (_, grad_ref, _), seen in zip(self.samples, self.seen, strict=True):
            grad = grad_ref()
            if grad is not None and grad._version != seen:
                self.cleared = True
                return

    def after_backward(self) -> None:
        self.seen = [
            grad._version if (grad := grad_ref()) is not None else seen
            for (_, grad_ref, _), seen in zip(self.samples, self.seen, strict=True)
        ]


class ScalerUsage:
    """What one GradScaler has been asked to do in the current iteration."""

    def __init__(self, site: Site) -> None:
        self.site = site
        # Construction order: tells apart scalers built on one line (``a, b = GradScaler(),
        # GradScaler()``) in the summary.
        self.serial = next(_SERIALS)
        # What state_dict() handed out (scale, growth tracker), and what load_state_dict()
        # took in: a scaler that loads what another saved continues it (a resumed run).
        self.saved_states: list[tuple[float, int]] = []
        self.loaded_state: tuple[float, int] | None = None
        self._stages: dict[int, Stage] = {}
        # ids of optimizers this scaler has unscaled or stepped: the optimizers it manages.
        self.managed: set[int] = set()
        self.fp16_checked: set[int] = set()
        self.scaled_backward_pending = False
        # A scaled backward ran after a step of this iteration: a new iteration began.
        self.backward_after_step = False
        # Where and at which step the latest scaler.step() ran (AMP002's blame).
        self.last_step: tuple[Site, int] | None = None
        # scale() got an iterable it could not tag (e.g. a generator): from then on this
        # iteration, a backward we cannot attribute must not be blamed on the user.
        self.untracked_scale = False
        self.bf16_reported = False
        # get_scale() was read since the last scaled backward: a clip that follows may be
        # scaling its max_norm by hand (torch's own tests do), so AMP006 stays quiet.
        self.scale_read = False
        # state_dict() reads of a scale on a device, per line: (iteration, reads in a row),
        # the iteration counted by this scaler's updates (a WGAN's generator scaler updates
        # once while its critic's steps the optimizers five times).
        self.state_reads: dict[Site, tuple[int, int]] = {}
        self.updates = 0
        # Norms that get_total_norm() took of still-scaled gradients (id -> weak reference):
        # clip_grads_with_norm_ given one after unscale_ clips by a scaled norm (AMP006).
        self.scaled_norms: dict[int, weakref.ref[torch.Tensor]] = {}
        # An optimizer.step() bypassed this scaler in the current iteration (AMP004): the
        # step was applied whatever found_inf says (health: not a skipped step).
        self.bypassed = False
        # torch.autograd.grad of this scaler's scaled output ran this iteration (PyTorch's
        # gradient-penalty recipe): a loss built from those scaled gradients may overflow,
        # which is the scaler's to skip, not a non-finite loss of the model's (AMP101).
        self.scaled_grad_taken = False
        # optimizer id -> what this scaler's last step of it left (AMP016).
        self.after_step: dict[int, AfterStep] = {}

    def note_scaled_norm(self, norm: torch.Tensor) -> None:
        if len(self.scaled_norms) >= _NORMS_KEPT:  # norms logged, never clipped with
            self.scaled_norms = {k: r for k, r in self.scaled_norms.items() if r() is not None}
            if len(self.scaled_norms) >= _NORMS_KEPT:
                self.scaled_norms.pop(next(iter(self.scaled_norms)))
        self.scaled_norms[id(norm)] = weakref.ref(norm)

    def took_scaled_norm(self, norm: object) -> bool:
        ref = self.scaled_norms.get(id(norm))
        return ref is not None and ref() is norm

    def stage(self, optimizer: object) -> Stage:
        return self._stages.get(id(optimizer), Stage.READY)

    def mid_iteration(self) -> bool:
        return any(stage is not Stage.READY for stage in self._stages.values())

    def stepped(self) -> bool:
        """An optimizer of this scaler stepped and no update() followed yet."""
        return any(stage is Stage.STEPPED for stage in self._stages.values())

    def grads_still_scaled(self) -> bool:
        """A scaled backward ran and no optimizer of this scaler was unscaled since (AMP006)."""
        return self.scaled_backward_pending and not self.scale_read and not self.mid_iteration()

    def bypassed_by(self, optimizer: object, plain_since: bool = True) -> bool:
        """True if a direct ``optimizer.step()`` now would apply scaled gradients (AMP004).

        Once the scaler manages some optimizers, an optimizer it never saw is taken to be
        an unrelated model's (a false alarm costs more than a missed hint), unless every
        backward since that optimizer's last step was a scaled one (``plain_since`` False)
        and it holds gradients: then they can only be scaled (one scaler serving two
        optimizers, as PyTorch's recipe for several models has it).
        """
        if not self.scaled_backward_pending:
            return False
        if self.managed and id(optimizer) not in self.managed:
            return not plain_since and _holds_grads(optimizer)
        return self.stage(optimizer) is not Stage.STEPPED


def _holds_grads(optimizer: object) -> bool:
    groups = getattr(optimizer, "param_groups", ())
    return any(param.grad is not None for group in groups for param in group["params"])


def of(scaler: Any) -> ScalerUsage:
    """The usage record of an amplint GradScaler (made on first use: instances built
    without ``__init__``, by ``copy.copy`` or a custom ``__new__``, have none yet)."""
    usage = scaler.__dict__.get("_amplint")
    if usage is None:
        usage = scaler.__dict__["_amplint"] = ScalerUsage(("<unknown>", 0))
    return usage


# Scaled outputs are tagged with their scaler's usage, so a later backward knows its loss
# went through scale().


def tag(value: Any, usage: ScalerUsage) -> bool:
    """Mark scaled outputs; False when ``value`` holds an iterator we must not consume."""
    if isinstance(value, torch.Tensor):
        value._amplint_usage = usage  # type: ignore[attr-defined]
        return True
    if isinstance(value, (list, tuple)):
        return all([tag(item, usage) for item in value])
    return False


def usage_of_tensors(tensors: tuple[Any, ...]) -> ScalerUsage | None:
    for tensor in tensors:
        usage = getattr(tensor, "_amplint_usage", None)
        if usage is not None:
            return usage
    return None


# GradScaler events -----------------------------------------------------------------------


def on_scale(usage: ScalerUsage, tracked: bool) -> None:
    counter = steps()
    counter.commit(usage)
    counter.scaled(usage)
    if not tracked:
        usage.untracked_scale = True


def on_unscale(usage: ScalerUsage, optimizer: torch.optim.Optimizer) -> list[Verdict]:
    """Before torch's ``unscale_(optimizer)``."""
    verdicts = _half_params(usage, optimizer)
    stage = usage.stage(optimizer)
    if stage is Stage.UNSCALED:
        message = message_for("AMP011", what="twice before scaler.update()")
        verdicts.append(Verdict("AMP011", message, user_site(), rejected=True))
    elif stage is Stage.STEPPED and usage.backward_after_step and usage.last_step is not None:
        # unscale_, clip, step and no update: the next iteration's unscale_ is where torch
        # notices, but the mistake is the missing update() of the iteration that stepped.
        verdicts.append(_update_missed_by(usage.last_step, "scaler.unscale_()"))
    elif stage is Stage.STEPPED:
        message = message_for("AMP011", what="after scaler.step()")
        verdicts.append(Verdict("AMP011", message, user_site(), rejected=True))
    return verdicts


def _update_missed_by(last_step: tuple[Site, int], raising: str) -> Verdict:
    """AMP002 blamed on the iteration whose step (``last_step``) no update() followed,
    found when the next iteration's ``raising`` call is about to make torch raise."""
    site, step = last_step
    what = (
        "this scaler.step() was not followed by scaler.update(): the next iteration's "
        f"{raising} of the optimizer raises"
    )
    return Verdict("AMP002", message_for("AMP002", what=what), site, rejected=True, step=step)


def on_unscaled(usage: ScalerUsage, optimizer: torch.optim.Optimizer) -> None:
    """After torch's ``unscale_(optimizer)``."""
    usage._stages[id(optimizer)] = Stage.UNSCALED
    usage.managed.add(id(optimizer))


def on_step(
    usage: ScalerUsage,
    optimizer: torch.optim.Optimizer,
    enabled: bool,
    closure_keyword: bool,
    closure_positional: bool,
) -> list[Verdict]:
    """Before torch's ``scaler.step(optimizer)``."""
    tls = thread_state()
    verdicts = []
    verdicts += _step_inside_autocast("scaler.step()")
    if not enabled:
        # A scaler disabled on purpose (`enabled=use_amp`, or torch's own tests running
        # fp16 with scaling off) is a choice, not a forgotten scaler: no AMP003.
        tls.unscaled_backward = None
        return verdicts
    if closure_keyword:
        verdicts.append(Verdict("AMP019", message_for("AMP019"), user_site(), rejected=True))
        return verdicts
    if closure_positional:
        # Passed on positionally, torch hands it to optimizer.step() unchecked.
        verdicts.append(Verdict("AMP019", message_for("AMP019"), user_site()))
    if usage.stage(optimizer) is Stage.STEPPED:
        if usage.backward_after_step and usage.last_step is not None:
            # A new iteration: the mistake is the previous one's, which stepped and never
            # updated; torch notices only now.
            verdicts.append(_update_missed_by(usage.last_step, "scaler.step()"))
            return verdicts
        what = (
            "scaler.step() was called again for this optimizer without scaler.update() in between"
        )
        message = message_for("AMP002", what=what)
        verdicts.append(Verdict("AMP002", message, user_site(), rejected=True))
        return verdicts
    if _accumulated_since_step(usage, optimizer):
        verdicts.append(Verdict("AMP016", message_for("AMP016"), user_site()))
    pending = tls.unscaled_backward
    if pending is not None and not usage.untracked_scale and pending.touches(optimizer):
        verdicts.append(Verdict("AMP005", message_for("AMP005"), pending.site))
    tls.unscaled_backward = None
    verdicts.extend(_half_params(usage, optimizer))
    return verdicts


def on_stepped(usage: ScalerUsage, optimizer: torch.optim.Optimizer, site: Site) -> None:
    """After torch's ``scaler.step(optimizer)``; ``site`` is the user's call."""
    tls = thread_state()
    record = AfterStep(tls.zero_grads, tls.backwards_run, _sample_grads(optimizer))
    usage.after_step[id(optimizer)] = record
    records = tls.after_steps
    records[(id(usage), id(optimizer))] = record
    if len(records) > _AFTER_STEPS_KEPT:
        # A scaler rebuilt every step (AMP010) leaves one record per scaler: keep those
        # whose scaler is still alive.
        alive = {id(u) for u in tls.pending} | {id(usage)}
        for key in [key for key in records if key[0] not in alive][: len(records) // 2]:
            records.pop(key).cleared = True  # no longer watched: in doubt, silence
    usage._stages[id(optimizer)] = Stage.STEPPED
    usage.managed.add(id(optimizer))
    usage.backward_after_step = False
    usage.last_step = (site, steps().current)


def on_update(usage: ScalerUsage) -> list[Verdict]:
    """Before torch's ``scaler.update()``."""
    verdicts = []
    verdicts += _step_inside_autocast("scaler.update()")
    if not usage.bf16_reported and only_bfloat16_seen():
        usage.bf16_reported = True
        verdicts.append(Verdict("AMP014", message_for("AMP014"), usage.site))
    return verdicts


def on_updated(usage: ScalerUsage) -> None:
    usage.updates += 1
    usage._stages.clear()
    usage.scaled_backward_pending = False
    usage.backward_after_step = False
    usage.untracked_scale = False
    usage.scale_read = False
    usage.scaled_norms.clear()
    usage.bypassed = False
    usage.scaled_grad_taken = False
    thread_state().pending.discard(usage)


def on_get_scale(usage: ScalerUsage) -> None:
    if usage.scaled_backward_pending:
        usage.scale_read = True


#: ``state_dict()`` of a scaler whose scale is on a device, from one line, on this many
#: iterations in a row, is AMP021. ``get_scale()`` is left to the linter: its value may
#: decide something (whether the step was skipped), which a run cannot tell from display.
STATE_READS_IN_A_ROW = 10


def on_state_dict(usage: ScalerUsage, *, syncs: bool) -> list[Verdict]:
    """``syncs``: the scale lives on a device, so reading it waits for the device."""
    verdicts = []
    # After unscale_ and before step() (a checkpoint taken around the clip), the model, the
    # optimizer and the scale all predate this iteration's step: consistent. After step()
    # and before update(), the scale saved misses the update of the step the model took.
    if usage.stepped():
        verdicts.append(Verdict("AMP013", message_for("AMP013"), user_site()))
    if syncs:
        site, iteration = user_site(), usage.updates
        last, runs = usage.state_reads.get(site, (-1, 0))
        if iteration != last:
            runs = runs + 1 if iteration == last + 1 else 1
            usage.state_reads[site] = (iteration, runs)
            if runs == STATE_READS_IN_A_ROW:
                message = message_for("AMP021", runs=runs)
                verdicts.append(Verdict("AMP021", message, site))
    return verdicts


def _half_params(usage: ScalerUsage, optimizer: torch.optim.Optimizer) -> list[Verdict]:
    # Once per optimizer: the parameter list is walked in Python, which a per-step check
    # on a large model could not afford.
    key = id(optimizer)
    if key in usage.fp16_checked:
        return []
    usage.fp16_checked.add(key)
    if any(_half(p) for group in optimizer.param_groups for p in group["params"]):
        # A scaler that a training framework drives: its code and its remedy.
        code, message = frameworks.half_params_finding() or ("AMP009", message_for("AMP009"))
        return [Verdict(code, message, user_site())]
    return []


def _half(param: Any) -> bool:
    return isinstance(param, torch.Tensor) and param.dtype is torch.float16


# Events outside the GradScaler -------------------------------------------------------------


def _inside_backward() -> bool:
    # A backward started by the autograd engine itself (reentrant checkpointing, a hook)
    # is torch's business: its loss is not the user's, scaled or not.
    return torch._C._current_autograd_node() is not None


def on_backward(roots: tuple[Any, ...]) -> list[Verdict]:
    """``torch.autograd.backward`` (and ``Tensor.backward``) from ``roots``."""
    if _inside_backward():
        return []
    if tracing(roots):  # torch.compile tracing a backward: not the user's
        note_backward_traced(autocast_active())
        return []
    steps().commit()
    verdicts = []
    tls = thread_state()
    for record in tls.after_steps.values():
        if not record.cleared:
            record.before_backward()
    tls.backwards_run += 1
    if autocast_active():
        verdicts.append(Verdict("AMP001", message_for("AMP001"), user_site()))
        if tls.autocast_regions:
            tls.backward_region = tls.autocast_regions[-1]
    # A float16 region inside compiled code is not entered here: its graph tells.
    fp16 = tls.fp16_forward or SESSION.history.compiled_float16
    tls.fp16_forward = False
    usage = usage_of_tensors(roots)
    if usage is not None:
        usage.scaled_backward_pending = True
        usage.scale_read = False
        if usage.mid_iteration():
            usage.backward_after_step = True
        tls.pending.add(usage)
        return verdicts
    tls.plain_backwards += 1
    if fp16 and not float16_graph(roots):
        fp16 = False  # the float16 forward was another (an evaluation left with grad on)
    # Only when the answer can matter: a float16 forward (AMP003) or a process that uses
    # GradScalers (AMP005). Plain fp32/bf16 training, and every scaled backward, pay nothing.
    if not (fp16 or uses_scalers()):
        return verdicts
    # The graph walk serves AMP005 only, which needs a scaler.
    leaves = leaves_of(roots) if uses_scalers() else None
    pending = tls.unscaled_backward
    if pending is None:
        tls.unscaled_backward = UnscaledBackward(user_site(), fp16, leaves)
        return verdicts
    pending.fp16 = pending.fp16 or fp16
    if pending.leaves is not None:
        pending.leaves = None if leaves is None else pending.leaves | leaves
    return verdicts


def after_backward() -> None:
    """A backward pass (not one inside another's) finished: what it accumulated into the
    gradients is the accumulation AMP016 looks for, not a write of someone else's."""
    if _inside_backward():
        return
    for record in thread_state().after_steps.values():
        if not record.cleared:
            record.after_backward()


def on_grad(outputs: tuple[Any, ...]) -> list[Verdict]:
    """``torch.autograd.grad``: does not accumulate ``.grad``, so only AMP001 applies."""
    if _inside_backward():
        return []
    if tracing(outputs):
        note_backward_traced(autocast_active())
        return []
    usage = usage_of_tensors(outputs)
    if usage is not None:
        usage.scaled_grad_taken = True
    if autocast_active():
        return [Verdict("AMP001", message_for("AMP001"), user_site())]
    return []


# Beyond this many graph nodes the walk is not worth its cost; the backward is then taken
# to reach every optimizer.
_MAX_NODES = 20_000


#: autograd node class -> the names of the tensors it saves for backward
_SAVED: dict[type, tuple[str, ...]] = {}


class _GraphTooLarge(Exception):
    """More than ``_MAX_NODES`` nodes: too costly to walk in a training step."""


def _graph_nodes(roots: tuple[Any, ...]) -> Iterator[Any]:
    """The autograd nodes a backward from ``roots`` runs, each once; raises
    :class:`_GraphTooLarge` past ``_MAX_NODES``."""
    stack = [getattr(root, "grad_fn", None) for root in roots]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if len(seen) > _MAX_NODES:
            raise _GraphTooLarge
        yield node
        stack.extend(next_node for next_node, _ in node.next_functions)


#: The autograd node of a compiled region's backward (AOTAutograd's CompiledFunction).
_COMPILED_BACKWARD = "CompiledFunctionBackward"


def _function_saved(node: Any) -> tuple[Any, ...]:
    try:
        saved = node.saved_tensors
    except RuntimeError:  # freed by an earlier backward
        return ()
    return tuple(t for t in saved or () if isinstance(t, torch.Tensor))


def float16_graph(roots: tuple[Any, ...]) -> bool:
    """Whether the graph a backward from ``roots`` runs saved a float16 tensor: an op that
    autocast ran in float16 (its matmuls save their float16 inputs). Asked only after a
    float16 autocast forward with grad, for a backward of a loss no scaler scaled (AMP003):
    the walk stops at the first float16 tensor, near the loss; a graph too large to walk
    counts as float16."""
    try:
        for node in _graph_nodes(roots):
            kind = type(node)
            if kind.__name__ == _COMPILED_BACKWARD:
                # A compiled region (AOTAutograd) saves its activations as a Function
                # does: a float16 autocast inside or around it saved float16 ones.
                if any(t.dtype is torch.float16 for t in _function_saved(node)):
                    return True
                continue
            names = _SAVED.get(kind)
            if names is None:
                names = _SAVED[kind] = tuple(
                    name
                    for name in dir(kind)
                    if name.startswith("_saved_") and not name.endswith("_raw")
                )
            for name in names:
                try:
                    saved = getattr(node, name)
                except RuntimeError:  # freed by an earlier backward
                    continue
                if isinstance(saved, torch.Tensor) and saved.dtype is torch.float16:
                    return True
    except _GraphTooLarge:
        return True
    return False


def leaves_of(roots: tuple[Any, ...]) -> set[int] | None:
    """ids of the leaf tensors a backward from ``roots`` accumulates gradients into.

    Runs only for a backward whose loss was not scaled in a process that uses scalers, so
    that AMP005 blames such a backward only when it reaches the stepped optimizer's
    parameters (a second model trained in fp32 next to the AMP one does not).
    """
    leaves: set[int] = set()
    try:
        for node in _graph_nodes(roots):
            variable = getattr(node, "variable", None)
            if variable is not None:
                leaves.add(id(variable))
    except _GraphTooLarge:
        return None
    for root in roots:
        if getattr(root, "grad_fn", None) is None:
            leaves.add(id(root))
    return leaves


def inside_scaler_step() -> bool:
    """Whether the optimizer.step() now running is the one inside a scaler.step()."""
    return thread_state().in_scaler_step > 0


def on_optimizer_step(optimizer: torch.optim.Optimizer) -> list[Verdict]:
    """Every ``optimizer.step()`` (the global pre-hook); the one inside scaler.step is legal."""
    tls = thread_state()
    plain_since = tls.plain_backwards != tls.plain_at_step.get(id(optimizer), 0)
    tls.plain_at_step[id(optimizer)] = tls.plain_backwards
    if tls.in_scaler_step:
        tls.inner_step_ran = True
        return []
    verdicts = []
    verdicts += _step_inside_autocast("optimizer.step()")
    for usage in list(tls.pending):
        if usage.bypassed_by(optimizer, plain_since):
            usage.bypassed = True
            if usage.stage(optimizer) is Stage.UNSCALED:
                why = (
                    "after scaler.unscale_(optimizer): its gradients are unscaled, but a step "
                    "whose gradients are inf/NaN is applied instead of skipped"
                )
            else:
                why = "while its gradients are still scaled"
                history = SESSION.history
                if history.scaled_step_applied is None:
                    history.scaled_step_applied = steps().current
            verdicts.append(Verdict("AMP004", message_for("AMP004", why=why), user_site()))
            break
    pending = tls.unscaled_backward
    tls.unscaled_backward = None
    if pending is not None and pending.fp16 and not _inside_torch_scaler_step():
        verdicts.append(Verdict("AMP003", message_for("AMP003"), pending.site))
    return verdicts


# torch.amp.GradScaler's methods that call optimizer.step(): the fused path in step(), and
# _maybe_opt_step() after the inf check.
_SCALER_STEP_NAMES = frozenset({"step", "_maybe_opt_step"})
# torch's class itself: install() rebinds the public name torch.amp.GradScaler to ours.
_TorchGradScaler = torch.amp.grad_scaler.GradScaler


def _inside_torch_scaler_step(limit: int = 32) -> bool:
    """Whether this optimizer.step() comes from a GradScaler that is not amplint's: one
    built before install() (or a torch subclass imported from elsewhere). Its loss was
    scaled, just not tagged, so the float16 backward before it had a scaler (no AMP003).
    Runs only when AMP003 would be reported, so the stack walk costs nothing per step."""
    frame = sys._getframe(1)
    while frame is not None and limit > 0:
        if frame.f_code.co_name in _SCALER_STEP_NAMES and isinstance(
            frame.f_locals.get("self"), _TorchGradScaler
        ):
            return True
        frame = frame.f_back  # type: ignore[assignment]
        limit -= 1
    return False


def on_clip(strict: bool | None, norm: object = None, measures_only: bool = False) -> list[Verdict]:
    """``clip_grad_norm_`` / ``clip_grad_value_`` / ``clip_grads_with_norm_``; ``strict``:
    ``error_if_nonfinite`` of ``clip_grad_norm_`` (None for the others); ``norm``: the
    total norm ``clip_grads_with_norm_`` was given; ``measures_only``: an infinite limit,
    which leaves the gradients as they are (a norm taken for logging is no AMP006)."""
    verdicts = []
    tls = thread_state()
    pending = [] if measures_only else list(tls.pending)
    if any(usage.grads_still_scaled() for usage in pending):
        how = "while they are still multiplied by the loss scale"
        message = message_for("AMP006", how=how, before="clipping")
        verdicts.append(Verdict("AMP006", message, user_site()))
    elif norm is not None and any(usage.took_scaled_norm(norm) for usage in pending):
        how = (
            "by a total norm that get_total_norm() took while they were still multiplied "
            "by the loss scale"
        )
        message = message_for("AMP006", how=how, before="get_total_norm()")
        verdicts.append(Verdict("AMP006", message, user_site()))
    if strict and uses_scalers():
        verdicts.append(
            Verdict("AMP018", message_for("AMP018", call="clip_grad_norm_"), user_site())
        )
    return verdicts


def on_total_norm(strict: bool) -> tuple[list[Verdict], list[ScalerUsage]]:
    """``get_total_norm``, the first half of torch 2.6's split clip; ``strict``: its
    ``error_if_nonfinite``. Also returns the scalers whose gradients are still scaled: the
    norm it returns is theirs to remember (see :func:`on_clip`)."""
    verdicts = []
    if strict and uses_scalers():
        verdicts.append(
            Verdict("AMP018", message_for("AMP018", call="get_total_norm"), user_site())
        )
    scaled = [usage for usage in list(thread_state().pending) if usage.grads_still_scaled()]
    return verdicts, scaled


def on_optimizer_zero_grad() -> list[Verdict]:
    # Gradients from before zero_grad no longer reach any step. Inside autocast it is
    # harmless (it computes nothing): not AMP012, as the static rule has it.
    tls = thread_state()
    tls.unscaled_backward = None
    tls.zero_grads += 1
    return []


def _sample_grads(optimizer: torch.optim.Optimizer) -> list[_GradSample]:
    samples: list[_GradSample] = []
    for group in optimizer.param_groups:
        for param in group["params"]:
            grad = param.grad
            if grad is not None:
                samples.append((weakref.ref(param), weakref.ref(grad), grad._version))
                if len(samples) == _SAMPLED_GRADS:
                    return samples
    return samples


def _accumulated_since_step(usage: ScalerUsage, optimizer: torch.optim.Optimizer) -> bool:
    """Whether the gradients ``optimizer`` is about to apply still hold those of this
    scaler's previous step of it (AMP016): a backward ran since, no zero_grad() (of any
    optimizer or module: in doubt, silence), and the sampled gradients are the very tensors
    the step left, written to since (accumulated into). ``set_to_none`` zeroing, and
    ``p.grad = None``, give new tensors; a hand-written ``p.grad.zero_()`` loop is the one
    zeroing this cannot see."""
    record = usage.after_step.get(id(optimizer))
    if record is None or record.cleared:
        return False
    tls = thread_state()
    if tls.zero_grads != record.zero_grads or tls.backwards_run == record.writes:
        return False
    if not record.samples:
        return False
    for param_ref, grad_ref, version in record.samples:
        param, grad = param_ref(), grad_ref()
        if param is None or grad is None or param.grad is not grad or grad._version <= version:
            return False
    return True


def _step_inside_autocast(call: str) -> list[Verdict]:
    """AMP012 for ``call`` in an enabled autocast region, unless a backward ran in that
    same region: AMP001 reported it, and moving the backward out moves the step too."""
    if not autocast_active():
        return []
    tls = thread_state()
    region = tls.backward_region
    if region is not None and any(r is region for r in tls.autocast_regions):
        return []
    return [Verdict("AMP012", message_for("AMP012", call=call), user_site())]


def on_module_zero_grad() -> list[Verdict]:
    tls = thread_state()
    tls.unscaled_backward = None
    tls.zero_grads += 1
    return []
