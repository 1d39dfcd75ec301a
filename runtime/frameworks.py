"""Training frameworks that own the AMP step: Hugging Face ``Trainer``, Accelerate, Lightning.

They build their GradScaler and enter autocast through ``torch.amp.GradScaler(...)`` and
``torch.autocast(...)`` looked up when they are called, so once :func:`install` has patched
torch, the scalers they build are amplint's, and their health statistics are gathered like
any other scaler's. What this module adds:

- the folders of these packages count as machinery between the user's line and the check
  (like torch's own), so a finding names the user's ``trainer.train()``,
  ``accelerator.backward(loss)`` or ``self.manual_backward(loss)``, not the framework's
  internals; no framework is imported for that;
- float16 parameters met by a scaler that a framework drives are reported as AMP022 with
  that framework's own remedy, before torch's ``ValueError: Attempting to unscale FP16
  gradients.`` ends the run.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading

from amplint.catalog import entry

from . import frames

__all__ = ["half_params_finding", "install", "package_dirs"]

#: top-level packages whose frames are framework machinery, and the framework each is.
_PACKAGES: dict[str, str] = {
    "transformers": "transformers",
    "trl": "transformers",
    "peft": "transformers",
    "accelerate": "accelerate",
    "lightning": "lightning",
    "pytorch_lightning": "lightning",
    "lightning_fabric": "lightning",
    "lightning_utilities": "lightning",
}

#: the framework's own remedy for float16 trainable parameters, in its terms.
_LABEL = {
    "transformers": "the Hugging Face Trainer",
    "accelerate": "Accelerate",
    "lightning": "Lightning",
}
_REMEDY = {
    "transformers": "load the trainable weights in float32 (from_pretrained(..., "
    "torch_dtype=torch.float32), no .half()) and keep fp16=True, which autocasts; to save "
    "memory, freeze a float16 base and train float32 adapters (PEFT)",
    "accelerate": "keep the trainable parameters float32 before accelerator.prepare(...) and "
    'let mixed_precision="fp16" autocast',
    "lightning": 'keep the parameters float32 under precision="16-mixed" (it autocasts), or '
    'train pure float16 with precision="16-true"',
}

_dirs: dict[str, str] | None = None


def package_dirs() -> dict[str, str]:
    """``folder + os.sep -> framework`` for each installed framework package (found without
    importing it)."""
    global _dirs
    if _dirs is None:
        found: dict[str, str] = {}
        for package, framework in _PACKAGES.items():
            try:
                spec = importlib.util.find_spec(package)
            except (ImportError, ValueError):
                continue
            for folder in (spec.submodule_search_locations or []) if spec else []:
                found[os.path.abspath(folder) + os.sep] = framework
        _dirs = found
    return _dirs


def install() -> None:
    """Treat framework frames as machinery when looking for the user's line."""
    extra = tuple(folder for folder in package_dirs() if folder not in frames._SKIPPED_PREFIXES)
    if extra:
        # frames._skipped reads the module-level tuple on each call.
        frames._SKIPPED_PREFIXES = frames._SKIPPED_PREFIXES + extra


def framework_on_stack(limit: int = 96) -> str | None:
    """The outermost framework whose code is running the current call: the one the user
    called (the HF ``Trainer`` calls Accelerate, which calls torch)."""
    dirs = package_dirs()
    if not dirs:
        return None
    found: str | None = None
    frame = sys._getframe(1)
    for _ in range(limit):
        if frame is None:
            break
        filename = frame.f_code.co_filename
        for folder, framework in dirs.items():
            if filename.startswith(folder):
                found = framework
                break
        frame = frame.f_back
    return found


def half_params_finding() -> tuple[str, str] | None:
    """``(code, message)`` for float16 parameters met by a framework-driven scaler; None when
    no framework drives this step (torch's own AMP009 message applies)."""
    framework = framework_on_stack()
    if framework is None:
        return None
    known = entry("AMP022")
    name = known.name if known is not None else "half-params-with-framework-fp16"
    return (
        "AMP022",
        f"AMP022 {name}: the optimizer that {_LABEL[framework]}'s float16 mixed precision "
        "steps holds float16 trainable parameters, so its GradScaler is about to stop the run with "
        f"'ValueError: Attempting to unscale FP16 gradients.'; {_REMEDY[framework]}.",
    )


# -- autocast regions a framework enters around the user's code ----------------------------
#
# Lightning runs `training_step` inside its own autocast (manual optimisation included), so
# `self.manual_backward(loss)` and `opt.step()` there run under autocast by the framework's
# design, not the user's: the user cannot move them out. A region counts as the framework's
# when framework code entered it and the check runs in another user frame than the one that
# was running then (the framework called back into user code). `with accelerator.autocast():`
# is entered by Accelerate's code too, but the backward under it runs in the very frame that
# wrote the `with`: that one is the user's.


class _Region:
    __slots__ = ("by_framework", "region", "user")

    def __init__(self, region: object, user: object, by_framework: bool) -> None:
        self.region = region
        self.user = user
        self.by_framework = by_framework


_regions = threading.local()


def _stack() -> list[_Region]:
    stack = getattr(_regions, "stack", None)
    if stack is None:
        stack = _regions.stack = []
    return stack


def _in_framework(filename: str) -> bool:
    return any(filename.startswith(folder) for folder in package_dirs())


def note_region_entered(region: object) -> None:
    """Record an autocast region as it is entered, and whether framework code entered it
    (a short stack walk, only where a framework is installed)."""
    if not package_dirs():
        return
    frame = sys._getframe(1)
    by_framework = False
    while frame is not None and frames._skipped(frame.f_code.co_filename):
        if _in_framework(frame.f_code.co_filename):
            by_framework = True
            break
        frame = frame.f_back
    user = frames.user_frame(1) if by_framework else None
    _stack().append(_Region(region, user, by_framework))


def note_region_left(region: object) -> None:
    stack = getattr(_regions, "stack", None)
    if stack:
        for position in range(len(stack) - 1, -1, -1):
            if stack[position].region is region:
                del stack[position]
                return


def framework_region_only() -> bool:
    """The innermost autocast region is one a framework entered around user code that it
    called back (Lightning's ``training_step``): not the user's to move."""
    stack = getattr(_regions, "stack", None)
    if not stack:
        return False
    innermost = stack[-1]
    return innermost.by_framework and frames.user_frame(1) is not innermost.user
