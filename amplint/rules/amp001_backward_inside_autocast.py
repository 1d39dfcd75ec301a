"""AMP001 backward-inside-autocast."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import libcst as cst

from amplint.analysis.frameworks import (
    enclosing_framework_autocast,
    framework_autocast_withs,
    is_framework_autocast,
    is_framework_backward,
)
from amplint.analysis.lifecycle import autocast_off_at
from amplint.analysis.model import ModuleModel, calls_in, method_name, receiver, walk_body
from amplint.analysis.scalers import scaler_state
from amplint.analysis.scopes import dotted_name, names_read
from amplint.analysis.values import AutocastRegion
from amplint.engine.contract import FixPlan, Invalid, Rule, RuleContext

#: Names tried, in order, for a loss that the fix keeps inside the block.
_LOSS_NAMES = ("loss", *(f"loss_{i}" for i in range(1, 10)))
#: Methods that list parameters: calling them computes no tensor.
_PARAMETER_LISTS = frozenset({"parameters", "named_parameters"})
#: Scaler and optimizer calls that the fix already moves out of autocast when they follow
#: a backward in the block: a helper doing them besides its backward may move too.
_BOOKKEEPING = frozenset({"step", "update", "zero_grad", "unscale_"})
#: Context managers around a nested backward that compute nothing autocast would change
#: (DDP's gradient-sync switch): the statement around the backward may leave with them.
_NEUTRAL_CONTEXTS = frozenset({"no_sync"})


class BackwardInsideAutocast(Rule):
    code = "AMP001"
    # LIVE: an autocast only listed or compared is never entered (the evaluator resolves
    # no value through a table or a comparison).
    tokens = (("!autocast",), ("backward", "grad", "manual_backward"))

    valid = (
        # The textbook loop.
        """
import torch
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
    scaler.scale(loss).backward()
""",
        # scale() inside the region, backward outside: valid.
        """
import torch
with torch.autocast(device_type="cuda", dtype=torch.float16):
    loss = model(x)
    scaled = scaler.scale(loss)
scaled.backward()
""",
        # A nested region that disables autocast.
        """
import torch
with torch.autocast("cuda"):
    out = model(x)
    with torch.autocast("cuda", enabled=False):
        loss = criterion(out.float(), y)
        loss.backward()
""",
        # Not torch's autocast: a local function of the same name.
        """
from contextlib import contextmanager
@contextmanager
def autocast(device_type="cuda"):
    yield
with autocast():
    loss.backward()
""",
        # Legacy apex-style scale_loss is not autocast.
        """
from apex import amp
with amp.scale_loss(loss, optimizer) as scaled_loss:
    scaled_loss.backward()
""",
        # Autocast that is disabled literally.
        """
import torch
with torch.autocast("cuda", enabled=False):
    loss = model(x)
    loss.backward()
""",
        # A backward in a nested function defined (not run) inside the region.
        """
import torch
with torch.autocast("cuda"):
    def closure():
        loss = model(x)
        loss.backward()
        return loss
optimizer.step(closure)
""",
        # Dead code.
        """
import torch
if False:
    with torch.autocast("cuda"):
        loss.backward()
""",
        # torch.autocast held in a variable, backward outside.
        """
import torch
from contextlib import nullcontext
ctx = nullcontext() if device == "cpu" else torch.amp.autocast(device_type="cuda")
with ctx:
    loss = model(x)
loss.backward()
""",
        # `@torch.autocast` on the forward only: the backward runs after it returns.
        """
import torch

class Net(torch.nn.Module):
    @torch.autocast("cuda")
    def forward(self, x):
        return self.body(x)

loss = Net()(x).float().mean()
loss.backward()
""",
        # The branch that runs only with the region's own flag off: autocast is off there
        # (its other branch, with the flag on, is a finding).
        """
import torch
for x, y in loader:
    with torch.autocast("cuda", enabled=use_amp):
        loss = model(x)
        if not use_amp:
            loss.backward()
            optimizer.step()
""",
        # Accelerate's autocast around the forward pass only.
        """
from accelerate import Accelerator
accelerator = Accelerator(mixed_precision="fp16")
for batch in loader:
    with accelerator.autocast():
        loss = model(batch)
    accelerator.backward(loss)
""",
        # Accelerate with mixed precision literally off: its autocast is a null context.
        """
from accelerate import Accelerator
accelerator = Accelerator(mixed_precision="no")
with accelerator.autocast():
    accelerator.backward(model(batch))
