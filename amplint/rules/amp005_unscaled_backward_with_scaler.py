"""AMP005 unscaled-backward-with-scaler."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.model import ModuleModel, method_name
from amplint.analysis.scopes import BindingKind, dotted_name, names_read
from amplint.analysis.steps import (
    Event,
    Iteration,
    Kind,
    exclusive,
    handed_loss,
    iterations,
    together,
    usable_at,
)
from amplint.analysis.symbols import Symbol
from amplint.engine.contract import FixPlan, Invalid, Rule, RuleContext

_BACKWARDS = (Kind.BACKWARD, Kind.SCALED_BACKWARD, Kind.MAYBE_SCALED_BACKWARD)


class UnscaledBackwardWithScaler(Rule):
    code = "AMP005"
    tokens = (("~scaler",), ("backward",), ("step",))

    valid = (
        # The loss is a parameter: callers hand it scaled (Open Catalyst's trainers), or
        # no caller is in sight (they are in other modules, and may scale it).
        """
import torch
class BaseTrainer:
    def __init__(self, amp):
        self.scaler = torch.amp.GradScaler("cuda") if amp else None

    def _backward(self, loss):
        self.optimizer.zero_grad()
        loss.backward()
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

class ForcesTrainer(BaseTrainer):
    def train(self, loader):
        for x, y in loader:
            with torch.autocast("cuda", enabled=self.scaler is not None):
                loss = self.model(x, y)
            loss = self.scaler.scale(loss) if self.scaler else loss
            self._backward(loss)
""",
        """
import torch
class Trainer:
    def __init__(self):
        self.scaler = torch.amp.GradScaler("cuda")

    def backward_and_step(self, scaled_loss):
        scaled_loss.backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def train(self, loader):
        for x, y in loader:
            with torch.autocast("cuda"):
                loss = self.model(x, y)
            self.backward_and_step(self.scaler.scale(loss))
""",
        """
import torch
scaler = torch.amp.GradScaler("cuda")

def optimize(loss, optimizer):
    loss.backward()
    scaler.step(optimizer)
    scaler.update()

def optimize_tensors(loss, optimizer):
    torch.autograd.backward(loss)
    scaler.step(optimizer)
    scaler.update()

def optimize_each(optimizer, *losses):
    for loss in losses:
        loss.backward()
    scaler.step(optimizer)
    scaler.update()

def optimize_deep(optimizer, loss, depth=0):
    if depth < 1:
        return optimize_deep(optimizer, loss * 1.0, depth + 1)
    loss.backward()
    scaler.step(optimizer)
    scaler.update()

for x, y in loader:
    with torch.autocast("cuda"):
        a, b = model(x, y)
    optimize_each(opt, scaler.scale(a), scaler.scale(b))
    kwargs = {"loss": scaler.scale(a + b)}
    optimize(optimizer=opt, **kwargs)
""",
        # Scaled losses written in other ways: a list of them, a sum over a generator, a
        # walrus, a scaled value reduced further, an element that holds the scaled loss.
        """
import torch
scaler = torch.amp.GradScaler("cuda")
for x in loader:
    with torch.autocast("cuda"):
        first, second = model(x)
    torch.autograd.backward([scaler.scale(first), scaler.scale(second)])
    scaler.step(optimizer)
    scaler.update()
    sum(scaler.scale(part) for part in model(x)).backward()
    scaler.step(optimizer)
    scaler.update()
    (scaled := scaler.scale(first)).backward()
    scaler.step(optimizer)
    scaler.update()
    scaler.scale(model(x)).mean().backward()
    scaler.step(optimizer)
    scaler.update()
    out = {"loss": model(x).mean()}
    out["loss"] = scaler.scale(out["loss"])
    out["loss"].backward()
    scaler.step(optimizer)
    scaler.update()
""",
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
        # A one-off backward (a smoke test) before the training loop, which scales its own
        # loss before each step: not the loop's backward (the scaler does not even exist yet).
        """
import torch
def smoke_then_train(model, x, loader, optimizer):
    model(x).sum().backward()
    scaler = torch.amp.GradScaler("cuda")
    for epoch in range(2):
        for xb, yb in loader:
            with torch.autocast("cuda", dtype=torch.float16):
                loss = torch.nn.functional.mse_loss(model(xb), yb)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
""",
    )
    invalid = (
        # A parameter in the loss's arithmetic is a factor, not the loss: the loss is the
        # local one, surely unscaled.
        Invalid(
            """
