"""AMP001 backward-inside-autocast."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.frameworks import (
    enclosing_framework_autocast,
    framework_autocast_withs,
    is_framework_autocast,
    is_framework_backward,
)
from amplint.analysis.model import ModuleModel, calls_in
from amplint.analysis.values import AutocastRegion
from amplint.engine.contract import FixPlan, Invalid, Rule, RuleContext


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
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
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
            if model.is_dead(call):
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


def _runs_backward(model: ModuleModel, call: cst.Call) -> bool:
    return model.runs_backward(call) or is_framework_backward(model, call)


def _message(model: ModuleModel, call: cst.Call) -> str:
    action = "runs the backward pass"
    if not model.is_direct_backward(call) and not is_framework_backward(model, call):
        action = "calls a helper that runs the backward pass"
    return (
        f"`{_short(model, call)}` {action} inside an autocast region; "
        "leave the `with` block before calling backward"
    )


def _short(model: ModuleModel, call: cst.Call) -> str:
    text = model.module.code_for_node(call)
    return text if len(text) <= 40 else text[:37] + "..."


def _move_out_of_with(model: ModuleModel, call: cst.Call, region: cst.With) -> FixPlan | None:
    body = region.body
    if not isinstance(body, cst.IndentedBlock):
        return None
    statement = _body_statement(model, call, region)
    if statement is None:
        return None
    position = next(i for i, s in enumerate(body.body) if s is statement)
    if position == 0:
        return None  # nothing before it would stay under autocast: leave it to the user
    other_items = [item for item in region.items if not _is_autocast_item(model, item)]
    nested = statement is not model.statement_in_block(call)
    applicability = "unsafe" if nested or other_items else "safe"

    def replace(updated: cst.CSTNode) -> cst.FlattenSentinel:
        assert isinstance(updated, cst.With) and isinstance(updated.body, cst.IndentedBlock)
        kept, moved = updated.body.body[:position], updated.body.body[position:]
        after: list[cst.BaseStatement] = list(moved)
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

    return FixPlan(
        "Move the backward pass and what follows it out of the autocast block",
        {region: replace},
        applicability,
    )


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
