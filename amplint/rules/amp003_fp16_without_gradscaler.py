"""AMP003 fp16-without-gradscaler."""

from __future__ import annotations

from collections.abc import Callable

import libcst as cst

from amplint.analysis.clipping import clip_kind
from amplint.analysis.model import ModuleModel, calls_in, method_name, receiver, walk_body
from amplint.analysis.scopes import Binding, BindingKind, dotted_name, names_read
from amplint.analysis.symbols import Symbol
from amplint.analysis.values import AutocastRegion, NullContext
from amplint.engine.contract import FixPlan, Invalid, Replacement, Rule, RuleContext

#: Names the added GradScaler may take, the first the module does not use already (a
#: tabular script's `scaler = StandardScaler()` keeps its own).
_SCALER_NAMES = ("scaler", "grad_scaler", "amp_scaler")


class Fp16WithoutGradScaler(Rule):
    code = "AMP003"
    tokens = (("autocast",), ("backward",), ("step",))

    valid = (
        # bfloat16 needs no scaler.
        """
import torch
for x, y in loader:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x)
    loss.backward()
    optimizer.step()
""",
        # CPU autocast defaults to bfloat16.
        """
import torch
for x, y in loader:
    with torch.autocast("cpu"):
        loss = model(x)
    loss.backward()
    optimizer.step()
""",
        # Inference only.
        """
import torch
@torch.no_grad()
def evaluate(model, loader):
    for x, y in loader:
        with torch.autocast("cuda"):
            out = model(x)
""",
        # A scaler that is disabled unless the dtype is float16.
        """
import torch
scaler = torch.amp.GradScaler(enabled=(dtype == "float16"))
for x, y in loader:
    with torch.autocast("cuda", dtype=ptdtype):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # dtype from a config: unknown, so no claim.
        """
import torch
for x, y in loader:
    with torch.autocast("cuda", dtype=getattr(torch, cfg.dtype)):
        loss = model(x)
    loss.backward()
    optimizer.step()
""",
        # Device type not known statically.
        """
import torch
for x, y in loader:
    with torch.autocast(device_type=device.type):
        loss = model(x)
    loss.backward()
    optimizer.step()
""",
        # A timm-style loss scaler wrapper from another module.
        """
import torch
from timm.utils import NativeScaler
loss_scaler = NativeScaler()
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
    loss_scaler(loss, optimizer)
""",
        # A framework's backward does its own loss scaling.
        """
import torch
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
    accelerator.backward(loss)
    optimizer.step()
""",
        # fp16 teacher under no_grad, bfloat16 student.
        """
import torch
for x, y in loader:
    with torch.no_grad(), torch.autocast("cuda"):
        target = teacher(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = student(x, target)
    loss.backward()
    optimizer.step()
""",
    )
    invalid = (
        # A tabular script's feature scaler is no loss scaling, and keeps its name: the
        # GradScaler the fix adds takes another.
        Invalid(
            """
import torch
from sklearn.preprocessing import StandardScaler
def train(model, optimizer, loader):
    scaler = StandardScaler()
    for x in loader:
        x = torch.as_tensor(scaler.fit_transform(x)).cuda()
        with torch.autocast("cuda"):
            loss = model(x).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
""",
            line=8,
            fixed="""
import torch
from sklearn.preprocessing import StandardScaler
def train(model, optimizer, loader):
    scaler = StandardScaler()
    grad_scaler = torch.amp.GradScaler("cuda")
    for x in loader:
        x = torch.as_tensor(scaler.fit_transform(x)).cuda()
        with torch.autocast("cuda"):
            loss = model(x).mean()
        grad_scaler.scale(loss).backward()
        grad_scaler.step(optimizer)
        grad_scaler.update()
        optimizer.zero_grad()
""",
        ),
        # The region made by a lambda bound to a name.
        Invalid(
            """
import torch
amp = lambda: torch.autocast("cuda", dtype=torch.float16)
for x, y in loader:
    with amp():
        loss = model(x, y)
    loss.backward()
    optimizer.step()
""",
            line=5,
            fixed="""
import torch
amp = lambda: torch.autocast("cuda", dtype=torch.float16)
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with amp():
        loss = model(x, y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        ),
        Invalid(
            """
import torch
model, optimizer = build()
for epoch in range(10):
    for x, y in loader:
        optimizer.zero_grad()
        with torch.autocast("cuda"):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
""",
            line=7,
            fixed="""
import torch
model, optimizer = build()
scaler = torch.amp.GradScaler("cuda")
for epoch in range(10):
    for x, y in loader:
        optimizer.zero_grad()
        with torch.autocast("cuda"):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        ),
        Invalid(
            """
import torch

def train(model, opt, loader, args):
    for step, (x, y) in enumerate(loader):
        with torch.amp.autocast(device_type="cuda", dtype=torch.half, enabled=args.amp):
            loss = model(x, y)
        loss.backward()
        if (step + 1) % args.accum == 0:
            opt.step()
            opt.zero_grad()
""",
            line=6,
            fixed="""
import torch

def train(model, opt, loader, args):
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp)
    for step, (x, y) in enumerate(loader):
        with torch.amp.autocast(device_type="cuda", dtype=torch.half, enabled=args.amp):
            loss = model(x, y)
        scaler.scale(loss).backward()
        if (step + 1) % args.accum == 0:
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
""",
        ),
        # Clipping reads the gradients: reported, but no automatic fix.
        Invalid(
            """
import torch
from torch.cuda.amp import autocast
for x, y in loader:
    with autocast():
        loss = model(x)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
""",
            line=5,
        ),
        # float16 or bfloat16 by a flag: the scaler is enabled by the same flag, since the
        # bfloat16 branch needs no scaling.
        Invalid(
            """
import torch
def train(model, optimizer, loader, use_fp16):
    ctx = (torch.autocast("cuda", dtype=torch.float16) if use_fp16
           else torch.autocast("cuda", dtype=torch.bfloat16))
    for x in loader:
        optimizer.zero_grad()
        with ctx:
            loss = model(x)
        loss.backward()
        optimizer.step()
""",
            line=8,
            fixed="""
import torch
def train(model, optimizer, loader, use_fp16):
    ctx = (torch.autocast("cuda", dtype=torch.float16) if use_fp16
           else torch.autocast("cuda", dtype=torch.bfloat16))
    scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)
    for x in loader:
        optimizer.zero_grad()
        with ctx:
            loss = model(x)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        ),
        # float16 in the other branch: enabled by the test's negation.
        Invalid(
            """
import torch
for x in loader:
    with (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 or cfg.tpu
          else torch.autocast("cuda", dtype=torch.float16)):
        loss = model(x)
    loss.backward()
    optimizer.step()
""",
            line=4,
            fixed="""
import torch
scaler = torch.amp.GradScaler("cuda", enabled=not (cfg.bf16 or cfg.tpu))
for x in loader:
    with (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 or cfg.tpu
          else torch.autocast("cuda", dtype=torch.float16)):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        ),
        # Chosen by something each iteration changes: the scaler, built before the loop, is
        # enabled throughout, and scales the bfloat16 steps too: unsafe.
        Invalid(
            """
import torch
for step, x in enumerate(loader):
    fp16 = torch.autocast("cuda", dtype=torch.float16)
    with fp16 if step % 2 else torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x)
    loss.backward()
    optimizer.step()
