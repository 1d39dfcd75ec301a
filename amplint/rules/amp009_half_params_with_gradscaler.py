"""AMP009 half-params-with-gradscaler."""

from __future__ import annotations

import re

import libcst as cst

from amplint.analysis.lifecycle import is_step_call, scales_losses, surely_scaled, under_no_grad
from amplint.analysis.model import ModuleModel, calls_in, method_name, receiver
from amplint.analysis.scopes import BindingKind, dotted_name
from amplint.analysis.symbols import DTYPE_NAMES, Symbol
from amplint.analysis.values import SymbolValue
from amplint.engine.contract import FixPlan, Invalid, Replacement, Rule, RuleContext

_OPTIMIZER_FACTORY = re.compile(
    r"optim|adam|sgd|rmsprop|adagrad|adadelta|lamb|lars|lion|adafactor|sophia|muon",
    re.IGNORECASE,
)
#: Methods that may follow the cast in a chain and keep the module a float16 training module.
_KEEPS_HALF = ("cuda", "to", "half", "train", "requires_grad_", "share_memory")
#: Functions that set a model up for training later (casts there precede training).
_SETUP = re.compile(
    r"^(__init__|setup|build|create|configure|init|prepare|make|get_model|load_model)"
)


class HalfParamsWithGradScaler(Rule):
    code = "AMP009"
    tokens = (
        ("~scaler",),
        ("half", "float16"),
    )

    valid = (
        # The recipe: float32 parameters, autocast casts.
        """
import torch
model = Net().cuda()
optimizer = torch.optim.AdamW(model.parameters())
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda", dtype=torch.float16):
        loss = model(x.half())
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # A round trip (rounding the weights to float16 precision) is not half training.
        """
import torch
model = Net().half().float()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler()
for x in loader:
    scaler.scale(model(x)).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # A half EMA / teacher copy that no optimizer owns.
        """
import copy, torch
scaler = torch.amp.GradScaler()
optimizer = torch.optim.AdamW(model.parameters())
ema = copy.deepcopy(model).half()
teacher = load_teacher().half().eval()
for x in loader:
    with torch.no_grad():
        target = teacher(x)
    scaler.scale(model(x, target)).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # Exported in float16 after training.
        """
import torch
def main():
    model = Net().cuda()
    optimizer = torch.optim.AdamW(model.parameters())
    scaler = torch.amp.GradScaler()
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
    model.half()
    torch.save(model.state_dict(), "model_fp16.pt")
""",
        # A half copy for the checkpoint, under no_grad.
        """
import torch
scaler = torch.amp.GradScaler()
optimizer = torch.optim.AdamW(model.parameters())

@torch.no_grad()
def save_half(model, path):
    model.half()
    torch.save(model.state_dict(), path)
    model.float()
""",
        # Inputs, not parameters.
        """
import torch
scaler = torch.amp.GradScaler()
optimizer = torch.optim.AdamW(model.parameters())
for x, y in loader:
    x = x.half()
    y = y.to(torch.float16)
    scaler.scale(model(x, y)).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # No GradScaler: pure float16 training is another matter.
        """
import torch
model = Net().half()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x in loader:
    model(x).backward()
    optimizer.step()
""",
        # A GradScaler disabled literally.
        """
import torch
model = Net().half()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler(enabled=False)
for x in loader:
    scaler.scale(model(x)).backward()
    scaler.step(optimizer)
""",
        # Cast back in the next statement.
        """
import torch
def main(args):
    model = Net()
    if args.round_weights:
        model = model.half()
        model = model.float()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler()
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        # Pure float16 training in one function, mixed precision in another.
        """
import torch
def train_pure_fp16(model, loader):
    model.half()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x in loader:
        model(x).backward()
        optimizer.step()

def train_amp(model, loader):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler()
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        # Half parameters in the branch without a scaler.
        """
import torch
def main(args):
    model = build(args)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    if args.half:
        model.half()
        scaler = None
    else:
        scaler = torch.amp.GradScaler()
    for x in loader:
        if scaler is None:
            model(x).backward()
            optimizer.step()
        else:
            scaler.scale(model(x)).backward()
            scaler.step(optimizer)
            scaler.update()
""",
        # Two modes under two flags: the analysis cannot tell both are on together.
        """
import torch
def main(args):
    model = build(args)
    if args.pure_half:
        model.half()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(enabled=args.amp)
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        # bfloat16 parameters are a different trade-off, and GradScaler accepts them.
        """
import torch
model = Net().to(torch.bfloat16)
optimizer = torch.optim.AdamW(model.parameters())
scaler = torch.amp.GradScaler()
""",
        # A test class: one test trains with a local scaler, another runs a half model.
        """
import torch
class DistributedTest:
    def test_amp(self):
        model = Net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler()
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()

    def test_half(self):
        model = Net().half()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model(x).sum().backward()
        optimizer.step()
""",
    )
    invalid = (
        Invalid(
            """
import torch
model = Net().cuda().half()
optimizer = torch.optim.AdamW(model.parameters(), fused=True)
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            line=3,
            unsafe=True,
            fixed="""
import torch
model = Net().cuda()
optimizer = torch.optim.AdamW(model.parameters(), fused=True)
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        ),
        # An in-place cast statement, an aliased scaler, a train() helper after it.
        Invalid(
            """
import torch
from torch.cuda.amp import GradScaler as GS

def train(model, optimizer, scaler):
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()

def main(args):
    model = build_model(args)
    if args.fp16:
        model.half()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train(model, optimizer, GS(enabled=args.fp16))
""",
            line=14,
            unsafe=True,
            fixed="""
import torch
from torch.cuda.amp import GradScaler as GS

def train(model, optimizer, scaler):
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()

def main(args):
    model = build_model(args)
    if args.fp16:
        pass
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train(model, optimizer, GS(enabled=args.fp16))
""",
        ),
        # A scaler parameter of the function that trains the cast model.
        Invalid(
            """
import torch
def train(model, loader, scaler):
    model = model.cuda().half()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
""",
            line=4,
            unsafe=True,
            fixed="""
import torch
def train(model, loader, scaler):
    model = model.cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        ),
        # `.to(device, dtype=torch.half)` on an attribute, set up in __init__.
        Invalid(
            """
import torch
class Trainer:
    def __init__(self, model, device):
        self.model = model.to(device, dtype=torch.half)
        self.optimizer = torch.optim.AdamW(
            [{"params": self.model.parameters(), "lr": 1e-4}]
        )
        self.scaler = torch.amp.GradScaler("cuda")

    def step(self, x):
        self.scaler.scale(self.model(x)).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
""",
            line=5,
            unsafe=True,
            fixed="""
import torch
class Trainer:
    def __init__(self, model, device):
        self.model = model.to(device)
        self.optimizer = torch.optim.AdamW(
            [{"params": self.model.parameters(), "lr": 1e-4}]
        )
        self.scaler = torch.amp.GradScaler("cuda")

    def step(self, x):
        self.scaler.scale(self.model(x)).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
""",
        ),
        # `model = model.to(torch.float16)`: the statement goes; an optimizer factory.
        Invalid(
            """
import torch
half = torch.float16
model = model.to(half)
optimizer = create_optimizer(args, model)
scaler = torch.amp.GradScaler()
for x in loader:
    scaler.scale(model(x)).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            line=4,
            unsafe=True,
            fixed="""
import torch
half = torch.float16
optimizer = create_optimizer(args, model)
scaler = torch.amp.GradScaler()
for x in loader:
    scaler.scale(model(x)).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        casts = [c for c in model.index.calls if _is_half_cast(model, c)]
        if not casts or not scales_losses(model):
            return
        trained = _trained_keys(model)
        if not trained:
            return
        order = {call: i for i, call in enumerate(model.index.calls)}
        for cast in casts:
            shape = _cast_shape(model, cast)
            if shape is None:
                continue
            keys, statement = shape
            if not keys & trained or model.is_dead(cast) or under_no_grad(model, cast):
                continue
            if not _before_training(model, cast, order) or _cast_back(model, cast, keys, order):
                continue
            if not surely_scaled(model, cast):
                continue  # another function's scaler, or one that is on under another flag
            text = model.snippet(cast, 40)
            if _fused_optimizer(model, keys):
                effect = (
                    "its fused optimizer skips the float16-gradient check, so it silently "
                    "steps float16 weights and small updates round away"
                )
            else:
                effect = (
                    "`scaler.step` fails with 'Attempting to unscale FP16 gradients' (a fused "
                    "optimizer would instead silently step float16 weights)"
                )
            context.report(
                cast,
                f"`{text}` gives float16 parameters to a model trained with a GradScaler: "
                f"{effect}; keep the parameters float32 and let autocast cast",
                _drop_cast(model, cast, statement),
            )


def _is_float16(model: ModuleModel, expr: cst.BaseExpression) -> bool:
    values = model.evaluator.evaluate(expr)
    return bool(values) and all(
        isinstance(v, SymbolValue) and v.symbol is Symbol.FLOAT16 for v in values
    )


def _dtype_arg(model: ModuleModel, call: cst.Call) -> cst.Arg | None:
    """The argument of ``.to(...)`` that makes it a float16 cast."""
    for arg in call.args:
        if arg.star:
            return None
        if (arg.keyword is None or arg.keyword.value == "dtype") and _is_float16(model, arg.value):
            return arg
    return None


def _casts_elsewhere(model: ModuleModel, call: cst.Call) -> bool:
    """``.to(...)`` with a dtype other than float16 (or one that cannot be known)."""
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == "dtype":
            return not _is_float16(model, arg.value)
        if arg.keyword is None and any(
            isinstance(v, SymbolValue)
            and v.symbol in DTYPE_NAMES
            and v.symbol is not Symbol.FLOAT16
            for v in model.evaluator.evaluate(arg.value)
        ):
            return True
    return False


def _is_half_cast(model: ModuleModel, call: cst.Call) -> bool:
    name = method_name(call)
    if name == "half":
        return not call.args
    return name == "to" and _dtype_arg(model, call) is not None


def _cast_shape(
    model: ModuleModel, cast: cst.Call
) -> tuple[set[str], cst.SimpleStatementLine | None] | None:
    """The names the cast makes float16 (the chain's root, which casts in place, and the
    assigned name), and the statement when the chain is a whole statement; None when the
    cast is not a plain module cast (a round trip, a copy for another use, an argument)."""
    top: cst.CSTNode = cast
    while True:
        parent = model.index.parent(top)
        grand = model.index.parent(parent) if parent is not None else None
        if (
            isinstance(parent, cst.Attribute)
            and isinstance(grand, cst.Call)
            and grand.func is parent
        ):
            if parent.attr.value not in _KEEPS_HALF:
                return None  # `.float()`, `.eval()`, `.state_dict()`, ...
            if parent.attr.value == "to" and _casts_elsewhere(model, grand):
                return None  # `.half().to(torch.float32)`
            top = grand
            continue
        break
    root: cst.BaseExpression = cast
    while isinstance(root, cst.Call) and isinstance(root.func, cst.Attribute):
        root = root.func.value
    keys = {key} if (key := dotted_name(root)) else set()
    parent = model.index.parent(top)
    line = model.index.parent(parent) if parent is not None else None
    statement = line if isinstance(line, cst.SimpleStatementLine) and len(line.body) == 1 else None
    if isinstance(parent, cst.Assign) and len(parent.targets) == 1:
        target = dotted_name(parent.targets[0].target)
        if target is None:
            return None
        return keys | {target}, statement
    if isinstance(parent, cst.Expr):
        return (keys, statement) if keys else None
    return None


def _trained_keys(model: ModuleModel) -> set[str]:
    """Models whose parameters (or themselves) go to an optimizer constructor or factory."""
    keys: set[str] = set()
    for call in model.index.calls:
        if not _is_optimizer_factory(model, call):
            continue
        for arg in call.args:
            roots: list[cst.CSTNode] = [arg.value]
            if isinstance(arg.value, cst.Name):
                roots += [
                    b.node
                    for b in model.index.scope_of(arg.value).lookup(arg.value.value)
                    if b.kind is BindingKind.ASSIGN and b.node is not None
                ]
            for root in roots:
                key = dotted_name(root) if isinstance(root, cst.BaseExpression) else None
                if key is not None:
                    keys.add(key)
                keys |= _parameter_owners(root)
    return keys


def _fused_optimizer(model: ModuleModel, keys: set[str]) -> bool:
    """An optimizer built with ``fused=True`` over the parameters of one of ``keys``."""
    for call in model.index.calls:
        fused = any(
            arg.keyword is not None
            and arg.keyword.value == "fused"
            and isinstance(arg.value, cst.Name)
            and arg.value.value == "True"
            for arg in call.args
        )
        if not fused or not _is_optimizer_factory(model, call):
            continue
        for arg in call.args:
            owners = _parameter_owners(arg.value)
            if isinstance(arg.value, cst.BaseExpression) and (key := dotted_name(arg.value)):
                owners.add(key)
            if owners & keys:
                return True
    return False


def _is_optimizer_factory(model: ModuleModel, call: cst.Call) -> bool:
    if any(
        isinstance(v, SymbolValue) and v.symbol is Symbol.OPTIMIZER_CLASS
        for v in model.evaluator.evaluate(call.func)
    ):
        return True
    name = method_name(call) or (call.func.value if isinstance(call.func, cst.Name) else "")
    return bool(name and _OPTIMIZER_FACTORY.search(name) and "sched" not in name.lower())


def _parameter_owners(node: cst.CSTNode) -> set[str]:
    """``m`` for every ``m.parameters()`` / ``m.named_parameters()`` under ``node``."""
    owners: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, cst.Call) and method_name(current) in (
            "parameters",
            "named_parameters",
        ):
            target = receiver(current)
            key = dotted_name(target) if target is not None else None
            if key is not None:
                owners.add(key)
        stack.extend(current.children)
    return owners