""",
    )
    invalid = (
        # The loss is computed on the backward's line: moving the line takes it out of
        # autocast too (cross_entropy runs in float32 under autocast), so the fix is unsafe.
        Invalid(
            """
import torch
import torch.nn.functional as F
for x, y in loader:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = F.cross_entropy(out, y); loss.backward()
    optimizer.step()
""",
            line=7,
            fixed="""
import torch
import torch.nn.functional as F
for x, y in loader:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    loss = F.cross_entropy(out, y); loss.backward()
    optimizer.step()
""",
            unsafe=True,
        ),
        # `@torch.autocast` makes the whole function a region: its backward too.
        Invalid(
            """
import torch

@torch.autocast("cuda", dtype=torch.bfloat16)
def forward_backward(model, x, y):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach()
""",
            line=7,
        ),
        # A helper that runs backward in one branch, the forward in the other: moving the
        # `if` out would take the usual path's forward out of autocast, so no fix.
        Invalid(
            """
import torch

def forward_backward_per_clip(model, clips, scaler):
    for clip in clips:
        scaler.scale(model(clip).mean()).backward()

for clips, y in loader:
    with torch.autocast("cuda"):
        if per_clip:
            forward_backward_per_clip(
                model,
                clips,
                scaler,
            )
        else:
            loss = model(clips).mean()
    scaler.step(optimizer)
""",
            line=11,
        ),
        # DDP's accumulation: backward under `no_sync()` in one branch, the step in the
        # other; both branches run only backward passes and bookkeeping, so the `if` leaves.
        Invalid(
            """
import torch
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = model(x).mean()
        if (i + 1) % accumulation:
            with model.no_sync():
                scaler.scale(loss).backward()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
""",
            line=8,
            count=2,
            unsafe=True,
            fixed="""
