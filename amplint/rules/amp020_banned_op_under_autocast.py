"""AMP020 banned-op-under-autocast."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.api_names import argument, names_of
from amplint.analysis.model import MAX_HELPER_DEPTH, ModuleModel
from amplint.analysis.scopes import BindingKind
from amplint.engine.contract import FixPlan, Invalid, Replacement, Rule, RuleContext

_BCE_FUNCTIONS = {
    "torch.nn.functional.binary_cross_entropy",
}
_BCE_MODULES = {"torch.nn.BCELoss", "torch.nn.modules.BCELoss", "torch.nn.modules.loss.BCELoss"}
_SIGMOIDS = {"torch.sigmoid", "torch.nn.functional.sigmoid", "torch.special.expit"}


class BannedOpUnderAutocast(Rule):
    code = "AMP020"
    tokens = (("binary_cross_entropy", "BCELoss"), ("autocast",))

    valid = (
        """
import torch
import torch.nn.functional as F
with torch.autocast("cuda"):
    logits = model(x)
    loss = F.binary_cross_entropy_with_logits(logits, y)
""",
        # Computed in float32 outside autocast.
        """
import torch
import torch.nn.functional as F
with torch.autocast("cuda"):
    probs = torch.sigmoid(model(x))
with torch.autocast("cuda", enabled=False):
    loss = F.binary_cross_entropy(probs.float(), y)
""",
        """
import torch
criterion = torch.nn.BCELoss()
with torch.autocast("cuda", dtype=torch.bfloat16):
    probs = model(x)
loss = criterion(probs.float(), y)
""",
        # CPU autocast allows it.
        """
import torch
import torch.nn.functional as F
with torch.autocast("cpu", dtype=torch.bfloat16):
    loss = F.binary_cross_entropy(model(x), y)
""",
        # Device not known statically.
        """
import torch
import torch.nn.functional as F
with torch.autocast(device_type=device.type):
    loss = F.binary_cross_entropy(model(x), y)
""",
        # A local function that happens to share the name.
        """
import torch
def binary_cross_entropy(p, y):
    return -(y * p.log() + (1 - y) * (1 - p).log()).mean()
with torch.autocast("cuda"):
    loss = binary_cross_entropy(model(x), y)
""",
        # A helper defined but not called inside autocast.
        """
import torch
import torch.nn as nn
bce = nn.BCELoss()
def eval_loss(p, y):
    return bce(p, y)
with torch.autocast("cuda"):
    out = model(x)
print(eval_loss(out.float().sigmoid(), y))
""",
        # A region that is off unless a caller turns it on: the float32 island for the loss.
        """
import torch
class BCELoss(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.loss_f = torch.nn.BCELoss()

    def forward(self, probs, labels, enable_autocast=False):
        with torch.autocast("cuda", enabled=enable_autocast):
            return self.loss_f(probs, labels)
""",
    )
    invalid = (
        Invalid(
            """
import torch
import torch.nn.functional as F
for x, y in loader:
    with torch.autocast("cuda", dtype=torch.float16):
        logits = model(x)
        loss = F.binary_cross_entropy(torch.sigmoid(logits), y, reduction="sum")
""",
            line=7,
            unsafe=True,
            fixed="""
import torch
import torch.nn.functional as F
for x, y in loader:
    with torch.autocast("cuda", dtype=torch.float16):
        logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits, y, reduction="sum")
""",
        ),
        # Probabilities from the model: reported, no fix.
        Invalid(
            """
import torch
from torch.cuda.amp import autocast
with autocast():
    probs = model(x)
    loss = torch.nn.functional.binary_cross_entropy(probs, y)
""",
            line=6,
        ),
        Invalid(
            """
import torch
import torch.nn as nn

class Trainer:
    def __init__(self, model):
        self.model = model
        self.criterion = nn.BCELoss()

    def step(self, x, y):
        with torch.autocast("cuda"):
            out = self.model(x)
            return self.criterion(out.sigmoid(), y)
""",
            line=13,
            unsafe=True,
            fixed="""
import torch
import torch.nn as nn

class Trainer:
    def __init__(self, model):
        self.model = model
        self.criterion = nn.BCEWithLogitsLoss()

    def step(self, x, y):
        with torch.autocast("cuda"):
            out = self.model(x)
            return self.criterion(out, y)
""",
        ),
        # Through a helper of the same module.
        Invalid(
            """