import torch
def train(model, loader, optimizer, accum_steps):
    scaler = torch.amp.GradScaler("cuda")
    for i, (x, y) in enumerate(loader):
        with torch.autocast("cuda"):
            loss = model(x, y)
        (loss / accum_steps).backward()
        if (i + 1) % accum_steps == 0:
            scaler.step(optimizer)
            scaler.update()
""",
            line=8,
            fixed="""
import torch
def train(model, loader, optimizer, accum_steps):
    scaler = torch.amp.GradScaler("cuda")
    for i, (x, y) in enumerate(loader):
        with torch.autocast("cuda"):
            loss = model(x, y)
        scaler.scale(loss / accum_steps).backward()
        if (i + 1) % accum_steps == 0:
            scaler.step(optimizer)
            scaler.update()
""",
        ),
        # The micro-batches that leave early with `continue` still accumulate their
        # gradients into the step the last one takes.
        Invalid(
            """
import torch
def train(model, optimizer, loader, accum):
    scaler = torch.amp.GradScaler("cuda")
    for i, (x, y) in enumerate(loader):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(x, y) / accum
        if (i + 1) % accum != 0:
            loss.backward()
            continue
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""",
            line=9,
            fixed="""
import torch
def train(model, optimizer, loader, accum):
    scaler = torch.amp.GradScaler("cuda")
    for i, (x, y) in enumerate(loader):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(x, y) / accum
        if (i + 1) % accum != 0:
            scaler.scale(loss).backward()
            continue
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""",
        ),
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
        # Gradient accumulation, parenthesised loss, attribute scaler; the loss is a
        # parameter the module's caller hands unscaled. No fix: code of other modules may
        # call the method with a loss it scaled.
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

    def fit(self, loader):
        for i, (x, y) in enumerate(loader):
            with torch.autocast("cuda"):
                loss = self.criterion(self.model(x), y)
            self.train_step(i, loss)
""",
            line=8,
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
        # The scaler is made after the backward: `scaler.scale(...)` there would raise
        # UnboundLocalError, so no fix.
        Invalid(
            """
import torch
def train_once(model, x, optimizer):
    model(x).sum().backward()
    scaler = torch.amp.GradScaler()
    scaler.step(optimizer)
    scaler.update()
""",
            line=4,
        ),
        # Likewise an attribute set only later in the same method.
        Invalid(
            """
import torch
class Trainer:
    def fit(self, loader):
        for batch in loader:
            self.model(batch).backward()
            self.scaler = torch.amp.GradScaler()
            self.scaler.step(self.optimizer)
            self.scaler.update()
""",
            line=6,
        ),
        # Set in another method that runs first: the fix may use it.
        Invalid(
            """
import torch
class Trainer:
    def setup(self):
        self.scaler = torch.amp.GradScaler()

    def fit(self, loader):
        for batch in loader:
            self.model(batch).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
""",
            line=9,
            fixed="""
import torch
class Trainer:
    def setup(self):
        self.scaler = torch.amp.GradScaler()

    def fit(self, loader):
        for batch in loader:
            self.scaler.scale(self.model(batch)).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
""",
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        for iteration in iterations(model):
            for backward in iteration.of(Kind.BACKWARD):
                step = _stepped_through_scaler(iteration, backward)
                if step is None or _before_training_loop(iteration, backward, step):
                    continue
                handed = handed_loss(model, backward)
                if handed == "unseen":
                    continue  # a loss its callers, elsewhere, may well have scaled
                scaler = step.scaler_local or "scaler"
                context.report(
                    backward.call,
                    f"this backward is not scaled, but `{scaler}.step(...)` divides the "
                    f"gradients by the loss scale; use `{scaler}.scale(loss).backward()`",
                    # Code of other modules may call it too, with a loss already scaled.
                    None if handed else _scale_loss(model, iteration, backward, step),
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


def _before_training_loop(iteration: Iteration, backward: Event, step: Event) -> bool:
    """Whether the step sits in a loop that the backward runs before, and that makes its own
    gradients ahead of the step on every pass: a training loop, with the backward a one-off
    before it (a smoke test). Its gradients reach only the loop's first step, mixed with
    that pass's own: neither this rule's bug nor fixed by scaling them."""
    for loop in step.loops:
        if loop in backward.loops:
            continue
        if any(
            event is not backward
            and event.kind in _BACKWARDS
            and loop in event.loops
            and event.order < step.order
            and not exclusive(event, step)
            for event in iteration.events
        ):
            return True
    return False


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
    if scaler is None or not _bound_at(model, scaler, backward.call):
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


def _bound_at(model: ModuleModel, scaler: str, call: cst.Call) -> bool:
    """Whether ``scaler`` (as the fix would spell it at ``call``) surely names something
    there: a scaler assigned after the backward would raise ``UnboundLocalError``."""
    try:
        expr = cst.parse_expression(scaler)
    except cst.ParserSyntaxError:
        return False
    if not all(_name_bound(model, name, call) for name in names_read(expr)):
        return False
    chain = (dotted_name(expr) or "").split(".")
    if len(chain) > 1 and chain[0] == "self":
        return _self_attribute_bound(model, chain[1], call)
    return True


def _name_bound(model: ModuleModel, name: str, call: cst.Call) -> bool:
    bindings = model.index.scope_of(call).bindings.get(name)
    if not bindings:
        return True  # not a variable of this scope: looked up when the function runs
    if any(binding.kind is BindingKind.PARAM for binding in bindings):
        return True
    return _assigned_before(model, (name,), call)


def _self_attribute_bound(model: ModuleModel, attribute: str, call: cst.Call) -> bool:
    """``self.<attribute>``: set in ``__init__`` or the class body, or before ``call`` in
    its own method; set only later in that method, it does not exist yet at ``call``."""
    info = model.index.enclosing_class(call)
    function = model.index.enclosing_function(call)
    if info is None or function is None:
        return True
    if any(attribute in owner.scope.bindings for owner in model.index.lineage(info)):
        return True  # a class attribute
    bindings = model.index.class_attribute(info, attribute)
    methods = [b.scope.node for b in bindings if b.scope is not None]
    if any(isinstance(m, cst.FunctionDef) and m.name.value == "__init__" for m in methods):
        return True
    if any(method is function for method in methods):
        return _assigned_before(model, ("self", attribute), call)
    return True  # set by another method or outside the module, before this one runs


def _assigned_before(model: ModuleModel, target: tuple[str, ...], call: cst.Call) -> bool:
    """Whether a statement binding ``target`` (a dotted name) surely ran before ``call``:
    one ahead of it in a block around it, in the same function."""
    child: cst.CSTNode = call
    for ancestor in model.index.ancestors(call):
        if isinstance(ancestor, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            return False
        if isinstance(ancestor, (cst.IndentedBlock, cst.Module)):
            for statement in ancestor.body:
                if statement is child:
                    break
                if _binds(statement, target):
                    return True
        elif _enters_bound(ancestor, child, target):
            return True
        child = ancestor
    return False


def _binds(statement: cst.CSTNode, target: tuple[str, ...]) -> bool:
    """Whether running ``statement`` to its end surely binds ``target``."""
    if isinstance(statement, cst.SimpleStatementLine):
        return any(_small_binds(small, target) for small in statement.body)
    if isinstance(statement, (cst.FunctionDef, cst.ClassDef)):
        return target == (statement.name.value,)
    if isinstance(statement, cst.With):
        return any(
            item.asname is not None and _target_is(item.asname.name, target)
            for item in statement.items
        )
    return False  # `if`, `try`, loops: may not run, or not to the end


def _enters_bound(ancestor: cst.CSTNode, child: cst.CSTNode, target: tuple[str, ...]) -> bool:
    """``with make() as scaler:`` / ``for scaler in ...:`` around the call: bound in the body."""
    if isinstance(ancestor, cst.For) and child is ancestor.body:
        return _target_is(ancestor.target, target)
    return isinstance(ancestor, cst.With) and child is ancestor.body and _binds(ancestor, target)


def _small_binds(small: cst.BaseSmallStatement, target: tuple[str, ...]) -> bool:
    if isinstance(small, cst.Assign):
        return any(_target_is(t.target, target) for t in small.targets)
    if isinstance(small, cst.AnnAssign):
        return small.value is not None and _target_is(small.target, target)
    if isinstance(small, (cst.Import, cst.ImportFrom)) and len(target) == 1:
        names = small.names
        return not isinstance(names, cst.ImportStar) and any(
            _imported_as(alias) == target[0] for alias in names
        )
    return False


def _imported_as(alias: cst.ImportAlias) -> str | None:
    if alias.asname is not None:
        name = alias.asname.name
        return name.value if isinstance(name, cst.Name) else None
    return (dotted_name(alias.name) or "").split(".")[0] or None


def _target_is(node: cst.BaseExpression, target: tuple[str, ...]) -> bool:
    """``node`` (an assignment target) binds ``target``, itself or by unpacking."""
    if isinstance(node, (cst.Tuple, cst.List)):
        return any(_target_is(element.value, target) for element in node.elements)
    if isinstance(node, cst.StarredElement):
        return _target_is(node.value, target)
    return tuple((dotted_name(node) or "").split(".")) == target
