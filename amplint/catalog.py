"""The catalog: every code a user can see, with its name, where it is caught, and its docs.

This module is the one home of those facts. The linter's rules, the runtime's messages and
report, ``amplint rules`` / ``amplint rule``, the language server's hover, SARIF metadata and
the README's table all read it. It imports nothing beyond the standard library, so that
listing or selecting codes never loads libcst, a rule, or torch.
"""

from __future__ import annotations

from functools import cache
from typing import Literal, NamedTuple

__all__ = [
    "ALWAYS_REPORTED",
    "CATALOG",
    "HOMEPAGE",
    "INTERNAL_ERROR_CODE",
    "PARSE_ERROR_CODE",
    "Docs",
    "Entry",
    "Threshold",
    "by_code",
    "default_codes",
    "docs_url",
    "documentation",
    "entry",
    "known_codes",
    "name_of",
]

Caught = Literal["static", "runtime", "both"]

#: The code of a file that cannot be read or parsed. Reported whatever ``--select`` says.
PARSE_ERROR_CODE = "AMP999"
#: The code of a rule (or the analysis) that failed on a file: amplint's bug, not the user's.
INTERNAL_ERROR_CODE = "AMP998"
#: Codes amplint reports about itself or the file as a whole, whatever the selection says.
ALWAYS_REPORTED = frozenset({PARSE_ERROR_CODE, INTERNAL_ERROR_CODE})

BUG_REPORT_URL = "https://github.com/amplint/amplint/issues"

#: Where amplint lives (SARIF's ``informationUri``).
HOMEPAGE = "https://github.com/amplint/amplint"


def docs_url(code: str) -> str:
    """The published page of a code: ``docs/rules/CODE.md``, generated from this catalog."""
    return f"{HOMEPAGE}/blob/main/docs/rules/{code}.md"


# Named tuples, not frozen dataclasses: each entry is read on every run, and a frozen
# dataclass costs a millisecond or two to define at import (issue 21's one-file budget).


class Docs(NamedTuple):
    """Documentation in ruff's shape; ``amplint rule CODE`` prints it."""

    what_it_does: str
    why_bad: str
    example: str
    use_instead: str
    fix_safety: str
    references: tuple[str, ...] = ()


class Threshold(NamedTuple):
    """A runtime threshold: ``install(name=...)`` and ``amplint run --name-with-dashes``."""

    name: str
    default: int | float | bool
    meaning: str

    @property
    def run_option(self) -> str:
        option = self.name.replace("_", "-")
        return f"--no-{option}" if self.default is True else f"--{option}"


class Entry(NamedTuple):
    code: str
    name: str
    summary: str
    caught: Caught
    docs: Docs
    default_enabled: bool = True
    #: The linter fixes some findings of this code automatically. The rule's examples must
    #: show a fix exactly when this is set (checked when the rule class is defined).
    fixable: bool = False
    #: Runtime-only codes: the thresholds that decide when the finding fires.
    thresholds: tuple[Threshold, ...] = ()

    @property
    def static(self) -> bool:
        return self.caught in ("static", "both")

    @property
    def runtime(self) -> bool:
        return self.caught in ("runtime", "both")


_EVERY = Threshold("every", 16, "steps between two hand-overs of the device statistics to the host")

