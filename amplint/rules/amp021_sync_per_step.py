"""AMP021 sync-per-step."""

from __future__ import annotations

import re

import libcst as cst

from amplint.analysis.model import ModuleModel, calls_in, method_name, receiver, walk_body
from amplint.analysis.scalers import scaler_state
from amplint.analysis.scopes import dotted_name
from amplint.analysis.steps import Iteration, Kind, iterations, normalise
from amplint.engine.contract import Invalid, Rule, RuleContext

_DISPLAY_CALLS = frozenset(
    {
        "print", "log", "info", "debug", "warning", "warn", "add_scalar", "add_scalars",
        "set_postfix", "set_postfix_str", "set_description", "write", "log_dict",
        "log_metrics", "format", "update", "append", "record",
    }
)  # fmt: skip
#: Conditions that still hold on every step (only one rank logs, AMP on).
_EVERY_STEP_TEST = re.compile(
    r"^(not )?[\w.]*(rank|main|master|amp|fp16|scaler|verbose)[\w.]*(\(\))?"
    r"( ?(==|!=|is|is not) ?[\w.\"']+)?$",
    re.IGNORECASE,
)
_SCALER_STATE_ATTRIBUTES = ("_scale", "_growth_tracker")


_SYNCHRONIZE = frozenset({"torch.cuda.synchronize", "torch.synchronize", "torch.xpu.synchronize"})


class SyncPerStep(Rule):
    code = "AMP021"
    tokens = (("~scaler",), ("get_scale", "state_dict", "_scale", "_growth_tracker"))

    valid = (
        """
import torch
scaler = torch.amp.GradScaler()
for step, batch in enumerate(loader):
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if step % args.log_interval == 0:
        print(f"scale {scaler.get_scale()}")
""",
        # Needed to decide something: the skipped-step check before the scheduler.
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    if scale <= scaler.get_scale():
        scheduler.step()
""",
        # Gradient penalty: the scale is part of the computation (PyTorch's example).
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    grads = torch.autograd.grad(scaler.scale(loss), params, create_graph=True)
    inv_scale = 1.0 / scaler.get_scale()
    penalty = sum((g * inv_scale).pow(2).sum() for g in grads)
    scaler.scale(loss + penalty).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # Checkpoint at the end of each epoch.
        """
import torch
scaler = torch.amp.GradScaler()
for epoch in range(epochs):
    for batch in loader:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    torch.save({"model": model.state_dict(), "scaler": scaler.state_dict()}, path)
""",
        # A checkpoint every N steps.
        """
import torch
scaler = torch.amp.GradScaler()
for step, batch in enumerate(loader):
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if step % save_every == 0:
        torch.save({"scaler": scaler.state_dict()}, path)
""",
        # The pass waits for the device anyway (`loss.item()` first): the read adds nothing.
        """
import torch
def train(loader, model, optimizer, scaler, rank):
    pbar = tqdm(loader)
    for batch in pbar:
        loss = model(batch)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if rank == 0:
            pbar.set_postfix(loss=loss.item(), scale=scaler.get_scale())
""",
        # A CPU scaler keeps its scale on the host.
        """
import torch
scaler = torch.amp.GradScaler("cpu")
for batch in loader:
    scaler.scale(model(batch)).backward()
    scaler.step(optimizer)
    scaler.update()
    print(f"scale {scaler.get_scale()}")
""",
        # Not in a training loop.
        """
import torch
scaler = torch.amp.GradScaler()
def describe():
    print(scaler.get_scale())
""",
    )
    invalid = (
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler()
for step, batch in enumerate(loader):
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    print(f"step {step} scale {scaler.get_scale()}")
""",
            line=8,
        ),
        # A progress bar on rank 0 only: still every step.
        Invalid(
            """
import torch
def train(loader, model, optimizer, scaler, rank):
    pbar = tqdm(loader)
    for batch in pbar:
        scaler.scale(model(batch)).backward()
        scaler.step(optimizer)
        scaler.update()
        if rank == 0:
            pbar.set_postfix(scale=scaler.get_scale())
""",
            line=10,
        ),
        # Into a metrics dict that is logged.
        Invalid(
            """
import torch
class Trainer:
    def train(self):
        for batch in self.loader:
            self.scaler.scale(self.model(batch)).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            scale = self.scaler._scale.item()
            wandb.log({"loss_scale": scale})
""",
            line=9,
        ),
        # state_dict every step.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    last_state = {"model": model.state_dict(), "scaler": scaler.state_dict()}