import torch
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = model(x).mean()
    if (i + 1) % accumulation:
        with model.no_sync():
            scaler.scale(loss).backward()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        ),
        # A backward under a step-counter test only: the `if` leaves the block whole.
        Invalid(
            """
import torch
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = model(x).mean()
        if (i + 1) % accumulation == 0:
            scaler.scale(loss).backward()
""",
            line=7,
            unsafe=True,
            fixed="""
import torch
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = model(x).mean()
    if (i + 1) % accumulation == 0:
        scaler.scale(loss).backward()
""",
        ),
        Invalid(
            """
import torch
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
        loss.backward()  # the backward pass
        optimizer.step()
""",
            line=6,
            fixed="""
import torch
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
    loss.backward()  # the backward pass
    optimizer.step()
""",
        ),
        Invalid(
            """
import torch
from contextlib import nullcontext
ctx = nullcontext() if device == "cpu" else torch.amp.autocast(device_type="cuda")
for x, y in loader:
    with ctx:
        loss = model(x)
        scaler.scale(loss).backward()
""",
            line=8,
            fixed="""
import torch
from contextlib import nullcontext
ctx = nullcontext() if device == "cpu" else torch.amp.autocast(device_type="cuda")
for x, y in loader:
    with ctx:
        loss = model(x)
    scaler.scale(loss).backward()
""",
        ),
        Invalid(
            """
import torch
with torch.set_grad_enabled(True), torch.autocast("cuda"):
    loss = model(x)
    loss.backward()
""",
            line=5,
            unsafe=True,
            fixed="""
import torch
with torch.set_grad_enabled(True), torch.autocast("cuda"):
    loss = model(x)
with torch.set_grad_enabled(True):
    loss.backward()
""",
        ),
        Invalid(
            """
from torch.cuda.amp import autocast as ac

def run_backward(loss):
    loss.backward()

with ac():
    loss = model(x)
    run_backward(loss)
""",
            line=9,
            fixed="""
from torch.cuda.amp import autocast as ac

def run_backward(loss):
    loss.backward()

with ac():
    loss = model(x)
run_backward(loss)
""",
        ),
        Invalid(
            """
import functools, torch
amp = functools.partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
with amp():
    loss = model(x)
    if train:
        grads = torch.autograd.grad(loss, params)
""",
            line=7,
            unsafe=True,
            fixed="""
import functools, torch
amp = functools.partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
with amp():
    loss = model(x)
if train:
    grads = torch.autograd.grad(loss, params)
""",
        ),
        Invalid(
            """
import torch
with torch.autocast("cuda", enabled=args.amp):
    loss.backward()
""",
            line=4,
        ),
        # Accelerate's own autocast, with its backward inside.
        Invalid(
            """
from accelerate import Accelerator
accelerator = Accelerator(mixed_precision="fp16")
for batch in loader:
    with accelerator.autocast():
        loss = model(batch)
        accelerator.backward(loss)
    optimizer.step()
""",
            line=7,
            fixed="""
from accelerate import Accelerator
accelerator = Accelerator(mixed_precision="fp16")
for batch in loader:
    with accelerator.autocast():
        loss = model(batch)
    accelerator.backward(loss)
    optimizer.step()
""",
        ),
        # Lightning manual optimisation: `self.manual_backward` inside the user's autocast.
        Invalid(
            """
import torch
import lightning as L
class Lit(L.LightningModule):
    def training_step(self, batch, i):
        opt = self.optimizers()
        with torch.autocast("cuda"):
            loss = self.model(batch)
            self.manual_backward(loss)
        opt.step()
""",
            line=9,
            fixed="""
import torch
import lightning as L
class Lit(L.LightningModule):
    def training_step(self, batch, i):
        opt = self.optimizers()
        with torch.autocast("cuda"):
            loss = self.model(batch)
        self.manual_backward(loss)
        opt.step()
""",
        ),
        # The loss is computed in the backward's own line: it stays inside under a name.
        Invalid(
            """
import torch
class Trainer:
    def step(self, x, target):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            output = self.model(x)
            self.loss(output, target).backward()
        self.optimizer.step()
""",
            line=7,
            fixed="""
import torch
class Trainer:
    def step(self, x, target):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            output = self.model(x)
            loss = self.loss(output, target)
        loss.backward()
        self.optimizer.step()
""",
        ),
        # `loss` is taken: the next free name.
        Invalid(
            """
import torch
for x in loader:
    with torch.autocast("cuda"):
        out, loss = model(x)
        out.norm().backward()  # regulariser only
        optimizer.step()
""",
            line=6,
            fixed="""
import torch
for x in loader:
    with torch.autocast("cuda"):
        out, loss = model(x)
        loss_1 = out.norm()
    loss_1.backward()  # regulariser only
    optimizer.step()
""",
        ),
        # Scaled: the loss is named, the scaling may leave the block.
        Invalid(
            """
import torch
with torch.autocast("cuda"):
    scaler.scale(criterion(model(x), y)).backward()
""",
            line=4,
            fixed="""
import torch
with torch.autocast("cuda"):
    loss = criterion(model(x), y)
scaler.scale(loss).backward()
""",
        ),
        Invalid(
            """
import torch
with torch.autocast("cuda"):
    out = model(x)
    grads = torch.autograd.grad(out.sum(), model.parameters(), create_graph=True)
""",
            line=5,
            fixed="""
import torch
with torch.autocast("cuda"):
    out = model(x)
    loss = out.sum()
grads = torch.autograd.grad(loss, model.parameters(), create_graph=True)
""",
        ),
        # Nested in an `if`: the whole `if` moves, and the loss with it: unsafe.
        Invalid(
            """
import torch
with torch.autocast("cuda"):
    out = model(x)
    if train:
        criterion(out, y).backward()
""",
            line=6,
            unsafe=True,
            fixed="""
import torch
with torch.autocast("cuda"):
    out = model(x)
if train:
    criterion(out, y).backward()
""",
        ),
        # Two computed parts cannot share one name: unsafe.
        Invalid(
            """
import torch
with torch.autocast("cuda"):
    out = model(x)
    torch.autograd.backward(criterion(out, y), grad_tensors=weights(out))
""",
            line=5,
            unsafe=True,
            fixed="""
import torch
with torch.autocast("cuda"):
    out = model(x)
torch.autograd.backward(criterion(out, y), grad_tensors=weights(out))
""",
        ),
        # A helper that computes the loss itself would compute it outside autocast: unsafe.
        Invalid(
            """
import torch

def loss_backward(out, y):
    criterion(out, y).backward()

with torch.autocast("cuda"):
    out = model(x)
    loss_backward(out, y)
""",
            line=9,
            unsafe=True,
            fixed="""
import torch

def loss_backward(out, y):
    criterion(out, y).backward()

with torch.autocast("cuda"):
    out = model(x)
loss_backward(out, y)
""",
        ),
        # A GAN's discriminator forward after the generator's step: the fix would take it
        # out of autocast too, so it is unsafe.
        Invalid(
            """
import torch
gs_g = torch.amp.GradScaler("cuda")
gs_d = torch.amp.GradScaler("cuda")
for a, b in batches:
    with torch.autocast("cuda"):
        fake = gen(a)
        loss_g = -disc(fake).mean()
        gs_g.scale(loss_g).backward()
        gs_g.step(opt_g)
        gs_g.update()
        loss_d = disc(fake.detach()).mean() - disc(b).mean()
    gs_d.scale(loss_d).backward()
    gs_d.step(opt_d)
    gs_d.update()
""",
            line=9,
            fixed="""
import torch
gs_g = torch.amp.GradScaler("cuda")
gs_d = torch.amp.GradScaler("cuda")
for a, b in batches:
    with torch.autocast("cuda"):
        fake = gen(a)
        loss_g = -disc(fake).mean()
    gs_g.scale(loss_g).backward()
    gs_g.step(opt_g)
    gs_g.update()
    loss_d = disc(fake.detach()).mean() - disc(b).mean()
    gs_d.scale(loss_d).backward()
    gs_d.step(opt_d)
    gs_d.update()
""",
            unsafe=True,
        ),
        # What follows the backward only reads, logs and times: the fix stays safe.
        Invalid(
            """
import torch, time
scaler = torch.amp.GradScaler("cuda")
for images, target in loader:
    optimizer.zero_grad()
    with torch.autocast("cuda"):
        output = model(images)
        loss = criterion(output, target)
        scaler.scale(loss).backward()
        losses.update(loss.item(), images.size(0))
        t1 = time.time()
        lr = scheduler.get_last_lr()[0]
        torch.cuda.synchronize()
        with torch.no_grad():
            ema.update(model)
        wandb.log({"lr": lr})
    scaler.step(optimizer)
    scaler.update()
""",
            line=9,
            fixed="""
import torch, time
scaler = torch.amp.GradScaler("cuda")
for images, target in loader:
    optimizer.zero_grad()
    with torch.autocast("cuda"):
        output = model(images)
        loss = criterion(output, target)
    scaler.scale(loss).backward()
    losses.update(loss.item(), images.size(0))
    t1 = time.time()
    lr = scheduler.get_last_lr()[0]
    torch.cuda.synchronize()
    with torch.no_grad():
        ema.update(model)
    wandb.log({"lr": lr})
    scaler.step(optimizer)
    scaler.update()
""",
        ),
        # `out.log()` runs in float32 under autocast: moved out, it would not.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    optimizer.zero_grad()
    with torch.autocast("cuda"):
        out = model(x)
        loss = criterion(out, y)
        scaler.scale(loss).backward()
        entropy = out.log()
    scaler.step(optimizer)
    scaler.update()