def _before_training(model: ModuleModel, cast: cst.Call, order: dict[cst.Call, int]) -> bool:
    """The cast runs before (or during) training: in a setup function, inside a training
    loop, or with a backward pass or optimizer step later in the same body."""
    function = model.index.enclosing_function(cast)
    if function is not None and _SETUP.match(function.name.value):
        return True
    for loop in model.enclosing_loops(cast):
        if any(model.runs_backward(c) for c in model.transitive_calls(loop)):
            return True
    unit = function.body if function is not None else model.module
    position = order[cast]
    return any(
        order.get(call, -1) > position and (model.runs_backward(call) or is_step_call(model, call))
        for call in calls_in(unit)
    )


def _cast_back(
    model: ModuleModel, cast: cst.Call, keys: set[str], order: dict[cst.Call, int]
) -> bool:
    """A later ``model.float()`` / ``model.to(torch.float32)`` in the same body: a round trip
    spread over two statements."""
    function = model.index.enclosing_function(cast)
    unit = function.body if function is not None else model.module
    for call in calls_in(unit):
        if order.get(call, -1) <= order[cast]:
            continue
        name = method_name(call)
        target = receiver(call)
        if target is None or dotted_name(target) not in keys:
            continue
        if name in ("float", "double") or (name == "to" and _casts_elsewhere(model, call)):
            return True
    return False


