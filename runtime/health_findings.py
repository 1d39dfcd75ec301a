"""The host's reading of the numerical-health statistics: findings AMP101-AMP106.

The device side (``health.ScalerHealth``) hands over chunks of per-step rows (scale used,
``found_inf``, loss, gradient reductions) and a log of float16 activation maxima; here
they are read as plain host memory, in step order, and turned into findings, each with
the step it belongs to, and into the numbers of the summary.
"""

from __future__ import annotations

import ctypes
import math
import os
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .activations import INPUT_SLOT, Activations
from .findings import message_after_applied_nonfinite, message_for
from .frames import Site
from .health_config import HealthConfig
from .reductions import INF

__all__ = ["COLUMNS", "Chunk", "HostReading", "finite", "host_values"]

# Ring columns: scale used, found_inf, loss, largest gradient, non-zero count, count at or
# above float16's smallest normal, largest gradient applied after an explicit unscale_.
COLUMNS = 7


# Host reads of host memory (CPU tensors, pinned copies): plain memory, no device involved.


def host_values(tensor: torch.Tensor, fmt: str) -> tuple[float, ...]:
    count = tensor.numel()
    if count == 0:
        return ()
    raw = (ctypes.c_char * (count * tensor.element_size())).from_address(tensor.data_ptr())
    return struct.unpack_from(f"{count}{fmt}", raw)


def finite(value: float) -> bool:
    return math.isfinite(value)


#: torch's default initial loss scale (AMP102's consecutive backoffs count down from it).
_DEFAULT_SCALE = 2.0**16


@dataclass
class Chunk:
    first_step: int  # the run's iteration of the chunk's first step
    rows: torch.Tensor  # [n, COLUMNS] float32, host memory
    log: torch.Tensor  # [m] float16, host memory
    numels: list[int]
    #: per step: (offset in log, slots, the user's line that ran the step's forward)
    spans: list[tuple[int, list[int], Site | None]]
    bypassed: list[bool]  # per step: an optimizer.step() went around the scaler (AMP004)
    event: Any = None


def _collapsed(config: HealthConfig) -> float:
    """The largest scale a run of ``max_backoffs`` backoffs from torch's default reaches."""
    return _DEFAULT_SCALE / 2.0 ** (config.max_backoffs - 1)