import torch
import torch.nn.functional as F

def disc_loss(p_real, p_fake):
    return F.binary_cross_entropy(p_real, torch.ones_like(p_real)) + F.binary_cross_entropy(
        p_fake, torch.zeros_like(p_fake)
    )

with torch.autocast("cuda"):
    loss = disc_loss(D(real), D(fake))
""",
            line=6,
            count=2,
        ),
        # An instance also called elsewhere with probabilities: no fix.
        Invalid(
            """
import torch
bce = torch.nn.BCELoss()
with torch.autocast("cuda"):
    loss = bce(torch.sigmoid(logits), y)
val = bce(probs, y)
""",
            line=5,
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        if not model.autocast_withs:
            return
        targets = [c for c in model.index.calls if _is_bce(model, c)]
        if not targets:
            return
        memo: dict[cst.FunctionDef, bool] = {}
        for call in targets:
            if model.is_dead(call):
                continue
            if not _under_cuda_autocast(model, call, memo, 0):
                continue
            name = "`nn.BCELoss`" if _bce_constructor(model, call) else "`binary_cross_entropy`"
            context.report(
                call,
                f"{name} raises `RuntimeError` under CUDA autocast (unsafe to autocast); use "
                "`binary_cross_entropy_with_logits` / `BCEWithLogitsLoss` on logits, or compute "
                "it in float32 outside autocast",
                _fix(model, call, targets),
            )


def _is_bce(model: ModuleModel, call: cst.Call) -> bool:
    if isinstance(call.func, (cst.Name, cst.Attribute)) and (
        model.evaluator.qualified_names(call.func) & _BCE_FUNCTIONS
    ):
        return True
    return _bce_constructor(model, call) is not None


def _bce_constructor(model: ModuleModel, call: cst.Call) -> cst.Call | None:
    """The ``nn.BCELoss(...)`` call that made the instance ``call`` calls."""
    func = call.func
    candidates: list[cst.CSTNode | None]
    if isinstance(func, cst.Call):
        candidates = [func]
    elif isinstance(func, cst.Name):
        bindings = model.index.scope_of(call).lookup(func.value)
        if not bindings or any(b.kind is not BindingKind.ASSIGN for b in bindings):
            return None
        candidates = [b.node for b in bindings]
    elif (
        isinstance(func, cst.Attribute)
        and isinstance(func.value, cst.Name)
        and func.value.value == "self"
    ):
        info = model.index.enclosing_class(call)
        bindings = info.attributes.get(func.attr.value, []) if info is not None else []
        if not bindings:
            return None
        candidates = [b.node for b in bindings]
    else:
        return None
    if len(candidates) != 1:
        return None
    node = candidates[0]
    if not isinstance(node, cst.Call) or not isinstance(node.func, (cst.Name, cst.Attribute)):
        return None
    if model.evaluator.qualified_names(node.func) & _BCE_MODULES:
        return node
    return None


def _under_cuda_autocast(
    model: ModuleModel, node: cst.CSTNode, memo: dict[cst.FunctionDef, bool], depth: int
) -> bool:
    state = _lexical_cuda_state(model, node)
    if state is not None:
        return state
    function = model.index.enclosing_function(node)
    if function is None or depth >= MAX_HELPER_DEPTH:
        return False
    if function in memo:
        return memo[function]
    memo[function] = False
    result = any(
        model.helper_of(caller) is function and _under_cuda_autocast(model, caller, memo, depth + 1)
        for caller in model.index.calls
        if _may_call(caller, function)
    )
    memo[function] = result
    return result


def _may_call(call: cst.Call, function: cst.FunctionDef) -> bool:
    func = call.func
    name = func.value if isinstance(func, cst.Name) else None
    if isinstance(func, cst.Attribute):
        name = func.attr.value
    return name == function.name.value or name == "__call__" or function.name.value == "__call__"


def _lexical_cuda_state(model: ModuleModel, node: cst.CSTNode) -> bool | None:
    """True inside an enabled CUDA autocast of the same function, False inside a disabled
    one, None outside any."""
    for ancestor in model.index.ancestors(node):
        if isinstance(ancestor, (cst.FunctionDef, cst.Lambda, cst.ClassDef)):
            return None
        if isinstance(ancestor, cst.With) and _in_body(model, node, ancestor):
            for region in model.autocast_regions(ancestor):
                if region.device == "cuda":
                    return region.may_be_enabled and not _off_by_default(model, region.call)
    return None


def _off_by_default(model: ModuleModel, autocast: cst.Call) -> bool:
    """``autocast(enabled=flag)`` where ``flag`` is a parameter defaulting to False: the
    region is the usual way to keep a loss out of autocast, on unless a caller asks."""
    for arg in autocast.args:
        if arg.keyword is None or arg.keyword.value != "enabled":
            continue
        if not isinstance(arg.value, cst.Name):
            return False
        bindings = model.index.scope_of(arg.value).lookup(arg.value.value)
        return bool(bindings) and all(
            b.kind is BindingKind.PARAM
            and isinstance(b.node, cst.Param)
            and isinstance(b.node.default, cst.Name)
            and b.node.default.value == "False"
            for b in bindings
        )
    return False


def _in_body(model: ModuleModel, node: cst.CSTNode, with_node: cst.With) -> bool:
    return with_node.body in model.index.ancestors(node)


def _logits(model: ModuleModel, node: cst.BaseExpression) -> bool:
    """``torch.sigmoid(x)`` / ``x.sigmoid()``."""
    if not isinstance(node, cst.Call):
        return False
    func = node.func
    if isinstance(func, cst.Attribute) and func.attr.value == "sigmoid" and not node.args:
        return not model.evaluator.qualified_names(func) & _SIGMOIDS
    return (
        isinstance(func, (cst.Name, cst.Attribute))
        and bool(model.evaluator.qualified_names(func) & _SIGMOIDS)
        and len(node.args) == 1
        and node.args[0].keyword is None
        and not node.args[0].star
    )


def _strip_sigmoid(updated: cst.CSTNode) -> cst.CSTNode:
    assert isinstance(updated, cst.Call)
    if not updated.args:  # x.sigmoid()
        assert isinstance(updated.func, cst.Attribute)
        return updated.func.value
    return updated.args[0].value  # torch.sigmoid(x)


def _rename(new: str) -> Replacement:
    def replace(updated: cst.CSTNode) -> cst.CSTNode:
        assert isinstance(updated, cst.Attribute)
        return updated.with_changes(attr=cst.Name(new))

    return replace


def _sigmoid_input(model: ModuleModel, call: cst.Call) -> cst.Call | None:
    arg, hidden = argument(call, "input", 0)
    if arg is None or hidden or arg.keyword is not None or not _logits(model, arg.value):
        return None
    return arg.value  # type: ignore[return-value]


def _fix(model: ModuleModel, call: cst.Call, targets: list[cst.Call]) -> FixPlan | None:
    constructor = _bce_constructor(model, call)
    if constructor is None:
        sigmoid = _sigmoid_input(model, call)
        if sigmoid is None or not isinstance(call.func, cst.Attribute):
            return None
        return FixPlan(
            "Drop the sigmoid and use `binary_cross_entropy_with_logits`",
            {call.func: _rename("binary_cross_entropy_with_logits"), sigmoid: _strip_sigmoid},
            "unsafe",
        )
    if not isinstance(constructor.func, cst.Attribute):
        return None
    calls = [c for c in targets if _bce_constructor(model, c) is constructor]
    if not _only_called(model, call, len(calls)):
        return None
    replacements: dict[cst.CSTNode, Replacement] = {constructor.func: _rename("BCEWithLogitsLoss")}
    for other in calls:
        sigmoid = _sigmoid_input(model, other)
        if sigmoid is None:
            return None
        replacements[sigmoid] = _strip_sigmoid
    return FixPlan("Drop the sigmoid and use `nn.BCEWithLogitsLoss`", replacements, "unsafe")


def _only_called(model: ModuleModel, call: cst.Call, calls: int) -> bool:
    """The instance is used only by being called (not passed on, not stored elsewhere)."""
    func = call.func
    if isinstance(func, cst.Call):
        return True
    if isinstance(func, cst.Name):
        uses = [n for n in names_of(model).references if n.value == func.value]
        # the assignment target and one use per call
        return len(uses) <= calls + 1
    assert isinstance(func, cst.Attribute)
    uses = [
        a
        for a in names_of(model).attributes
        if a.attr.value == func.attr.value
        and isinstance(a.value, cst.Name)
        and a.value.value == "self"
    ]
    return len(uses) <= calls + 1