def _drop_cast(
    model: ModuleModel, cast: cst.Call, statement: cst.SimpleStatementLine | None
) -> FixPlan:
    target = receiver(cast)
    assert target is not None
    replacements: dict[cst.CSTNode, Replacement] = {}
    remaining_args = [a for a in cast.args if a is not _dtype_arg(model, cast)]
    if method_name(cast) == "to" and remaining_args:
        # `.to(device, dtype=torch.half)` keeps moving to the device.
        last = remaining_args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
        replacements[cast] = cast.with_changes(args=[*remaining_args[:-1], last])
    elif statement is not None and _only_recasts(model, statement, cast, target):
        replacements[statement] = cst.RemovalSentinel.REMOVE
    else:
        replacements[cast] = target
    return FixPlan("Drop the float16 cast of the parameters", replacements, "unsafe")


def _only_recasts(
    model: ModuleModel,
    statement: cst.SimpleStatementLine,
    cast: cst.Call,
    target: cst.BaseExpression,
) -> bool:
    """``model.half()`` or ``model = model.half()``: without the cast nothing is left to do."""
    small = statement.body[0]
    if isinstance(small, cst.Expr):
        return small.value is cast and dotted_name(target) is not None
    if isinstance(small, cst.Assign) and small.value is cast:
        return dotted_name(small.targets[0].target) == dotted_name(target) is not None
    return False