""",
            line=9,
            fixed="""
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    optimizer.zero_grad()
    with torch.autocast("cuda"):
        out = model(x)
        loss = criterion(out, y)
    scaler.scale(loss).backward()
    entropy = out.log()
    scaler.step(optimizer)
    scaler.update()
""",
            unsafe=True,
        ),
        # A tracker object built and filled from the losses after the step: still safe.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler("cuda")
for batch in loader:
    with torch.autocast("cuda"):
        losses = compute_losses(model, batch)
        loss = sum(losses.values())
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        info = MetricsTracker()
        for key, value in losses.items():
            info[key] = value.detach().item()
""",
            line=8,
            fixed="""
import torch
scaler = torch.amp.GradScaler("cuda")
for batch in loader:
    with torch.autocast("cuda"):
        losses = compute_losses(model, batch)
        loss = sum(losses.values())
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    info = MetricsTracker()
    for key, value in losses.items():
        info[key] = value.detach().item()
""",
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        _check_decorated(context)
        if not model.autocast_withs and not framework_autocast_withs(model):
            return
        candidates = {
            call
            for with_node in model.autocast_withs
            if model.autocast_state(with_node) == "enabled"
            for call in calls_in(with_node.body)
        }
        for call in model.index.calls:
            if call not in candidates or not _runs_backward(model, call):
                continue
            region = model.enclosing_autocast(call)
            if region is None or model.autocast_state(region) != "enabled":
                continue
            if model.is_dead(call) or autocast_off_at(model, call, region):
                continue
            context.report(call, _message(model, call), _move_out_of_with(model, call, region))
        # `with accelerator.autocast():` / `fabric.autocast()`: the framework's autocast.
        for region in framework_autocast_withs(model):
            for call in calls_in(region.body):
                if not _runs_backward(model, call) or model.is_dead(call):
                    continue
                if model.enclosing_autocast(call) is not None:
                    continue  # a torch autocast inside decides, and is judged above
                if enclosing_framework_autocast(model, call) is not region:
                    continue
                context.report(call, _message(model, call), _move_out_of_with(model, call, region))


