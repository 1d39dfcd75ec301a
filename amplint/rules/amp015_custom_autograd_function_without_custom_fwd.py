"""AMP015 custom-autograd-function-without-custom-fwd."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.api_names import torch_name
from amplint.analysis.model import MAX_HELPER_DEPTH, ModuleModel
from amplint.analysis.scopes import BindingKind, dotted_name
from amplint.engine.contract import FixPlan, Invalid, Replacement, Rule, RuleContext

_FUNCTION_BASES = {"torch.autograd.Function", "torch.autograd.function.Function"}


class CustomAutogradFunctionWithoutCustomFwd(Rule):
    code = "AMP015"
    tokens = (("Function",), ("apply",), ("autocast",))

    valid = (
        # Decorated forward.
        """
import torch

class Exp(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, x):
        return x.exp()

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g):
        return g

with torch.autocast("cuda"):
    y = Exp.apply(x)
""",
        # Legacy decorator (AMP007 reports the spelling).
        """
import torch
from torch.cuda.amp import custom_fwd

class Exp(torch.autograd.Function):
    @staticmethod
    @custom_fwd
    def forward(ctx, x):
        return x.exp()

with torch.autocast("cuda"):
    y = Exp.apply(x)
""",
        # Applied outside autocast, or in a region that disables it.
        """
import torch

class Exp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.exp()

with torch.autocast("cuda"):
    h = model(x)
y = Exp.apply(h.float())
with torch.autocast("cuda", enabled=False):
    z = Exp.apply(h.float())
""",
        # Not an autograd Function.
        """
import torch

class Op:
    @staticmethod
    def forward(x):
        return x

    @classmethod
    def apply(cls, x):
        return cls.forward(x)

with torch.autocast("cuda"):
    y = Op.apply(x)
""",
        # A Function from another module: not visible here.
        """
import torch
from ops import FusedAdam
with torch.autocast("cuda"):
    y = FusedAdam.apply(x)
""",
    )
    invalid = (
        Invalid(
            """
import torch

class ScaledMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return grad @ b.T, a.T @ grad

for x, w in loader:
    with torch.autocast("cuda"):
        out = ScaledMatmul.apply(x, w)
""",
            line=17,
            fixed="""
import torch

