"""Checks that run outside the GradScaler: backward, optimizer steps, clipping, zero_grad.

``install.py`` puts these wrappers in place of torch's functions and registers the global
optimizer step pre-hook; each wrapper runs its check and then calls torch's original with
the same arguments. None of them reads a tensor's value. A check that fails (amplint's bug)
becomes an internal-error note (``reporting.run_check``): torch's call still runs.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import torch

from .findings import message_for
from .compiled import note_backward_traced, tracing
from .frames import user_site
from .reporting import emit, run_check, step_counter
from .scaler import tagged_scaler
from .state import UnscaledBackward, autocast_active, thread_state, uses_scalers

__all__ = [
    "optimizer_step_pre_hook",
    "wrap_backward",
    "wrap_clip",
    "wrap_grad",
    "wrap_module_zero_grad",
    "wrap_optimizer_zero_grad",
]


def _inside_backward() -> bool:
    # A backward started by the autograd engine itself (reentrant checkpointing, a hook)
    # is torch's business: its loss is not the user's, scaled or not.
    return torch._C._current_autograd_node() is not None


def _note_backward(roots: tuple[Any, ...]) -> None:
    if _inside_backward():
        return
    if tracing(roots):
        note_backward_traced(autocast_active())
        return
    tls = thread_state()
    if autocast_active():
        emit("AMP001", message_for("AMP001"), user_site())
    fp16 = tls.fp16_forward
    tls.fp16_forward = False
    scaler = tagged_scaler(roots)
    if scaler is not None:
        scaler._usage().scaled_backward()
        tls.pending.add(scaler)
        return
    # Only when the answer can matter: a float16 forward (AMP003) or a process that uses
    # GradScalers (AMP005). Plain fp32/bf16 training, and every scaled backward, pay nothing.
    if not (fp16 or uses_scalers()):
        return
    # The graph walk serves AMP005 only, which needs a scaler.
    leaves = _leaves(roots) if uses_scalers() else None
    pending = tls.unscaled_backward
    if pending is None:
        tls.unscaled_backward = UnscaledBackward(user_site(), fp16, leaves)
        return
    pending.fp16 = pending.fp16 or fp16
    if pending.leaves is not None:
        if leaves is None:
            pending.leaves = None
        else:
            pending.leaves |= leaves


# Beyond this many graph nodes the walk is not worth its cost; the backward is then taken
# to reach every optimizer.
_MAX_NODES = 20_000


def _leaves(roots: tuple[Any, ...]) -> set[int] | None:
    """ids of the leaf tensors a backward from ``roots`` accumulates gradients into.

    Runs only for a backward whose loss was not scaled in a process that uses scalers, so
    that AMP005 blames such a backward only when it reaches the stepped optimizer's
    parameters (a second model trained in fp32 next to the AMP one does not).
    """
    stack = [getattr(root, "grad_fn", None) for root in roots]
    seen: set[int] = set()
    leaves: set[int] = set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if len(seen) > _MAX_NODES:
            return None
        variable = getattr(node, "variable", None)
        if variable is not None:
            leaves.add(id(variable))
        stack.extend(next_node for next_node, _ in node.next_functions)
    for root in roots:
        if getattr(root, "grad_fn", None) is None:
            leaves.add(id(root))
    return leaves


def _roots(tensors: Any) -> tuple[Any, ...]:
    if isinstance(tensors, torch.Tensor):
        return (tensors,)
    return tuple(tensors)


def wrap_backward(original: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.autograd.backward`` (``Tensor.backward`` goes through it too)."""

    @functools.wraps(original)
    def backward(tensors: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            roots = _roots(tensors)
        except TypeError:
            return original(tensors, *args, **kwargs)  # not tensors: torch's error, not ours
        # A one-shot iterable was consumed above; hand torch the tuple instead.
        if not isinstance(tensors, (torch.Tensor, list, tuple)):
            tensors = roots
        run_check("the backward check", _note_backward, roots)
        return original(tensors, *args, **kwargs)

    return backward


def wrap_grad(original: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.autograd.grad``: does not accumulate ``.grad``, so only AMP001 applies."""

    @functools.wraps(original)
    def grad(outputs: Any, *args: Any, **kwargs: Any) -> Any:
        run_check("the autograd.grad check", _check_grad, outputs)
        return original(outputs, *args, **kwargs)

    return grad


def _check_grad(outputs: Any) -> None:
    if _inside_backward():
        return
    if tracing(_outputs(outputs)):
        note_backward_traced(autocast_active())
        return
    if autocast_active():
        emit("AMP001", message_for("AMP001"), user_site())


def _outputs(outputs: Any) -> tuple[Any, ...]:
    if isinstance(outputs, torch.Tensor):
        return (outputs,)
    if isinstance(outputs, (list, tuple)):
        return tuple(outputs)
    return ()


def optimizer_step_pre_hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Global pre-hook on every ``optimizer.step()``; silent for the one inside scaler.step."""
    run_check("the optimizer.step() check", _check_optimizer_step, optimizer)


def _check_optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    tls = thread_state()
    if tls.in_scaler_step:
        tls.inner_step_ran = True
        return
    step_counter.count(optimizer)
    if autocast_active():
        emit("AMP012", message_for("AMP012", call="optimizer.step()"), user_site())
    for scaler in list(tls.pending):
        if scaler._usage().bypassed_by(optimizer):
            emit("AMP004", message_for("AMP004"), user_site())
            break
    pending = tls.unscaled_backward
    tls.unscaled_backward = None
    if pending is not None and pending.fp16 and not _inside_torch_scaler_step():
        emit("AMP003", message_for("AMP003"), pending.site)


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


def wrap_clip(
    original: Callable[..., Any], error_if_nonfinite_at: int | None = None
) -> Callable[..., Any]:
    """``clip_grad_norm_`` / ``clip_grad_value_``: clipping scaled gradients (AMP006), and
    for ``clip_grad_norm_`` (whose ``error_if_nonfinite`` is positional argument
    ``error_if_nonfinite_at`` after ``parameters``) turning overflow into errors (AMP018)."""

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        for scaler in list(thread_state().pending):
            if scaler._usage().grads_still_scaled():
                emit("AMP006", message_for("AMP006"), user_site())
                break
        if error_if_nonfinite_at is not None and uses_scalers():
            if len(args) > error_if_nonfinite_at:
                strict = args[error_if_nonfinite_at]
            else:
                strict = kwargs.get("error_if_nonfinite", False)
            if strict:
                emit("AMP018", message_for("AMP018"), user_site())

    @functools.wraps(original)
    def clip(parameters: Any, *args: Any, **kwargs: Any) -> Any:
        run_check("the gradient clipping check", check, args, kwargs)
        return original(parameters, *args, **kwargs)

    return clip


def wrap_optimizer_zero_grad(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def zero_grad(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        run_check("the optimizer.zero_grad() check", _check_optimizer_zero_grad)
        return original(self, *args, **kwargs)

    return zero_grad


def _check_optimizer_zero_grad() -> None:
    # Gradients from before zero_grad no longer reach any step.
    thread_state().unscaled_backward = None
    if autocast_active():
        emit("AMP012", message_for("AMP012", call="optimizer.zero_grad()"), user_site())


def wrap_module_zero_grad(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def zero_grad(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        run_check("the module.zero_grad() check", _forget_unscaled_backward)
        return original(self, *args, **kwargs)

    return zero_grad


def _forget_unscaled_backward() -> None:
    thread_state().unscaled_backward = None
