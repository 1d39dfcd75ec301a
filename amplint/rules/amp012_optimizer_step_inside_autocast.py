"""AMP012 optimizer-step-inside-autocast."""

from __future__ import annotations

import re

import libcst as cst

from amplint.analysis.lifecycle import autocast_off_at
from amplint.analysis.model import ModuleModel, calls_in, method_name, receiver, receiver_key
from amplint.analysis.scalers import scaler_like
from amplint.analysis.values import AutocastRegion, SchedulerInstance
from amplint.engine.contract import FixPlan, Invalid, Rule, RuleContext

_SCHEDULER = re.compile(r"sched", re.IGNORECASE)


class OptimizerStepInsideAutocast(Rule):
    code = "AMP012"
    # LIVE: an autocast only listed or compared is never entered (the evaluator resolves
    # no value through a table or a comparison).
    tokens = (("!autocast",), ("step", "update", "zero_grad"))

    valid = (
        # The step in the branch that runs only with the region's own flag off.
        """
import torch
for x, y in loader:
    with torch.autocast("cuda", enabled=args.amp):
        loss = model(x)
        if args.amp:
            pass
        else:
            loss.backward()
            optimizer.step()
""",
        # The recipe.
        """
import torch
for x, y in loader:
    optimizer.zero_grad()
    with torch.autocast("cuda"):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # A step after a backward in the same block is AMP001's finding, fixed by its move.
        """
import torch
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
""",
        # A nested region that turns autocast off.
        """
import torch
with torch.autocast("cuda"):
    loss = model(x)
    with torch.autocast("cuda", enabled=False):
        optimizer.step()
""",
        # A closure defined (not run) inside the region.
        """
import torch
with torch.autocast("cuda"):
    def closure():
        optimizer.zero_grad()
        return model(x)
optimizer.step(closure)
""",
        # "AMP off" stand-in only.
        """
from contextlib import nullcontext
ctx = nullcontext()
with ctx:
    loss = model(x)
    optimizer.step()
""",
        # Not optimizers or scalers: EMA weights, a sampler, the model's own zero_grad.
        """
import torch
with torch.autocast("cuda"):
    loss = model(x)
    ema.update()
    sampler.step()
    model.zero_grad()
""",
        # Disabled literally.
        """
import torch
with torch.autocast("cuda", enabled=False):
    loss = model(x)
    optimizer.step()
""",
        # Not torch's autocast.
        """
from contextlib import contextmanager
@contextmanager
def autocast():
    yield
with autocast():
    optimizer.step()
""",
        # Dead code.
        """
import torch
if False:
    with torch.autocast("cuda"):
        optimizer.step()
""",
        # zero_grad() alone computes nothing: harmless inside autocast.
        """
import torch
for x, y in loader:
    with torch.autocast("cuda"):
        optimizer.zero_grad()
        loss = model(x)
    loss.backward()
    optimizer.step()
""",
        """
import torch
with torch.autocast("cuda"):
    out = model(x)
    optimizer.zero_grad()
    loss = criterion(out, y)
""",
    )
    invalid = (
        # The whole region on one line: said, not fixed.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler("cuda")
for x in loader:
    scaler.scale(model(x).mean()).backward()
    with torch.autocast("cuda"): scaler.step(optimizer); scaler.update()
""",
            line=6,
            count=2,
        ),
        # A framework backward this module cannot see; step and zero_grad follow it.
        Invalid(
            """
import torch
class Module:
    def training_step(self, batch):
        opt = self.optimizers()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = self.compute_loss(batch)
            self.manual_backward(loss)
            opt.step()  # step
            opt.zero_grad()
        return loss
""",
            line=9,
            fixed="""
import torch
class Module:
    def training_step(self, batch):
        opt = self.optimizers()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = self.compute_loss(batch)
            self.manual_backward(loss)
        opt.step()  # step
        opt.zero_grad()
        return loss
""",
        ),
        # A block that only steps is unwrapped; self.scaler and a scheduler.
        Invalid(
            """
import torch
class Trainer:
    def __init__(self):
        self.scaler = torch.amp.GradScaler("cuda")

    def optimizer_step(self):
        with torch.autocast("cuda"):
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.lr_scheduler.step()
""",
            line=9,
            count=2,
            fixed="""
import torch
class Trainer:
    def __init__(self):
        self.scaler = torch.amp.GradScaler("cuda")

    def optimizer_step(self):
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr_scheduler.step()
""",
        ),
        # Under the accumulation boundary, with logging after it: unsafe move.
        Invalid(
            """
import torch
amp = torch.autocast(device_type="cuda", dtype=torch.float16)
for i, (x, y) in enumerate(loader):
    with amp:
        loss = model(x) / accum
        loss_scaler(loss, optimizer)
        if (i + 1) % accum == 0:
            scaler.update()
        print(loss.item())
""",
            line=9,
            unsafe=True,
            fixed="""
import torch
amp = torch.autocast(device_type="cuda", dtype=torch.float16)
for i, (x, y) in enumerate(loader):
    with amp:
        loss = model(x) / accum
        loss_scaler(loss, optimizer)
    if (i + 1) % accum == 0:
        scaler.update()
    print(loss.item())
""",
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        if not model.autocast_withs:
            return
        found: dict[cst.With, list[tuple[cst.Call, int, str]]] = {}
        for call in model.index.calls:
            what = _target(model, call)
            if what is None:
                continue
            region = model.enclosing_autocast(call)
            if region is None or model.autocast_state(region) != "enabled":
                continue
            if model.is_dead(call):
                continue
            if isinstance(region.body, cst.SimpleStatementSuite):
                # `with autocast(): scaler.step(opt); scaler.update()` on one line: said, not
                # fixed (unless a backward there makes it AMP001's).
                if not any(model.runs_backward(c) for c in calls_in(region.body)):
                    context.report(call, _message(what))
                continue
            if not isinstance(region.body, cst.IndentedBlock):
                continue
            if autocast_off_at(model, call, region):
                continue  # the branch that runs with this autocast off
            position = _body_position(model, call, region)
            if position is None:
                continue
            found.setdefault(region, []).append((call, position, what))
        for region, calls in found.items():
            backward = _first_backward(model, region)
            # From the backward on, AMP001's fix moves the block's tail: not ours to report.
            ours = [c for c in calls if backward is None or c[1] < backward]
            if not ours:
                continue
            plan = _move_out(model, region, {c[1] for c in ours}, backward)
            for call, _, what in ours:
                context.report(call, _message(what), plan)


def _message(what: str) -> str:
    return (
        f"`{what}` runs inside an autocast region; autocast should cover only the forward "
        "pass and the loss: leave the `with` block first"
    )


def _target(model: ModuleModel, call: cst.Call) -> str | None:
    name = method_name(call)
    target = receiver(call)
    key = receiver_key(call) or "optimizer"
    if name == "step":
        if model.is_optimizer_step(call):
            return f"{key}.step()"
        if call.args and scaler_like(model, target):
            return f"{key}.step(...)"
    elif name == "update" and not call.args and scaler_like(model, target):
        return f"{key}.update()"
    # `zero_grad()` alone computes nothing under autocast: not reported (the fix still
    # moves it out with the steps it sits among, see `_pure`).
    return None


def _body_position(model: ModuleModel, node: cst.CSTNode, region: cst.With) -> int | None:
    """Index of the statement of the ``with`` body that contains ``node``."""
    body = region.body
    child: cst.CSTNode = node
    for ancestor in model.index.ancestors(node):
        if ancestor is body:
            assert isinstance(body, cst.IndentedBlock)
            return next((i for i, s in enumerate(body.body) if s is child), None)
        child = ancestor
    return None


def _first_backward(model: ModuleModel, region: cst.With) -> int | None:
    positions = [
        _body_position(model, call, region)
        for call in calls_in(region.body)
        if model.runs_backward(call) and model.enclosing_autocast(call) is region
    ]
    known = [p for p in positions if p is not None]
    return min(known) if known else None


def _pure(model: ModuleModel, statement: cst.BaseStatement) -> bool:
    """A line of plain step / update / zero_grad / scheduler step calls and nothing else."""
    if not isinstance(statement, cst.SimpleStatementLine):
        return False
    for small in statement.body:
        if not isinstance(small, cst.Expr) or not isinstance(small.value, cst.Call):
            return False
        call = small.value
        if (
            _target(model, call) is None
            and not _scheduler_step(model, call)
            and not _optimizer_zero_grad(model, call)
        ):
            return False
        if any(inner is not call for inner in calls_in(small)):
            return False  # `opt.step(compute())`: something else runs too
    return True


def _optimizer_zero_grad(model: ModuleModel, call: cst.Call) -> bool:
    target = receiver(call)
    return method_name(call) == "zero_grad" and target is not None and model.is_optimizer(target)


def _scheduler_step(model: ModuleModel, call: cst.Call) -> bool:
    target = receiver(call)
    if method_name(call) != "step" or target is None:
        return False
    if any(isinstance(v, SchedulerInstance) for v in model.evaluator.evaluate(target)):
        return True
    return bool(_SCHEDULER.search(receiver_key(call) or ""))


def _move_out(
    model: ModuleModel, region: cst.With, positions: set[int], backward: int | None
) -> FixPlan | None:
    """One plan for every reported statement of the block: the run of pure statements the
    block starts with goes before the ``with``, the first step after the forward code and
    everything after it go after the ``with`` (unless a backward follows: AMP001's part)."""
    body = region.body
    assert isinstance(body, cst.IndentedBlock)
    statements = list(body.body)
    prefix = 0
    while prefix < len(statements) and _pure(model, statements[prefix]):
        prefix += 1
    before_count = prefix if any(p < prefix for p in positions) else 0
    later = sorted(p for p in positions if p >= prefix)
    start = later[0] if later and backward is None else len(statements)
    moved = statements[:before_count] + statements[start:]
    if not moved:
        return None
    other_items = [item for item in region.items if not _is_autocast_item(model, item)]
    unsafe = bool(other_items) or not all(_pure(model, s) for s in moved)

    def replace(updated: cst.CSTNode) -> cst.FlattenSentinel:
        assert isinstance(updated, cst.With) and isinstance(updated.body, cst.IndentedBlock)
        current = list(updated.body.body)
        kept = current[before_count:start]
        result = _wrapped(updated, current[:before_count], other_items)
        with_index = None
        if kept:
            with_index = len(result)
            result.append(updated.with_changes(body=updated.body.with_changes(body=kept)))
        result += _wrapped(updated, current[start:], other_items)
        if with_index != 0:
            # The lines above the `with` stay above whatever now comes first.
            first = result[0]
            result[0] = first.with_changes(
                leading_lines=[*updated.leading_lines, *first.leading_lines]
            )
            if with_index is not None:
                result[with_index] = result[with_index].with_changes(leading_lines=())
        return cst.FlattenSentinel(result)

    return FixPlan(
        "Move the optimizer step out of the autocast block",
        {region: replace},
        "unsafe" if unsafe else "safe",
    )


def _wrapped(
    updated: cst.With, statements: list[cst.BaseStatement], other_items: list[cst.WithItem]
) -> list[cst.BaseStatement]:
    """The statements, still inside the ``with``'s other context managers if it has some."""
    if not other_items or not statements:
        return list(statements)
    assert isinstance(updated.body, cst.IndentedBlock)
    items = [item.with_changes(comma=cst.MaybeSentinel.DEFAULT) for item in other_items]
    return [
        updated.with_changes(
            items=items, body=updated.body.with_changes(body=statements), leading_lines=()
        )
    ]


def _is_autocast_item(model: ModuleModel, item: cst.WithItem) -> bool:
    return any(isinstance(v, AutocastRegion) for v in model.evaluator.evaluate(item.item))
