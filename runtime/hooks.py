"""Wrappers on torch's functions outside the GradScaler: backward, optimizer steps,
clipping, zero_grad.

``install.py`` puts these wrappers in place of torch's functions and registers the global
optimizer step pre-hook; each wrapper reports its event to the usage state machine
(``usage.py``), shows the findings it decides, and then calls torch's original with the
same arguments. None of them reads a tensor's value. A failure of amplint's own code
becomes an internal-error note (``reporting.run_check``): torch's call still runs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from . import health, usage
from .compiled import tracing
from .reporting import emit, run_check, steps
from .usage import ScalerUsage, Verdict

__all__ = [
    "optimizer_step_pre_hook",
    "wrap_backward",
    "wrap_clip",
    "wrap_grad",
    "wrap_module_zero_grad",
    "wrap_optimizer_zero_grad",
    "wrap_total_norm",
]


def _show(verdicts: list[Verdict]) -> None:
    for verdict in verdicts:
        emit(verdict.code, verdict.message, verdict.site, step=verdict.step)


def _outputs(outputs: Any) -> tuple[Any, ...]:
    if isinstance(outputs, torch.Tensor):
        return (outputs,)
    if isinstance(outputs, (list, tuple)):
        return tuple(outputs)
    return ()


def wrap_backward(original: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.autograd.backward`` (``Tensor.backward`` goes through it too)."""

    def check(roots: tuple[Any, ...]) -> None:
        _show(usage.on_backward(roots))

    @functools.wraps(original)
    def backward(tensors: Any, *args: Any, **kwargs: Any) -> Any:
        # No helper function here: Dynamo compiles the frames this one calls (as it does
        # those torch's backward calls), and a frame of amplint's would be one more.
        try:
            roots = (tensors,) if isinstance(tensors, torch.Tensor) else tuple(tensors)
        except TypeError:
            return original(tensors, *args, **kwargs)  # not tensors: torch's error, not ours
        # A one-shot iterable was consumed above; hand torch the tuple instead.
        if not isinstance(tensors, (torch.Tensor, list, tuple)):
            tensors = roots
        run_check("the backward check", check, roots)
        result = original(tensors, *args, **kwargs)
        run_check("the backward check", usage.after_backward)
        return result

    return backward


def wrap_grad(original: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.autograd.grad``."""

    def check(outputs: Any) -> None:
        _show(usage.on_grad(_outputs(outputs)))

    @functools.wraps(original)
    def grad(outputs: Any, *args: Any, **kwargs: Any) -> Any:
        run_check("the autograd.grad check", check, outputs)
        return original(outputs, *args, **kwargs)

    return grad


def optimizer_step_pre_hook(
    optimizer: torch.optim.Optimizer, args: Any = (), kwargs: Any = None
) -> None:
    """Global pre-hook on every ``optimizer.step()``; silent for the one inside scaler.step.
    Compiled code calls it with the optimizer alone (see ``install._replay_step_hook``)."""
    run_check("the optimizer.step() check", _check_optimizer_step, optimizer)


def _check_optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    verdicts = usage.on_optimizer_step(optimizer)
    _show(verdicts)
    if not usage.inside_scaler_step():
        steps().count(optimizer)


def _argument(
    args: tuple[Any, ...], kwargs: dict[str, Any], at: int, name: str, default: Any = None
) -> Any:
    """An argument given positionally at ``at`` (after the first) or by ``name``."""
    return args[at] if len(args) > at else kwargs.get(name, default)


def wrap_clip(
    original: Callable[..., Any],
    error_if_nonfinite_at: int | None = None,
    total_norm_at: int | None = None,
) -> Callable[..., Any]:
    """``clip_grad_norm_`` / ``clip_grad_value_`` / ``clip_grads_with_norm_``: clipping
    scaled gradients (AMP006), and for ``clip_grad_norm_`` (whose ``error_if_nonfinite`` is
    positional argument ``error_if_nonfinite_at`` after ``parameters``) turning overflow into
    errors (AMP018). ``total_norm_at``: where ``clip_grads_with_norm_`` takes its norm,
    which may have been taken of scaled gradients."""

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        strict = None
        if error_if_nonfinite_at is not None:
            flag = _argument(args, kwargs, error_if_nonfinite_at, "error_if_nonfinite", False)
            strict = bool(flag)
        norm = None
        if total_norm_at is not None:
            norm = _argument(args, kwargs, total_norm_at, "total_norm")
        # max_norm (clip_value) comes first after the parameters in all three.
        limit = args[0] if args else kwargs.get("max_norm", kwargs.get("clip_value"))
        _show(usage.on_clip(strict, norm, measures_only=_infinite(limit)))

    @functools.wraps(original)
    def clip(parameters: Any, *args: Any, **kwargs: Any) -> Any:
        # Traced by torch.compile: amplint's bookkeeping would only add graphs.
        if tracing():
            return original(parameters, *args, **kwargs)
        run_check("the gradient clipping check", check, args, kwargs)
        if health.active() is not None:
            measured = run_check(
                "the numerical-health check before clipping", health.before_clip, parameters
            )
            if measured is not None:
                parameters = measured
        return original(parameters, *args, **kwargs)

    return clip


def _infinite(limit: object) -> bool:
    """``max_norm=float("inf")``: a clip that only measures the norm and changes nothing."""
    return isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit == math.inf


def wrap_total_norm(original: Callable[..., Any]) -> Callable[..., Any]:
    """``get_total_norm(tensors, norm_type, error_if_nonfinite, foreach)``, the first half of
    torch 2.6's split clip: overflow turned into errors (AMP018), and the norm of still-scaled
    gradients remembered for the ``clip_grads_with_norm_`` that may clip with it (AMP006)."""

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[ScalerUsage]:
        verdicts, scaled = usage.on_total_norm(
            bool(_argument(args, kwargs, 1, "error_if_nonfinite", False))
        )
        _show(verdicts)
        return scaled

    def remember(scaled: list[ScalerUsage], norm: Any) -> None:
        if isinstance(norm, torch.Tensor):
            for record in scaled:
                record.note_scaled_norm(norm)

    @functools.wraps(original)
    def get_total_norm(tensors: Any, *args: Any, **kwargs: Any) -> Any:
        if tracing():
            return original(tensors, *args, **kwargs)
        scaled = run_check("the gradient norm check", check, args, kwargs)
        norm = original(tensors, *args, **kwargs)
        if scaled:
            run_check("the gradient norm check", remember, scaled, norm)
        return norm

    return get_total_norm


def wrap_optimizer_zero_grad(original: Callable[..., Any]) -> Callable[..., Any]:
    def check() -> None:
        _show(usage.on_optimizer_zero_grad())

    @functools.wraps(original)
    def zero_grad(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        run_check("the optimizer.zero_grad() check", check)
        return original(self, *args, **kwargs)

    return zero_grad


def wrap_module_zero_grad(original: Callable[..., Any]) -> Callable[..., Any]:
    def check() -> None:
        _show(usage.on_module_zero_grad())

    @functools.wraps(original)
    def zero_grad(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if not tracing():  # torch traces Module.zero_grad: so do we, without bookkeeping
            run_check("the module.zero_grad() check", check)
        return original(self, *args, **kwargs)

    return zero_grad
