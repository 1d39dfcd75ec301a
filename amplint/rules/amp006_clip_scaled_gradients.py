"""AMP006 clip-scaled-gradients."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.clipping import clip_function, clip_kind, measures_only, norm_source
from amplint.analysis.frameworks import FP16_TOKENS, ScaledClip, framework_scaled_clips
from amplint.analysis.model import ModuleModel, calls_in
from amplint.analysis.scopes import dotted_name
from amplint.analysis.steps import (
    Event,
    Iteration,
    Kind,
    branches,
    iterations,
    together,
    usable_at,
)
from amplint.engine.contract import FixPlan, Invalid, Rule, RuleContext


class ClipScaledGradients(Rule):
    code = "AMP006"
    tokens = (
        # A GradScaler of the user's, or a framework's float16 switch (FP16_TOKENS).
        ("~scaler", *FP16_TOKENS),
        ("scale", *FP16_TOKENS),
        (
            "clip_grad_norm_",
            "clip_grad_value_",
            "clip_grad_norm",
            "clip_gradients",
            "clip_grads_with_norm_",
        ),
    )

    valid = (
        # PyTorch's recipe.
        """
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
""",
        # Unscale and clip under the same flag (nanoGPT).
        """
import torch
scaler = torch.cuda.amp.GradScaler(enabled=(dtype == "float16"))
while True:
    for micro_step in range(accum):
        scaler.scale(loss).backward()
    if grad_clip != 0.0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
""",
        # Measuring the norm only.
        """
import math
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
    scaler.step(optimizer)
    scaler.update()
""",
        # Unscale in a helper that clips (timm's dispatch style).
        """
from torch.nn.utils import clip_grad_norm_
def unscale_and_clip(scaler, optimizer, params, max_norm):
    scaler.unscale_(optimizer)
    clip_grad_norm_(params, max_norm)

def train_step(scaler, optimizer, loss):
    scaler.scale(loss).backward()
    unscale_and_clip(scaler, optimizer, model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
""",
        # A framework's clip unscales first.
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    accelerator.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
""",
        # The clip belongs to the branch without a scaler.
        """
import torch
def train(model, optimizer, loader, scaler=None):
    for x, y in loader:
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
""",
        # Unscaled training with no scaler at all.
        """
import torch
for x, y in loader:
    loss.backward()
    torch.nn.utils.clip_grad_value_(model.parameters(), 0.5)
    optimizer.step()
""",
        # timm's NativeScaler: the wrapper unscales before its clip.
        """
import torch
class NativeScaler:
    def __init__(self):
        self._scaler = torch.amp.GradScaler("cuda")

    def __call__(self, loss, optimizer, clip_grad=None, parameters=None):
        self._scaler.scale(loss).backward()
        if clip_grad is not None:
            self._scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, clip_grad)
        self._scaler.step(optimizer)
        self._scaler.update()
""",
        # Accelerate's own clip unscales first; an explicit unscale_gradients too.
        """
import torch
from accelerate import Accelerator
accelerator = Accelerator(mixed_precision="fp16")
for batch in loader:
    accelerator.backward(model(batch))
    if accelerator.sync_gradients:
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
for batch in loader:
    accelerator.backward(model(batch))
    accelerator.unscale_gradients()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
""",
        # bf16 (no scaler), a precision from the command line, a CPU run (no scaler).
        """
import torch
from accelerate import Accelerator
bf16 = Accelerator(mixed_precision="bf16")
bf16.backward(loss)
torch.nn.utils.clip_grad_norm_(params, 1.0)
optimizer.step()
flag = Accelerator(mixed_precision=args.mixed_precision)
flag.backward(loss)
torch.nn.utils.clip_grad_norm_(params, 1.0)
optimizer.step()
""",
        # torch 2.6's split clip: the norm of unscaled gradients, then the clip.
        """
import torch
from torch.nn.utils import clip_grads_with_norm_, get_total_norm
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = get_total_norm(grads)
    clip_grads_with_norm_(model.parameters(), 1.0, norm)
    scaler.step(optimizer)
    scaler.update()
""",
        # Lightning: clipping in on_before_optimizer_step runs after the unscale.
        """
import torch
import lightning as L
class Lit(L.LightningModule):
    def training_step(self, batch, i):
        opt = self.optimizers()
        self.manual_backward(self.model(batch))
        opt.step()
    def on_before_optimizer_step(self, optimizer):
        torch.nn.utils.clip_grad_norm_(self.parameters(), 1.0)
trainer = L.Trainer(precision="16-mixed")
""",
    )
    invalid = (
        # The backward and the clip on one line: an `unscale_` on the line above would run
        # before the backward, so no fix.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler("cuda")
for x in loader:
    scaler.scale(model(x)).backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
""",
            line=5,
        ),
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    # keep the update small
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    scaler.step(optimizer)
    scaler.update()
""",
            line=9,
            fixed="""
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    # keep the update small
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    scaler.step(optimizer)
    scaler.update()
""",
        ),
        # An imported alias, attribute scaler and optimizer, under the accumulation boundary.
        Invalid(
            """
from torch import nn
from torch.nn.utils import clip_grad_norm_ as clip
class Trainer:
    def __init__(self, model, optimizer, scaler):
        self.scaler = scaler
        self.optimizer = optimizer

    def train_step(self, i, loss):
        self.scaler.scale(loss / self.accum).backward()
        if (i + 1) % self.accum == 0:
            if self.max_norm:
                clip(self.model.parameters(), self.max_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad()
""",
            line=13,
            fixed="""
from torch import nn
from torch.nn.utils import clip_grad_norm_ as clip
class Trainer:
    def __init__(self, model, optimizer, scaler):
        self.scaler = scaler
        self.optimizer = optimizer

    def train_step(self, i, loss):
        self.scaler.scale(loss / self.accum).backward()
        if (i + 1) % self.accum == 0:
            if self.max_norm:
                self.scaler.unscale_(self.optimizer)
                clip(self.model.parameters(), self.max_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad()
""",
        ),
        # nn.utils through `import torch.nn as nn`; clip_grad_value_.
        Invalid(
            """
import torch
import torch.nn as nn
def train(model, loader, optimizer, scaler):
    for x, y in loader:
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(x, y)
        scaler.scale(loss).backward()
        nn.utils.clip_grad_value_(model.parameters(), 0.5)
        scaler.step(optimizer)
        scaler.update()
""",
            line=9,
            fixed="""
import torch
import torch.nn as nn
def train(model, loader, optimizer, scaler):
    for x, y in loader:
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(x, y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_value_(model.parameters(), 0.5)
        scaler.step(optimizer)
        scaler.update()
""",
        ),
        # The split clip: unscale_ goes before the norm is taken, not between norm and clip.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads)
    log(total)
    torch.nn.utils.clip_grads_with_norm_(model.parameters(), 1.0, total)
    scaler.step(optimizer)
    scaler.update()
