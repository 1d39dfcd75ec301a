"""AMP005 unscaled-backward-with-scaler."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.model import ModuleModel, method_name
from amplint.analysis.steps import (
    Event,
    Iteration,
    Kind,
    exclusive,
    iterations,
    together,
    usable_at,
)
from amplint.analysis.symbols import Symbol
from amplint.engine.contract import FixPlan, Invalid, Rule, RuleContext


class UnscaledBackwardWithScaler(Rule):
    code = "AMP005"
    tokens = (("~scaler",), ("backward",), ("step",))

    valid = (
        """
import torch
scaler = torch.amp.GradScaler()
for x, y in loader:
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # The unscaled branch steps the optimizer itself.
        """
import torch
def train(model, loader, optimizer, scaler=None):
    for x, y in loader:
        loss = model(x, y)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
""",
        # Backward chosen by the flag that also disables the scaler.
        """
import torch
scaler = torch.amp.GradScaler(enabled=use_amp)
for batch in loader:
    if use_amp:
        scaler.scale(loss).backward()
    else:
        loss.backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # A GAN: the generator trains unscaled and steps its own optimizer first.
        """
import torch
scaler_d = torch.amp.GradScaler()
for real in loader:
    g_loss.backward()
    opt_g.step()
    opt_d.zero_grad()
    scaler_d.scale(d_loss).backward()
    scaler_d.step(opt_d)
    scaler_d.update()
""",
        # A framework's backward scales for itself.
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    accelerator.backward(loss)
    scaler.step(optimizer)
    scaler.update()
""",
        # A scaled loss kept in a variable.
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaled = scaler.scale(loss)
    scaled.backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # A literally disabled scaler is a pass-through.
        """
import torch
scaler = torch.amp.GradScaler(enabled=False)
for batch in loader:
    loss.backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # The autograd.grad of a gradient penalty is not the training backward.
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    grads = torch.autograd.grad(scaler.scale(loss), params, create_graph=True)
    scaler.scale(loss + penalty).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # The loss is scaled through a wrapper (`cast`) on one path.
        """
import torch
from typing import cast
scaler = torch.amp.GradScaler()
for batch in loader:
    loss = model(batch)
    if use_amp:
        loss = cast(torch.Tensor, scaler.scale(loss))
    loss.backward()
    scaler.step(optimizer)
    scaler.update()
""",
    )
    invalid = (
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    loss.backward()
    scaler.step(optimizer)
    scaler.update()
""",
            line=7,
            fixed="""
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        ),
        # Gradient accumulation, parenthesised loss, attribute scaler.
        Invalid(
            """
import torch
class Trainer:
    def __init__(self):
        self.scaler = torch.amp.GradScaler(enabled=self.use_amp)

    def train_step(self, i, loss):
        (loss / self.accum).backward(retain_graph=False)
        if (i + 1) % self.accum == 0:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad()
""",
            line=8,
            fixed="""
import torch
class Trainer:
    def __init__(self):
        self.scaler = torch.amp.GradScaler(enabled=self.use_amp)

    def train_step(self, i, loss):
        self.scaler.scale(loss / self.accum).backward(retain_graph=False)
        if (i + 1) % self.accum == 0:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad()
""",
        ),
        # An auxiliary loss left unscaled next to a scaled one.
        Invalid(
            """
import torch
def train(loader, model, optimizer, scaler):
    for batch in loader:
        loss, aux = model(batch)
        scaler.scale(loss).backward(retain_graph=True)
        torch.autograd.backward(aux)
        scaler.step(optimizer)
        scaler.update()
""",
            line=7,
            fixed="""
import torch
def train(loader, model, optimizer, scaler):
    for batch in loader:
        loss, aux = model(batch)
        scaler.scale(loss).backward(retain_graph=True)
        torch.autograd.backward(scaler.scale(aux))
        scaler.step(optimizer)
        scaler.update()
""",
        ),
        # A clip before the step: scaling alone would clip scaled gradients, so no fix.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
""",
            line=5,
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        for iteration in iterations(model):
            for backward in iteration.of(Kind.BACKWARD):
                step = _stepped_through_scaler(iteration, backward)
                if step is None:
                    continue
                scaler = step.scaler_local or "scaler"
                context.report(
                    backward.call,
                    f"this backward is not scaled, but `{scaler}.step(...)` divides the "
                    f"gradients by the loss scale; use `{scaler}.scale(loss).backward()`",
                    _scale_loss(model, iteration, backward, step),
                )


def _stepped_through_scaler(iteration: Iteration, backward: Event) -> Event | None:
    """The ``scaler.step`` that next consumes ``backward``'s gradients, if any."""
    if any(e.kind is Kind.SCALED_BACKWARD and exclusive(e, backward) for e in iteration.events):
        return None  # `if amp: scaler.scale(loss).backward() else: loss.backward()`
    for event in iteration.between(backward, None):
        if exclusive(event, backward):
            continue
        if event.kind in (Kind.OPTIMIZER_STEP, Kind.ZERO_GRAD, Kind.MAYBE_SCALED_BACKWARD):
            return None
        if event.kind is Kind.SCALER_STEP:
            return event if together(event, backward) else None
    return None


def _scale_loss(
    model: ModuleModel, iteration: Iteration, backward: Event, step: Event
) -> FixPlan | None:
    if backward.frame.via:
        return None
    between = iteration.between(backward, step)
    if any(e.kind is Kind.CLIP for e in between) and not any(
        e.kind is Kind.UNSCALE for e in between
    ):
        return None
    scaler = usable_at(model, step, "scaler", backward)
    if scaler is None:
        return None
    call = backward.call
    if (
        method_name(call) == "backward"
        and isinstance(call.func, cst.Attribute)
        and not model.evaluator.is_symbol(call.func, Symbol.AUTOGRAD_BACKWARD)
    ):

        def wrap_receiver(updated: cst.CSTNode) -> cst.CSTNode:
            assert isinstance(updated, cst.Call) and isinstance(updated.func, cst.Attribute)
            scaled = _scale_call(scaler, updated.func.value)
            return updated.with_changes(func=updated.func.with_changes(value=scaled))

        return FixPlan(f"Scale the loss with `{scaler}.scale(...)`", {call: wrap_receiver})
    if not call.args or call.args[0].keyword is not None or call.args[0].star:
        return None

    def wrap_argument(updated: cst.CSTNode) -> cst.CSTNode:
        assert isinstance(updated, cst.Call)
        first = updated.args[0]
        scaled = first.with_changes(value=_scale_call(scaler, first.value))
        return updated.with_changes(args=[scaled, *updated.args[1:]])

    return FixPlan(f"Scale the loss with `{scaler}.scale(...)`", {call: wrap_argument})


def _scale_call(scaler: str, loss: cst.BaseExpression) -> cst.Call:
    if loss.lpar:  # `(loss / accum).backward()`: the call's parentheses are enough
        loss = loss.with_changes(lpar=(), rpar=())
    return cst.Call(func=cst.parse_expression(f"{scaler}.scale"), args=[cst.Arg(loss)])