""",
            line=5,
            fixed="""
import torch
scaler = torch.amp.GradScaler("cuda")
for step, x in enumerate(loader):
    fp16 = torch.autocast("cuda", dtype=torch.float16)
    with fp16 if step % 2 else torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            unsafe=True,
        ),
        # The other branch's dtype is unknown (it may be float16 too): enabled throughout,
        # which scales that branch's steps whatever they are: unsafe.
        Invalid(
            """
import torch
def train(model, optimizer, loader, cfg, use_fp16):
    ctx = (torch.autocast("cuda", dtype=torch.float16) if use_fp16
           else torch.autocast("cuda", dtype=cfg.dtype))
    for x in loader:
        optimizer.zero_grad()
        with ctx:
            loss = model(x)
        loss.backward()
        optimizer.step()
""",
            line=8,
            fixed="""
import torch
def train(model, optimizer, loader, cfg, use_fp16):
    ctx = (torch.autocast("cuda", dtype=torch.float16) if use_fp16
           else torch.autocast("cuda", dtype=cfg.dtype))
    scaler = torch.amp.GradScaler("cuda")
    for x in loader:
        optimizer.zero_grad()
        with ctx:
            loss = model(x)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
            unsafe=True,
        ),
        # AMP or nothing: the scaler follows the same flag.
        Invalid(
            """
import torch
from contextlib import nullcontext
def train(model, optimizer, loader, use_amp):
    ctx = torch.autocast("cuda") if use_amp else nullcontext()
    for x in loader:
        optimizer.zero_grad()
        with ctx:
            loss = model(x)
        loss.backward()
        optimizer.step()
""",
            line=8,
            fixed="""
import torch
from contextlib import nullcontext
def train(model, optimizer, loader, use_amp):
    ctx = torch.autocast("cuda") if use_amp else nullcontext()
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    for x in loader:
        optimizer.zero_grad()
        with ctx:
            loss = model(x)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        ),
        # AMP or nothing through a name for the callable: the scaler would scale the float32
        # steps too: unsafe.
        Invalid(
            """
import torch
from contextlib import suppress
def train(probe, loader, optimizer, criterion, amp=True):
    autocast = torch.amp.autocast if amp else suppress
    for x, y in loader:
        optimizer.zero_grad()
        with autocast("cuda"):
            loss = criterion(probe(x), y)
        loss.backward()
        optimizer.step()
""",
            line=8,
            fixed="""
import torch
from contextlib import suppress
def train(probe, loader, optimizer, criterion, amp=True):
    autocast = torch.amp.autocast if amp else suppress
    scaler = torch.amp.GradScaler("cuda")
    for x, y in loader:
        optimizer.zero_grad()
        with autocast("cuda"):
            loss = criterion(probe(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
            unsafe=True,
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        if model.mentions_scaling:
            return
        reported: set[cst.CSTNode] = set()
        for with_node in model.autocast_withs:
            region = _float16_region(model, with_node)
            if region is None or model.is_dead(with_node) or _under_no_grad(model, with_node):
                continue
            unit = _unit_of(model, with_node)
            if unit in reported or not _trains(model, unit):
                continue
            reported.add(unit)
            item = next(i for i in with_node.items if _float16_item(model, i))
            context.report(
                item.item,
                "float16 autocast in a training step without a GradScaler: small gradients "
                "underflow to zero; scale the loss with `torch.amp.GradScaler`",
                _add_scaler(model, with_node, region, unit),
            )


def _float16_item(model: ModuleModel, item: cst.WithItem) -> AutocastRegion | None:
    for value in model.evaluator.evaluate(item.item):
        if isinstance(value, AutocastRegion) and value.may_be_enabled and value.dtype == "float16":
            return value
    return None


def _float16_region(model: ModuleModel, with_node: cst.With) -> AutocastRegion | None:
    for item in with_node.items:
        region = _float16_item(model, item)
        if region is not None:
            return region
    return None


def _under_no_grad(model: ModuleModel, with_node: cst.With) -> bool:
    """A frozen teacher's forward pass trains nothing."""
    withs = [with_node, *(a for a in model.index.ancestors(with_node) if isinstance(a, cst.With))]
    for node in withs:
        for item in node.items:
            expr = item.item.func if isinstance(item.item, cst.Call) else item.item
            if model.evaluator.is_symbol(expr, Symbol.NO_GRAD):
                return True
    return False


def _unit_of(model: ModuleModel, node: cst.CSTNode) -> cst.CSTNode:
    function = model.index.enclosing_function(node)
    return function.body if function is not None else model.module


def _trains(model: ModuleModel, unit: cst.CSTNode) -> bool:
    calls = model.transitive_calls(unit)
    return any(_tensor_backward(model, c) for c in calls) and any(
        model.is_optimizer_step(c) for c in calls
    )


def _tensor_backward(model: ModuleModel, call: cst.Call) -> bool:
    """A plain ``loss.backward()``: framework calls such as ``accelerator.backward(loss)``,
    ``fabric.backward(loss)`` or DeepSpeed's ``engine.backward(loss)`` take the loss as an
    argument and do their own loss scaling, so they say nothing about a missing scaler."""
    if not model.is_direct_backward(call):
        return False
    return method_name(call) != "backward" or all(arg.keyword is not None for arg in call.args)


def _add_scaler(
    model: ModuleModel, with_node: cst.With, region: AutocastRegion, unit: cst.CSTNode
) -> FixPlan | None:
    loops = model.enclosing_loops(with_node)
    torch_bindings = model.index.module_scope.bindings.get("torch", [])
    if not loops or region.device is None or not _is_torch_module(torch_bindings):
        return None
    outer_loop = loops[-1]
    calls = calls_in(unit)
    if any(clip_kind(model, c) is not None for c in calls) or _reads_grad(unit):
        return None
    backwards = [c for c in calls if model.runs_backward(c)]
    steps = [c for c in calls if model.is_optimizer_step(c)]
    if not backwards or not steps:
        return None
    name = next((n for n in _SCALER_NAMES if n not in model.index.scaler_identifiers), None)
    if name is None:
        return None
    replacements: dict[cst.CSTNode, Replacement] = {}
    for call in backwards:
        loss = receiver(call)
        if (
            not _tensor_backward(model, call)
            or method_name(call) != "backward"
            or loss is None
            or not _inside(model, call, outer_loop)
        ):
            return None
        replacements[call] = _scaled_backward(loss, name)
    iteration = model.training_iteration(steps[-1])
    for call in steps:
        if not _inside(model, call, outer_loop):
            return None
        optimizer = receiver(call)
        assert optimizer is not None
        replacements[call] = _scaler_call("step", optimizer, name)
    anchor = model.update_anchor(steps[-1], iteration)
    loop_statement = model.statement_in_block(outer_loop)
    if anchor is None or loop_statement is None or anchor in replacements:
        return None
    update = cst.parse_statement(f"{name}.update()\n")
    replacements[anchor] = lambda updated: cst.FlattenSentinel([updated, update])
    constructor = _constructor(model, with_node, region, outer_loop)
    creation = cst.parse_statement(f"{name} = {constructor}\n")
    replacements[loop_statement] = lambda updated: cst.FlattenSentinel([creation, updated])
    message = "Create a `torch.amp.GradScaler` and route backward, step and update through it"
    if "enabled=" not in constructor and _may_run_without_float16(model, with_node):
        # `autocast = torch.cuda.amp.autocast if amp else suppress`: when the other branch
        # runs, the float32 steps would be scaled (and skipped on overflow) too.
        return FixPlan(
            message + "; it scales every step, also where the block runs without float16",
            replacements,
            "unsafe",
        )
    return FixPlan(message, replacements)


def _may_run_without_float16(model: ModuleModel, with_node: cst.With) -> bool:
    """Whether the ``with`` item may be something else than a float16 region."""
    item = next(i for i in with_node.items if _float16_item(model, i))
    return _dtype_kind(model, item.item) != "float16"


def _is_torch_module(bindings: list[Binding]) -> bool:
    return bool(bindings) and all(
        b.kind is BindingKind.IMPORT and b.qualified_name == "torch" for b in bindings
    )


def _constructor(
    model: ModuleModel, with_node: cst.With, region: AutocastRegion, loop: cst.CSTNode
) -> str:
    """``torch.amp.GradScaler(...)`` enabled where the region is: by its own ``enabled=``,
    or, for a region chosen between float16 and what is surely not float16, by that
    choice's test (a bfloat16 branch needs no scaling). The scaler is built before ``loop``."""
    arguments = [f'"{region.device}"']
    enabled = next(
        (a.value for a in region.call.args if a.keyword and a.keyword.value == "enabled"), None
    )
    float16_when = _float16_when(model, with_node, loop) if enabled is None else None
    if float16_when is not None:
        arguments.append(f"enabled={float16_when}")
    elif enabled is not None and dotted_name(enabled) is not None:
        arguments.append(f"enabled={model.module.code_for_node(enabled)}")
    return f"torch.amp.GradScaler({', '.join(arguments)})"


def _float16_when(model: ModuleModel, with_node: cst.With, loop: cst.CSTNode) -> str | None:
    """The condition, as code, under which the ``with`` enters float16 autocast, where its
    item is ``a if test else b`` (directly or through a name bound once), one branch a
    float16 region and the other surely not one (bfloat16, disabled, ``nullcontext()``):
    ``ctx = autocast(float16) if fp16 else autocast(bfloat16)``. None when that is not
    certain, or the test may change before the loop or inside it."""
    item = next(i for i in with_node.items if _float16_item(model, i))
    choice: cst.CSTNode | None = item.item
    if isinstance(choice, cst.Name):
        bindings = model.index.scope_of(choice).lookup(choice.value)
        single = len(bindings) == 1 and bindings[0].kind is BindingKind.ASSIGN
        choice = bindings[0].node if single else None
    if not isinstance(choice, cst.IfExp):
        return None
    kinds = [_dtype_kind(model, branch) for branch in (choice.body, choice.orelse)]
    if set(kinds) != {"float16", "other"}:
        return None
    test = choice.test
    names = set(names_read(test))
    scope = model.index.scope_of(test)
    if _rebinds_any(loop, names) or any(len(scope.lookup(name)) > 1 for name in names):
        return None
    if any(isinstance(node, cst.NamedExpr) for node in (test, *walk_body(test))):
        return None
    code = model.module.code_for_node(test)
    if "\n" in code:
        return None
    if kinds[0] == "float16":
        return code
    atomic = isinstance(test, (cst.Name, cst.Attribute, cst.Call, cst.Subscript))
    return f"not {code}" if atomic and not test.lpar else f"not ({code})"


def _dtype_kind(model: ModuleModel, node: cst.BaseExpression) -> str | None:
    """ "float16" for a float16 region, "other" for what surely is none (a region of another
    known dtype or disabled, ``nullcontext()``), None when unknown."""
    values = model.evaluator.evaluate(node)
    if not values:
        return None
    if all(
        isinstance(value, AutocastRegion) and value.may_be_enabled and value.dtype == "float16"
        for value in values
    ):
        return "float16"
    if all(
        isinstance(value, NullContext)
        or (
            isinstance(value, AutocastRegion)
            and (not value.may_be_enabled or value.dtype not in (None, "float16"))
        )
        for value in values
    ):
        return "other"
    return None


def _rebinds_any(loop: cst.CSTNode, names: set[str]) -> bool:
    """Whether ``loop`` assigns one of ``names`` (its target, an assignment, a ``with ...
    as``, a walrus): a test that reads it may change from one iteration to the next."""
    targets: list[cst.CSTNode] = []
    for node in walk_body(loop):
        if isinstance(
            node, (cst.For, cst.AugAssign, cst.AnnAssign, cst.NamedExpr, cst.AssignTarget)
        ):
            targets.append(node.target)
        elif isinstance(node, cst.AsName):
            targets.append(node.name)
    if isinstance(loop, cst.For):
        targets.append(loop.target)
    return any(names.intersection(names_read(target)) for target in targets)


def _scaled_backward(loss: cst.BaseExpression, name: str) -> Callable[[cst.CSTNode], cst.CSTNode]:
    """``loss.backward(...)`` becomes ``scaler.scale(loss).backward(...)``."""

    def replace(updated: cst.CSTNode) -> cst.CSTNode:
        assert isinstance(updated, cst.Call) and isinstance(updated.func, cst.Attribute)
        scaled = _scaler_call("scale", updated.func.value, name)
        return updated.with_changes(func=updated.func.with_changes(value=scaled))

    return replace


def _scaler_call(method: str, argument: cst.BaseExpression, name: str) -> cst.Call:
    if argument.lpar:  # `(loss / 2).backward()`: the call's parentheses are enough
        argument = argument.with_changes(lpar=(), rpar=())
    return cst.Call(
        func=cst.Attribute(cst.Name(name), cst.Name(method)),
        args=[cst.Arg(argument)],
    )


def _inside(model: ModuleModel, node: cst.CSTNode, ancestor: cst.CSTNode) -> bool:
    return ancestor in model.index.ancestors(node)


def _reads_grad(unit: cst.CSTNode) -> bool:
    return any(isinstance(n, cst.Attribute) and n.attr.value == "grad" for n in walk_body(unit))