""",
            line=11,
            fixed="""
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    scaler.unscale_(optimizer)
    total = torch.nn.utils.get_total_norm(grads)
    log(total)
    torch.nn.utils.clip_grads_with_norm_(model.parameters(), 1.0, total)
    scaler.step(optimizer)
    scaler.update()
""",
        ),
        # A norm computed inline is unscaled with it; a norm from elsewhere gets no fix.
        Invalid(
            """
from torch.nn.utils import clip_grads_with_norm_, get_total_norm
def step(model, optimizer, scaler, loss, grads, norms):
    scaler.scale(loss).backward()
    clip_grads_with_norm_(model.parameters(), 1.0, get_total_norm(grads))
    scaler.step(optimizer)
    scaler.update()
    scaler.scale(loss).backward()
    clip_grads_with_norm_(model.parameters(), 1.0, norms[-1])
    scaler.step(optimizer)
    scaler.update()
""",
            line=5,
            count=2,
            fixed="""
from torch.nn.utils import clip_grads_with_norm_, get_total_norm
def step(model, optimizer, scaler, loss, grads, norms):
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    clip_grads_with_norm_(model.parameters(), 1.0, get_total_norm(grads))
    scaler.step(optimizer)
    scaler.update()
    scaler.scale(loss).backward()
    clip_grads_with_norm_(model.parameters(), 1.0, norms[-1])
    scaler.step(optimizer)
    scaler.update()
