"""``GradScaler``: torch's GradScaler with usage checks around each of its methods.

Every method calls torch's own through ``super()`` and only adds bookkeeping and checks
before or after it, so numerics, errors, ``state_dict()`` and the fused-optimizer protocol
are torch's. The checks read Python-side state only (stages, flags, dtypes): no tensor is
read back, so they add no host-device synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

from . import health
from .findings import AmpUsageError, message_for
from .frames import Site, user_site
from .reporting import deprecated_api, emit, get_mode, is_ignored, step_counter
from .state import (
    ScalerUsage,
    Stage,
    autocast_active,
    note_construction,
    note_enabled_scaler,
    only_bfloat16_seen,
    thread_state,
)

__all__ = ["CpuGradScaler", "CudaGradScaler", "GradScaler"]

_T = TypeVar("_T")


def _tag(value: Any, scaler: GradScaler) -> bool:
    """Mark scaled outputs so a later backward knows its loss went through ``scale()``.

    Returns False when ``value`` holds an iterator we must not consume.
    """
    if isinstance(value, torch.Tensor):
        value._amplint_scaler = scaler  # type: ignore[attr-defined]
        return True
    if isinstance(value, (list, tuple)):
        return all([_tag(item, scaler) for item in value])
    return False


@contextmanager
def _torch_raises_next(code: str, message: str, site: Site) -> Iterator[None]:
    """Report a misuse that torch is about to reject, then let torch's call run.

    In warn/log mode the report comes first and torch's own exception follows untouched.
    In raise mode the two become one ``AmpUsageError`` (a ``RuntimeError``) that carries
    the code and keeps torch's message, chained to torch's exception.
    """
    emit(code, message, site, raise_now=False)
    if get_mode() != "raise" or is_ignored(code):
        yield
        return
    try:
        yield
    except (RuntimeError, ValueError) as err:
        raise AmpUsageError(f"{site[0]}:{site[1]}: {message}\n{err}", code) from err
    raise AmpUsageError(f"{site[0]}:{site[1]}: {message}", code)


class GradScaler(torch.amp.GradScaler):
    """Drop-in for :class:`torch.amp.GradScaler` that reports AMP misuse while training."""

    def __init__(
        self,
        device: str = "cuda",
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        super().__init__(
            device,
            init_scale=init_scale,
            growth_factor=growth_factor,
            backoff_factor=backoff_factor,
            growth_interval=growth_interval,
            enabled=enabled,
        )
        site = user_site()
        recreated = note_construction(site, step_counter.current)
        self._amplint = ScalerUsage(site)
        if self._enabled:
            note_enabled_scaler()
        elif enabled and device == "cuda":
            why = "CUDA is not available, so this GradScaler (default device 'cuda') never scales"
            fix = 'pass the device that trains, e.g. GradScaler("cpu"), or enabled=False'
            emit("AMP017", message_for("AMP017", what="GradScaler", why=why, fix=fix), site)
        if recreated:
            emit("AMP010", message_for("AMP010"), site)

    # Pickling: torch copies __dict__; our bookkeeping is per-process and not picklable.

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_amplint", None)
        state.pop("_amplint_health", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._amplint = ScalerUsage(("<unpickled>", 0))

    def _usage(self) -> ScalerUsage:
        # Tolerates instances made without __init__ (copy.copy, custom __new__ paths).
        usage = self.__dict__.get("_amplint")
        if usage is None:
            usage = self._amplint = ScalerUsage(("<unknown>", 0))
        return usage

    # The iteration -------------------------------------------------------------------

    def scale(self, outputs: Any) -> Any:
        scaled = super().scale(outputs)
        if self._enabled:
            self._usage().scaled(_tag(scaled, self))
            monitor = health.active()
            if monitor is not None:
                monitor.for_scaler(self).on_scale(outputs, self)
        return scaled

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if not self._enabled:
            return super().unscale_(optimizer)
        usage = self._usage()
        self._check_half_params(usage, optimizer)
        problem = usage.unscale_problem(optimizer)
        if problem is None:
            monitor = health.active()
            if monitor is not None:
                # Reads the scaled gradients only; torch's unscale_ below is unchanged.
                monitor.for_scaler(self).on_unscale(optimizer, self)
            super().unscale_(optimizer)
        else:
            message = message_for("AMP011", what=problem)
            with _torch_raises_next("AMP011", message, user_site()):
                super().unscale_(optimizer)
        usage.unscaled(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> float | None:
        tls = thread_state()
        if autocast_active():
            emit("AMP012", message_for("AMP012", call="scaler.step()"), user_site())
        if not self._enabled:
            # A scaler disabled on purpose (`enabled=use_amp`, or torch's own tests running
            # fp16 with scaling off) is a choice, not a forgotten scaler: no AMP003.
            tls.unscaled_backward = None
            return self._call_step(super().step, optimizer, *args, **kwargs)

        usage = self._usage()
        if "closure" in kwargs:
            with _torch_raises_next("AMP019", message_for("AMP019"), user_site()):
                return self._call_step(super().step, optimizer, *args, **kwargs)
        if args and callable(args[0]):
            # Passed on positionally, torch hands it to optimizer.step() unchecked.
            emit("AMP019", message_for("AMP019"), user_site())
        if usage.step_problem(optimizer):
            with _torch_raises_next("AMP002", message_for("AMP002"), user_site()):
                return self._call_step(super().step, optimizer, *args, **kwargs)
        pending = tls.unscaled_backward
        if pending is not None and not usage.untracked_scale and pending.touches(optimizer):
            emit("AMP005", message_for("AMP005"), pending.site)
        tls.unscaled_backward = None
        self._check_half_params(usage, optimizer)
        monitor = health.active()
        if monitor is None:
            result = self._call_step(super().step, optimizer, *args, **kwargs)
        else:
            health.scaler_step_begin(self, optimizer, usage.stage(optimizer) is Stage.UNSCALED)
            result = self._call_step(super().step, optimizer, *args, **kwargs)
            health.scaler_step_end(self, optimizer)
        usage.stepped(optimizer)
        return result

    def _call_step(self, step: Callable[..., _T], optimizer: Any, *args: Any, **kwargs: Any) -> _T:
        # The optimizer.step() that torch calls from here is the legal one: the global
        # optimizer hook must not report it as a bypass.
        step_counter.count(optimizer)
        tls = thread_state()
        tls.in_scaler_step += 1
        try:
            return step(optimizer, *args, **kwargs)
        finally:
            tls.in_scaler_step -= 1

    def update(self, new_scale: float | torch.Tensor | None = None) -> None:
        if not self._enabled:
            return super().update(new_scale)
        if autocast_active():
            emit("AMP012", message_for("AMP012", call="scaler.update()"), user_site())
        usage = self._usage()
        if not usage.bf16_reported and only_bfloat16_seen():
            usage.bf16_reported = True
            emit("AMP014", message_for("AMP014"), usage.site)
        monitor = health.active()
        watched = None if monitor is None else monitor.for_scaler(self)
        if watched is not None:
            watched.on_update(self, new_scale)
        super().update(new_scale)
        usage.updated()
        thread_state().pending.discard(self)
        if watched is not None:
            watched.after_update()

    def get_scale(self) -> float:
        if self._enabled:
            self._usage().read_scale()
        return super().get_scale()

    def state_dict(self) -> dict[str, Any]:
        if self._enabled and self._usage().mid_iteration():
            emit("AMP013", message_for("AMP013"), user_site())
        return super().state_dict()

    # Helpers -------------------------------------------------------------------------

    def _check_half_params(self, usage: ScalerUsage, optimizer: torch.optim.Optimizer) -> None:
        # Once per optimizer: the parameter list is walked in Python, which a per-step
        # check on a large model could not afford.
        key = id(optimizer)
        if key in usage.fp16_checked:
            return
        usage.fp16_checked.add(key)
        if any(_half(p) for group in optimizer.param_groups for p in group["params"]):
            emit("AMP009", message_for("AMP009"), user_site())


def _half(param: Any) -> bool:
    return isinstance(param, torch.Tensor) and param.dtype is torch.float16


class CudaGradScaler(GradScaler):
    """Stands in for the deprecated ``torch.cuda.amp.GradScaler``; reports AMP007."""

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        replacement = "torch.amp.GradScaler('cuda', args...)"
        deprecated_api("torch.cuda.amp.GradScaler", replacement, user_site())
        super().__init__(
            "cuda", init_scale, growth_factor, backoff_factor, growth_interval, enabled
        )


class CpuGradScaler(GradScaler):
    """Stands in for the deprecated ``torch.cpu.amp.GradScaler``; reports AMP007."""

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        replacement = "torch.amp.GradScaler('cpu', args...)"
        deprecated_api("torch.cpu.amp.GradScaler", replacement, user_site())
        super().__init__("cpu", init_scale, growth_factor, backoff_factor, growth_interval, enabled)


def tagged_scaler(tensors: Iterable[torch.Tensor]) -> GradScaler | None:
    """The scaler whose ``scale()`` produced one of ``tensors``, if any."""
    for tensor in tensors:
        scaler = getattr(tensor, "_amplint_scaler", None)
        if scaler is not None:
            return scaler
    return None
