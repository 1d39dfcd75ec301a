"""``autocast``: torch's autocast that records which regions a thread enters.

Entering and leaving stay torch's (``super()``); the only addition is a note of the device
and dtype of each enabled region, which the backward and optimizer checks consult. A region
left by an exception is forgotten again, as torch forgets its autocast state: its forward
will not be back-propagated, so it must not count as a float16 forward (AMP003).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch.amp.autocast_mode import autocast as _torch_autocast

from . import frameworks
from .findings import message_for
from .frames import user_site
from .reporting import (
    deprecated_api,
    emit,
    internal_error,
    run_check,
    steps,
    torch_disabling,
)
from .session import SESSION
from .state import note_autocast_entered, thread_state

__all__ = ["autocast", "cpu_autocast", "cuda_autocast"]


class autocast(_torch_autocast):
    """Drop-in for :class:`torch.amp.autocast` (context manager and decorator)."""

    def __init__(
        self,
        device_type: str,
        dtype: torch.dtype | None = None,
        enabled: bool = True,
        cache_enabled: bool | None = None,
    ) -> None:
        if not isinstance(device_type, str) or ":" in device_type:
            run_check("the autocast check", _report_device_type, device_type)
        asked = enabled
        context: Any = nullcontext()
        if enabled and _torch_disables(device_type, dtype):
            context = torch_disabling("autocast")
            if context is None:
                context, enabled = nullcontext(), False
        with context:
            super().__init__(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)
        if asked and not self._enabled:
            run_check("the autocast check", _report_unavailable, self.device, self.fast_dtype)

    def __enter__(self) -> Any:
        result = super().__enter__()
        # Entered now: nothing below may raise, or the `with` would never leave the region.
        try:
            tls = thread_state()
            self._amplint_fp16_forward = tls.fp16_forward
            if self._enabled:
                steps().commit()  # a forward: the iteration after a step has begun
                note_autocast_entered(self.device, self.fast_dtype)
                tls.autocast_regions.append(self)
                if len(tls.autocast_regions) == 1:
                    _outermost_region(started=True)
            frameworks.note_region_entered(self)
        except Exception as error:  # amplint's bug: note it, keep the region as torch made it
            internal_error("the autocast region check", error)
        return result

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> Any:
        result = super().__exit__(exc_type, exc_val, exc_tb)
        frameworks.note_region_left(self)
        run_check("the autocast region check", _left, self)
        if exc_type is not None:
            # torch put its autocast state back; forget this region's forward likewise.
            before = self.__dict__.get("_amplint_fp16_forward")
            if before is not None:
                thread_state().fp16_forward = before
        return result


def _torch_disables(device_type: object, dtype: torch.dtype | None) -> bool:
    """Whether torch's autocast is about to warn that it disables itself (the two cases of
    this CPU-or-CUDA world; cheap: it runs at every region's construction)."""
    if device_type == "cuda":
        return not torch.cuda.is_available()
    return device_type == "cpu" and dtype not in (None, torch.bfloat16, torch.float16)


def _left(region: autocast) -> None:
    tls = thread_state()
    regions = tls.autocast_regions
    for position in range(len(regions) - 1, -1, -1):
        if regions[position] is region:
            del regions[position]
            if not regions:
                _outermost_region(started=False)
            break
    if tls.backward_region is region:
        tls.backward_region = None


def _outermost_region(started: bool) -> None:
    """Tell the float16 output check an outermost region began or ended: outputs measured
    without grad in it count only if it also ran a forward with grad (see activations)."""
    monitor = SESSION.live.monitor
    if monitor is None:
        return
    if started:
        monitor.activations.region_started()
    else:
        monitor.activations.region_ended()


def _report_device_type(device_type: object) -> None:
    # A torch.device makes torch raise; "cuda:0" is accepted but is not the documented
    # form. Either way, name the form autocast wants.
    emit("AMP008", message_for("AMP008", device=device_type), user_site())


def _report_unavailable(device: str, dtype: torch.dtype) -> None:
    why = f"autocast({device!r}, dtype={dtype}) is not available here"
    fix = (
        "name a device and dtype that this machine supports "
        "(CPU: torch.bfloat16 or torch.float16), or pass enabled=False explicitly"
    )
    emit("AMP017", message_for("AMP017", what="autocast", why=why, fix=fix), user_site())


class cuda_autocast(autocast):
    """Stands in for the deprecated ``torch.cuda.amp.autocast``; reports AMP007."""

    def __init__(
        self,
        enabled: bool = True,
        dtype: torch.dtype = torch.float16,
        cache_enabled: bool = True,
    ) -> None:
        deprecated_api(
            "torch.cuda.amp.autocast", "torch.amp.autocast('cuda', args...)", user_site()
        )
        super().__init__("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


class cpu_autocast(autocast):
    """Stands in for the deprecated ``torch.cpu.amp.autocast``; reports AMP007."""

    def __init__(
        self,
        enabled: bool = True,
        dtype: torch.dtype = torch.bfloat16,
        cache_enabled: bool = True,
    ) -> None:
        deprecated_api("torch.cpu.amp.autocast", "torch.amp.autocast('cpu', args...)", user_site())
        super().__init__("cpu", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)