CATALOG: tuple[Entry, ...] = (
    Entry(
        code="AMP001",
        name="backward-inside-autocast",
        summary="backward pass runs inside an autocast region",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for `.backward()`, `torch.autograd.backward(...)`, `torch.autograd.grad(...)`, or a
call to a function of the same module that runs one of them, inside an enabled
`torch.autocast` region, also one entered through a factory kept on `self`
(`with self.amp_autocast():`) that a base class of the same module sets. Checked with its
project, a call of another module's function that runs a backward pass counts too (no fix
is then offered as safe: what else that function runs is not read).
""",
            why_bad="""
Autocast should wrap only the forward pass and the loss computation. The backward pass
already runs each op in the dtype its forward op used; running it inside autocast
re-enters the autocast dispatch for every gradient op, which PyTorch documents as not
recommended: it can pick different dtypes than the forward pass did, wastes time on casts
and makes numerics depend on where the `with` block happens to end.
""",
            example="""
for x, y in loader:
    optimizer.zero_grad()
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
            use_instead="""
for x, y in loader:
    optimizer.zero_grad()
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            fix_safety="""
The fix moves the backward statement and every statement after it in the `with` block out
of the block. It is safe when the backward is a statement of the `with` body itself. It is
unsafe when the backward is nested in an `if`/`for` of the body (the whole nested statement
moves, including forward code before the backward), or when the `with` enters other context
managers too (the moved code leaves those as well). When the backward's own line computes
the loss (`loss_fn(out, y).backward()`), the loss is assigned to a fresh name inside the
block and only its backward moves: moved whole, the loss would be computed outside autocast,
in another dtype. Where that cannot be done (two computed parts, a nested statement), or when
a called helper does more than the backward and the optimizer calls, the fix is unsafe.
""",
            references=(
                "https://pytorch.org/docs/stable/amp.html#torch.autocast",
                "https://pytorch.org/docs/stable/notes/amp_examples.html",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP002",
        name="missing-scaler-update",
        summary="`scaler.step()` is never followed by `scaler.update()` in the training step",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for a `GradScaler` whose `step(optimizer)` is called in a training iteration that
never calls the same scaler's `update()`.
""",
            why_bad="""
`update()` is what adapts the loss scale: it backs the scale off after an overflow and grows
it after a run of finite steps. Without it the scale never changes, so a step that overflows
once keeps overflowing and every following step is skipped. The per-optimizer state is not
reset either, so the next iteration's `scaler.unscale_()` or `scaler.step()` raises a
`RuntimeError` ("... since the last update()"), far from the line that is actually wrong.
""",
            example="""
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    optimizer.zero_grad()
""",
            use_instead="""
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
""",
            fix_safety="""
The fix inserts `scaler.update()` right after the last `scaler.step(...)` of the iteration,
in the same block (so under the same gradient-accumulation condition), or after the loop
that steps several optimizers. It is safe: `update()` is required once per optimizer step.
""",
            references=("https://pytorch.org/docs/stable/notes/amp_examples.html",),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP003",
        name="fp16-without-gradscaler",
        summary="float16 autocast in a training step without a GradScaler",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for float16 autocast (an explicit `dtype=torch.float16`/`torch.half`, or CUDA
autocast's default dtype) in a function or script that trains (runs a backward pass and an
optimizer step) and uses no `GradScaler` at all.
""",
            why_bad="""
float16 represents magnitudes only down to about 6e-8: small gradients flush to zero in the
backward pass ("underflow"), so those parameters silently stop learning. `GradScaler`
multiplies the loss before backward so gradients stay representable, unscales them before
the optimizer step, and skips steps whose gradients overflowed. bfloat16 has float32's range
and needs no scaler.
""",
            example="""
for x, y in loader:
    optimizer.zero_grad()
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
""",
            use_instead="""
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    optimizer.zero_grad()
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            fix_safety="""
The fix creates `scaler = torch.amp.GradScaler(<device>)` before the training loop (passing
the autocast's `enabled=` when it is a plain name), scales the loss before `backward()`,
routes `optimizer.step()` through `scaler.step(optimizer)` and adds `scaler.update()`, as in
PyTorch's AMP recipe. It is only offered when the loop is plain: no gradient clipping or
other reads of `.grad` (those would need `scaler.unscale_` first), no backward in a helper.
Switching to `dtype=torch.bfloat16` where the hardware supports it is an alternative.
""",
            references=(
                "https://pytorch.org/docs/stable/amp.html#gradient-scaling",
                "https://pytorch.org/docs/stable/notes/amp_examples.html",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP004",
        name="optimizer-step-bypasses-scaler",
        summary="`optimizer.step()` runs on gradients produced by a scaled backward",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for `optimizer.step()` called directly after `scaler.scale(loss).backward()` in the
same training iteration, for an optimizer whose gradients that backward produced: one the
scaler steps elsewhere, or any optimizer in an iteration where the scaler steps none.
""",
            why_bad="""
A scaled backward leaves every gradient multiplied by the loss scale (65536 at the start).
`optimizer.step()` applies them as they are: the update is thousands of times too large
(Adam hides the factor, but its epsilon no longer matches, and weight decay is dwarfed), and
the steps whose gradients overflowed to inf/NaN are applied instead of skipped, which
corrupts the weights with NaN. `scaler.step(optimizer)` unscales first and skips those steps.
""",
            example="""
scaler.scale(loss).backward()
optimizer.step()
scaler.update()
""",
            use_instead="""
scaler.scale(loss).backward()
scaler.step(optimizer)
scaler.update()
""",
            fix_safety="""
The fix rewrites the call to `scaler.step(optimizer)` and, when the scaler is not updated
anywhere, inserts `scaler.update()` after it (without it the next `scaler.step` raises).
It is safe: this is PyTorch's recipe. No fix is offered when the step sits in a helper
other code may call, when several scalers scaled the gradients, or when the same
optimizer is already stepped through the scaler in that iteration (the fix would step twice).
""",
            references=(
                "https://pytorch.org/docs/stable/amp.html#gradient-scaling",
                "https://pytorch.org/docs/stable/notes/amp_examples.html",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP005",
        name="unscaled-backward-with-scaler",
        summary="`loss.backward()` is not scaled but the step goes through `scaler.step()`",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for a plain `loss.backward()` (or `torch.autograd.backward(loss)`) whose gradients
are then stepped with `scaler.step(optimizer)` in the same training iteration. The scaled
loss is followed through identity wrappers (`typing.cast(torch.Tensor, scaler.scale(loss))`)
and into helpers of the module it is handed to (`self.run_backward(scaler.scale(loss))`);
a backward of something another call made from a scaled loss (`wrap(scaler.scale(loss))`)
may be scaled or not, and is not reported. A loss the function is handed as a parameter
(`def _backward(self, loss)`) is what its callers make it: reported only where a call in
the module hands it an unscaled loss, never where one hands it a scaled one
(`loss = self.scaler.scale(loss) if self.scaler else loss; self._backward(loss)`) or no
call in the module hands it anything.
""",
            why_bad="""
`scaler.step()` unscales: it divides every gradient by the current loss scale (65536 at
the start) before the optimizer sees it. Gradients that were never multiplied by the scale
come out tens of thousands of times too small, so plain SGD barely moves and Adam's
epsilon swamps them: training silently stalls. And the small float16 gradients the scaler
exists to protect still underflow to zero. (When no loss at all is scaled, torch refuses
the step with an `AssertionError` instead.)
""",
            example="""
with torch.autocast("cuda"):
    loss = loss_fn(model(x), y)
loss.backward()
scaler.step(optimizer)
scaler.update()
""",
            use_instead="""
with torch.autocast("cuda"):
    loss = loss_fn(model(x), y)
scaler.scale(loss).backward()
scaler.step(optimizer)
scaler.update()
""",
            fix_safety="""
The fix wraps the loss: `loss.backward(...)` becomes `scaler.scale(loss).backward(...)`,
keeping the backward's arguments. It is safe: it is offered only where the loss is surely
unscaled, so it never scales twice. No fix is offered when the backward sits in a helper
other code may call or backs up a loss handed in as a parameter, when gradients are
clipped before the step without `scaler.unscale_` (scaling the loss would then make the
clip act on scaled gradients), or when the scaler is not surely bound at the backward
(assigned only after it). A one-off
backward before the training loop (a smoke test whose step is the loop's, after the loop's
own backward) is not reported.
""",
            references=(
                "https://pytorch.org/docs/stable/amp.html#gradient-scaling",
                "https://pytorch.org/docs/stable/notes/amp_examples.html",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP006",
        name="clip-scaled-gradients",
        summary="gradients are clipped while still multiplied by the loss scale",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for `clip_grad_norm_` / `clip_grad_value_` (under any import alias, and FSDP's
`model.clip_grad_norm_`) called after `scaler.scale(loss).backward()` and before
`scaler.step(optimizer)`, with no `scaler.unscale_(optimizer)` before the clip. torch 2.6's
split clip, `get_total_norm` then `clip_grads_with_norm_`, counts as one clip: both must
come after the unscale (at runtime, a norm taken before `unscale_` and clipped with after
it is reported too).
""",
            why_bad="""
After a scaled backward every gradient is multiplied by the loss scale (65536 at the
start). The clip compares that inflated norm with `max_norm`, so it always fires and
shrinks the gradients to `max_norm`; `scaler.step()` then divides by the scale again, and
the step the optimizer takes is about `max_norm / scale`: training silently crawls, and the
effective clipping threshold drifts with every scale change. `clip_grad_value_` likewise
clamps the scaled values, leaving almost nothing after unscaling.
""",
            example="""
scaler.scale(loss).backward()
torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
scaler.step(optimizer)
scaler.update()
""",
            use_instead="""
scaler.scale(loss).backward()
scaler.unscale_(optimizer)
torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
scaler.step(optimizer)
scaler.update()
""",
            fix_safety="""
The fix inserts `scaler.unscale_(optimizer)` right before the clip, naming the optimizer
that the following `scaler.step(...)` steps. It is safe: `scaler.step()` does not unscale
again, and skipping steps on inf/NaN gradients still works. No fix is offered when the
optimizer is ambiguous (several are stepped), when the clip runs more often than the step
(it would unscale twice), or when the clip sits in a helper that other code calls too.
For `clip_grads_with_norm_` the unscale goes before the statement whose `get_total_norm`
gave the norm (in the same block, or inline in the clip); no fix is offered when the norm
comes from anywhere else.
""",
            references=(
                "https://pytorch.org/docs/stable/notes/amp_examples.html#gradient-clipping",
                "https://pytorch.org/docs/stable/amp.html#torch.amp.GradScaler.unscale_",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP007",
        name="deprecated-amp-api",
        summary="deprecated `torch.cuda.amp` / `torch.cpu.amp` API",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for the device-specific AMP APIs that PyTorch deprecated in favour of `torch.amp`:
`torch.cuda.amp.autocast`, `torch.cuda.amp.GradScaler`, `torch.cuda.amp.custom_fwd`,
`torch.cuda.amp.custom_bwd`, `torch.cpu.amp.autocast`, `torch.cpu.amp.GradScaler`, and the
functions `torch.get_autocast_gpu_dtype()`, `torch.set_autocast_gpu_dtype()`,
`torch.is_autocast_cpu_enabled()`, `torch.set_autocast_cpu_enabled()`,
`torch.get_autocast_cpu_dtype()`, `torch.set_autocast_cpu_dtype()` and their `xla`/`ipu`
variants, under any import alias (also where `torch` is bound by several imports, such as
`import torch` beside `import torch.distributed`). Only code that runs on a current torch
counts: uses inside a check of torch's version (`if TORCH_VERSION < ...:`,
`is_torch_greater_or_equal(...)`, `TORCH_2_4`) or of the new API's presence
(`hasattr(torch, "amp")`, `hasattr(torch.amp, "GradScaler")`), and fallbacks in the
`except` of a compatibility block (`except ImportError:`, `except Exception:`, a bare
`except:`, including `except Exception: GradScaler = CudaGradScaler`) are not reported;
the `try` body of such a block runs on a current torch and is. A handler that raises again
(`except: save_state(); raise`) is cleanup, not a fallback: its `try` is no compatibility
block.
Other tests (`hasattr(model, "module")`, `is_torch_npu_available()`) say nothing about the
torch version and do not hide a use. A type annotation never runs and never warns: it is
not a finding on its own, but the fix of the module's real uses rewrites it too.
""",
            why_bad="""
Each of these emits a `FutureWarning` on every construction (once per training step for an
autocast region) and is slated for removal. The replacements take the device type
explicitly, which also makes the code portable to other devices. The legacy classes do not
share the new ones' signatures: `torch.cuda.amp.autocast(enabled, dtype, cache_enabled)`
versus `torch.amp.autocast(device_type, dtype, enabled, cache_enabled)`, and
`torch.cuda.amp.GradScaler(init_scale, ...)` versus `torch.amp.GradScaler(device,
init_scale, ...)`, so replacing the name alone silently passes the arguments to the wrong
parameters.
""",
            example="""
from torch.cuda.amp import GradScaler, autocast

scaler = GradScaler(2.0**14)
with autocast(args.amp):
    loss = model(x)
""",
            use_instead="""
from torch.amp import GradScaler, autocast

scaler = GradScaler("cuda", init_scale=2.0**14)
with autocast("cuda", enabled=args.amp):
    loss = model(x)
""",
            fix_safety="""
The fix rewrites every deprecated use in the file at once: attribute spellings become
`torch.amp.*`, `from torch.cuda.amp import ...` becomes `from torch.amp import ...` (aliases
kept), calls get the device type as first argument with the legacy positional arguments
passed as keywords, bare `@custom_fwd`/`@custom_bwd` decorators get `device_type=`, and
`isinstance` checks and annotations follow. It is offered only when every use of an import
can be rewritten (a legacy name passed around as a value, or a `torch.cuda.amp` module alias
used for other members, blocks it). Rewriting the base of a `GradScaler` subclass is unsafe:
callers outside the file that pass `init_scale` positionally would pass it as the device.
Subclasses of the legacy `autocast` are reported without a fix, and so is a legacy use in
the `try` body of a compatibility block: it runs (and warns) on a current torch, but its
`except` fallback was written for older releases, which the rewrite would change.
""",
            references=(
                "https://pytorch.org/docs/stable/amp.html",
                "https://pytorch.org/docs/stable/amp.html#torch.autocast",
                "https://pytorch.org/docs/stable/amp.html#gradient-scaling",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP008",
        name="autocast-device-type",
        summary="`torch.autocast` without a device type, or with a device instead of its type",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks `torch.autocast(...)` and `torch.amp.autocast(...)` (also through
`functools.partial`) for a missing device type, a `torch.device` object (`torch.device("cuda")`,
a tensor's `x.device`, a variable assigned from `torch.device(...)`), or a device string with
an index (`"cuda:0"`, `f"cuda:{rank}"`, or a variable holding one) where the device *type*
(`"cuda"`) is expected. The legacy `torch.cuda.amp.autocast()` takes no device type and is
not checked here. Variables of unknown origin, `device.type` and `str(device).split(":")[0]`
are accepted.
""",
            why_bad="""
`device_type` is a required string. Without it autocast raises `TypeError`; a `torch.device`
raises `ValueError: Expected device_type of type str`, so the training script crashes on the
first step. A string with an index is rejected by older PyTorch releases
(`unsupported autocast device_type 'cuda:0'`) and, where it is accepted, bypasses the checks
autocast makes for the `"cuda"` type (CUDA availability, bfloat16 support): the region
behaves differently from the one the code means.
""",
            example="""
device = torch.device(f"cuda:{local_rank}")
with torch.autocast(device_type=f"cuda:{local_rank}", dtype=torch.bfloat16):
    loss = model(x.to(device))
""",
            use_instead="""
device = torch.device(f"cuda:{local_rank}")
with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
    loss = model(x.to(device))
""",
            fix_safety="""
Replacing a device string or a `torch.device(...)` call with its type is safe: the original
call cannot work as intended. Appending `.type` to a tensor's `.device` or to a variable
assigned from `torch.device(...)` is unsafe: the analysis cannot prove the value is a
`torch.device` everywhere the line runs. A missing device type is filled in (unsafe) only
when every other autocast of the module names the same device type; otherwise no fix is
offered.
""",
            references=(
                "https://pytorch.org/docs/stable/amp.html#torch.autocast",
                "https://pytorch.org/docs/stable/tensor_attributes.html#torch.device",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP009",
        name="half-params-with-gradscaler",
        summary="a model trained with a GradScaler is cast to float16 parameters",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for `model.half()`, `model.to(torch.float16)` and `model.to(device, dtype=torch.half)`
on a model whose parameters an optimizer of the module trains, where a GradScaler that is
on whenever the cast runs scales the losses: one built, used or passed on by the same
function (the same class, for methods), unconditionally or under the same flag as the cast
(`if args.fp16: model.half()` with `GradScaler(enabled=args.fp16)`). Casts that are not
half-precision training are left alone: `.half().float()` round trips, `.half().eval()`
copies, casts under `torch.no_grad()`, casts after training (for an export or checkpoint),
EMA/teacher copies no optimizer owns, `x.half()` on input tensors, pure float16 training in
a function without a scaler, and casts under a flag other than the scaler's (or in the
branch where no scaler is built), where the analysis cannot tell both are on together.
""",
            why_bad="""
Mixed precision keeps float32 parameters and lets autocast run selected ops in float16;
`GradScaler` relies on that. With float16 parameters the gradients are float16 too, and
`scaler.step()` (through `unscale_`) raises `ValueError: Attempting to unscale FP16
gradients.` Worse, fused optimizers (`torch.optim.Adam(..., fused=True)`, `AdamW`, `SGD`)
take the scale into their own kernel and skip that check: training runs, but the weights
themselves are float16, so every update smaller than half a float16 step of the weight
(about 1e-3 relative) rounds away, and training stalls or diverges with no error at all.
""",
            example="""
model = Net().cuda().half()
optimizer = torch.optim.AdamW(model.parameters(), fused=True)
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            use_instead="""
model = Net().cuda()
optimizer = torch.optim.AdamW(model.parameters(), fused=True)
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda", dtype=torch.float16):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            fix_safety="""
The fix drops the cast (the whole statement when it only casts, else the `.half()` call or
the `dtype` argument of `.to(...)`). It is unsafe: the parameters stay float32, which uses
more memory, and code that relied on float16 parameters outside autocast (inputs cast with
`.half()`, custom kernels) needs autocast around the forward pass to keep its speed.
""",
            references=(
                "https://pytorch.org/docs/stable/amp.html#gradient-scaling",
                "https://pytorch.org/docs/stable/notes/amp_examples.html",
                "https://pytorch.org/docs/stable/generated/torch.optim.AdamW.html",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP010",
        name="gradscaler-recreated-per-step",
        summary="a GradScaler is constructed anew in every training iteration",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for a `GradScaler(...)` constructed inside a training loop (a loop whose iterations
run a backward pass or an optimizer step), or inside a function that runs once per
iteration: a `train_step`/`training_step` method, or a function of the same module called
from inside the training loop. Only lazy initialisation is exempt: a scaler built under
`if self.scaler is None:` (or `self.scaler = self.scaler or GradScaler()`), under a
first-iteration test (`if step == 0:`, `if epoch == start_epoch:`, a flag the loop flips
such as `if first: ... first = False`), in an `except` handler, or literally disabled. A
construction under any other test in the loop (`if use_amp:`) may run on every pass and is
reported. One built once per run or per epoch, outside the batch loop, is not reported.
""",
            why_bad="""
A GradScaler is a piece of state that must live across iterations: its loss scale starts at
`init_scale` (65536) and only `update()` adapts it, halving it after an overflow and growing
it after 2000 finite steps. A new scaler every iteration forgets all of that. When the
gradients overflow at 65536 (common for large models), every step overflows, `scaler.step`
skips every optimizer step, and training silently makes no progress while the loss curve
looks flat; when they do not, the scale can never grow to protect small gradients from
underflow. Each construction also allocates new device tensors for the scale.
""",
            example="""
for x, y in loader:
    scaler = torch.amp.GradScaler("cuda")
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
""",
            use_instead="""
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
""",
            fix_safety="""
The fix moves the `scaler = GradScaler(...)` statement above the training loop, and above
the loops around it (epochs) unless one of them builds a model or an optimizer anew (a
loop over training runs keeps one scaler per run). It is offered only when the statement
sits directly in the loop bodies (not under an `if`, `with` or `try`) and its arguments
read nothing the loops assign (the loop variables included), so the hoisted constructor
builds the same scaler once; it is safe. A scaler created in a per-iteration function is
reported without a fix: create it where the trainer is set up (`__init__`, before the
loop) and pass it in.
""",
            references=(
                "https://pytorch.org/docs/stable/amp.html#gradient-scaling",
                "https://pytorch.org/docs/stable/notes/amp_examples.html#typical-mixed-precision-training",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP011",
        name="unscale-twice",
        summary="`scaler.unscale_(optimizer)` called twice before `update()`, or after `step()`",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for `scaler.unscale_(optimizer)` called a second time for the same optimizer before
`scaler.update()`, called after `scaler.step(optimizer)` in the same iteration, or called in
a loop (over micro-batches) inside the iteration that updates the scaler only once.
""",
            why_bad="""
`unscale_` may run once per optimizer between two `update()` calls: the second call raises
`RuntimeError: unscale_() has already been called on this optimizer since the last
update()`, and after `step()` it raises `unscale_() is being called after step()`. Such a
call often hides under a flag (`if args.clip_grad:`) and crashes only in the configuration
nobody tested.
""",
            example="""
scaler.scale(loss).backward()
scaler.unscale_(optimizer)
torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
scaler.unscale_(optimizer)
scaler.step(optimizer)
scaler.update()
""",
            use_instead="""
scaler.scale(loss).backward()
scaler.unscale_(optimizer)
torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
scaler.step(optimizer)
scaler.update()
""",
            fix_safety="""
The fix removes the extra call: the second one, when it only runs where the first one ran
(so every later read, the clip included, already sees unscaled gradients), or the one
after `step()` (the step already unscaled them). It is safe: `scaler.step()` unscales
gradients not yet unscaled. No fix is offered when the first call is the conditional one
(removing either would change what a read in between sees), when the call sits in a helper
other code may call, or when it is the only statement of its block.
""",
            references=(
                "https://pytorch.org/docs/stable/amp.html#torch.amp.GradScaler.unscale_",
                "https://pytorch.org/docs/stable/notes/amp_examples.html#gradient-clipping",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP012",
        name="optimizer-step-inside-autocast",
        summary="optimizer step or scaler step/update inside an autocast region",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for `optimizer.step()`, `scaler.step(optimizer)` and `scaler.update()` called while
an enabled autocast region is active. `optimizer.zero_grad()` alone computes nothing and is
harmless there: it is not reported (the fix moves it out with the steps it stands among).

A step that follows a backward pass in the same `with` block is left to
`backward-inside-autocast` (AMP001), whose fix moves the backward and everything after it.
""",
            why_bad="""
Autocast should wrap only the forward pass and the loss computation. Everything the
optimizer does under it runs through autocast's dispatch: optimizers that multiply
matrices (Shampoo, Muon, K-FAC style preconditioners, LBFGS) silently compute their updates
in float16 or bfloat16, which loses precision in exactly the place mixed precision keeps
float32 master weights for, and the update then depends on where the `with` block happens
to end. `zero_grad()` and `scaler.update()` gain nothing from autocast; inside the block
they make the region look like it covers the whole iteration, which is how backward passes
end up inside it too.
""",
            example="""
for x, y in loader:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        accelerator_backward(loss)
        optimizer.step()
""",
            use_instead="""
for x, y in loader:
    optimizer.zero_grad()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = loss_fn(model(x), y)
        accelerator_backward(loss)
    optimizer.step()
""",
            fix_safety="""
Statements at the start of the `with` body that only zero gradients or step are moved
before the `with`; the first step statement after the forward code is moved after the
`with`, together with every statement that follows it in the block (as AMP001 does for a
backward pass); a block that only steps is unwrapped. The fix is safe when every moved
statement is a plain call of `step`, `update`, `zero_grad` or a scheduler's `step`. It is
unsafe when other code moves with them (it then runs without autocast), when the step is
nested in an `if`/`for` of the block, or when the `with` enters other context managers too
(the moved code leaves those as well). No fix is offered for a step between forward
statements.
""",
            references=(
                "https://pytorch.org/docs/stable/amp.html#torch.autocast",
                "https://pytorch.org/docs/stable/notes/amp_examples.html",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP013",
        name="scaler-state-not-checkpointed",
        summary="a checkpoint saves the optimizer's state but not the GradScaler's",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for a training checkpoint that holds the optimizer's `state_dict()` but not the
GradScaler's, in a module that trains with a GradScaler: `torch.save({...})` of a dict
literal, or of a name whose last value before the save is one (the name may be bound
elsewhere too, e.g. to `torch.load(...)` on the resume path), or of a dataclass or
NamedTuple of the module turned into a dict (`torch.save(asdict(snapshot), path)`,
`snapshot._asdict()`), or a dict literal handed to a function of the module that passes it
unchanged to `torch.save` (`save_checkpoint({...}, path)`); a checkpoint helper of the same
module that saves such a dict,
called where a scaler trains but not handed the scaler (`save_checkpoint(model,
optimizer)`); and `optimizer.load_state_dict(checkpoint[...])` (or of a field of such a
record rebuilt from the checkpoint, `snapshot.optimizer_state`) in such a module with no
`scaler.load_state_dict(...)` anywhere. One missing piece of state is one finding: a dict
saved to several files, or an optimizer restored in several branches of one load path.

Weights-only checkpoints, dicts that gain the scaler's state later
(`checkpoint["scaler"] = scaler.state_dict()`), and modules that hand the scaler to a
checkpointing helper are not reported. Checked with its project, a call of another
module's checkpoint helper that saves or restores the optimizer's state and no scaler's is
reported where it is called.

At runtime, what can be seen of a checkpoint is reported: `scaler.state_dict()` taken
between `scaler.step()` and `scaler.update()`, whose scale is about to change.
""",
            why_bad="""
The loss scale is training state like the optimizer's moments: GradScaler has spent the
run adapting it to the model's gradients. A run resumed without it starts again at
`init_scale` (65536) with a fresh growth tracker, so it skips optimizer steps until the
scale backs off to where it was, and a checkpoint taken mid-run does not reproduce the run
that wrote it. PyTorch's AMP recipe saves and loads `scaler.state_dict()` next to the
model's and the optimizer's.
""",
            example="""
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
torch.save(
    {"model": model.state_dict(), "optimizer": optimizer.state_dict()},
    path,
)
""",
            use_instead="""
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
torch.save(
    {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
    },
    path,
)
# when resuming:
scaler.load_state_dict(checkpoint["scaler"])
""",
            fix_safety="""
The fix adds `"scaler": scaler.state_dict()` to the checkpoint's dict literal. It is offered
only when one GradScaler is in scope at the save under an unambiguous name and it is never
`None`; it is safe (a disabled scaler saves an empty dict). Restoring needs a matching
`scaler.load_state_dict(...)` where the checkpoint is loaded, which the load-side finding
points at; it has no automatic fix, since old checkpoints lack the key.
""",
            references=(
                "https://pytorch.org/docs/stable/notes/amp_examples.html#saving-resuming",
                "https://pytorch.org/docs/stable/amp.html#torch.amp.GradScaler.state_dict",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP014",
        name="gradscaler-with-bfloat16",
        summary="a GradScaler is enabled where every autocast region is bfloat16",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for a GradScaler that is enabled (literally, or by default, or by the very switch
written as every region's `enabled=`) in a module where every
enabled autocast region that trains runs in bfloat16 (explicitly, through a variable or a
`functools.partial`, or as CPU autocast's default). A scaler disabled by the dtype
(`enabled=(dtype == torch.float16)`, `enabled=args.fp16`) or built only under a precision
test (`if args.precision == "fp16":`) is the intended idiom and is not reported; nor is any
module with a float16 region, a region whose dtype cannot be known, or an autocast outside
`with` statements (a decorator, `enter_context(...)`, autocast handed to other code).
Checked with its project, a scaler another module builds (`init_opt()` returning one) is
reported where this module gets it, with no fix.
""",
            why_bad="""
Loss scaling exists because float16 cannot represent small gradients. bfloat16 has
float32's exponent range, so its gradients do not underflow and the scaler protects
nothing. It still costs: every `scaler.step()` reads the inf check back to the host (one
device synchronisation per step, unless the optimizer is fused), `unscale_` makes an extra
pass over every gradient, and a stray inf silently skips a step instead of surfacing. It
also suggests float16 settings that the code does not use.
""",
            example="""
amp_dtype = torch.bfloat16
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda", dtype=amp_dtype):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            use_instead="""
amp_dtype = torch.bfloat16
scaler = torch.amp.GradScaler("cuda", enabled=(amp_dtype == torch.float16))
for x, y in loader:
    with torch.autocast("cuda", dtype=amp_dtype):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            fix_safety="""
When every training region takes its dtype from the same variable, assigned before the
scaler in the same block, the fix passes `enabled=(<variable> == torch.float16)`: the
scaler stays ready for a switch to float16 and does nothing for bfloat16 (its `scale`
returns the loss unchanged, `step` calls `optimizer.step()`). This is safe. Otherwise the
fix passes `enabled=False`, which is unsafe: a later switch to float16 would train without
loss scaling. A disabled scaler saves an empty `state_dict()`, so a checkpoint written
with the scaler enabled still loads.
""",
            references=(
                "https://pytorch.org/docs/stable/amp.html#gradient-scaling",
                "https://pytorch.org/docs/stable/amp.html#torch.amp.GradScaler",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP015",
        name="custom-autograd-function-without-custom-fwd",
        summary="custom autograd Function applied under autocast without `custom_fwd`/`custom_bwd`",
        caught="static",
        docs=Docs(
            what_it_does="""
Checks for a `torch.autograd.Function` subclass defined in the module whose `forward` is not
decorated with `torch.amp.custom_fwd` (or the legacy `torch.cuda.amp.custom_fwd`) and whose
`.apply(...)` is called inside an enabled autocast region of the same module (directly, through
an alias such as `my_op = MyOp.apply`, or through a function of the module called there).
""",
            why_bad="""
Autocast does not cast the inputs of a custom Function, and its `backward` runs outside the
autocast region (autograd calls it after the `with` block). Ops in `forward` pick float16 or
float32 per op while `backward` sees the incoming float16 gradients together with saved
float32 tensors: matmuls fail with `expected scalar type Half but found Float`, or gradients
silently come out in another precision than the forward pass used. `custom_fwd` records the
autocast state (and can cast the inputs with `cast_inputs=`), and `custom_bwd` runs `backward`
in the same state.
""",
            example="""
class ScaledMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return grad @ b.T, a.T @ grad

with torch.autocast("cuda"):
    out = ScaledMatmul.apply(x, w)
""",
            use_instead="""
class ScaledMatmul(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return grad @ b.T, a.T @ grad

with torch.autocast("cuda"):
    out = ScaledMatmul.apply(x, w)
""",
            fix_safety="""
The fix adds `@torch.amp.custom_fwd(device_type=...)` below `@staticmethod` on `forward` and
`@torch.amp.custom_bwd(device_type=...)` on `backward` (where missing), with the device type
of the autocast regions the Function is applied in. It is safe: `forward` runs exactly as
before, and `backward` now runs under the autocast state `forward` ran with, which is the
repair. It is offered only when every such region names the same device type and `torch` is
imported as a module. If `forward` needs float32 inputs, add `cast_inputs=torch.float32`.
""",
            references=(
                "https://pytorch.org/docs/stable/notes/amp_examples.html#autocast-and-custom-autograd-functions",
                "https://pytorch.org/docs/stable/amp.html#torch.amp.custom_fwd",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP016",
        name="accumulation-scale-mismatch",
        summary=(
            "scaler `step`/`update`/`unscale_` every micro-batch while `zero_grad` runs every k"
        ),
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for gradient accumulation in which `optimizer.zero_grad()` runs only at the
accumulation boundary (`if (i + 1) % accum == 0:`), but `scaler.unscale_`, `scaler.step`
or `scaler.update` run on every micro-batch.

At runtime: a `scaler.step(optimizer)` whose gradients are the very tensors the previous
step of that optimizer applied, accumulated into since by a backward, with no `zero_grad()`
(of any optimizer or module) in between. Zeroing by `set_to_none` or `p.grad = None` is
seen; a hand-written `p.grad.zero_()` loop is not.
""",
            why_bad="""
Gradients accumulate across micro-batches, so the scaler's calls belong to the boundary
too. A second `unscale_` of the same optimizer before `update()` raises (`RuntimeError:
unscale_() has already been called on this optimizer since the last update()`), so
`unscale_` on every micro-batch crashes the second micro-batch. `step` every micro-batch
applies a partial sum k times, and `update` changes the loss scale between micro-batches,
so the accumulated gradients mix several scales (after a backoff the sum is wrong by the
scale factor): the model trains on silently wrong gradients.
""",
            example="""
for i, (x, y) in enumerate(loader):
    scaler.scale(loss / accum).backward()
    scaler.step(optimizer)
    scaler.update()
    if (i + 1) % accum == 0:
        optimizer.zero_grad()
""",
            use_instead="""
for i, (x, y) in enumerate(loader):
    scaler.scale(loss / accum).backward()
    if (i + 1) % accum == 0:
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""",
            fix_safety="""
The fix moves the scaler's calls (and a clip between them) into the accumulation block,
before `zero_grad()`, when they stand right before that block. It is unsafe: the optimizer
then steps k times less often, which changes the training schedule (learning-rate
schedulers and step counters keyed to optimizer steps).
""",
            references=(
                "https://pytorch.org/docs/stable/notes/amp_examples.html#gradient-accumulation",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP017",
        name="amp-silently-disabled",
        summary="autocast or GradScaler that PyTorch disables with only a warning",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for AMP objects that PyTorch turns off at construction, with a warning, so that the
program runs but without mixed precision:

- an autocast region on `"cpu"` (also `"mps"`, `"xpu"`) with a dtype other than `float16`
  or `bfloat16`, e.g. `torch.autocast("cpu", dtype=torch.float32)`;
- a `torch.amp.GradScaler()` (whose device defaults to `"cuda"`) or a
  `torch.cuda.amp.GradScaler()` in a file whose autocast is CPU-only float16 and that never
  mentions CUDA: on a machine without CUDA the scaler disables itself.
""",
            why_bad="""
The only trace is a warning at start-up (`Disabling autocast`, `GradScaler is enabled, but
CUDA is not available. Disabling.`). Training then runs in full precision (no speed-up), or
worse, float16 autocast runs with a disabled scaler: `scaler.scale(loss)` returns the loss
unscaled, small gradients underflow to zero and the model silently stops learning.
""",
            example="""
scaler = torch.amp.GradScaler()
for x, y in loader:
    with torch.autocast("cpu", dtype=torch.float16):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            use_instead="""
scaler = torch.amp.GradScaler("cpu")
for x, y in loader:
    with torch.autocast("cpu", dtype=torch.float16):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            fix_safety="""
The fix names the scaler's device, `"cpu"` (the legacy `torch.cuda.amp.GradScaler(...)`
becomes `torch.amp.GradScaler("cpu", ...)` with its arguments passed by keyword). It is safe:
the file's autocast runs on the CPU, so the scaler is meant to scale CPU gradients. No fix
is offered for an unsupported autocast dtype: whether full precision (drop autocast) or
`bfloat16` was meant is the author's call.
""",
            references=(
                "https://pytorch.org/docs/stable/amp.html#cpu-op-specific-behavior",
                "https://pytorch.org/docs/stable/amp.html#torch.amp.GradScaler",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP018",
        name="clip-error-if-nonfinite",
        summary="`clip_grad_norm_(..., error_if_nonfinite=True)` in a loop with a GradScaler",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for `torch.nn.utils.clip_grad_norm_(..., error_if_nonfinite=True)` in a training
iteration that uses a `GradScaler`, and for torch 2.6's split clip, the
`get_total_norm(..., error_if_nonfinite=True)` whose norm `clip_grads_with_norm_` clips with.
""",
            why_bad="""
With float16 loss scaling, inf/NaN gradients are routine: the scaler starts at a scale of
65536 and finds the largest safe one by overflowing now and then, skipping those steps.
`error_if_nonfinite=True` turns each such expected overflow into a `RuntimeError`, so a
healthy run crashes early in training or hours later at the next scale growth.
""",
            example="""
scaler.scale(loss).backward()
scaler.unscale_(optimizer)
torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)
scaler.step(optimizer)
scaler.update()
""",
            use_instead="""
scaler.scale(loss).backward()
scaler.unscale_(optimizer)
torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
scaler.step(optimizer)
scaler.update()
""",
            fix_safety="""
The fix removes the argument. It is safe: `scaler.step()` already skips the optimizer step
when the gradients are not finite, which is the protection the flag was meant to give.
""",
            references=(
                "https://pytorch.org/docs/stable/generated/torch.nn.utils.clip_grad_norm_.html",
                "https://pytorch.org/docs/stable/amp.html#gradient-scaling",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP019",
        name="closure-with-gradscaler",
        summary=(
            "`scaler.step()` with a closure, or an LBFGS optimizer, which GradScaler cannot drive"
        ),
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for `scaler.step(optimizer, closure)` / `scaler.step(optimizer, closure=...)`, and
for an `LBFGS` optimizer stepped through a GradScaler.
""",
            why_bad="""
GradScaler does not support closures. `scaler.step(opt, closure=...)` raises
`RuntimeError: Closure use is not currently supported if GradScaler is enabled`. A
positional closure is passed on to `optimizer.step`, which re-evaluates the loss and
re-runs backward after `unscale_`: those gradients are never unscaled or checked for
inf/NaN, so the optimizer steps on scaled gradients. LBFGS needs its closure on every step.
""",
            example="""
scaler = torch.amp.GradScaler("cuda")

def closure():
    optimizer.zero_grad()
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    return loss

scaler.step(optimizer, closure)
scaler.update()
""",
            use_instead="""
scaler = torch.amp.GradScaler("cuda")

optimizer.zero_grad()
with torch.autocast("cuda"):
    loss = loss_fn(model(x), y)
scaler.scale(loss).backward()
scaler.step(optimizer)
scaler.update()
""",
            fix_safety="""
No fix: restructuring a closure-based optimizer loop (or choosing another optimizer, or
training LBFGS in bfloat16/float32 without a scaler) is a decision for the author.
""",
            references=(
                "https://pytorch.org/docs/stable/amp.html#torch.amp.GradScaler.step",
                "https://pytorch.org/docs/stable/optim.html#optimizer-step-closure",
            ),
        ),
    ),
    Entry(
        code="AMP020",
        name="banned-op-under-autocast",
        summary="`binary_cross_entropy` / `BCELoss` inside CUDA autocast",
        caught="static",
        docs=Docs(
            what_it_does="""
Checks for `torch.nn.functional.binary_cross_entropy(...)` and calls of an `nn.BCELoss()`
instance (created anywhere in the module: a local, a module global, `self.criterion`) inside
an enabled CUDA autocast region, directly or through a function of the same module called
there.
""",
            why_bad="""
PyTorch refuses these under CUDA autocast: the call raises `RuntimeError:
torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast`, because
the gradient of `log(p)` for float16 probabilities near 0 or 1 is inaccurate. The training
step crashes the first time it runs with AMP on.
""",
            example="""
criterion = nn.BCELoss()
with torch.autocast("cuda"):
    probs = torch.sigmoid(model(x))
    loss = criterion(probs, y)
""",
            use_instead="""
criterion = nn.BCEWithLogitsLoss()
with torch.autocast("cuda"):
    logits = model(x)
    loss = criterion(logits, y)
""",
            fix_safety="""
`binary_cross_entropy_with_logits` / `BCEWithLogitsLoss` take logits, not probabilities, so a
fix is offered only when the input is literally `torch.sigmoid(x)` / `x.sigmoid()`: the
sigmoid is dropped and the with-logits form used (for a `BCELoss` instance, only when every
call of it in the module passes such an input). The result is the same loss computed more
stably, which is not bit-identical: the fix is unsafe. Otherwise, compute the loss in float32
outside autocast (`with torch.autocast("cuda", enabled=False): loss = F.binary_cross_entropy(
probs.float(), y)`) or make the model return logits.
""",
            references=(
                "https://pytorch.org/docs/stable/amp.html#prefer-binary-cross-entropy-with-logits-over-binary-cross-entropy",
            ),
        ),
        fixable=True,
    ),
    Entry(
        code="AMP021",
        name="sync-per-step",
        summary="scaler state read on the host every iteration (a device sync per step)",
        caught="both",
        docs=Docs(
            what_it_does="""
Checks for `scaler.get_scale()`, `scaler.state_dict()` or `.item()` of the scaler's
`_scale` / `_growth_tracker` tensors read for display (printed, logged, put in a progress
bar) on every training iteration, not under a logging interval such as
`if step % log_every == 0:`. `state_dict()` is checked on every iteration whatever the use.
Not reported where the iteration already waits for the device before the read (an
unconditional `loss.item()` or `torch.cuda.synchronize()` on every step), nor for a scaler
made for the `"cpu"` device, whose scale lives on the host.

At runtime: `scaler.state_dict()` of a scaler whose scale lives on a device, taken from one
line on ten iterations in a row. `get_scale()` is left to the linter, which sees whether
the value decides something; a run cannot tell that from display.
""",
            why_bad="""
The loss scale lives on the GPU: reading it copies it to the host and makes the CPU wait
for every queued kernel. Once per iteration, that stalls the pipeline that lets the CPU
queue the next forward pass while the GPU runs this one, for a number nobody needs every
step. Reading it where it is needed to decide something (e.g. whether the step was
skipped) is not flagged.
""",
            example="""
for step, batch in enumerate(loader):
    ...
    scaler.update()
    print(f"loss scale {scaler.get_scale()}")
""",
            use_instead="""
for step, batch in enumerate(loader):
    ...
    scaler.update()
    if step % log_every == 0:
        print(f"loss scale {scaler.get_scale()}")
""",
            fix_safety="""
No fix: the logging interval is the author's choice.
""",
            references=(
                "https://pytorch.org/docs/stable/amp.html#torch.amp.GradScaler.get_scale",
                "https://pytorch.org/docs/stable/notes/cuda.html#asynchronous-execution",
            ),
        ),
    ),
    Entry(
        code="AMP022",
        name="half-params-with-framework-fp16",
        summary="float16 trainable parameters under a framework's float16 mixed precision",
        caught="both",
        fixable=True,
        docs=Docs(
            what_it_does="""
Checks for a model loaded or cast to float16 (`from_pretrained(..., torch_dtype=torch.float16)`,
`dtype=torch.float16`, `.half()`, `.to(torch.float16)`) that is then handed, whole, to a
framework told to train with float16 mixed precision: Hugging Face
`Trainer(model, TrainingArguments(fp16=True))`,
`Accelerator(mixed_precision="fp16").prepare(model)`,
Lightning `Trainer(precision="16-mixed").fit(model)`, `Fabric(precision="16-mixed").setup(model)`.

It stays quiet when the module freezes parameters or trains adapters (PEFT / LoRA,
`requires_grad`, `prepare_model_for_kbit_training` and friends, quantized loading), uses
DeepSpeed or FSDP (which keep their own float32 master weights), casts anything back to
float32, or when the dtype or the precision is not a literal.
""",
            why_bad="""
Mixed precision keeps the trainable parameters in float32 and lets autocast run the forward
pass in float16. The GradScaler these frameworks build refuses float16 gradients: the first
optimizer step (or the first gradient clip) ends the run with
`ValueError: Attempting to unscale FP16 gradients.` This is the most reported AMP error in
public issue trackers. With a fused optimizer the check is skipped and float16 weights are
stepped silently: small updates round away.
""",
            example="""
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
model = AutoModelForCausalLM.from_pretrained(name, torch_dtype=torch.float16)
args = TrainingArguments("out", fp16=True)
Trainer(model=model, args=args, train_dataset=data).train()
""",
            use_instead="""
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
model = AutoModelForCausalLM.from_pretrained(name, torch_dtype=torch.float32)
args = TrainingArguments("out", fp16=True)
Trainer(model=model, args=args, train_dataset=data).train()
""",
            fix_safety="""
The fix writes `torch.float32` for the float16 dtype of `from_pretrained`. It is unsafe: the
model takes twice the memory. To train in float16 memory, freeze the float16 base and train
float32 adapters (PEFT/LoRA), or use Lightning's `precision="16-true"` (pure float16, no
scaler).
""",
            references=(
                "https://github.com/pytorch/pytorch/blob/main/torch/amp/grad_scaler.py"
                " (`_unscale_grads_` raises 'Attempting to unscale FP16 gradients.')",
                "https://huggingface.co/docs/accelerate/package_reference/accelerator"
                " (`Accelerator.__init__` builds a GradScaler for `mixed_precision='fp16'`)",
                "https://huggingface.co/docs/transformers/main_classes/trainer",
                "https://lightning.ai/docs/pytorch/stable/common/precision_intermediate.html",
                "https://huggingface.co/docs/peft/developer_guides/troubleshooting"
                " (trainable parameters in float32)",
            ),
        ),
    ),
    Entry(
        code="AMP023",
        name="fp16-and-bf16-both",
        summary="`TrainingArguments` asks for float16 and bfloat16 mixed precision at once",
        caught="static",
        docs=Docs(
            what_it_does="""
Checks for `TrainingArguments` (or `Seq2SeqTrainingArguments`, or the dict given to
`HfArgumentParser(...).parse_dict`) with both `fp16=True` and `bf16=True`, or both
`fp16_full_eval=True` and `bf16_full_eval=True`, written as literals.
""",
            why_bad="""
The two flags choose the autocast dtype; only one can hold. `TrainingArguments` refuses
the pair when it is built (`ValueError: At most one of fp16 and bf16 can be True, but not
both`), often after minutes of model loading on a cluster job, and the code does not say
which of the two the author meant.
""",
            example="""
from transformers import TrainingArguments
args = TrainingArguments("out", fp16=True, bf16=True)
""",
            use_instead="""
from transformers import TrainingArguments
args = TrainingArguments("out", bf16=True)
""",
            fix_safety="""
No fix: which dtype was meant is the author's choice (bfloat16 needs no loss scaling where
the hardware supports it; float16 runs on older GPUs).
""",
            references=(
                "https://github.com/huggingface/transformers/blob/main/src/transformers/"
                "training_args.py (`__post_init__`: 'At most one of fp16 and bf16 can be True')",
            ),
        ),
    ),
    Entry(
        code="AMP024",
        name="framework-fp16-on-cpu",
        summary="float16 mixed precision asked of a framework that runs on the CPU only",
        caught="static",
        fixable=True,
        docs=Docs(
            what_it_does="""
Checks for float16 mixed precision together with a CPU-only switch, both literals:
`TrainingArguments(fp16=True, use_cpu=True)` (or the older `no_cuda=True`),
`Accelerator(mixed_precision="fp16", cpu=True)`,
`Trainer(accelerator="cpu", precision="16-mixed")` and `Fabric(...)` alike.
""",
            why_bad="""
None of these frameworks runs float16 mixed precision on a CPU, and none says so loudly.
Accelerate (which the Hugging Face `Trainer` uses) builds no GradScaler and no autocast for
`"fp16"` on a CPU device: training silently runs in float32. Lightning warns once and
switches to `"bf16-mixed"`. Either way the run is not what the code says; bfloat16 is the
CPU's mixed precision.
""",
            example="""
import lightning as L
trainer = L.Trainer(accelerator="cpu", precision="16-mixed")
""",
            use_instead="""
import lightning as L
trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed")
""",
            fix_safety="""
For Lightning's `Trainer` and `Fabric`, the fix writes `"bf16-mixed"`, which is what
Lightning runs anyway: safe. For `TrainingArguments` and `Accelerator` there is no fix:
asking for bfloat16 would change the run from float32 to bfloat16.
""",
            references=(
                "https://github.com/huggingface/accelerate/blob/main/src/accelerate/accelerator.py"
                " (`__init__`: a GradScaler only when `self.device.type != 'cpu'`)",
                "https://github.com/Lightning-AI/pytorch-lightning/blob/master/src/lightning/"
                "pytorch/trainer/connectors/accelerator_connector.py ('AMP with fp16 is not "
                "supported on CPU. Using precision=bf16-mixed instead.')",
                "https://pytorch.org/docs/stable/amp.html#cpu-op-specific-behavior",
            ),
        ),
    ),
    Entry(
        code="AMP025",
        name="amp-stacked-on-framework",
        summary="own GradScaler or autocast on top of a framework that scales or autocasts",
        caught="static",
        docs=Docs(
            what_it_does="""
Checks for the user's own AMP on top of a framework's float16 / bfloat16 mixed precision for
the same step:

- a `torch.amp.GradScaler`'s `scale(loss)` handed to `accelerator.backward`,
  `fabric.backward` or Lightning's `self.manual_backward` while that framework runs float16
  mixed precision (it scales the loss again);
- a `torch.autocast` with another dtype inside `with accelerator.autocast():` /
  `fabric.autocast()`, or in a LightningModule's `training_step` under a Trainer whose
  mixed precision (in the same module) uses another dtype.
""",
            why_bad="""
The framework already multiplies the loss by its own scale, and unscales and steps with its
own GradScaler: a second scaler multiplies the gradients twice, and the framework then
divides by its scale only, so every update is off by the user's scale (65536 at first) and
overflow checks see the wrong numbers. A nested autocast with another dtype silently
overrides the framework's: float16 compute under a bfloat16 setup has no loss scaling at all,
and bfloat16 under a float16 setup keeps an unneeded scaler.
""",
            example="""
from accelerate import Accelerator
accelerator = Accelerator(mixed_precision="fp16")
scaler = torch.amp.GradScaler()
...
accelerator.backward(scaler.scale(loss))
""",
            use_instead="""
from accelerate import Accelerator
accelerator = Accelerator(mixed_precision="fp16")
...
accelerator.backward(loss)
""",
            fix_safety="""
No fix: removing a scaler also removes its `step` / `update` calls and its checkpoint state,
which are the author's to rewrite.
""",
            references=(
                "https://huggingface.co/docs/accelerate/package_reference/accelerator",
                "https://lightning.ai/docs/pytorch/stable/model/manual_optimization.html",
                "https://pytorch.org/docs/stable/amp.html#autocasting"
                " (nested autocast regions: the innermost decides)",
            ),
        ),
    ),
    Entry(
        code="AMP101",
        name="nonfinite-loss",
        summary="the loss is inf or NaN before scaling",
        caught="runtime",
        docs=Docs(
            what_it_does="""
Checks, at run time with health checks on, that the loss handed to `scaler.scale(loss)` is
finite. The check is reduced on the device and read back with the scaler's own
synchronisation, so it adds no host sync to a step.
""",
            why_bad="""
A GradScaler skips steps whose *gradients* are non-finite and lowers the scale, which cures
an overflow caused by scaling. A loss that is already inf or NaN before scaling is not an
overflow of scaling: every step is skipped, the scale shrinks to nothing, and the model
stops training while the loop goes on.
""",
            example="""
with torch.autocast("cuda"):
    loss = (model(x) - y).pow(2).sum().log()  # log(0) on an all-zero batch
scaler.scale(loss).backward()
""",
            use_instead="""
with torch.autocast("cuda"):
    loss = (model(x) - y).pow(2).sum().clamp_min(1e-12).log()
scaler.scale(loss).backward()
""",
            fix_safety="""
Runtime only: there is no automatic fix. Find where the loss first goes non-finite (a
float16 overflow in the forward, see AMP105; a log of zero; bad data).
""",
            references=("https://pytorch.org/docs/stable/notes/amp_examples.html",),
        ),
        thresholds=(_EVERY,),
    ),
    Entry(
        code="AMP102",
        name="loss-scale-collapse",
        summary="the loss scale fell below a floor or backed off on many consecutive steps",
        caught="runtime",
        docs=Docs(
            what_it_does="""
Watches the GradScaler's scale after each `update()`: it reports when the scale falls below
`min_scale`, or when it backed off on `max_backoffs` consecutive steps down to where as many
backoffs from torch's default scale (65536) lead: a larger `init_scale` backs off that many
times while it settles, which is no collapse.
""",
            why_bad="""
The scale backs off when the scaled gradients overflow, and grows back only after
`growth_interval` steps without one. A collapse means the gradients overflowed again and
again, more often than that: at such small scales the cause is rarely the scaling but the
model (a float16 overflow in the forward, a non-finite loss). Every one of those steps is
skipped.
""",
            example="""
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x).exp().sum()  # overflows float16 on every step
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            use_instead="""
scaler = torch.amp.GradScaler("cuda", enabled=False)
for x, y in loader:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x).exp().sum()
    loss.backward()
    optimizer.step()
""",
            fix_safety="""
Runtime only: there is no automatic fix. Look for AMP105 (the module whose float16 output
overflows) or AMP101, or train in bfloat16.
""",
            references=("https://pytorch.org/docs/stable/amp.html#gradient-scaling",),
        ),
        thresholds=(
            Threshold("min_scale", 1.0, "the loss scale fell below this"),
            Threshold("max_backoffs", 12, "or backed off on this many consecutive steps"),
            _EVERY,
        ),
    ),
    Entry(
        code="AMP103",
        name="skipped-step-rate",
        summary="a large share of optimizer steps were skipped for non-finite gradients",
        caught="runtime",
        docs=Docs(
            what_it_does="""
Counts the optimizer steps that `scaler.step()` skipped for non-finite gradients, and
reports when at least `skip_rate` of the last `skip_window` steps were skipped.
""",
            why_bad="""
A few skipped steps while the scale settles are normal. A steady share of skipped steps
means the model does not train on those batches, and the learning-rate schedule runs ahead
of the optimizer.
""",
            example="""
optimizer = torch.optim.SGD(model.parameters(), lr=10.0)  # diverges: gradients overflow
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            use_instead="""
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            fix_safety="""
Runtime only: there is no automatic fix. Look for a float16 overflow (AMP105), lower the
learning rate, or train in bfloat16.
""",
            references=("https://pytorch.org/docs/stable/amp.html#gradient-scaling",),
        ),
        thresholds=(
            Threshold("skip_rate", 0.25, "share of skipped steps that is reported"),
            Threshold("skip_window", 100, "the number of most recent steps that share is over"),
            _EVERY,
        ),
    ),
    Entry(
        code="AMP104",
        name="gradient-underflow",
        summary="a large share of gradient values underflow float16 at the current scale",
        caught="runtime",
        docs=Docs(
            what_it_does="""
On one step in `underflow_every`, measures the share of gradient values that are below
float16's smallest normal number once multiplied by the current loss scale, as backward
produced them. Reports when that share is above `underflow_share`.
""",
            why_bad="""
Loss scaling exists to keep small gradients representable in float16. When a large share of
them still underflow, they are flushed to zero or lose most of their precision, and the
parameters they belong to barely train.
""",
            example="""
scaler = torch.amp.GradScaler("cuda", init_scale=1.0, growth_interval=1_000_000)
""",
            use_instead="""
scaler = torch.amp.GradScaler("cuda")  # init_scale=2**16, growth_interval=2000
""",
            fix_safety="""
Runtime only: there is no automatic fix. Raise the loss scale (`init_scale`, a shorter
`growth_interval`), or train in bfloat16.
""",
            references=("https://pytorch.org/docs/stable/amp.html#gradient-scaling",),
        ),
        thresholds=(
            Threshold(
                "underflow_share",
                0.1,
                "share of gradient values below float16's smallest normal at the current scale",
            ),
            Threshold(
                "underflow_every",
                16,
                "the gradient statistics are taken on one step in this many, starting with step 0",
            ),
        ),
    ),
    Entry(
        code="AMP105",
        name="activation-overflow",
        summary="a module's float16 output is non-finite or close to float16's maximum",
        caught="runtime",
        docs=Docs(
            what_it_does="""
Watches the float16 outputs of every module under autocast and names the first module whose
output is non-finite, or at or above `65504 * (1 - overflow_margin)`, with the step. Every
iteration of the first `activations_first` is measured; after them, one in
`activations_every`, and every iteration that follows a skipped step (an overflow in the
forward makes the gradients non-finite and the step is skipped: measured again, the overflow
is named where it recurs; a fused optimizer's skipped steps are seen when the statistics are
read, every `every` steps, and the iterations until the next reading are measured).
`activations_every=1` measures every iteration.
""",
            why_bad="""
float16's largest value is 65504. An activation that reaches it becomes inf, and every
gradient that depends on it becomes NaN: the step is skipped and the scale backs off. The
loss scale cannot cure it, because the overflow is in the forward pass.
""",
            example="""
with torch.autocast("cuda"):
    logits = model(x)  # attention scores of a large model overflow float16
""",
            use_instead="""
with torch.autocast("cuda", dtype=torch.bfloat16):
    logits = model(x)
""",
            fix_safety="""
Runtime only: there is no automatic fix. Run the named module in float32 (wrap its forward
in `torch.autocast(..., enabled=False)` and cast its input with `.float()`), or train in
bfloat16.
""",
            references=(
                "https://pytorch.org/docs/stable/amp.html#ops-that-can-autocast-to-float16",
            ),
        ),
        thresholds=(
            Threshold(
                "overflow_margin", 0.5, "an output at or above 65504 * (1 - margin) is reported"
            ),
            Threshold("activations", True, "forward hooks on every module, which AMP105 needs"),
            Threshold(
                "activations_first", 100, "every iteration of the first this many is measured"
            ),
            Threshold(
                "activations_every",
                16,
                "then one iteration in this many, and every one after a skipped step",
            ),
            _EVERY,
        ),
    ),
    Entry(
        code="AMP106",
        name="grads-nonfinite-after-unscale",
        summary="gradients changed between `unscale_` and `step` became non-finite",
        caught="runtime",
        docs=Docs(
            what_it_does="""
Compares the gradients' finiteness at `scaler.unscale_(optimizer)` with their finiteness at
`scaler.step(optimizer)`. Reports when they were finite at the first and are not at the
second. The step itself behaves exactly as torch's: amplint only reports.
""",
            why_bad="""
`scaler.step()` decides whether to skip the step from what `unscale_` found. Gradients made
non-finite after that (by a hook, a custom clip, in-place arithmetic) are applied by the
optimizer, and the parameters become NaN.
""",
            example="""
scaler.unscale_(optimizer)
for p in model.parameters():
    p.grad.div_(p.grad.norm())  # a zero gradient gives NaN
scaler.step(optimizer)
""",
            use_instead="""
scaler.unscale_(optimizer)
for p in model.parameters():
    p.grad.div_(p.grad.norm().clamp_min(1e-12))
scaler.step(optimizer)
""",
            fix_safety="""
Runtime only: there is no automatic fix. Do not change gradients between `unscale_` and
`step`, or check them yourself before stepping.
""",
            references=(
                "https://pytorch.org/docs/stable/notes/amp_examples.html#gradient-clipping",
            ),
        ),
        thresholds=(_EVERY,),
    ),
    Entry(
        code="AMP107",
        name="scheduler-step-after-skipped-step",
        summary="`lr_scheduler.step()` ran after `scaler.step()` skipped the optimizer step",
        caught="runtime",
        docs=Docs(
            what_it_does="""
Reports LR scheduler steps right after `scaler.step()` skipped the optimizer step, once
they add up to `schedule_drift` of the steps since the first `startup_steps` (where
backoffs are normal), counted over at least `skip_window` steps. A skip now and then is
how the scaler probes a larger scale (one overflow every `growth_interval` steps, 2000 by
default): the schedule moves by a negligible share, and that is not reported.
""",
            why_bad="""
Each skipped optimizer step with a scheduler step moves the learning-rate schedule one step
ahead of the optimizer. Over many skipped steps, warm-up and decay happen at the wrong time.
""",
            example="""
scaler.step(optimizer)
scaler.update()
scheduler.step()
""",
            use_instead="""
scale_before = scaler.get_scale()
scaler.step(optimizer)
scaler.update()
if scaler.get_scale() >= scale_before:  # the step was not skipped
    scheduler.step()
""",
            fix_safety="""
Runtime only: there is no automatic fix. Fix what makes steps skip (see AMP103), or step the
scheduler only when the optimizer stepped.
""",
            references=("https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate",),
        ),
        thresholds=(
            Threshold("startup_steps", 100, "silent during this many first steps"),
            Threshold(
                "schedule_drift", 0.02, "share of the steps since then the schedule ran ahead"
            ),
            Threshold("skip_window", 100, "the fewest steps that share is counted over"),
        ),
    ),
    Entry(
        code=INTERNAL_ERROR_CODE,
        name="internal-error",
        summary="a rule failed on this file: a bug in amplint",
        caught="static",
        docs=Docs(
            what_it_does="""
Reports that one of amplint's rules (or the analysis they share) raised an exception on
this file. The message names the rule. The other rules and files are still checked, and
`amplint check` exits with status 2 at the end.
""",
            why_bad="""
The failing rule could not check this file, so its silence there means nothing. It is a
bug in amplint, not in your code: please report it, with the message and, if you can, the
smallest file that shows it, at https://github.com/amplint/amplint/issues. Like the
syntax-error code, it is always reported: `--select`, `--ignore` and `# noqa` do not
silence it.
""",
            example="""
# any file on which a rule raises, e.g. on a construct it did not expect
""",
            use_instead="""
# nothing to change in your code; `--ignore` the failing rule's code until it is fixed
""",
            fix_safety="""
There is no fix.
""",
        ),
    ),
    Entry(
        code=PARSE_ERROR_CODE,
        name="syntax-error",
        summary="the file cannot be read or parsed as Python",
        caught="static",
        docs=Docs(
            what_it_does="""
Reports a file that cannot be read (missing, not valid UTF-8 or its declared encoding) or
parsed as Python, with the parser's message and position. No rule can check such a file.
""",
            why_bad="""
A file that does not parse is not checked at all, so a clean report would be false. Like
ruff's syntax errors, this finding is always reported: `--select`, `--ignore`,
`per-file-ignores` and `# noqa` do not silence it.
""",
            example="""
with torch.autocast("cuda")
    loss = model(x)
""",
            use_instead="""
with torch.autocast("cuda"):
    loss = model(x)
""",
            fix_safety="""
There is no fix: correct the syntax, then the file is checked as usual.
""",
        ),
    ),
)


@cache
def by_code() -> dict[str, Entry]:
    table: dict[str, Entry] = {}
    for item in CATALOG:
        if item.code in table:
            raise ValueError(f"amplint catalog: code {item.code} is listed twice")
        table[item.code] = item
    return table


def entry(code: str) -> Entry | None:
    return by_code().get(code.upper())


def name_of(code: str) -> str:
    """The kebab-case name of a catalog code (KeyError for a code the catalog lacks)."""
    return by_code()[code].name


@cache
def known_codes() -> tuple[str, ...]:
    """Every selectable code, in order (the always-reported codes are not selectable)."""
    return tuple(code for code in sorted(by_code()) if code not in ALWAYS_REPORTED)


@cache
def static_codes() -> tuple[str, ...]:
    """The selectable codes the linter's rules implement."""
    return tuple(code for code in known_codes() if by_code()[code].static)


@cache
def default_codes() -> tuple[str, ...]:
    return tuple(code for code in known_codes() if by_code()[code].default_enabled)


def documentation(item: Entry, *, fixable: bool) -> str:
    """The text ``amplint rule CODE`` prints (Markdown, ruff's shape)."""
    docs = item.docs
    where = {
        "static": "the linter",
        "runtime": "the runtime checks (`amplint run`, `amplint.runtime.install()`)",
        "both": "the linter and the runtime checks",
    }[item.caught]
    parts = [
        f"# {item.name} ({item.code})",
        "",
        f"Caught by {where}.",
        "",
        f"Fix is {'sometimes available' if fixable else 'not available'}.",
        "",
        "## What it does",
        docs.what_it_does.strip(),
        "",
        "## Why is this bad?",
        docs.why_bad.strip(),
        "",
        "## Example",
        "```python",
        docs.example.strip("\n"),
        "```",
        "",
        "Use instead:",
        "```python",
        docs.use_instead.strip("\n"),
        "```",
        "",
        "## Fix safety",
        docs.fix_safety.strip(),
    ]
    if item.thresholds:
        parts += ["", "## Thresholds", ""]
        parts += [
            f"- `{t.name}` (default `{t.default}`): {t.meaning}; "
            f"`install({t.name}=...)`, `amplint run {t.run_option}`"
            for t in item.thresholds
        ]
    if docs.references:
        parts += ["", "## References", *(f"- {ref}" for ref in docs.references)]
    return "\n".join(parts) + "\n"
