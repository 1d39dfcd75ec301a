"""Device-side reductions of the numerical-health checks: largest magnitudes, a
non-finite probe, and gradient statistics in bounded scratch memory. None reads a value back
to the host."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import torch

from .health_config import FP16_MAX, FP16_MIN_NORMAL

__all__ = [
    "INF",
    "SCRATCH_NUMEL",
    "gradient_stats",
    "grads_by_device_dtype",
    "max_abs",
    "nonfinite_probe",
]

INF = float("inf")


def max_abs(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Largest magnitude of each tensor (NaN if it holds a NaN), stacked, but for a fill
    value (see :func:`_unfilled`): multi-tensor ``_foreach_max`` and ``_foreach_norm`` on
    CUDA (fused kernels); on the CPU, where those ops are slow per-tensor loops, one
    ``aminmax`` pass per tensor, several times faster."""
    if tensors[0].device.type == "cpu":
        return max_abs_of_pairs([torch.aminmax(tensor) for tensor in tensors])
    highs = torch.stack(torch._foreach_max(tensors))
    magnitudes = torch.stack(torch._foreach_norm(tensors, INF))
    return _unfilled(highs, magnitudes)


def max_abs_of_pairs(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """:func:`max_abs` from each tensor's ``aminmax`` (taken earlier, e.g. where the tensor
    was made)."""
    highs = torch.stack([pair[1] for pair in pairs])
    lows = torch.stack([pair[0] for pair in pairs])
    return _unfilled(highs, torch.maximum(highs, lows.neg()))  # maximum propagates NaN


def _unfilled(highs: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    """The largest magnitudes, but where only the negative side is extreme, at exactly
    float16's lowest value or -inf, while the positive side is finite: that is a mask's
    fill value (``masked_fill(mask, torch.finfo(dtype).min)``, a causal mask's -inf),
    written on purpose, not an overflow; the positive side is the output's magnitude then.
    A real overflow spills to both signs, or into the loss (AMP101, skipped steps)."""
    filled = (magnitudes > highs) & torch.isfinite(highs)
    filled &= (magnitudes == INF) | (magnitudes == FP16_MAX)
    return torch.where(filled, highs, magnitudes)


def nonfinite_probe(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A 0-d value that is non-finite iff some element of ``tensors`` is (NaN and inf
    propagate through sums; finite gradients summing past float32's range do not occur)."""
    if tensors[0].device.type == "cpu":
        return torch.stack([tensor.sum(dtype=torch.float32) for tensor in tensors]).sum()
    return torch.stack(torch._foreach_norm(tensors, INF)).amax().float()


# The largest scratch buffer the gradient counts allocate, in elements (4 MiB of float32),
# unless a single gradient is larger: then that gradient's size. Never the sum of all
# gradients, which on a large model near its memory limit would be an out-of-memory error
# of amplint's making.
SCRATCH_NUMEL = 1 << 20


def _chunks(tensors: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """``tensors`` in runs whose total size stays within ``SCRATCH_NUMEL`` (a tensor larger
    than that alone in its run)."""
    run: list[torch.Tensor] = []
    size = 0
    for tensor in tensors:
        if run and size + tensor.numel() > SCRATCH_NUMEL:
            yield run
            run, size = [], 0
        run.append(tensor)
        size += tensor.numel()
    if run:
        yield run


def gradient_stats(grads: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Of ``grads``: the largest magnitude (NaN if one is NaN), how many values are non-zero,
    and how many are at or above float16's smallest normal in magnitude; 0-d float32
    tensors. One copy of the magnitudes per chunk feeds all three (scratch memory bounded as
    ``_chunks`` says), and on the CPU no op runs once per gradient from Python."""
    maxima, nonzero, normal = [], [], []
    for run in _chunks(grads):
        magnitudes = torch._foreach_abs(run)
        maxima.append(torch.stack(torch._foreach_max(magnitudes)).amax())
        nonzero.append(torch.stack(torch._foreach_norm(magnitudes, 0)).sum())
        torch._foreach_sub_(magnitudes, FP16_MIN_NORMAL)
        torch._foreach_clamp_min_(magnitudes, 0.0)
        normal.append(torch.stack(torch._foreach_norm(magnitudes, 0)).sum())
        del magnitudes  # freed before the next run is allocated
    if len(maxima) == 1:
        return maxima[0].float(), nonzero[0].float(), normal[0].float()
    return (
        torch.stack(maxima).amax().float(),
        torch.stack(nonzero).sum().float(),
        torch.stack(normal).sum().float(),
    )


def grads_by_device_dtype(
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
