"""AMP011 unscale-twice."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.model import ModuleModel
from amplint.analysis.steps import (
    Event,
    Iteration,
    Kind,
    branches,
    exclusive,
    iterations,
    statement_call,
    together,
)
from amplint.engine.contract import FixPlan, Invalid, Replacement, Rule, RuleContext


class UnscaleTwice(Rule):
    code = "AMP011"
    tokens = (("unscale_",),)

    valid = (
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
""",
        # Two optimizers, each unscaled once.
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    scaler.unscale_(opt_a)
    scaler.unscale_(opt_b)
    scaler.step(opt_a)
    scaler.step(opt_b)
    scaler.update()
""",
        # A loop over optimizers.
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    for opt in optimizers:
        scaler.unscale_(opt)
    for opt in optimizers:
        scaler.step(opt)
    scaler.update()
""",
        # Exclusive branches.
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    if clip_mode == "norm":
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
    else:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_value_(params, 1.0)
    scaler.step(optimizer)
    scaler.update()
""",
        # Under two unrelated flags: maybe never both (in doubt).
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    if args.clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
    if args.log_grad_norm and not args.clip:
        scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()
""",
        # Accumulation: unscale_, step and update under the same boundary.
        """
import torch
scaler = torch.amp.GradScaler()
for i, batch in enumerate(loader):
    scaler.scale(loss / accum).backward()
    if (i + 1) % accum == 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""",
        # An OOM-retry loop repeats only through `continue`; one unscale per optimizer.
        """
import torch
class Trainer:
    def __init__(self):
        self.scaler = torch.amp.GradScaler()

    def train_batch(self, batches):
        while True:
            try:
                for micro in batches:
                    self.scaler.scale(self.model(micro)).backward()
            except torch.OutOfMemoryError:
                batches = halve(batches)
                continue
            for optimizer in self.optimizers:
                self.scaler.unscale_(optimizer)
            return

    def fit(self, loader):
        for batch in loader:
            self.train_batch(batch)
            for optimizer in self.optimizers:
                self.scaler.step(optimizer)
            self.scaler.update()
""",
        # A float32 loop hands `None` to a clipping helper that unscales only a scaler.
        """
import torch
def clip(optimizer, scaler, params):
    if scaler:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, 1.0)

def train_epoch(model, loader, optimizer, stats):
    for x, y in loader:
        model(x, y).backward()
        clip(optimizer, None, model.parameters())
        optimizer.step()
    stats.update(done=True)
""",
    )
    invalid = (
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()
""",
            line=8,
            fixed="""
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
""",
        ),
        # Unscaled for logging, then again under the clip flag.
        Invalid(
            """
import torch
class Trainer:
    def step(self, loss):
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        self.log_grad_norm()
        if self.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
""",
            line=9,
            fixed="""
import torch
class Trainer:
    def step(self, loss):
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        self.log_grad_norm()
        if self.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
""",
        ),
        # The first call is conditional, the second not: which to keep depends on what
        # reads the gradients in between, so no fix.
        Invalid(
            """
import torch
def step(scaler, optimizer, loss):
    scaler.scale(loss).backward()
    if clip_grad:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, clip_grad)
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()
""",
            line=8,
        ),
        # After step: gradients are already unscaled.
        Invalid(
            """
import torch
def train(loader, scaler, optimizer):
    for batch in loader:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.unscale_(optimizer)
        grad_norm = compute_grad_norm(model)
        scaler.update()
""",
            line=7,
            fixed="""
import torch
def train(loader, scaler, optimizer):
    for batch in loader:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        grad_norm = compute_grad_norm(model)
        scaler.update()
""",
        ),
        # Through a helper of the module: the helper unscales, the caller again.
        Invalid(
            """
import torch
def clip_gradients(scaler, optimizer, params):
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, 1.0)

def train_step(scaler, optimizer, loss):
    scaler.scale(loss).backward()
    clip_gradients(scaler, optimizer, model.parameters())
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()
""",
            line=10,
            fixed="""
import torch
def clip_gradients(scaler, optimizer, params):
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, 1.0)

def train_step(scaler, optimizer, loss):
    scaler.scale(loss).backward()
    clip_gradients(scaler, optimizer, model.parameters())
    scaler.step(optimizer)
    scaler.update()
""",
        ),
        # Unscale in the micro-batch loop, update once after it: no fix.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    for micro in split(batch):
        scaler.scale(model(micro)).backward()
        scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()
""",
            line=7,
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        for iteration in iterations(model):
            unscales = iteration.of(Kind.UNSCALE)
            for event in unscales:
                found = _problem(iteration, event)
                if found is None:
                    continue
                message, earlier = found
                fix = _remove_extra(earlier, event, model) if earlier else None
                if earlier is not None and earlier.kind is Kind.SCALER_STEP:
                    fix = _remove(model, event, "after `step()`")
                context.report(event.call, message, fix)