def _check_decorated(context: RuleContext) -> None:
    """``@torch.autocast(...)`` on a function that runs backward: its whole body is the
    region (no fix: what to take out of the decorated function is the user's call)."""
    model = context.model
    for function in model.index.functions:
        if not isinstance(function, cst.FunctionDef) or not _autocast_decorated(model, function):
            continue
        for node in walk_body(function.body):
            if not isinstance(node, cst.Call) or not _runs_backward(model, node):
                continue
            if model.is_dead(node) or model.enclosing_autocast(node) is not None:
                continue  # a `with` inside decides, and is judged there
            context.report(node, _message(model, node, function.name.value))


def _autocast_decorated(model: ModuleModel, function: cst.FunctionDef) -> bool:
    return any(
        isinstance(value, AutocastRegion) and value.may_be_enabled
        for decorator in function.decorators
        for value in model.evaluator.evaluate(decorator.decorator)
    )


def _runs_backward(model: ModuleModel, call: cst.Call) -> bool:
    """Whether the call runs a backward pass the autocast region around it would cover (a
    helper's backward inside its own `enabled=False` region is not)."""
    return model.runs_backward_under_autocast(call) or is_framework_backward(model, call)


def _message(model: ModuleModel, call: cst.Call, decorated: str | None = None) -> str:
    """``decorated``: the function ``@autocast`` makes the region of, if that is it."""
    action = "runs the backward pass"
    if not model.is_direct_backward(call) and not is_framework_backward(model, call):
        action = "calls a helper that runs the backward pass"
    if decorated is not None:
        return (
            f"`{_short(model, call)}` {action} inside the autocast region that the "
            f"decorator makes of `{decorated}`; call backward after `{decorated}` returns"
        )
    return (
        f"`{_short(model, call)}` {action} inside an autocast region; "
        "leave the `with` block before calling backward"
    )


def _short(model: ModuleModel, node: cst.CSTNode) -> str:
    return model.snippet(node, 40)


class _Split(NamedTuple):
    """A backward line split in two: the loss computed into ``name`` (stays in the block),
    and the backward of ``name`` (leaves it)."""

    name: str
    keep: cst.SimpleStatementLine
    move: cst.SimpleStatementLine


def _move_out_of_with(model: ModuleModel, call: cst.Call, region: cst.With) -> FixPlan | None:
    body = region.body
    if not isinstance(body, cst.IndentedBlock):
        return None
    statement = _body_statement(model, call, region)
    if statement is None:
        return None
    position = next(i for i, s in enumerate(body.body) if s is statement)
    other_items = [item for item in region.items if not _is_autocast_item(model, item)]
    nested = statement is not model.statement_in_block(call)
    if nested and not _moves_nothing_else(model, statement, call):
        # `if contrastive: <helper that runs backward> else: preds = model(x); ...`: moving
        # the whole statement would take the other branches' forward out of autocast.
        return None
    computed = _computed_parts(model, call)
    # `loss_fn(out, y).backward()`: moving the line would compute the loss outside autocast
    # (another dtype policy), so the loss stays inside under a name of its own.
    split = _split_loss(model, call, statement, computed) if computed and not nested else None
    if position == 0 and split is None:
        return None  # nothing before it would stay under autocast: leave it to the user
    message, changes_numerics = _fix_message(model, call, computed, split)
    forward = _computation_in(
        model, [*_beside_on_its_line(call, statement)[1], *body.body[position + 1 :]]
    )
    if forward is not None:
        # `gs_g.step(opt_g); loss_d = disc(fake)...`: a GAN's second forward would leave
        # autocast with the backward before it.
        message += f"; `{_short(model, forward)}` then runs outside autocast, in another dtype"
        changes_numerics = True
    before = _beside_on_its_line(call, statement)[0] if split is None else []
    computed_before = _computation_in(model, before)
    if computed_before is not None:
        # `loss = F.cross_entropy(out, y); loss.backward()`: the whole line moves, and the
        # loss computed on it leaves autocast too.
        shown = _short(model, computed_before).rstrip("; ")
        message += f"; `{shown}` on its line then runs outside autocast"
        changes_numerics = True
    applicability = "unsafe" if nested or other_items or changes_numerics else "safe"

    def replace(updated: cst.CSTNode) -> cst.FlattenSentinel:
        assert isinstance(updated, cst.With) and isinstance(updated.body, cst.IndentedBlock)
        kept = list(updated.body.body[:position])
        moved = list(updated.body.body[position:])
        if split is not None:
            # The plan replaces only the `with`, so its body is still the analysed one.
            kept.append(split.keep)
            moved[0] = split.move
        after: list[cst.BaseStatement] = moved
        if other_items:
            # The other context managers stay around the moved code; only autocast is left.
            items = [item.with_changes(comma=cst.MaybeSentinel.DEFAULT) for item in other_items]
            after = [
                updated.with_changes(
                    items=items, body=updated.body.with_changes(body=moved), leading_lines=()
                )
            ]
        trimmed = updated.with_changes(body=updated.body.with_changes(body=kept))
        return cst.FlattenSentinel([trimmed, *after])

    return FixPlan(message, {region: replace}, applicability)


