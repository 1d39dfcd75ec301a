"""``GradScaler``: torch's GradScaler with usage checks around each of its methods.

Every method calls torch's own through ``super()`` and only adds bookkeeping and checks
before or after it, so numerics, errors, ``state_dict()`` and the fused-optimizer protocol
are torch's. The checks read Python-side state only (stages, flags, dtypes): no tensor is
read back, so they add no host-device synchronisation.

amplint's part of each method runs through ``reporting.run_check``: a failure of amplint's
own code becomes an internal-error note and torch's call runs as it would without amplint.
torch's calls are never inside it, so torch's exceptions reach the user as torch raised
them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.amp.grad_scaler
import torch.cpu.amp.grad_scaler
import torch.cuda.amp.grad_scaler

from . import health, usage
from .findings import AmpUsageError, message_for
from .frames import user_site
from .reporting import (
    deprecated_api,
    emit,
    get_mode,
    is_ignored,
    may_raise,
    run_check,
    steps,
    torch_disabling,
)
from .session import ThreadState
from .state import note_construction, note_enabled_scaler, thread_state
from .usage import ScalerUsage, Stage, Verdict

__all__ = ["CpuGradScaler", "CudaGradScaler", "GradScaler"]

_T = TypeVar("_T")


def _show(verdicts: list[Verdict] | None) -> Verdict | None:
    """Show the findings the usage state machine decided; return the one torch is about
    to reject (shown by :func:`_torch_raises_next`), if any."""
    rejected = None
    for verdict in verdicts or ():
        if verdict.rejected:
            rejected = verdict
        else:
            emit(verdict.code, verdict.message, verdict.site, step=verdict.step)
    return rejected


@contextmanager
def _torch_raises_next(misuse: Verdict) -> Iterator[None]:
    """Report a misuse that torch is about to reject, then let torch's call run.

    In warn/log mode the report comes first and torch's own exception follows untouched.
    In raise mode the two become one ``AmpUsageError`` (a ``RuntimeError``) that carries
    the code and keeps torch's message, chained to torch's exception. After an internal
    error of amplint (``may_raise()`` is False) torch's call runs as in warn mode.
    """
    code, message, site = misuse.code, misuse.message, misuse.site
    run_check(f"the {code} check", emit, code, message, site, raise_now=False, step=misuse.step)
    if get_mode() != "raise" or is_ignored(code) or not may_raise():
        yield
        return
    try:
        yield
    except (RuntimeError, ValueError) as err:
        raise AmpUsageError(f"{site[0]}:{site[1]}: {message}\n{err}", code) from err
    raise AmpUsageError(f"{site[0]}:{site[1]}: {message}", code)


def _enter_scaler_step() -> ThreadState:
    # The optimizer.step() that torch calls from here is the legal one: the global
    # optimizer hook must not report it as a bypass.
    tls = thread_state()
    tls.in_scaler_step += 1
    return tls


class _StandIn(type):
    """``isinstance(x, torch.amp.GradScaler)`` holds under amplint where it holds without:
    the public name is amplint's class then, and a scaler built from torch's own module
    (``from torch.amp.grad_scaler import GradScaler``, FSDP's ShardedGradScaler) is an
    instance of torch's class, which each stand-in names in ``_stands_in_for``."""

    _stands_in_for: type

    def __instancecheck__(cls, instance: Any) -> bool:
        return type.__instancecheck__(cls, instance) or isinstance(instance, cls._stands_in_for)


class GradScaler(torch.amp.grad_scaler.GradScaler, metaclass=_StandIn):
    """Drop-in for :class:`torch.amp.GradScaler` that reports AMP misuse while training."""

    # torch's class in its own module, which install() leaves alone
    _stands_in_for = torch.amp.grad_scaler.GradScaler

    def __init__(
        self,
        device: str = "cuda",
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        asked = enabled
        context: Any = None
        if enabled and device == "cuda" and not torch.cuda.is_available():
            context = torch_disabling("GradScaler")  # torch's "... Disabling." warning
            if context is None:
                enabled = False
        build = functools.partial(
            super().__init__,
            device,
            init_scale=init_scale,
            growth_factor=growth_factor,
            backoff_factor=backoff_factor,
            growth_interval=growth_interval,
            enabled=enabled,
        )
        # No context manager unless one is needed: a scaler built inside compiled code
        # would show Dynamo frames of contextlib's that plain torch's __init__ has not.
        if context is None:
            build()
        else:
            with context:
                build()
        run_check("the GradScaler() check", self._after_init, device, asked)

    def _after_init(self, device: str, enabled: bool) -> None:
        site = user_site()
        recreated, since = note_construction(site, steps().latest)
        self._amplint = ScalerUsage(site)
        if self._enabled:
            steps().built(self._amplint)
            note_enabled_scaler()
        elif enabled and device == "cuda":
            # 'cuda' is GradScaler's default, and timm passes it explicitly: say neither.
            why = "CUDA is not available, so this GradScaler for device 'cuda' never scales"
            fix = 'pass the device that trains, e.g. GradScaler("cpu"), or enabled=False'
            emit("AMP017", message_for("AMP017", what="GradScaler", why=why, fix=fix), site)
        if recreated:
            emit("AMP010", message_for("AMP010"), site, step=since, occurrences=recreated)

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
        return usage.of(self)

    # The iteration -------------------------------------------------------------------
    #
    # Each method: amplint's checks before torch's call (run_check), torch's call (never
    # inside run_check), amplint's bookkeeping after it (run_check). The numerical-health
    # statistics are checked apart, so that their failure leaves the usage checks working.

    def scale(self, outputs: Any) -> Any:
        scaled = super().scale(outputs)
        if self._enabled:
            run_check("the GradScaler.scale() bookkeeping", self._after_scale, scaled)
            if health.active() is not None:
                run_check(
                    "the numerical-health check in GradScaler.scale()",
                    self._health_scale,
                    outputs,
                )
        return scaled

    def _after_scale(self, scaled: Any) -> None:
        record = self._usage()
        usage.on_scale(record, usage.tag(scaled, record))

    def _health_scale(self, outputs: Any) -> None:
        monitor = health.active()
        if monitor is not None:
            monitor.for_scaler(self).on_scale(outputs, self)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if not self._enabled:
            return super().unscale_(optimizer)
        misuse = run_check("the GradScaler.unscale_() check", self._before_unscale, optimizer)
        if misuse is None:
            if health.active() is not None:
                # Reads the scaled gradients only; torch's unscale_ below is unchanged.
                run_check(
                    "the numerical-health check in GradScaler.unscale_()",
                    self._health_unscale,
                    optimizer,
                )
            super().unscale_(optimizer)
        else:
            with _torch_raises_next(misuse):
                super().unscale_(optimizer)
        run_check("the GradScaler.unscale_() bookkeeping", self._after_unscale, optimizer)

    def _before_unscale(self, optimizer: torch.optim.Optimizer) -> Verdict | None:
        return _show(usage.on_unscale(self._usage(), optimizer))

    def _after_unscale(self, optimizer: torch.optim.Optimizer) -> None:
        usage.on_unscaled(self._usage(), optimizer)

    def _health_unscale(self, optimizer: torch.optim.Optimizer) -> None:
        monitor = health.active()
        if monitor is not None:
            monitor.for_scaler(self).on_unscale(optimizer, self)

    def step(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> float | None:
        misuse = run_check(
            "the GradScaler.step() check", self._before_step, optimizer, args, kwargs
        )
        if misuse is not None:
            with _torch_raises_next(misuse):
                return self._call_step(super().step, optimizer, *args, **kwargs)
        if not self._enabled:
            return self._call_step(super().step, optimizer, *args, **kwargs)
        watched = None
        if health.active() is not None:
            watched = run_check(
                "the numerical-health check in GradScaler.step()",
                self._health_step_begin,
                optimizer,
            )
        result = self._call_step(super().step, optimizer, *args, **kwargs)
        if watched:
            run_check(
                "the numerical-health check in GradScaler.step()",
                health.scaler_step_end,
                self,
                optimizer,
            )
        run_check("the GradScaler.step() bookkeeping", self._after_step, optimizer)
        return result

    def _before_step(
        self, optimizer: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Verdict | None:
        """The checks before torch's step; a misuse torch is about to reject, or None."""
        verdicts = usage.on_step(
            self._usage(),
            optimizer,
            self._enabled,
            closure_keyword="closure" in kwargs,
            closure_positional=bool(args) and callable(args[0]),
        )
        return _show(verdicts)

    def _after_step(self, optimizer: torch.optim.Optimizer) -> None:
        usage.on_stepped(self._usage(), optimizer, user_site())

    def _health_step_begin(self, optimizer: torch.optim.Optimizer) -> bool:
        unscaled = self._usage().stage(optimizer) is Stage.UNSCALED
        health.scaler_step_begin(self, optimizer, unscaled)
        return True

    def _call_step(self, step: Callable[..., _T], optimizer: Any, *args: Any, **kwargs: Any) -> _T:
        # amplint's bookkeeping first, each part on its own: if it fails, torch still steps.
        tls = run_check("the GradScaler.step() marker", _enter_scaler_step)
        try:
            result = step(optimizer, *args, **kwargs)
        finally:
            if tls is not None:
                tls.in_scaler_step -= 1
        # A step torch refused (step() twice without update()) raised before any step ran.
        # A disabled scaler is no half of a GAN's iteration to wait for.
        scaler = self._usage() if self._enabled else None
        run_check("the step counter", steps().count, optimizer, scaler)
        return result

    def update(self, new_scale: float | torch.Tensor | None = None) -> None:
        if not self._enabled:
            return super().update(new_scale)
        run_check("the GradScaler.update() check", self._before_update)
        watched = None
        if health.active() is not None:
            watched = run_check(
                "the numerical-health check in GradScaler.update()",
                self._health_update,
                new_scale,
            )
        super().update(new_scale)
        run_check("the GradScaler.update() bookkeeping", self._after_update)
        if watched is not None:
            # Reads the statistics handed to the host; in raise mode a numerical finding
            # raises here, at the user's update().
            run_check("the numerical-health check in GradScaler.update()", watched.after_update)

    def _before_update(self) -> None:
        _show(usage.on_update(self._usage()))

    def _health_update(self, new_scale: float | torch.Tensor | None) -> health.ScalerHealth | None:
        monitor = health.active()
        if monitor is None:
            return None
        watched = monitor.for_scaler(self)
        watched.on_update(self, new_scale)
        return watched

    def _after_update(self) -> None:
        usage.on_updated(self._usage())

    def get_scale(self) -> float:
        if self._enabled:
            run_check("the GradScaler.get_scale() check", self._after_get_scale)
        return super().get_scale()

    def _after_get_scale(self) -> None:
        usage.on_get_scale(self._usage())

    def state_dict(self) -> dict[str, Any]:
        if self._enabled:
            run_check("the GradScaler.state_dict() check", self._check_state_dict)
        state = super().state_dict()
        if self._enabled:
            run_check("the GradScaler.state_dict() bookkeeping", self._note_saved, state)
        return state

    def _note_saved(self, state: dict[str, Any]) -> None:
        key = _scale_state(state)
        saved = self._usage().saved_states
        if key is not None and key not in saved:
            saved.append(key)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        run_check("the GradScaler.load_state_dict() bookkeeping", self._after_load, state_dict)

    def _after_load(self, state: dict[str, Any]) -> None:
        self._usage().loaded_state = _scale_state(state)

    def _check_state_dict(self) -> None:
        scale = self._scale
        syncs = scale is not None and scale.device.type != "cpu"
        _show(usage.on_state_dict(self._usage(), syncs=syncs))


def _scale_state(state: dict[str, Any]) -> tuple[float, int] | None:
    """A state dict's scale and growth tracker, as plain numbers (None when they are not:
    comparing tensors would read them back from the device)."""
    scale, tracker = state.get("scale"), state.get("_growth_tracker")
    if isinstance(scale, (int, float)) and isinstance(tracker, int):
        return float(scale), tracker
    return None


def _deprecated(api: str, replacement: str) -> None:
    deprecated_api(api, replacement, user_site())


class CudaGradScaler(GradScaler):
    """Stands in for the deprecated ``torch.cuda.amp.GradScaler``; reports AMP007."""

    _stands_in_for = torch.cuda.amp.grad_scaler.GradScaler

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        replacement = "torch.amp.GradScaler('cuda', args...)"
        run_check("the GradScaler() check", _deprecated, "torch.cuda.amp.GradScaler", replacement)
        super().__init__(
            "cuda", init_scale, growth_factor, backoff_factor, growth_interval, enabled
        )


class CpuGradScaler(GradScaler):
    """Stands in for the deprecated ``torch.cpu.amp.GradScaler``; reports AMP007."""

    _stands_in_for = torch.cpu.amp.grad_scaler.GradScaler

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        replacement = "torch.amp.GradScaler('cpu', args...)"
        run_check("the GradScaler() check", _deprecated, "torch.cpu.amp.GradScaler", replacement)
        super().__init__("cpu", init_scale, growth_factor, backoff_factor, growth_interval, enabled)
