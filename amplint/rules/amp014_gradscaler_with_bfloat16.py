"""AMP014 gradscaler-with-bfloat16."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.imported import imported_scalers
from amplint.analysis.lifecycle import (
    ScalerConstruction,
    built_for_float16_only,
    scaler_constructions,
    scales_losses,
    under_no_grad,
)
from amplint.analysis.model import ModuleModel
from amplint.analysis.scopes import Binding, BindingKind, dotted_name
from amplint.analysis.symbols import AUTOCAST_SYMBOLS, Symbol
from amplint.analysis.values import AutocastRegion, SymbolValue
from amplint.engine.contract import FixPlan, Invalid, Rule, RuleContext


class GradScalerWithBfloat16(Rule):
    code = "AMP014"
    tokens = (("GradScaler", "ShardedGradScaler"), ("autocast",))

    valid = (
        # The scaler's switch is not the regions' own: with `fp16` on and `bf16` off the
        # scaler may serve a float16 run elsewhere; and a region whose dtype follows a flag.
        """
import torch
def train(model, optimizer, loader, fp16, bf16):
    scaler = torch.amp.GradScaler("cuda", enabled=fp16)
    for x, y in loader:
        with torch.autocast("cuda", enabled=bf16, dtype=torch.bfloat16):
            loss = model(x, y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        """
import torch
def train(model, optimizer, loader, amp, bf16):
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    for x, y in loader:
        dtype = torch.bfloat16 if bf16 else torch.float16
        with torch.autocast("cuda", enabled=amp, dtype=dtype):
            loss = model(x, y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        # float16: the scaler is needed.
        """
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda", dtype=torch.float16):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # Disabled by dtype (nanoGPT).
        """
import torch
dtype = "bfloat16"
ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
ctx = torch.amp.autocast(device_type="cuda", dtype=ptdtype)
scaler = torch.cuda.amp.GradScaler(enabled=(dtype == "float16"))
for x in loader:
    with ctx:
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # Enabled from the arguments.
        """
import torch
scaler = torch.amp.GradScaler(enabled=args.fp16)
for x in loader:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # The dtype comes from a flag: cannot be known.
        """
import torch
amp_dtype = torch.bfloat16 if args.bf16 else torch.float16
scaler = torch.amp.GradScaler()
for x in loader:
    with torch.autocast("cuda", dtype=amp_dtype):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # A bfloat16 teacher under no_grad, float16 (CUDA default) student.
        """
import torch
scaler = torch.amp.GradScaler()
for x in loader:
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        target = teacher(x)
    with torch.autocast("cuda"):
        loss = student(x, target)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # A bfloat16 region for evaluation only; the scaler serves float16 training
        # run by a framework elsewhere.
        """
import torch
scaler = torch.amp.GradScaler()

@torch.no_grad()
def evaluate(model, loader):
    for x in loader:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(x)
""",
        # A float16 autocast used as a decorator on the forward pass.
        """
import torch
class Net(torch.nn.Module):
    @torch.autocast("cuda")
    def forward(self, x):
        return self.body(x)

scaler = torch.amp.GradScaler()
for x in loader:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = head(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # Built only for float16 runs: the precision test says what the scaler is for.
        """
import torch
if args.precision == "fp16":
    scaler = torch.amp.GradScaler()
else:
    scaler = None
for x in loader:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
""",
        # Built unless bfloat16 is asked for: the scaler is meant for the other runs.
        """
import torch
scaler = torch.amp.GradScaler() if args.precision != "bf16" else None
for x in loader:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        # A float16 region entered through an ExitStack.
        """
import contextlib, torch
scaler = torch.amp.GradScaler()
for x in loader:
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast("cuda", dtype=torch.float16))
        loss = model(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        aux = head(x)
    scaler.scale(loss + aux).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # A scaler disabled literally.
        """
import torch
scaler = torch.amp.GradScaler(enabled=False)
for x in loader:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
    )
    invalid = (
        # One switch turns on the scaler and the bfloat16 regions together: no fix, the
        # switch may mean more than AMP to the script.
        Invalid(
            """
import torch
def train(model, optimizer, loader, bf16_run):
    scaler = torch.amp.GradScaler("cuda", enabled=bf16_run)
    for x, y in loader:
        with torch.autocast("cuda", enabled=bf16_run, dtype=torch.bfloat16):
            loss = model(x, y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
            line=4,
        ),
        # Built exactly when bfloat16 is on: the test picks bfloat16, not float16.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler("cuda") if use_bfloat16 else None
for x, y in loader:
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bfloat16):
        loss = model(x)
    if use_bfloat16:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
            line=3,
            unsafe=True,
            fixed="""
import torch
scaler = torch.amp.GradScaler("cuda", enabled=False) if use_bfloat16 else None
for x, y in loader:
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bfloat16):
        loss = model(x)
    if use_bfloat16:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        ),
        # The dtype is a named variable: safe fix.
        Invalid(
            """
import torch
amp_dtype = torch.bfloat16
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda", dtype=amp_dtype):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            line=4,
            fixed="""
import torch
amp_dtype = torch.bfloat16
scaler = torch.amp.GradScaler("cuda", enabled=(amp_dtype == torch.float16))
for x, y in loader:
    with torch.autocast("cuda", dtype=amp_dtype):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        ),
        # self attributes in a trainer, `enabled=True` written out.
        Invalid(
            """
import torch
class Trainer:
    def __init__(self, model):
        self.amp_dtype = torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=True)

    def train_step(self, x):
        with torch.autocast(device_type="cuda", dtype=self.amp_dtype):
            loss = self.model(x)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
""",
            line=6,
            fixed="""
import torch
class Trainer:
    def __init__(self, model):
        self.amp_dtype = torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=(self.amp_dtype == torch.float16))

    def train_step(self, x):
        with torch.autocast(device_type="cuda", dtype=self.amp_dtype):
            loss = self.model(x)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
""",
        ),
        # CPU autocast defaults to bfloat16; literal dtype: unsafe `enabled=False`.
        Invalid(
            """
from torch.amp import GradScaler, autocast

def train(model, optimizer, loader):
    scaler = GradScaler("cpu")
    for x, y in loader:
        with autocast("cpu"):
            loss = model(x, y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
            line=5,
            unsafe=True,
            fixed="""
from torch.amp import GradScaler, autocast

def train(model, optimizer, loader):
    scaler = GradScaler("cpu", enabled=False)
    for x, y in loader:
        with autocast("cpu"):
            loss = model(x, y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        ),
        # Through a partial; the scaler built inside a helper class.
        Invalid(
            """
import functools, torch
amp = functools.partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
class LossScaler:
    def __init__(self):
        self._scaler = torch.cuda.amp.GradScaler()

    def __call__(self, loss, optimizer):
        self._scaler.scale(loss).backward()
        self._scaler.step(optimizer)
        self._scaler.update()

loss_scaler = LossScaler()
for x in loader:
    with amp():
        loss = model(x)
    loss_scaler(loss, optimizer)
""",
            line=6,
            unsafe=True,
            fixed="""
import functools, torch
amp = functools.partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
class LossScaler:
    def __init__(self):
        self._scaler = torch.cuda.amp.GradScaler(enabled=False)

    def __call__(self, loss, optimizer):
        self._scaler.scale(loss).backward()
        self._scaler.step(optimizer)
        self._scaler.update()

loss_scaler = LossScaler()
for x in loader:
    with amp():
        loss = model(x)
    loss_scaler(loss, optimizer)
""",
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        scalers = [
            c
            for c in scaler_constructions(model)
            if c.instance.enabled is True
            and not model.is_dead(c.call)
            and not built_for_float16_only(model, c.call)
        ]
        # `GradScaler(enabled=bf16_run)` with every region `autocast(enabled=bf16_run,
        # dtype=torch.bfloat16)`: the scaler is on exactly when bfloat16 is (Bert-VITS2).
        switched = [
            c
            for c in scaler_constructions(model)
            if c.instance.enabled is not True
            and c.instance.enabled is not False
            and _enabled_expression(c.call) is not None
            and not model.is_dead(c.call)
            and not built_for_float16_only(model, c.call)
        ]
        imported = [
            i
            for i in imported_scalers(model)
            if i.instance.enabled is True
            and not model.is_dead(i.site)
            and not built_for_float16_only(model, i.site)
        ]
        if not (scalers or imported or switched) or not scales_losses(model):
            return
        if _other_autocast(model):
            return
        training: list[cst.Call] = []
        regions: list[cst.Call] = []
        for with_node in model.autocast_withs:
            if model.is_dead(with_node) or under_no_grad(model, with_node):
                continue
            for region in model.autocast_regions(with_node):
                if not region.may_be_enabled:
                    continue
                if region.dtype != "bfloat16":
                    return  # float16, or not known: the scaler may be needed
                regions.append(region.call)
                if _trains(model, with_node):
                    training.append(region.call)
        if not training:
            return
        for construction in scalers:
            context.report(
                construction.call,
                "GradScaler is enabled but every autocast region that trains here is "
                "bfloat16, which needs no loss scaling: the scaler only adds a host sync per "
                "step; enable it for float16 only (`enabled=(amp_dtype == torch.float16)`)",
                _disable(model, construction, training),
            )
        for construction in switched:
            switch = _enabled_expression(construction.call)
            if not all(
                (enabled := _enabled_expression(region)) is not None
                and switch is not None
                and enabled.deep_equals(switch)
                for region in regions
            ):
                continue
            context.report(
                construction.call,
                "GradScaler is enabled by the same switch as the autocast regions, which all "
                "run in bfloat16: it is on only when bfloat16 is, which needs no loss "
                "scaling, so the scaler only adds a host sync per step; enable it for "
                "float16 only (`enabled=(amp_dtype == torch.float16)`)",
            )
        for source in imported:
            context.report(
                source.site,
                f"the GradScaler built at {source.where} (through `{source.via}`) is enabled "
                "but every autocast region that trains here is bfloat16, which needs no loss "
                "scaling: the scaler only adds a host sync per step; enable it for float16 "
                "only (`enabled=(amp_dtype == torch.float16)`)",
            )


def _enabled_expression(call: cst.Call) -> cst.BaseExpression | None:
    """What ``enabled=`` says, as written; None when it is not given by keyword."""
    return next(
        (a.value for a in call.args if a.keyword is not None and a.keyword.value == "enabled"),
        None,
    )


def _other_autocast(model: ModuleModel) -> bool:
    """An autocast this rule cannot prove bfloat16 outside ``with`` statements: a
    ``@torch.autocast(...)`` decorator, ``stack.enter_context(torch.autocast(...))``, or
    autocast itself handed to other code (``Trainer(autocast=torch.autocast)``)."""
    for call in model.index.calls:
        if model.is_dead(call) or under_no_grad(model, call):
            continue
        callee = model.evaluator.evaluate(call.func)
        if any(isinstance(v, SymbolValue) and v.symbol in AUTOCAST_SYMBOLS for v in callee):
            for value in model.evaluator.evaluate(call):
                if (
                    isinstance(value, AutocastRegion)
                    and value.may_be_enabled
                    and value.dtype != "bfloat16"
                ):
                    return True
            continue
        if any(isinstance(v, SymbolValue) and v.symbol is Symbol.PARTIAL for v in callee):
            continue  # judged where the partial is called
        for arg in call.args:
            if any(
                isinstance(v, SymbolValue) and v.symbol in AUTOCAST_SYMBOLS
                for v in model.evaluator.evaluate(arg.value)
            ):
                return True
    return False


def _trains(model: ModuleModel, with_node: cst.With) -> bool:
    function = model.index.enclosing_function(with_node)
    unit = function.body if function is not None else model.module
    return any(model.runs_backward(call) for call in model.transitive_calls(unit))


def _dtype_expr(model: ModuleModel, call: cst.Call) -> cst.BaseExpression | None:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == "dtype":
            return arg.value
    positional = [a.value for a in call.args if a.keyword is None and not a.star]
    symbols = model.evaluator.symbols(call.func)
    if Symbol.AUTOCAST in symbols and len(positional) > 1:
        return positional[1]
    return None


def _disable(
    model: ModuleModel, construction: ScalerConstruction, training: list[cst.Call]
) -> FixPlan | None:
    call = construction.call
    enabled_arg = next(
        (a for a in call.args if a.keyword is not None and a.keyword.value == "enabled"), None
    )
    positional = [a for a in call.args if a.keyword is None]
    limit = (
        5 if construction.instance.symbol in (Symbol.GRAD_SCALER, Symbol.SHARDED_GRAD_SCALER) else 4
    )
    if enabled_arg is None and (len(positional) > limit or any(a.star for a in call.args)):
        return None
    variable = _shared_dtype_variable(model, construction, training)
    if variable is not None:
        value = cst.parse_expression(f"({variable} == torch.float16)")
        message = f"Enable the GradScaler only when `{variable}` is float16"
        applicability = "safe"
    else:
        value = cst.Name("False")
        message = "Disable the GradScaler"
        applicability = "unsafe"
    if enabled_arg is not None:
        new_args = [a.with_changes(value=value) if a is enabled_arg else a for a in call.args]
    else:
        no_space = cst.SimpleWhitespace("")
        argument = cst.Arg(
            value=value,
            keyword=cst.Name("enabled"),
            equal=cst.AssignEqual(whitespace_before=no_space, whitespace_after=no_space),
        )
        args = list(call.args)
        if args and not isinstance(args[-1].comma, cst.Comma):
            args[-1] = args[-1].with_changes(
                comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
            )
        new_args = [*args, argument]
    return FixPlan(message, {call: call.with_changes(args=new_args)}, applicability)


def _shared_dtype_variable(
    model: ModuleModel, construction: ScalerConstruction, training: list[cst.Call]
) -> str | None:
    """The variable every training region takes its dtype from, when the scaler can read it
    too: assigned once, before the scaler, in the same block; and ``torch`` is the module."""
    texts = set()
    for region_call in training:
        expr = _dtype_expr(model, region_call)
        if expr is None or dotted_name(expr) is None:
            return None
        texts.add((dotted_name(expr), _bindings_at(model, expr)))
    if len(texts) != 1:
        return None
    ((name, bindings),) = texts
    if bindings is None or len(bindings) != 1 or bindings[0].node is None:
        return None
    torch = model.index.module_scope.bindings.get("torch", [])
    if not torch or not all(
        b.kind is BindingKind.IMPORT and b.qualified_name == "torch" for b in torch
    ):
        return None
    statement = construction.statement
    reference = cst.parse_expression(name)
    at_scaler = _bindings_at(model, reference, construction.call)
    if statement is None or at_scaler is None or at_scaler != bindings:
        return None
    definition = model.index.statement_of(bindings[0].node)
    block = model.index.parent(statement)
    if definition is None or model.index.parent(definition) is not block:
        return None
    assert isinstance(block, (cst.IndentedBlock, cst.Module))
    order = list(block.body)
    if order.index(definition) > order.index(statement):  # type: ignore[arg-type]
        return None
    return name


def _bindings_at(
    model: ModuleModel, expr: cst.BaseExpression, where: cst.CSTNode | None = None
) -> tuple[Binding, ...] | None:
    """The bindings a ``name`` / ``self.attr`` refers to at ``where`` (default: itself)."""
    where = where or expr
    if isinstance(expr, cst.Name):
        return tuple(model.index.scope_of(where).lookup(expr.value))
    if (
        isinstance(expr, cst.Attribute)
        and isinstance(expr.value, cst.Name)
        and expr.value.value == "self"
    ):
        info = model.index.enclosing_class(where)
        if info is None:
            return None
        return tuple(info.attributes.get(expr.attr.value, ()))
    return None
