"""AMP019 closure-with-gradscaler."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.model import ModuleModel, method_name, receiver
from amplint.analysis.scalers import scaler_state
from amplint.analysis.scopes import BindingKind, dotted_name
from amplint.engine.contract import Invalid, Rule, RuleContext

_LBFGS = frozenset({"torch.optim.LBFGS", "torch.optim.lbfgs.LBFGS"})


class ClosureWithGradScaler(Rule):
    code = "AMP019"
    tokens = (("GradScaler", "ShardedGradScaler"), ("step",))

    valid = (
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # LBFGS with a closure, no scaler.
        """
import torch
optimizer = torch.optim.LBFGS(model.parameters())
def closure():
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    return loss
for _ in range(10):
    optimizer.step(closure)
""",
        # Keyword arguments forwarded to the optimizer's step are not closures.
        """
import torch
class Wrapper:
    def __init__(self):
        self.loss_scaler = torch.amp.GradScaler("cuda")

    def step(self, **kwargs):
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update()
""",
        # A wrapper forwarding its own `closure=None` parameter: nothing says it is set.
        """
import torch
class AcceleratedOptimizer:
    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.scaler = torch.amp.GradScaler()

    def step(self, closure=None):
        self.scaler.step(self.optimizer, closure)
        self.scaler.update()
""",
        # A scaler of a framework's own class, which may support closures.
        """
import torch
from framework import ClosureGradScaler
class Trainer:
    def fit(self):
        self.state.scaler = ClosureGradScaler() if self.closures else torch.amp.GradScaler()
        self.state.scaler.step(self.optimizer, closure=lambda: self.train_microbatches())
""",
        # A literally disabled scaler forwards the closure to the optimizer.
        """
import torch
scaler = torch.amp.GradScaler(enabled=False)
scaler.step(optimizer, closure)
""",
        # Not a GradScaler.
        """
import torch
lr_scheduler.step(epoch)
""",
    )
    invalid = (
        # `closure=None` raises too: torch checks for the keyword.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler("cuda")
for x in loader:
    scaler.scale(model(x).mean()).backward()
    scaler.step(optimizer, closure=None)
    scaler.update()
""",
            line=6,
        ),
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler()
def closure():
    optimizer.zero_grad()
    scaler.scale(loss_fn(model(x), y)).backward()
    return loss
scaler.step(optimizer, closure=closure)
scaler.update()
""",
            line=8,
        ),
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler()
def train(model, optimizer):
    for _ in range(steps):
        scaler.step(optimizer, lambda: loss_fn(model(x), y))
        scaler.update()
""",
            line=6,
        ),
        # LBFGS stepped through the scaler.
        Invalid(
            """
import torch
from torch import optim
class Fitter:
    def __init__(self, model):
        self.optimizer = optim.LBFGS(model.parameters(), lr=1)
        self.scaler = torch.amp.GradScaler("cuda")

    def fit_step(self, loss):
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
""",
            line=11,
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        for call in model.index.calls:
            target = receiver(call)
            if method_name(call) != "step" or target is None:
                continue
            if scaler_state(model, target) != "enabled" or model.is_dead(call):
                continue
            if not model.scaler_instances(target):
                # Frameworks ship closure-capable GradScaler subclasses (composer's
                # ClosureGradScaler): only a scaler built here from torch's class is known.
                continue
            positional = [a for a in call.args if a.keyword is None and not a.star]
            # An enabled GradScaler raises on a `closure=` keyword whatever its value, None
            # included: torch tests for the key, not for a callable.
            closure = any(a.keyword is not None and a.keyword.value == "closure" for a in call.args)
            key = dotted_name(target)
            if closure:
                context.report(
                    call,
                    f"`{key}.step(..., closure=...)` raises whatever the closure is: an "
                    "enabled GradScaler does not support closures; run the closure's forward "
                    "and backward before the step",
                )
            elif len(positional) > 1 and _is_callable(model, positional[1].value):
                context.report(
                    call,
                    f"`{key}.step()` passes this closure to the optimizer, whose backward "
                    "passes then escape unscaling and inf/NaN checks; GradScaler does not "
                    "support closures",
                )
            elif positional and _is_lbfgs(model, positional[0].value):
                context.report(
                    call,
                    "LBFGS needs a closure on every step, which GradScaler does not support; "
                    "train it without a GradScaler (float32 or bfloat16)",
                )


def _is_lbfgs(model: ModuleModel, expr: cst.BaseExpression) -> bool:
    if isinstance(expr, cst.Name):
        bindings = model.index.scope_of(expr).lookup(expr.value)
    elif isinstance(expr, cst.Attribute) and dotted_name(expr.value) == "self":
        info = model.index.enclosing_class(expr)
        bindings = info.attributes.get(expr.attr.value, []) if info is not None else []
    else:
        return False
    for binding in bindings:
        value = binding.node
        if (
            binding.kind is BindingKind.ASSIGN
            and isinstance(value, cst.Call)
            and model.evaluator.qualified_names(value.func) & _LBFGS
        ):
            return True
    return False


def _is_callable(model: ModuleModel, expr: cst.BaseExpression) -> bool:
    """A lambda, or a name bound only to functions and lambdas: surely a closure. A
    forwarded ``closure`` parameter may well be None, so it is not."""
    if isinstance(expr, cst.Lambda):
        return True
    if not isinstance(expr, cst.Name):
        return False
    bindings = model.index.scope_of(expr).lookup(expr.value)
    return bool(bindings) and all(
        isinstance(b.node, (cst.FunctionDef, cst.Lambda))
        or (b.kind is BindingKind.ASSIGN and isinstance(b.node, cst.Lambda))
        for b in bindings
    )
