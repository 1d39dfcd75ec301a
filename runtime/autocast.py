"""``autocast``: torch's autocast that records which regions a thread enters.

Entering and leaving stay torch's (``super()``); the only addition is a note of the device
and dtype of each enabled region, which the backward and optimizer checks consult.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.amp.autocast_mode import autocast as _torch_autocast

from .findings import message_for
from .frames import user_site
from .reporting import deprecated_api, emit
from .state import note_autocast_entered

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
            # A torch.device makes torch raise; "cuda:0" is accepted but is not the
            # documented form. Either way, name the form autocast wants.
            emit("AMP008", message_for("AMP008", device=device_type), user_site())
        super().__init__(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)
        if enabled and not self._enabled:
            why = f"autocast({self.device!r}, dtype={self.fast_dtype}) is not available here"
            fix = (
                "name a device and dtype that this machine supports "
                "(CPU: torch.bfloat16 or torch.float16), or pass enabled=False explicitly"
            )
            emit("AMP017", message_for("AMP017", what="autocast", why=why, fix=fix), user_site())

    def __enter__(self) -> Any:
        result = super().__enter__()
        if self._enabled:
            note_autocast_entered(self.device, self.fast_dtype)
        return result


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
