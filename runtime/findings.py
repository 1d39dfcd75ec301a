"""Finding records, the warning and exception types, and the runtime message catalog.

The codes and their names are the catalog's (``amplint.catalog``); the runtime's wording
of each finding is data here, apart from where they are detected (``state.py``, ``scaler.py``,
``hooks.py``) and from how they are shown (``reporting.py``), so that a reader can find
the text of any runtime finding in one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from amplint.catalog import entry

__all__ = [
    "MESSAGES",
    "AmpUsageError",
    "AmpWarning",
    "Finding",
    "message_for",
    "name_of",
]


class AmpWarning(UserWarning):
    """Warning category for runtime AMP findings; ``.code`` is the ``AMPnnn`` code."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class AmpUsageError(RuntimeError):
    """Raised for a finding in ``mode="raise"``; ``.code`` is the ``AMPnnn`` code.

    It subclasses ``RuntimeError`` so that code which already handles torch's own
    ``RuntimeError`` for the same misuse (e.g. a second ``step()``) keeps working.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Finding:
    """One distinct finding: a code at one user call site, seen ``count`` times.

    ``first_step`` is 0-based: the iteration the finding was first seen in, i.e. the number
    of optimizer steps taken before it (``i`` in ``for i, batch in enumerate(loader)``);
    a numerical-health finding names the step its statistics belong to, counted alike.

    ``rank`` is the process's rank in a distributed run (``torchrun``), as in the per-rank
    JSON reports; None, and left out of :meth:`to_dict`, in a single process.
    """

    code: str
    message: str
    filename: str
    line: int
    count: int = 1
    first_step: int = 0
    rank: int | None = None

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        if self.rank is None:
            del result["rank"]
        return result


# code -> (what happened, what to do instead). The code's name, and whether the runtime may
# report it at all, are the catalog's (``amplint.catalog``): only the wording of what the
# runtime saw lives here.
MESSAGES: dict[str, tuple[str, str]] = {
    "AMP001": (
        "backward ran while an enabled autocast region was active",
        "move the backward (and the optimizer calls after it) out of the `with autocast(...)` "
        "block; autocast should wrap only the forward pass and the loss",
    ),
    "AMP002": (
        "{what}",
        "call scaler.update() once per iteration, after the last scaler.step(...)",
    ),
    "AMP003": (
        "backward of a float16 autocast graph, and the optimizer stepped without a GradScaler",
        "create a torch.amp.GradScaler before the loop and use "
        "scaler.scale(loss).backward(), scaler.step(optimizer), scaler.update()",
    ),
    "AMP004": (
        "optimizer.step() was called directly {why}",
        "call scaler.step(optimizer) (then scaler.update()) instead of optimizer.step()",
    ),
    "AMP005": (
        "this backward did not go through scaler.scale(), but the step goes through scaler.step()",
        "use scaler.scale(loss).backward()",
    ),
    "AMP006": (
        "gradients were clipped {how}",
        "call scaler.unscale_(optimizer) before {before}",
    ),
    "AMP007": (
        "{api} is deprecated",
        "use {replacement}",
    ),
    "AMP008": (
        "autocast got device_type={device!r}, which is not a device type string",
        'pass the device type string, e.g. "cuda" or "cpu" (not a torch.device or "cuda:0")',
    ),
    "AMP009": (
        "the optimizer handed to the GradScaler holds float16 parameters",
        "keep the parameters in float32 (drop model.half()) and let autocast cast",
    ),
    "AMP010": (
        "a GradScaler is constructed again and again from this line, so its scale never adapts",
        "create the GradScaler once, before the training loop",
    ),
    "AMP011": (
        "scaler.unscale_() was called {what} for this optimizer",
        "call scaler.unscale_(optimizer) once per iteration, after the backward passes and "
        "before clipping and scaler.step(optimizer)",
    ),
    "AMP021": (
        "scaler.state_dict() read the loss scale from the device on {runs} iterations in a "
        "row: each read makes the host wait for every queued kernel",
        "take the scaler's state when you save a checkpoint, or log the scale every N steps",
    ),
    "AMP012": (
        "{call} ran inside an enabled autocast region",
        "move optimizer and scaler calls out of the `with autocast(...)` block",
    ),
    "AMP013": (
        "scaler.state_dict() was taken between scaler.step() and scaler.update()",
        "checkpoint the scaler after scaler.update()",
    ),
    "AMP014": (
        "an enabled GradScaler is used while every autocast region seen runs in bfloat16",
        "bfloat16 needs no loss scaling: GradScaler(..., enabled=(amp_dtype == torch.float16))",
    ),
    "AMP017": (
        "{what} was disabled by torch: {why}",
        "{fix}",
    ),
    "AMP016": (
        "scaler.step() is applying gradients that still hold those its previous step applied: "
        "no zero_grad() ran since, and backward kept accumulating into them",
        "with gradient accumulation, call scaler.unscale_(), scaler.step() and scaler.update() "
        "only at the accumulation boundary, where zero_grad() runs",
    ),
    "AMP018": (
        "{call}(..., error_if_nonfinite=True) while a GradScaler is in use",
        "drop error_if_nonfinite=True: with loss scaling, non-finite gradients are a routine "
        "overflow that scaler.step() skips, not an error",
    ),
    "AMP019": (
        "scaler.step() was given a closure",
        "GradScaler does not support closures (e.g. LBFGS): compute the loss and "
        "scaler.scale(loss).backward() before scaler.step(optimizer)",
    ),
    # Numerical health (runtime only; see health.py). Each message names the step.
    "AMP101": (
        "the loss was {value} before scaling at step {step}",
        "find where it first goes non-finite (a float16 overflow in the forward: see AMP105; "
        "log(0), division by zero, bad data); skipping steps will not cure it",
    ),
    "AMP102": (
        "the loss scale collapsed at step {step}: {why}",
        "the gradients overflowed again and again, faster than growth_interval lets the "
        "scale grow back: look for a float16 overflow (AMP105) or a non-finite loss "
        "(AMP101), or train in bfloat16",
    ),
    "AMP103": (
        "{skipped} of the {window} optimizer steps up to step {step} were skipped for "
        "non-finite gradients",
        "the model is not training on those steps: look for a float16 overflow (AMP105), "
        "lower the learning rate, or train in bfloat16",
    ),
    "AMP104": (
        "{share:.1%} of the gradient values at step {step} were below float16's smallest "
        "normal number at loss scale {scale:g} (flushed to zero or losing precision)",
        "raise the loss scale (GradScaler(init_scale=...), a shorter growth_interval), or "
        "train in bfloat16",
    ),
    "AMP105": (
        "the float16 output of module `{module}` ({kind}) {what} at step {step}",
        "run `{module}` in float32 (wrap its forward in torch.autocast(..., enabled=False) and "
        "cast its input with .float()) or train in bfloat16",
    ),
    "AMP106": (
        "gradients were finite at scaler.unscale_() but non-finite at scaler.step() at step "
        "{step}, so the optimizer applied them",
        "do not change gradients between scaler.unscale_(optimizer) and "
        "scaler.step(optimizer), or check them yourself before stepping",
    ),
    "AMP107": (
        "lr_scheduler.step() ran after {ahead} optimizer steps that scaler.step() skipped since "
        "step {since} ({share:.1%} of the steps): the learning-rate schedule is {ahead} steps "
        "ahead of the optimizer",
        "fix what makes steps skip (see AMP103), or step the scheduler only when the optimizer "
        "stepped",
    ),
}


def name_of(code: str) -> str:
    """The code's kebab-case name, from the catalog."""
    item = entry(code)
    if item is None:
        raise KeyError(f"{code} is not in amplint.catalog")
    return item.name


def message_for(code: str, **fields: Any) -> str:
    """Render the message of ``code``: what happened, then what to do instead."""
    what, fix = MESSAGES[code]
    return f"{code} {name_of(code)}: {what.format(**fields)}; {fix.format(**fields)}."


def message_after_applied_nonfinite(
    code: str, applied_step: int, cause: str = "AMP106", **fields: Any
) -> str:
    """``code``'s message when it follows non-finite gradients the optimizer applied at
    ``applied_step`` (``cause``: AMP106, or AMP004's direct step): the weights are what is
    broken, so the usual advice (find an overflow, train in bfloat16) would mislead."""
    what, _fix = MESSAGES[code]
    return (
        f"{code} {name_of(code)}: {what.format(**fields)}; this follows the non-finite "
        f"gradients the optimizer applied at step {applied_step} ({cause}), after which the "
        "weights need not be finite: fix that first."
    )