""",
            line=8,
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        for iteration in iterations(model):
            if not isinstance(iteration.root, (cst.For, cst.While)):
                continue
            # The loop must step once per pass (not an epoch loop around a batch loop).
            if not any(not e.loops for e in iteration.of(Kind.SCALER_STEP, Kind.UPDATE)):
                continue
            synced: int | None = None  # index of the first unconditional sync of the pass
            for position, call in enumerate(_own_calls(iteration.root)):
                if (
                    synced is None
                    and _syncs(model, call)
                    and _every_iteration(model, iteration, call)
                ):
                    synced = position
                what = _scaler_read(model, call)
                if what is None or not _every_iteration(model, iteration, call):
                    continue
                if synced is not None and synced < position:
                    continue  # the pass has already waited for the device: the read is free
                if not what.endswith(".state_dict()") and not _displayed(model, iteration, call):
                    continue
                context.report(
                    call,
                    f"`{what}` copies the loss scale to the host on every iteration, a "
                    "device sync that stalls the training pipeline; read it every N steps "
                    "(under `if step % log_interval == 0:`)",
                )


def _own_calls(root: cst.CSTNode) -> list[cst.Call]:
    return calls_in(root.body) if isinstance(root, (cst.For, cst.While)) else calls_in(root)


def _syncs(model: ModuleModel, call: cst.Call) -> bool:
    """``loss.item()`` / ``torch.cuda.synchronize()``: the host waits for the device."""
    name = method_name(call)
    if name in ("item", "tolist") and not call.args:
        return _scaler_read(model, call) is None
    return name == "synchronize" and dotted_name(call.func) in _SYNCHRONIZE


def _cpu_scaler(model: ModuleModel, target: cst.BaseExpression) -> bool:
    """A scaler made for the CPU: its scale lives on the host, reading it costs nothing."""
    scalers = model.scaler_instances(target)
    return bool(scalers) and all(s.device == "cpu" for s in scalers)


def _scaler_read(model: ModuleModel, call: cst.Call) -> str | None:
    name = method_name(call)
    target = receiver(call)
    if target is None:
        return None
    if isinstance(target, cst.Attribute) and name == "item":
        if _cpu_scaler(model, target.value):
            return None
    elif _cpu_scaler(model, target):
        return None
    if name in ("get_scale", "state_dict") and scaler_state(model, target) == "enabled":
        return f"{dotted_name(target)}.{name}()"
    if name == "item" and isinstance(target, cst.Attribute):
        owner = target.value
        if target.attr.value in _SCALER_STATE_ATTRIBUTES and (
            scaler_state(model, owner) == "enabled"  # type: ignore[arg-type]
        ):
            return f"{dotted_name(target)}.item()"
    return None


def _every_iteration(model: ModuleModel, iteration: Iteration, call: cst.Call) -> bool:
    """Not under a loop of its own, and under no test but "am I the logging rank"."""
    for ancestor in model.index.ancestors(call):
        if ancestor is iteration.root:
            return True
        if isinstance(ancestor, (cst.For, cst.While, cst.FunctionDef, cst.Lambda)):
            return False
        if isinstance(ancestor, (cst.If, cst.IfExp)):
            condition = normalise(model, ancestor.test)
            if not _EVERY_STEP_TEST.match(condition.key):
                return False
        if isinstance(ancestor, cst.ExceptHandler):
            return False
    return False


def _displayed(model: ModuleModel, iteration: Iteration, call: cst.Call) -> bool:
    if _in_display(model, call):
        return True
    statement = model.index.statement_of(call)
    if not isinstance(statement, cst.SimpleStatementLine) or len(statement.body) != 1:
        return False
    small = statement.body[0]
    if not isinstance(small, cst.Assign) or small.value is not call or len(small.targets) != 1:
        return False
    target = small.targets[0].target
    if isinstance(target, cst.Subscript):
        return True  # metrics["loss_scale"] = ...: a dict of things to log
    if not isinstance(target, cst.Name):
        return False
    uses = [
        node
        for node in _names_in(iteration.root)
        if node.value == target.value and node is not target
    ]
    return bool(uses) and all(_in_display(model, use) for use in uses)


def _names_in(root: cst.CSTNode) -> list[cst.Name]:
    """Variable reads and writes under ``root`` (not attribute names such as ``x.scale``)."""
    attributes = set()
    names = []
    for node in walk_body(root):
        if isinstance(node, cst.Attribute):
            attributes.add(node.attr)
        elif isinstance(node, cst.Name) and node not in attributes:
            names.append(node)
    return names


def _in_display(model: ModuleModel, node: cst.CSTNode) -> bool:
    for ancestor in model.index.ancestors(node):
        if isinstance(ancestor, (cst.BaseStatement, cst.BaseSmallStatement)):
            return False
        if isinstance(ancestor, cst.FormattedString):
            return True
        if isinstance(ancestor, cst.Call):
            func = ancestor.func
            name = func.attr.value if isinstance(func, cst.Attribute) else dotted_name(func)
            if name in _DISPLAY_CALLS and not (
                isinstance(func, cst.Attribute) and scaler_state(model, func.value) is not None
            ):
                return True
        if (
            isinstance(ancestor, cst.BinaryOperation)
            and isinstance(ancestor.operator, cst.Modulo)
            and isinstance(ancestor.left, (cst.SimpleString, cst.ConcatenatedString))
        ):
            return True
    return False