def _fix_message(
    model: ModuleModel,
    call: cst.Call,
    computed: list[cst.BaseExpression],
    split: _Split | None,
) -> tuple[str, bool]:
    """What the fix does, and whether it also moves computation out of autocast (which
    changes numerics: the fix is then never safe)."""
    moving = "Move the backward pass and what follows it out of the autocast block"
    if split is not None:
        moving = (
            f"Compute `{split.name}` inside the autocast block and run its backward pass, and what "
            "follows it, after the block"
        )
    elif computed:
        part = _short(model, computed[0])
        return moving + f"; `{part}` is then computed outside autocast, in another dtype", True
    helper = model.helper_of(call)
    if (helper is not None and not _only_backward(model, helper)) or (
        helper is None and model.imported_runs_backward(call)
    ):
        # Another module's helper is not read here: what else it runs is not known.
        callee = _short(model, call.func)
        return moving + f"; the rest of what `{callee}` runs then leaves autocast too", True
    return moving, False


#: Calls after a backward that autocast leaves alone: host reads, logging, and the tensor
#: methods of a metric (`(out.argmax(1) == y).float().mean()`), none on autocast's op lists.
_HOST_METHODS = frozenset(
    {"item", "tolist", "detach", "cpu", "numpy", "append", "extend", "add_scalar"}
    | {"info", "debug", "warning", "write", "flush", "set_postfix", "set_description"}
    | {"time", "perf_counter", "monotonic", "get_last_lr", "get_lr", "synchronize"}
    | {"no_grad", "inference_mode", "barrier", "all_reduce", "zero_", "fill_", "copy_"}
    | {"argmax", "argmin", "max", "min", "eq", "ne", "lt", "le", "gt", "ge", "float"}
    | {"double", "long", "int", "bool", "mean", "size", "numel", "view", "reshape"}
    | {"squeeze", "unsqueeze", "clone", "topk", "abs", "to"}
    | {"items", "keys", "values", "get", "pop", "copy", "format", "join", "split", "strip"}
)
_HOST_FUNCTIONS = frozenset(
    {"print", "len", "float", "int", "str", "round", "isinstance", "hasattr", "getattr"}
    | {"range", "enumerate", "zip", "list", "tuple", "dict", "min", "max", "any", "all"}
)


def _computation_in(model: ModuleModel, nodes: Sequence[cst.CSTNode]) -> cst.CSTNode | None:
    """The first thing ``nodes`` (statements) run that autocast may change (a forward pass,
    a matmul, any call not known to be a backward pass, scaler or optimizer bookkeeping, a
    host read, a metric or logging); None when there is none."""
    for statement in nodes:
        for node in (statement, *walk_body(statement)):
            if isinstance(node, cst.BinaryOperation) and isinstance(
                node.operator, cst.MatrixMultiply
            ):
                return node
            if not isinstance(node, cst.Call) or _bookkeeping(model, node):
                continue
            name = method_name(node)
            if name in _HOST_METHODS or name in _BOOKKEEPING or _logs(model, node):
                continue
            if isinstance(node.func, cst.Name) and node.func.value in _HOST_FUNCTIONS:
                continue
            if _constructs(node):
                continue  # `MetricsTracker()`: a class builds an object, it runs no forward
            return node
    return None


