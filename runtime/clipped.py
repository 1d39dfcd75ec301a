"""Gradient norms that ``clip_grad_norm_`` computed after ``unscale_``, reused by the
AMP106 probe at ``step()``.

AMP106 asks whether the gradients the optimizer applies are finite, though ``unscale_``
found them finite (or let the step be skipped). The usual loop clips between the two, and
the clip's total norm is non-finite iff a gradient it saw is (its coefficient keeps finite
gradients finite): for gradients left untouched since the clip that norm answers the
question, and the step need not read every gradient again (about 0.4-1.4 ms of a 55 ms
GPT step on the CPU). "Untouched" is the same gradient tensor at the same version counter;
a gradient without such a record is probed as before.

What a version counter does not see: writes through ``.data`` and collectives such as
``all_reduce`` made *after* the clip. Made between ``unscale_`` and the clip they are in
the norm.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch

__all__ = ["ClippedNorms"]


def _reusable(total_norm: Any, max_norm: Any, norm_type: Any) -> bool:
    """Whether a clip's result says "every gradient it scaled is finite" iff it is finite."""
    # A subclass (DTensor) is a collective value: not mixed into this rank's probe.
    if type(total_norm) is not torch.Tensor or total_norm.numel() != 1:
        return False
    # A NaN max_norm makes finite gradients NaN behind a finite norm; a tensor might be one.
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)):
        return False
    if math.isnan(max_norm):
        return False
    # The 0-"norm" counts non-zero values: finite whatever they are. Negative orders are
    # minima. Only a positive order (inf included) sees every value's magnitude.
    try:
        order = float(norm_type)
    except (TypeError, ValueError):
        return False
    return order > 0


class ClippedNorms:
    """Per parameter: its gradient as a clip left it (weakly: a gradient set to None is
    freed as without amplint), that gradient's version counter then, and the clip's norm."""

    def __init__(self) -> None:
        self.by_param: dict[int, tuple[weakref.ref[torch.Tensor], int, torch.Tensor]] = {}

    def record(
        self, params: list[Any], total_norm: Any, max_norm: Any, norm_type: Any = 2.0
    ) -> None:
        """After ``clip_grad_norm_(params, max_norm, norm_type)`` returned ``total_norm``."""
        if not _reusable(total_norm, max_norm, norm_type):
            self.forget_params(params)
            return
        norm = total_norm.detach()
        if norm.dtype is not torch.float32:
            norm = norm.float()
        norm = norm.reshape(())
        for param in params:
            grad = getattr(param, "grad", None)
            if grad is None:
                continue
            self.by_param[id(param)] = (weakref.ref(grad), grad._version, norm)

    def forget_params(self, params: list[Any]) -> None:
        for param in params:
            self.by_param.pop(id(param), None)

    def forget(self, param_groups: list[dict[str, Any]]) -> None:
        """``unscale_`` is about to change these gradients in place without moving their
        version counters: a norm taken before it says nothing of them after."""
        if not self.by_param:
            return
        for group in param_groups:
            self.forget_params(group["params"])

    def split(
        self, param_groups: list[dict[str, Any]]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The norms of the clips that saw the groups' gradients as they are now, and the
        parameters whose gradients no such clip saw (to be probed). The groups' records are
        used up."""
        norms: list[torch.Tensor] = []
        unclipped: list[torch.Tensor] = []
        if not self.by_param:
            for group in param_groups:
                unclipped.extend(group["params"])
            return norms, unclipped
        seen: set[int] = set()
        for group in param_groups:
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                # Taken out: a record serves the one step after its clip, and none outlives
                # its step (a notebook that builds model after model would pile them up).
                entry = self.by_param.pop(id(param), None)
                if entry is None or entry[0]() is not grad or entry[1] != grad._version:
                    unclipped.append(param)
                    continue
                norm = entry[2]
                if id(norm) not in seen:
                    seen.add(id(norm))
                    norms.append(norm)
        return norms, unclipped
