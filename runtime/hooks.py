"""Checks that run outside the GradScaler: backward, optimizer steps, clipping, zero_grad.

``install.py`` puts these wrappers in place of torch's functions and registers the global
optimizer step pre-hook; each wrapper runs its check and then calls torch's original with
the same arguments. None of them reads a tensor's value.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from .findings import message_for
from .frames import user_site
from .reporting import emit, step_counter
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
        roots = _roots(tensors)
        _note_backward(roots)
        # A one-shot iterable was consumed above; hand torch the tuple instead.
        if not isinstance(tensors, (torch.Tensor, list, tuple)):
            tensors = roots
        return original(tensors, *args, **kwargs)

    return backward


def wrap_grad(original: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.autograd.grad``: does not accumulate ``.grad``, so only AMP001 applies."""

    @functools.wraps(original)
    def grad(outputs: Any, *args: Any, **kwargs: Any) -> Any:
        if not _inside_backward() and autocast_active():
            emit("AMP001", message_for("AMP001"), user_site())
        return original(outputs, *args, **kwargs)

    return grad


def optimizer_step_pre_hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Global pre-hook on every ``optimizer.step()``; silent for the one inside scaler.step."""
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
    if pending is not None and pending.fp16:
        emit("AMP003", message_for("AMP003"), pending.site)


def wrap_clip(
    original: Callable[..., Any], error_if_nonfinite_at: int | None = None
) -> Callable[..., Any]:
    """``clip_grad_norm_`` / ``clip_grad_value_``: clipping scaled gradients (AMP006), and
    for ``clip_grad_norm_`` (whose ``error_if_nonfinite`` is positional argument
    ``error_if_nonfinite_at`` after ``parameters``) turning overflow into errors (AMP018)."""

    @functools.wraps(original)
    def clip(parameters: Any, *args: Any, **kwargs: Any) -> Any:
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
        return original(parameters, *args, **kwargs)

    return clip


def wrap_optimizer_zero_grad(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def zero_grad(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        # Gradients from before zero_grad no longer reach any step.
        thread_state().unscaled_backward = None
        if autocast_active():
            emit("AMP012", message_for("AMP012", call="optimizer.zero_grad()"), user_site())
        return original(self, *args, **kwargs)

    return zero_grad


def wrap_module_zero_grad(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def zero_grad(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        thread_state().unscaled_backward = None
        return original(self, *args, **kwargs)

    return zero_grad