def _constructs(call: cst.Call) -> bool:
    """A call of a CapWords name (``Tracker()``, ``meters.AverageMeter()``): a class."""
    name = dotted_name(call.func)
    last = name.rsplit(".", 1)[-1] if name else ""
    return last[:1].isupper() and not last.isupper()


def _logs(model: ModuleModel, call: cst.Call) -> bool:
    """``wandb.log({...})``, ``logger.log(level, msg)``: not ``x.log()`` or ``torch.log(x)``,
    which autocast runs in float32."""
    if method_name(call) != "log" or not call.args:
        return False
    names = model.evaluator.qualified_names(call.func)
    receiver_name = dotted_name(receiver(call) or cst.Name("_")) or ""
    return not any(n.startswith("torch.") for n in names) and receiver_name != "torch"


def _beside_on_its_line(
    call: cst.Call, statement: cst.BaseStatement
) -> tuple[list[cst.CSTNode], list[cst.CSTNode]]:
    """The small statements before and after the backward's on its own line
    (``b(); a.backward(); c()``)."""
    if not isinstance(statement, cst.SimpleStatementLine):
        return [], []
    items = list(statement.body)
    for index, item in enumerate(items):
        if item is call or any(node is call for node in walk_body(item)):
            return items[:index], items[index + 1 :]
    return [], []


def _computed_parts(model: ModuleModel, call: cst.Call) -> list[cst.BaseExpression]:
    """The parts of ``call`` (its receiver and arguments) that compute something when
    evaluated: moved out of autocast, they would run under another dtype policy."""
    func = call.func
    parts: list[cst.BaseExpression] = []
    if isinstance(func, cst.Attribute):
        parts.append(func.value)
    elif not isinstance(func, cst.Name):
        parts.append(func)
    parts.extend(arg.value for arg in call.args)
    return [part for part in parts if not _inert(model, part)]


def _inert(model: ModuleModel, expr: cst.BaseExpression) -> bool:
    """Evaluates to the same value inside and outside autocast: a name, an attribute chain,
    a literal, ``model.parameters()``, or ``scaler.scale(loss)`` of such (a multiplication
    by the scale, which autocast leaves alone)."""
    if dotted_name(expr) is not None:
        return True
    if isinstance(expr, (cst.Integer, cst.Float, cst.Imaginary, cst.SimpleString)):
        return True
    if isinstance(expr, (cst.Tuple, cst.List)):
        return all(_inert(model, element.value) for element in expr.elements)
    return isinstance(expr, cst.Call) and _inert_call(model, expr)


def _inert_call(model: ModuleModel, call: cst.Call) -> bool:
    target = receiver(call)
    if target is None or not _inert(model, target):
        return False
    if not all(_inert(model, arg.value) for arg in call.args):
        return False
    name = method_name(call)
    return name in _PARAMETER_LISTS or (name == "scale" and scaler_state(model, target) is not None)


def _only_backward(model: ModuleModel, helper: cst.FunctionDef) -> bool:
    """Whether the helper computes nothing but its backward (and the scaler and optimizer
    bookkeeping that the fix moves out of autocast anyway after a backward)."""
    for node in walk_body(helper.body):
        if isinstance(node, (cst.BinaryOperation, cst.AugAssign)):
            return False
        if isinstance(node, cst.Call) and not _bookkeeping(model, node):
            return False
    return True


def _moves_nothing_else(
    model: ModuleModel, statement: cst.BaseStatement, backward: cst.Call
) -> bool:
    """Whether the statement around a nested ``backward`` (an ``if``, a loop over losses)
    runs nothing else but backward passes and bookkeeping. What the backward calls
    themselves compute, the fix's message names; the tests of ``if``s and ``while``s are
    host values (a step counter), not autocast's business."""
    nodes = [statement, *walk_body(statement)]
    tests = {id(node.test) for node in nodes if isinstance(node, (cst.If, cst.While))}
    skipped: set[int] = {id(backward)}
    for node in nodes:
        if id(node) in skipped or id(node) in tests or id(model.index.parent(node)) in skipped:
            skipped.add(id(node))
            continue
        if isinstance(node, cst.Call) and model.is_direct_backward(node):
            skipped.add(id(node))  # another backward of the statement: as ``backward``
            continue
        if isinstance(node, (cst.BinaryOperation, cst.AugAssign)):
            return False
        if (
            isinstance(node, cst.Call)
            and not _bookkeeping(model, node)
            and not (method_name(node) in _NEUTRAL_CONTEXTS and not node.args)
        ):
            return False
    return True