""",
        ),
        # FSDP's method; the clip runs every micro-batch but the step every k: no fix.
        Invalid(
            """
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
scaler = ShardedGradScaler()
for i, batch in enumerate(loader):
    scaler.scale(fsdp_model(batch)).backward()
    fsdp_model.clip_grad_norm_(1.0)
    if (i + 1) % accum == 0:
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""",
            line=6,
        ),
        # One scaler, two optimizers: which one to unscale is ambiguous.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    scaler.step(opt_g)
    scaler.step(opt_d)
    scaler.update()
""",
            line=6,
        ),
        # Accelerate's float16 scaler: torch's clip after `accelerator.backward`.
        Invalid(
            """
import torch
from accelerate import Accelerator
accelerator = Accelerator(mixed_precision="fp16")
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for batch in loader:
    accelerator.backward(model(batch))
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
""",
            line=8,
            unsafe=True,
            fixed="""
import torch
from accelerate import Accelerator
accelerator = Accelerator(mixed_precision="fp16")
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for batch in loader:
    accelerator.backward(model(batch))
    accelerator.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
""",
        ),
        # Lightning manual optimisation under 16-mixed: even `self.clip_gradients` runs
        # before Lightning unscales (inside `opt.step()`).
        Invalid(
            """
import lightning as L
class Lit(L.LightningModule):
    def training_step(self, batch, i):
        opt = self.optimizers()
        self.manual_backward(self.model(batch))
        self.clip_gradients(opt, gradient_clip_val=0.5)
        opt.step()
trainer = L.Trainer(precision="16-mixed")
""",
            line=7,
        ),
        # Lightning's `on_after_backward` under 16-mixed, and Fabric's backward.
        Invalid(
            """
import torch
import lightning as L
from lightning.fabric import Fabric
class Lit(L.LightningModule):
    def on_after_backward(self):
        torch.nn.utils.clip_grad_norm_(self.parameters(), 1.0)
trainer = L.Trainer(precision="16-mixed")
fabric = Fabric(precision="16-mixed")
def step(model, optimizer, batch):
    fabric.backward(model(batch))
    torch.nn.utils.clip_grad_value_(model.parameters(), 0.1)
    optimizer.step()
""",
            line=7,
            count=2,
        ),
        # A clipping helper shared with a caller that unscales first: the caller that does not
        # is reported, not the helper (an `unscale_` there would repeat the other's).
        Invalid(
            """
import torch
def clip(model):
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)

def fine_step(model, optimizer, scaler, loss):
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    clip(model)
    scaler.step(optimizer)
    scaler.update()

def wrong_step(model, optimizer, scaler, loss):
    scaler.scale(loss).backward()
    clip(model)
    scaler.step(optimizer)
    scaler.update()
""",
            line=15,
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        scaled: list[tuple[Iteration, Event, Event, str]] = []
        # Clips a helper runs for a caller that unscaled first: the helper is right there.
        unscaled_through_helpers: set[cst.Call] = set()
        for iteration in iterations(model):
            for clip in iteration.of(Kind.CLIP):
                kind = clip_kind(model, clip.call)
                if kind is None or kind == "framework" or measures_only(model, clip.call, kind):
                    continue
                window = _scaled_window(iteration, clip)
                if window is not None:
                    scaled.append((iteration, clip, *window))
                elif clip.frame.via and _unscaled_before(iteration, clip):
                    unscaled_through_helpers.add(clip.call)
        for iteration, clip, step, key in scaled:
            name = _clip_name(model, clip.call)
            optimizer = usable_at(model, step, "optimizer", clip) or "optimizer"
            unscale = f"`{step.scaler_local}.unscale_({optimizer})`"
            if clip.frame.via and clip.call in unscaled_through_helpers:
                # A helper shared with callers that unscale first: the caller that does not
                # is where the mistake is (an `unscale_` in the helper would repeat theirs).
                helper = model.snippet(clip.frame.via[0].func)
                context.report(
                    clip.frame.via[0],
                    f"`{helper}` runs `{name}` on gradients still multiplied by the loss "
                    f"scale here (other callers unscale first); call {unscale} before it",
                )
                continue
            context.report(
                clip.call,
                f"`{name}` runs on gradients still multiplied by the loss scale; call "
                f"{unscale} before clipping",
                _unscale_before(model, iteration, clip, step, key),
            )
        # The frameworks' own scalers: Accelerate, Fabric, Lightning manual optimisation.
        for found in framework_scaled_clips(model):
            name = model.snippet(found.call.func)
            context.report(
                found.call,
                f"`{name}` runs on gradients still multiplied by the loss scale of "
                f"{found.config.label}'s float16 mixed precision; {found.remedy}",
                _framework_clip(model, found),
            )


def _unscaled_before(iteration: Iteration, clip: Event) -> bool:
    """Whether the iteration unscales gradients before the clip (a caller doing it right)."""
    return any(
        e.kind is Kind.UNSCALE and e.order < clip.order and together(e, clip)
        for e in iteration.events
    )


def _clip_name(model: ModuleModel, call: cst.Call) -> str:
    name = clip_function(model, call)
    if name is not None:
        return name
    # A framework's or FSDP's clip, named as torch's function it stands for.
    names = model.evaluator.qualified_names(call.func)
    if any(name.endswith("clip_grad_value_") for name in names):
        return "clip_grad_value_"
    return "clip_grad_norm_"


def _scaled_window(iteration: Iteration, clip: Event) -> tuple[Event, str] | None:
    """The ``scaler.step`` that follows a scaled backward and ``clip`` with no
    ``unscale_`` of that scaler before the clip; None when the clip is not in such a window."""
    backwards = [
        e for e in iteration.of(Kind.SCALED_BACKWARD) if e.order < clip.order and together(e, clip)
    ]
    if not backwards:
        return None
    backward = backwards[-1]
    key = backward.scaler
    if key is None:
        return None
    steps = [
        e
        for e in iteration.of(Kind.SCALER_STEP)
        if e.scaler == key and e.order > clip.order and together(e, clip)
    ]
    if not steps:
        return None
    for event in iteration.events[: clip.order]:
        if event.scaler != key:
            continue
        if event.kind is Kind.UNSCALE and together(event, clip):
            return None
        if event.kind in (Kind.UNSCALE, Kind.MAYBE_SCALED_BACKWARD) and not together(event, clip):
            return None  # an unscale_ under another condition: in doubt
        if event.kind in (Kind.SCALER_STEP, Kind.UPDATE) and event.order > backward.order:
            return None
    if any(e.kind is Kind.MAYBE_SCALED_BACKWARD and e.order < clip.order for e in iteration.events):
        return None
    return steps[0], key


def _unscale_before(
    model: ModuleModel, iteration: Iteration, clip: Event, step: Event, key: str
) -> FixPlan | None:
    steps = [e for e in iteration.of(Kind.SCALER_STEP) if e.scaler == key]
    if len({e.optimizer for e in steps}) != 1 or step.optimizer_local is None:
        return None
    if clip.frame.via or clip.loops != step.loops:
        return None
    if not set(branches(step)) <= set(branches(clip)):
        return None  # the clip runs more often than the step: unscale_ would repeat
    if any(e.kind is Kind.UNSCALE and e.scaler == key for e in iteration.between(clip, None)):
        return None
    scaler = usable_at(model, step, "scaler", clip)
    optimizer = usable_at(model, step, "optimizer", clip)
    statement = _first_statement_of_clip(model, clip.call)
    if scaler is None or optimizer is None or statement is None:
        return None
    if isinstance(statement, cst.SimpleStatementLine) and _backward_before_on_its_line(
        model, statement, clip.call
    ):
        # `scaler.scale(loss).backward(); clip_grad_norm_(...)`: a line above would unscale
        # before the backward.
        return None
    unscale = cst.parse_statement(f"{scaler}.unscale_({optimizer})\n")

    def insert(updated: cst.CSTNode) -> cst.FlattenSentinel:
        assert isinstance(updated, (cst.SimpleStatementLine, cst.BaseCompoundStatement))
        first = unscale.with_changes(leading_lines=updated.leading_lines)
        return cst.FlattenSentinel([first, updated.with_changes(leading_lines=())])

    return FixPlan(f"Insert `{scaler}.unscale_({optimizer})` before the clip", {statement: insert})


def _backward_before_on_its_line(
    model: ModuleModel, statement: cst.SimpleStatementLine, clip: cst.Call
) -> bool:
    """Whether a backward pass runs on the clip's line before it."""
    around = set(model.index.ancestors(clip))
    for small in statement.body:
        if small in around:
            return False
        if any(model.runs_backward(call) for call in calls_in(small)):
            return True
    return False


def _first_statement_of_clip(model: ModuleModel, call: cst.Call) -> cst.BaseStatement | None:
    """Where ``unscale_`` goes: before the clip's statement, or for ``clip_grads_with_norm_``
    before the statement whose ``get_total_norm`` gave its norm (unscaling between the two
    would clip unscaled gradients with a scaled norm). None when that is not certain."""
    statement = model.statement_in_block(call)
    if statement is None or clip_function(model, call) != "clip_grads_with_norm_":
        return statement
    source = norm_source(model, call)
    if source is None:
        return None
    earlier = model.statement_in_block(source)
    if earlier is None or earlier is statement:
        return earlier
    block = model.index.parent(statement)
    if model.index.parent(earlier) is not block or not isinstance(
        block, (cst.IndentedBlock, cst.Module)
    ):
        return None
    body = list(block.body)
    return earlier if body.index(earlier) < body.index(statement) else None


#: the parameters ``accelerator.clip_grad_norm_`` / ``clip_grad_value_`` share with torch's.
_SHARED_PARAMETERS = {
    "clip_grad_norm_": ("parameters", "max_norm", "norm_type"),
    "clip_grad_value_": ("parameters", "clip_value"),
}


def _framework_clip(model: ModuleModel, found: ScaledClip) -> FixPlan | None:
    """``accelerator.clip_grad_norm_(...)`` for torch's, when the arguments carry over."""
    if found.owner is None or dotted_name(found.owner) is None:
        return None
    name = _clip_name(model, found.call)
    shared = _SHARED_PARAMETERS.get(name)
    if shared is None:  # no framework clip takes a norm computed beforehand
        return None
    positional = [a for a in found.call.args if a.keyword is None]
    if any(a.star for a in found.call.args) or len(positional) > len(shared):
        return None
    if any(a.keyword is not None and a.keyword.value not in shared for a in found.call.args):
        return None
    func = cst.Attribute(value=found.owner, attr=cst.Name(name))
    return FixPlan(
        f"Clip with `{dotted_name(found.owner)}.{name}`, which unscales first",
        {found.call.func: func},
        "unsafe",
    )