def _problem(iteration: Iteration, event: Event) -> tuple[str, Event | None] | None:
    scaler, optimizer = event.scaler_local, event.optimizer_local
    for earlier in reversed(iteration.between(None, event)):
        if earlier.scaler != event.scaler:
            continue
        if earlier.kind is Kind.UPDATE and not exclusive(earlier, event):
            break
        same = earlier.optimizer == event.optimizer
        if earlier.kind is Kind.SCALER_STEP and same and together(earlier, event):
            return (
                f"`{scaler}.unscale_({optimizer})` after `{scaler}.step({optimizer})` "
                "raises: the step already unscaled these gradients; remove it",
                earlier,
            )
        if earlier.kind is Kind.UNSCALE and same and together(earlier, event):
            return (
                f"`{scaler}.unscale_({optimizer})` is called a second time before "
                f"`{scaler}.update()` and raises; keep one call, right before the clip",
                earlier,
            )
    # A loop that never scales a loss nor steps through this scaler (a float32 loop handing
    # `None` to a helper that unscales `if scaler:`) has nothing of it to unscale twice.
    if event.scaler is None or not any(
        e.scaler == event.scaler and e.kind in (Kind.SCALED_BACKWARD, Kind.SCALER_STEP)
        for e in iteration.events
    ):
        return None
    for loop in event.loops:
        if _bound_by(loop, event.optimizer_local or "") or _is_retry_loop(loop):
            continue
        updates = [
            e for e in iteration.of(Kind.UPDATE) if e.scaler == event.scaler and loop in e.loops
        ]
        if not updates:
            return (
                f"`{scaler}.unscale_({optimizer})` runs on every pass of this loop but "
                f"`{scaler}.update()` only once after it: the second pass raises; unscale "
                "once, after the loop",
                None,
            )
    return None


def _bound_by(loop: cst.For | cst.While, name: str) -> bool:
    if not isinstance(loop, cst.For):
        return False
    head = name.split(".")[0].split("[")[0]
    targets = {n.value for n in _names(loop.target)}
    return head in targets


def _is_retry_loop(loop: cst.For | cst.While) -> bool:
    """``while True: ... return`` (OOM retries and kin): the body ends by leaving the loop,
    so a second pass happens only through ``continue`` or an exception, not every time."""
    body = loop.body.body if isinstance(loop.body, cst.IndentedBlock) else ()
    if not body or not isinstance(body[-1], cst.SimpleStatementLine):
        return False
    return any(isinstance(s, (cst.Return, cst.Break, cst.Raise)) for s in body[-1].body)


def _names(node: cst.CSTNode) -> list[cst.Name]:
    if isinstance(node, cst.Name):
        return [node]
    if isinstance(node, (cst.Tuple, cst.List)):
        return [n for element in node.elements for n in _names(element.value)]
    return []


def _remove_extra(first: Event, second: Event, model: ModuleModel) -> FixPlan | None:
    # Only the second call can go, and only when it runs just when the first did: then
    # everything after the first already saw unscaled gradients and nothing changes.
    # Removing the first instead would hand scaled gradients to whatever reads them
    # in between (a clip, a gradient-norm log).
    if set(branches(first)) <= set(branches(second)):
        return _remove(model, second, "a second time")
    return None


def _remove(model: ModuleModel, event: Event, why: str) -> FixPlan | None:
    if event.frame.via:
        return None
    statement = statement_call(model, event.call)
    parent = model.index.parent(statement) if statement is not None else None
    if statement is None or not isinstance(parent, (cst.IndentedBlock, cst.Module)):
        return None
    body = list(parent.body)
    if len(body) < 2:
        return None
    replacements: dict[cst.CSTNode, Replacement] = {statement: cst.RemovalSentinel.REMOVE}
    if any(line.comment is not None for line in statement.leading_lines):
        # The comments above the call stay, above the statement that follows it.
        position = body.index(statement)
        if position + 1 == len(body):
            return None
        following = body[position + 1]
        kept = statement.leading_lines

        def keep_comments(updated: cst.CSTNode) -> cst.CSTNode:
            assert isinstance(updated, (cst.SimpleStatementLine, cst.BaseCompoundStatement))
            return updated.with_changes(leading_lines=(*kept, *updated.leading_lines))

        replacements[following] = keep_comments
    return FixPlan(f"Remove the `unscale_` call made {why}", replacements)