def _bookkeeping(model: ModuleModel, call: cst.Call) -> bool:
    if _computed_parts(model, call):
        return False
    if model.is_direct_backward(call) or _inert_call(model, call):
        return True
    return model.helper_of(call) is None and method_name(call) in _BOOKKEEPING


def _split_loss(
    model: ModuleModel,
    call: cst.Call,
    statement: cst.BaseStatement,
    computed: list[cst.BaseExpression],
) -> _Split | None:
    """``loss = <the computed part>`` to keep in the block, and the statement with the part
    replaced by ``loss`` to move out: only where that is surely the same program (one line
    that is the call, one computed part, a name the scope does not use)."""
    if len(computed) != 1 or not _is_call_statement(call, statement):
        return None
    if not any(computed[0] is slot for slot in _loss_slots(call)):
        return None  # `loss.backward(gradient=ones_like(loss))`: not a loss to name
    assert isinstance(statement, cst.SimpleStatementLine)
    part = _scaled_loss(model, computed[0])
    name = _fresh_name(model, call)
    if name is None:
        return None
    value = part
    if part.lpar and "\n" not in model.module.code_for_node(part):
        value = part.with_changes(lpar=(), rpar=())  # `(a + b).backward()`: `loss = a + b`
    keep = cst.SimpleStatementLine(
        body=[cst.Assign(targets=[cst.AssignTarget(cst.Name(name))], value=value)],
        leading_lines=statement.leading_lines,
    )
    move = statement.deep_replace(part, cst.Name(name))
    assert isinstance(move, cst.SimpleStatementLine)
    return _Split(name, keep, move.with_changes(leading_lines=()))


def _loss_slots(call: cst.Call) -> tuple[cst.BaseExpression, ...]:
    """Where a backward call takes its loss: ``<loss>.backward()``, or the first positional
    argument (``torch.autograd.grad(<loss>, ...)``, ``accelerator.backward(<loss>)``)."""
    slots: list[cst.BaseExpression] = []
    if isinstance(call.func, cst.Attribute):
        slots.append(call.func.value)
    if call.args and call.args[0].keyword is None and not call.args[0].star:
        slots.append(call.args[0].value)
    return tuple(slots)


def _is_call_statement(call: cst.Call, statement: cst.BaseStatement) -> bool:
    """``<call>`` or ``grads = <call>`` (plain targets), alone on its line."""
    if not isinstance(statement, cst.SimpleStatementLine) or len(statement.body) != 1:
        return False
    small = statement.body[0]
    if isinstance(small, cst.Expr):
        return small.value is call
    return (
        isinstance(small, cst.Assign)
        and small.value is call
        and all(dotted_name(target.target) is not None for target in small.targets)
    )


def _scaled_loss(model: ModuleModel, part: cst.BaseExpression) -> cst.BaseExpression:
    """``scaler.scale(<loss>)``: the loss is what to name; scaling it may leave the block."""
    if (
        isinstance(part, cst.Call)
        and method_name(part) == "scale"
        and len(part.args) == 1
        and part.args[0].keyword is None
        and not part.args[0].star
    ):
        target = receiver(part)
        if target is not None and _inert(model, target) and scaler_state(model, target) is not None:
            return part.args[0].value
    return part


def _fresh_name(model: ModuleModel, call: cst.Call) -> str | None:
    """A loss name that nothing in the call's scope (nested scopes included) mentions."""
    used = set(names_read(model.index.scope_of(call).node))
    return next((name for name in _LOSS_NAMES if name not in used), None)


def _is_autocast_item(model: ModuleModel, item: cst.WithItem) -> bool:
    return any(
        isinstance(v, AutocastRegion) for v in model.evaluator.evaluate(item.item)
    ) or is_framework_autocast(model, item.item)


def _body_statement(
    model: ModuleModel, call: cst.Call, region: cst.With
) -> cst.BaseStatement | None:
    """The statement of the ``with`` body that contains ``call``."""
    child: cst.CSTNode = call
    for ancestor in model.index.ancestors(call):
        if ancestor is region.body:
            return child if isinstance(child, cst.BaseStatement) else None
        child = ancestor
    return None
