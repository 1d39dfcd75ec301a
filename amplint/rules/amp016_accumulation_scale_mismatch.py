"""AMP016 accumulation-scale-mismatch."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.model import ModuleModel
from amplint.analysis.steps import (
    Condition,
    Event,
    Iteration,
    Kind,
    accumulation_like,
    exclusive,
    iterations,
    statement_call,
)
from amplint.engine.contract import FixPlan, Invalid, Replacement, Rule, RuleContext

_MOVABLE = (Kind.UNSCALE, Kind.CLIP, Kind.SCALER_STEP, Kind.UPDATE)


class AccumulationScaleMismatch(Rule):
    code = "AMP016"
    tokens = (("~scaler",), ("zero_grad",), ("step", "update", "unscale_"))

    valid = (
        # The boundary as a guard: micro-batches that do not end an accumulation `continue`
        # before the step (NVIDIA's HiFi-GAN).
        """
import torch
def train(model, optimizer, loader, accum):
    scaler = torch.amp.GradScaler("cuda")
    for i, (x, y) in enumerate(loader):
        if i % accum == 0:
            optimizer.zero_grad()
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(x, y) / accum
        scaler.scale(loss).backward()
        if (i + 1) % accum != 0:
            continue
        scaler.step(optimizer)
        scaler.update()
""",
        """
import torch
scaler = torch.amp.GradScaler()
for i, (x, y) in enumerate(loader):
    scaler.scale(loss / accum).backward()
    if (i + 1) % accum == 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""",
        # DDP no_sync: the boundary in a variable.
        """
import torch
scaler = torch.amp.GradScaler("cuda", enabled=args.amp)
for i, (x, y) in enumerate(loader):
    sync_now = (i + 1) % args.accum_steps == 0
    scaler.scale(loss).backward()
    if sync_now:
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
""",
        # No accumulation: zero_grad every step.
        """
import torch
scaler = torch.amp.GradScaler()
for x, y in loader:
    optimizer.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # zero_grad at the window's start, step at its end: two boundaries.
        """
import torch
scaler = torch.amp.GradScaler()
for i, batch in enumerate(loader):
    if i % accum == 0:
        optimizer.zero_grad()
    scaler.scale(loss / accum).backward()
    if (i + 1) % accum == 0:
        scaler.step(optimizer)
        scaler.update()
""",
        # timm's and MAE's loss scaler: the wrapper steps under `if update_grad:`, which the
        # loop hands the accumulation test.
        """
import torch
class NativeScaler:
    def __init__(self):
        self._scaler = torch.amp.GradScaler("cuda")

    def __call__(self, loss, optimizer, parameters=None, update_grad=True):
        self._scaler.scale(loss).backward()
        if update_grad:
            self._scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            self._scaler.step(optimizer)
            self._scaler.update()

loss_scaler = NativeScaler()
for step, x in enumerate(loader):
    with torch.autocast("cuda"):
        loss = model(x).mean() / accum_iter
    loss_scaler(loss, optimizer, model.parameters(), update_grad=(step + 1) % accum_iter == 0)
    if (step + 1) % accum_iter == 0:
        optimizer.zero_grad()
""",
        # mmengine: boundary through a method.
        """
import torch
class Wrapper:
    def __init__(self):
        self.loss_scaler = torch.amp.GradScaler("cuda")

    def update_params(self, loss):
        self.loss_scaler.scale(loss).backward()
        if self.should_update():
            self.loss_scaler.step(self.optimizer)
            self.loss_scaler.update()
            self.optimizer.zero_grad()
""",
        # zero_grad under a phase test, not accumulation.
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    if phase == "train":
        optimizer.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
    )
    invalid = (
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler()
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y) / accum
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if (i + 1) % accum == 0:
        optimizer.zero_grad()
""",
            line=8,
            count=2,
            unsafe=True,
            fixed="""
import torch
scaler = torch.amp.GradScaler()
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y) / accum
    scaler.scale(loss).backward()
    if (i + 1) % accum == 0:
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""",
        ),
        # unscale_ and clip every micro-batch, step at the boundary.
        Invalid(
            """
import torch
def train(model, loader, optimizer, scaler, accum):
    for step, batch in enumerate(loader):
        scaler.scale(model(batch) / accum).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if (step + 1) % accum == 0:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
""",
            line=6,
            unsafe=True,
            fixed="""
import torch
def train(model, loader, optimizer, scaler, accum):
    for step, batch in enumerate(loader):
        scaler.scale(model(batch) / accum).backward()
        if (step + 1) % accum == 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
""",
        ),
        # A guard that skips empty batches is no accumulation boundary.
        Invalid(
            """