class HostReading:
    """What the host has read of one scaler's steps, and the findings already made."""

    def __init__(self) -> None:
        self.scales: list[float] = []
        self.skipped: list[bool] = []
        self.consecutive = 0
        self.window: deque[bool] = deque()
        self.window_skips = 0
        self.nonfinite_loss_steps = 0
        self.underflow: list[float] = []
        self.zeros: list[float] = []
        self.grad_max = 0.0
        self.act_max: dict[int, float] = {}
        # The lines that scaled a loss after the step's first (several losses in a step).
        self.loss_sites: list[Site] = []
        self.reported: set[str] = set()
        self.read_steps = 0

    def read_outputs(
        self,
        log: Sequence[float],
        offset: int,
        slots: Sequence[int],
        step: int,
        config: HealthConfig,
        acts: Activations,
        shared: Any,
        site_or: Callable[[str], Site],
        out: list[tuple[str, str, Site, int]],
    ) -> None:
        """One step's float16 output maxima (``log[offset:]``, one per slot, in forward
        order): the largest per module, and AMP105 for the first over the limit of the run."""
        limit = config.activation_limit
        data_nonfinite = False
        for position, slot in enumerate(slots):
            value = log[offset + position]
            if slot == INPUT_SLOT:
                data_nonfinite = data_nonfinite or not finite(value)
                continue
            if data_nonfinite:
                continue  # NaN in the data: no module's range is measured (AMP101 says it)
            if not finite(value):
                self.act_max[slot] = INF
            elif value > self.act_max.get(slot, -1.0):
                self.act_max[slot] = value
            if shared.first_overflow is None and not value < limit:
                name = acts.name(slot)
                kind = acts.kinds[slot]
                overflow: dict[str, Any] = {
                    "module": name,
                    "kind": kind,
                    "step": step,
                    "value": value if finite(value) else str(value),
                }
                shared.first_overflow = overflow
                # Once the optimizer applied non-finite gradients, the weights are what
                # is broken: "run this module in float32" would be wrong advice.
                if shared.nonfinite_applied is not None and not finite(value):
                    overflow["after_nonfinite_step"] = shared.nonfinite_applied
                    overflow["after_nonfinite_code"] = shared.nonfinite_cause
                    continue
                # So too after a step on gradients still multiplied by the loss scale.
                scaled = shared.scaled_step_applied
                if scaled is not None and step > scaled:
                    overflow["after_scaled_step"] = scaled
                    continue
                if finite(value):
                    what = f"reached {value:g}, within {config.overflow_margin:.0%} of 65504"
                else:
                    what = f"was {'nan' if math.isnan(value) else 'inf'}"
                message = message_for("AMP105", module=name, kind=kind, what=what, step=step)
                out.append(("AMP105", message, site_or("scale"), step))

    def read(
        self,
        chunk: Chunk,
        config: HealthConfig,
        acts: Activations,
        shared: Any,
        site_or: Callable[[str], Site],
        out: list[tuple[str, str, Site, int]],
    ) -> None:
        """Read one chunk of steps; append the findings it makes to ``out``. ``shared``
        holds what is decided once for all scalers (``first_overflow``, the first step
        that applied non-finite gradients: ``nonfinite_applied``)."""
        rows = host_values(chunk.rows, "f")
        log = host_values(chunk.log, "e")

        def advice(code: str, **fields: Any) -> str:
            applied = shared.nonfinite_applied
            if applied is not None and fields["step"] > applied:
                return message_after_applied_nonfinite(
                    code, applied, shared.nonfinite_cause, **fields
                )
            return message_for(code, **fields)

        for index in range(len(chunk.numels)):
            step = chunk.first_step + index
            base = index * COLUMNS
            scale, found_inf, loss, gmax, nnz, big, g106 = rows[base : base + COLUMNS]
            numel = chunk.numels[index]
            backed_off = found_inf != 0.0
            # A direct optimizer.step() (AMP004) applied the step whatever found_inf said.
            bypassed = chunk.bypassed[index]
            skipped = backed_off and not bypassed
            self.scales.append(scale)
            self.skipped.append(skipped)
            # AMP101
            if not finite(loss):
                self.nonfinite_loss_steps += 1
                what = "nan" if math.isnan(loss) else "inf"
                message = advice("AMP101", value=what, step=step)
                if self.loss_sites:
                    lines = ", ".join(
                        f"{os.path.basename(name)}:{line}"
                        for name, line in (site_or("scale"), *self.loss_sites)
                    )
                    message += f" The loss checked is the sum of the losses scaled at {lines}."
                out.append(("AMP101", message, site_or("scale"), step))
            # AMP105: the first float16 output over the limit, in forward order
            offset, slots, forward = chunk.spans[index]
            outputs_site = site_or if forward is None else (lambda _, at=forward: at)
            self.read_outputs(log, offset, slots, step, config, acts, shared, outputs_site, out)
            # AMP102: scale collapse
            self.consecutive = self.consecutive + 1 if backed_off else 0
            if "AMP102" not in self.reported:
                why = None
                # A run that starts at or just above min_scale (icefall's init_scale=1.0, where
                # one skipped step halves it to 0.5) must fall two halvings below its start;
                # one that starts below it (resumed from a collapsed run) has collapsed.
                start = self.scales[0]
                floor = config.min_scale
                if start >= config.min_scale:
                    floor = min(floor, start / 4)
                if scale < floor:
                    why = f"the scale is {scale:g}, below {floor:g}"
                elif self.consecutive >= config.max_backoffs and scale <= _collapsed(config):
                    # As many backoffs from torch's default scale, 65536: a larger init_scale
                    # takes as many backoffs to settle, and that is no collapse.
                    why = (
                        f"it backed off on {self.consecutive} consecutive steps, the last from "
                        f"a scale of {scale:g}"
                    )
                if why is not None:
                    self.reported.add("AMP102")
                    out.append(
                        (
                            "AMP102",
                            advice("AMP102", step=step, why=why),
                            site_or("update"),
                            step,
                        )
                    )
            # AMP103: skipped-step rate over a window
            self.window.append(skipped)
            self.window_skips += skipped
            if len(self.window) > config.skip_window:
                self.window_skips -= self.window.popleft()
            if (
                "AMP103" not in self.reported
                and len(self.window) == config.skip_window
                and self.window_skips >= config.skip_rate * config.skip_window
                and self.window_skips > 0
            ):
                self.reported.add("AMP103")
                message = advice(
                    "AMP103", skipped=self.window_skips, window=config.skip_window, step=step
                )
                out.append(("AMP103", message, site_or("update"), step))
            # AMP104 and the gradient summary (unskipped steps with gradient statistics)
            if numel and not skipped and finite(gmax):
                share = max(nnz - big, 0.0) / numel
                self.underflow.append(share)
                self.zeros.append(max(numel - nnz, 0.0) / numel)
                if scale:
                    self.grad_max = max(self.grad_max, gmax / scale)
                if share > config.underflow_share and "AMP104" not in self.reported:
                    self.reported.add("AMP104")
                    message = message_for("AMP104", share=share, step=step, scale=scale)
                    out.append(("AMP104", message, site_or("scale"), step))
            # AMP106: applied non-finite gradients
            if not skipped and not finite(g106):
                out.append(("AMP106", message_for("AMP106", step=step), site_or("step"), step))
                if shared.nonfinite_applied is None:
                    shared.nonfinite_applied = step
            # A direct optimizer.step() on a step with inf/NaN gradients applied them (the
            # step's AMP004 is reported already): what follows is its consequence.
            if bypassed and backed_off and shared.nonfinite_applied is None:
                shared.nonfinite_applied, shared.nonfinite_cause = step, "AMP004"
            self.read_steps = step + 1