class ScaledMatmul(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return grad @ b.T, a.T @ grad

for x, w in loader:
    with torch.autocast("cuda"):
        out = ScaledMatmul.apply(x, w)
""",
        ),
        # An alias of .apply, called in a helper that runs under CPU autocast.
        Invalid(
            """
import torch as th
from torch.autograd import Function

class Clamp(Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(0, 1)

    @staticmethod
    @th.amp.custom_bwd(device_type="cpu")
    def backward(ctx, g):
        return g

clamp = Clamp.apply

def head(x):
    return clamp(x) * 2

with th.autocast("cpu", dtype=th.bfloat16):
    y = head(x)
""",
            line=18,
            fixed="""
import torch as th
from torch.autograd import Function

class Clamp(Function):
    @staticmethod
    @th.amp.custom_fwd(device_type="cpu")
    def forward(ctx, x):
        return x.clamp(0, 1)

    @staticmethod
    @th.amp.custom_bwd(device_type="cpu")
    def backward(ctx, g):
        return g

clamp = Clamp.apply

def head(x):
    return clamp(x) * 2

with th.autocast("cpu", dtype=th.bfloat16):
    y = head(x)
""",
        ),
        # Device type unknown: reported without a fix.
        Invalid(
            """
import torch

class Exp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.exp()

def run(x, device):
    with torch.autocast(device.type):
        return Exp.apply(x)
""",
            line=11,
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        functions = {
            info.node: info
            for info in model.index.classes.values()
            if _is_autograd_function(model, info.node)
        }
        if not functions or not model.autocast_withs:
            return
        undecorated = {
            node: info.methods["forward"]
            for node, info in functions.items()
            if "forward" in info.methods
            and not _has_decorator(info.methods["forward"], "custom_fwd")
        }
        if not undecorated:
            return
        applies = _apply_calls(model, set(undecorated))
        reported: set[cst.ClassDef] = set()
        memo: dict[cst.FunctionDef, list[str | None] | None] = {}
        for call, cls in applies:
            if cls in reported or model.is_dead(call):
                continue
            devices = _autocast_devices(model, call, memo, 0)
            if not devices:
                continue
            reported.add(cls)
            name = cls.name.value
            context.report(
                call,
                f"custom autograd Function `{name}` is applied under autocast but its `forward` "
                "is not decorated with `torch.amp.custom_fwd`: its `backward` runs outside "
                "autocast and sees mixed dtypes; add `custom_fwd`/`custom_bwd`",
                _fix(model, functions[cls].methods, devices),
            )


def _is_autograd_function(model: ModuleModel, node: cst.ClassDef) -> bool:
    return any(model.evaluator.qualified_names(base.value) & _FUNCTION_BASES for base in node.bases)


def _has_decorator(function: cst.FunctionDef, suffix: str) -> bool:
    for decorator in function.decorators:
        expr = decorator.decorator
        if isinstance(expr, cst.Call):
            expr = expr.func
        name = dotted_name(expr)
        if name is not None and name.split(".")[-1] == suffix:
            return True
    return False


def _apply_calls(
    model: ModuleModel, classes: set[cst.ClassDef]
) -> list[tuple[cst.Call, cst.ClassDef]]:
    found = []
    for call in model.index.calls:
        cls = _applied_class(model, call.func, call)
        if cls in classes:
            found.append((call, cls))
    return found


def _applied_class(
    model: ModuleModel, func: cst.BaseExpression, at: cst.CSTNode
) -> cst.ClassDef | None:
    if isinstance(func, cst.Attribute) and func.attr.value == "apply":
        if isinstance(func.value, cst.Name):
            bindings = model.index.scope_of(at).lookup(func.value.value)
            if len(bindings) == 1 and bindings[0].kind is BindingKind.CLASS:
                node = bindings[0].node
                return node if isinstance(node, cst.ClassDef) else None
        return None
    if isinstance(func, cst.Name):
        bindings = model.index.scope_of(at).lookup(func.value)
        if len(bindings) == 1 and bindings[0].kind is BindingKind.ASSIGN:
            value = bindings[0].node
            if isinstance(value, cst.Attribute):
                return _applied_class(model, value, value)
    return None


def _autocast_devices(
    model: ModuleModel,
    node: cst.CSTNode,
    memo: dict[cst.FunctionDef, list[str | None] | None],
    depth: int,
) -> list[str | None] | None:
    """Device types of the enabled autocast regions ``node`` runs in (None: not under one)."""
    region = model.enclosing_autocast(node)
    if region is not None:
        if model.autocast_state(region) != "enabled":
            return None
        return [r.device for r in model.autocast_regions(region) if r.may_be_enabled]
    function = model.index.enclosing_function(node)
    if function is None or depth >= MAX_HELPER_DEPTH:
        return None
    if function in memo:
        return memo[function]
    memo[function] = None
    devices: list[str | None] = []
    for caller in model.index.calls:
        if _called_name(caller) != function.name.value or model.helper_of(caller) is not function:
            continue
        found = _autocast_devices(model, caller, memo, depth + 1)
        if found:
            devices.extend(found)
    memo[function] = devices or None
    return memo[function]


def _called_name(call: cst.Call) -> str | None:
    if isinstance(call.func, cst.Name):
        return call.func.value
    if isinstance(call.func, cst.Attribute):
        return call.func.attr.value
    return None


def _fix(
    model: ModuleModel, methods: dict[str, cst.FunctionDef], devices: list[str | None]
) -> FixPlan | None:
    torch = torch_name(model)
    if torch is None or len(set(devices)) != 1 or devices[0] is None:
        return None
    device = devices[0]
    replacements: dict[cst.CSTNode, Replacement] = {}
    for method, decorator in (("forward", "custom_fwd"), ("backward", "custom_bwd")):
        function = methods.get(method)
        if function is None or _has_decorator(function, decorator):
            continue
        expr = cst.parse_expression(f'{torch}.amp.{decorator}(device_type="{device}")')
        replacements[function] = _add_decorator(cst.Decorator(expr))
    return FixPlan(
        "Decorate `forward`/`backward` with `torch.amp.custom_fwd`/`custom_bwd`", replacements
    )


def _add_decorator(decorator: cst.Decorator) -> Replacement:
    def replace(updated: cst.CSTNode) -> cst.CSTNode:
        assert isinstance(updated, cst.FunctionDef)
        return updated.with_changes(decorators=[*updated.decorators, decorator])

    return replace