import torch
def train(model, optimizer, loader, accum):
    scaler = torch.amp.GradScaler("cuda")
    for i, batch in enumerate(loader):
        if batch is None:
            continue
        if i % accum == 0:
            optimizer.zero_grad()
        scaler.scale(model(batch) / accum).backward()
        scaler.step(optimizer)
        scaler.update()
""",
            line=11,
            count=2,
        ),
        # update every micro-batch, attribute scaler; something in between: no fix.
        Invalid(
            """
import torch
class Trainer:
    def train_step(self, i, loss):
        self.scaler.scale(loss).backward()
        self.scaler.update()
        self.meter.add(loss.item())
        if self.sync_gradients(i):
            self.scaler.step(self.optimizer)
            self.optimizer.zero_grad()
""",
            line=6,
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        for iteration in iterations(model):
            groups: dict[Condition, list[Event]] = {}
            for event in iteration.of(Kind.UNSCALE, Kind.SCALER_STEP, Kind.UPDATE):
                boundary = _boundary(model, iteration, event)
                if boundary is not None:
                    groups.setdefault(boundary, []).append(event)
            for boundary, every in groups.items():
                fix = _move_under(model, iteration, boundary, every)
                for event in every:
                    func = event.call.func
                    method = func.attr.value if isinstance(func, cst.Attribute) else ""
                    context.report(
                        event.call,
                        f"`{event.scaler_local}.{method}()` runs on every micro-batch while "
                        f"`zero_grad()` runs only under `if {boundary.key}:`; move it under "
                        "the accumulation boundary",
                        fix,
                    )


def _boundary(model: ModuleModel, iteration: Iteration, event: Event) -> Condition | None:
    """The accumulation condition that every ``zero_grad`` able to run with ``event`` sits
    under and ``event`` does not, when a scaled backward runs on every micro-batch beside
    it. ``zero_grad`` calls of another branch (``if accum > 1: ... else: zero_grad()``,
    the path without accumulation) say nothing about ``event``'s branch."""
    zero_grads = [z for z in iteration.of(Kind.ZERO_GRAD) if not exclusive(event, z)]
    if not zero_grads:
        return None
    shared: set[Condition] | None = None
    for zero_grad in zero_grads:
        conditions = {c for c in zero_grad.conditions if accumulation_like(model, c)}
        shared = conditions if shared is None else shared & conditions
    if not shared:
        return None
    own = {c for c in event.conditions if accumulation_like(model, c)}
    if not own <= shared:
        return None  # under an accumulation test of its own that the analysis cannot relate
    missing = shared - own
    if not missing:
        return None
    every_backward = [
        e
        for e in iteration.of(Kind.SCALED_BACKWARD)
        if not exclusive(e, event) and not any(c in missing for c in e.conditions)
    ]
    if not every_backward:
        return None
    return next(c for z in zero_grads for c in z.conditions if c in missing)


def _move_under(
    model: ModuleModel, iteration: Iteration, boundary: Condition, every: list[Event]
) -> FixPlan | None:
    if not boundary.branch:
        return None
    target = _boundary_if(model, iteration, boundary)
    if target is None or not isinstance(target.body, cst.IndentedBlock):
        return None
    block = model.index.parent(target)
    if not isinstance(block, (cst.IndentedBlock, cst.Module)):
        return None
    body = list(block.body)
    position = body.index(target)
    flagged = set()
    for event in every:
        statement = statement_call(model, event.call)
        if statement is None or event.frame.via or statement not in body:
            return None
        flagged.add(statement)
    movable = {
        statement_call(model, e.call)
        for e in iteration.events
        if e.kind in _MOVABLE and not e.frame.via
    }
    first = min(body.index(s) for s in flagged)
    if first > position:
        return None
    moved = body[first:position]
    if not all(s in movable for s in moved):
        return None

    def prepend(updated: cst.CSTNode) -> cst.CSTNode:
        assert isinstance(updated, cst.If) and isinstance(updated.body, cst.IndentedBlock)
        inner = [*moved, *updated.body.body]
        return updated.with_changes(body=updated.body.with_changes(body=inner))

    replacements: dict[cst.CSTNode, Replacement] = {s: cst.RemovalSentinel.REMOVE for s in moved}
    replacements[target] = prepend
    return FixPlan("Move the scaler calls under the accumulation boundary", replacements, "unsafe")


def _boundary_if(model: ModuleModel, iteration: Iteration, boundary: Condition) -> cst.If | None:
    for event in iteration.of(Kind.ZERO_GRAD):
        if event.frame.via:
            continue
        for ancestor in model.index.ancestors(event.call):
            if isinstance(ancestor, cst.If) and ancestor.test is boundary.test:
                return ancestor
    return None
