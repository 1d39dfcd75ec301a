"""Where a module's GradScalers are born, what they live through, and what trains.

Shared by the scaler lifecycle rules (AMP009, AMP010, AMP012, AMP013, AMP014). Results that
need a walk over the whole module are computed once per :class:`ModuleModel` and kept in a
weak cache, so several rules asking the same question cost one walk.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass

import libcst as cst

from amplint.analysis.model import ModuleModel, method_name, receiver
from amplint.analysis.scalers import scaler_like
from amplint.analysis.scopes import dotted_name
from amplint.analysis.steps import Condition, normalise
from amplint.analysis.symbols import SCALER_SYMBOLS, Symbol
from amplint.analysis.values import ScalerInstance, SymbolValue

_NESTED_SCOPES = (cst.FunctionDef, cst.ClassDef, cst.Lambda)
_DTYPE_TEST = re.compile(r"16|half|dtype|precision", re.IGNORECASE)
_BFLOAT16 = re.compile(r"bf16|bfloat16", re.IGNORECASE)
_FLOAT16 = re.compile(r"(?<![bB])(fp16|float16)|half", re.IGNORECASE)


@dataclass(frozen=True)
class ScalerConstruction:
    """One ``GradScaler(...)`` call of the module."""

    call: cst.Call
    instance: ScalerInstance
    #: ``scaler`` / ``self.scaler`` when the call is the whole right side of an assignment.
    target: str | None
    #: the assignment statement (``scaler = GradScaler()``), when there is one.
    statement: cst.SimpleStatementLine | None


_CONSTRUCTIONS: weakref.WeakKeyDictionary[ModuleModel, list[ScalerConstruction]] = (
    weakref.WeakKeyDictionary()
)


def scaler_constructions(model: ModuleModel) -> list[ScalerConstruction]:
    """Every call of a GradScaler class (any spelling, alias or ``partial``) in the module."""
    cached = _CONSTRUCTIONS.get(model)
    if cached is not None:
        return cached
    found = []
    for call in model.index.calls:
        if not isinstance(call.func, (cst.Name, cst.Attribute)) or not any(
            isinstance(v, SymbolValue) and v.symbol in SCALER_SYMBOLS
            for v in model.evaluator.evaluate(call.func)
        ):
            continue
        instances = [
            v
            for v in model.evaluator.evaluate(call)
            if isinstance(v, ScalerInstance) and v.call is call
        ]
        if not instances:
            continue
        target, statement = _assignment_of(model, call)
        found.append(ScalerConstruction(call, instances[0], target, statement))
    _CONSTRUCTIONS[model] = found
    return found


def _assignment_of(
    model: ModuleModel, call: cst.Call
) -> tuple[str | None, cst.SimpleStatementLine | None]:
    parent = model.index.parent(call)
    if isinstance(parent, cst.Assign) and len(parent.targets) == 1:
        line = model.index.parent(parent)
        statement = (
            line if isinstance(line, cst.SimpleStatementLine) and len(line.body) == 1 else None
        )
        return dotted_name(parent.targets[0].target), statement
    return None, None


def may_be_enabled(construction: ScalerConstruction) -> bool:
    return construction.instance.enabled is not False


def uses_gradscaler(model: ModuleModel) -> bool:
    """The module constructs a GradScaler that may be on, or scales a loss with one."""
    if any(may_be_enabled(c) for c in scaler_constructions(model)):
        return True
    for call in model.index.calls:
        target = receiver(call)
        if method_name(call) not in ("scale", "unscale_") or not scaler_like(model, target):
            continue
        assert target is not None
        instances = model.scaler_instances(target)
        if not instances or any(i.enabled is not False for i in instances):
            return True
    return False


def scales_losses(model: ModuleModel) -> bool:
    """A GradScaler that may be on actually serves training here: it scales, unscales or
    steps, or it is handed to a function (a train loop elsewhere) that may."""
    for call in model.index.calls:
        target = receiver(call)
        if method_name(call) in ("scale", "unscale_", "step") and scaler_like(model, target):
            assert target is not None
            instances = model.scaler_instances(target)
            if not instances or any(i.enabled is not False for i in instances):
                return True
        for arg in call.args:
            if any(i.enabled is not False for i in model.scaler_instances(arg.value)):
                return True
    return False


def under_no_grad(model: ModuleModel, node: cst.CSTNode) -> bool:
    """Inside ``with torch.no_grad()``/``inference_mode()`` or a function decorated by them."""
    for ancestor in model.index.ancestors(node):
        if isinstance(ancestor, cst.With):
            for item in ancestor.items:
                expr = item.item.func if isinstance(item.item, cst.Call) else item.item
                if model.evaluator.is_symbol(expr, Symbol.NO_GRAD):
                    return True
        if isinstance(ancestor, cst.FunctionDef):
            for decorator in ancestor.decorators:
                expr = decorator.decorator
                expr = expr.func if isinstance(expr, cst.Call) else expr
                if model.evaluator.is_symbol(expr, Symbol.NO_GRAD):
                    return True
    return False


def is_step_call(model: ModuleModel, call: cst.Call) -> bool:
    """``optimizer.step()`` or ``scaler.step(optimizer)``."""
    if model.is_optimizer_step(call):
        return True
    return method_name(call) == "step" and bool(call.args) and scaler_like(model, receiver(call))


def runs_training(model: ModuleModel, node: cst.CSTNode) -> bool:
    """Whether ``node`` (a loop, a body) runs a backward pass or an optimizer step, itself or
    through helpers of the module."""
    return any(
        model.runs_backward(call) or is_step_call(model, call)
        for call in model.transitive_calls(node)
    )


def unit_of(model: ModuleModel, node: cst.CSTNode) -> cst.CSTNode:
    """The function body (or module) ``node`` runs in."""
    function = model.index.enclosing_function(node)
    return function.body if function is not None else model.module


def loop_runs_training_directly(model: ModuleModel, loop: cst.For | cst.While) -> bool:
    """The loop is one training iteration: it trains, and not only through an inner loop
    (an epoch loop around a batch loop trains only through the batch loop)."""
    outer = set(model.index.ancestors(loop))
    for call in model.transitive_calls(loop):
        if not (model.runs_backward(call) or is_step_call(model, call)):
            continue
        # A loop of its own around the call (nested in this one, or in a helper it calls)
        # makes this one an outer loop, unless it is a loop over several optimizers.
        inner = [
            other
            for other in model.enclosing_loops(call)
            if other is not loop and other not in outer and _trains_as_loop(model, other)
        ]
        if not inner:
            return True
    return False


def _trains_as_loop(model: ModuleModel, loop: cst.For | cst.While) -> bool:
    """Whether a loop runs a backward pass (a loop over batches), not only optimizer steps
    (a loop over several optimizers inside one iteration)."""
    return any(model.runs_backward(call) for call in model.transitive_calls(loop))


def names_in(node: cst.CSTNode) -> set[str]:
    """Every identifier read or written under ``node`` (nested scopes included)."""
    names: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, cst.Name):
            names.add(current.value)
        stack.extend(current.children)
    return names


def bound_in(node: cst.CSTNode) -> set[str]:
    """Names (and ``self.x`` keys) assigned under ``node``: loop targets, assignments, ``as``."""
    bound: set[str] = set()

    def add(target: cst.BaseExpression) -> None:
        if isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                inner = element.value
                add(inner.value if isinstance(inner, cst.StarredElement) else inner)
            return
        key = dotted_name(target)
        if key is not None:
            bound.add(key)

    stack: list[cst.CSTNode] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, cst.For):
            add(current.target)
        elif isinstance(current, cst.Assign):
            for target in current.targets:
                add(target.target)
        elif isinstance(current, (cst.AnnAssign, cst.AugAssign, cst.NamedExpr)):
            add(current.target)
        elif isinstance(current, cst.WithItem) and current.asname is not None:
            add(current.asname.name)
        elif isinstance(current, cst.CompFor):
            add(current.target)
        stack.extend(current.children)
    return bound


def references_in(node: cst.CSTNode) -> set[str]:
    """Names and dotted names (``self.device``) that occur under ``node``."""
    found: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, (cst.Name, cst.Attribute)):
            key = dotted_name(current)
            if key is not None:
                found.add(key)
        stack.extend(current.children)
    return found


def guarded_by(model: ModuleModel, node: cst.CSTNode, stop: cst.CSTNode, words: set[str]) -> bool:
    """Whether an ``if`` between ``node`` and ``stop`` tests one of ``words`` (a lazy
    ``if self.scaler is None:`` / ``if not hasattr(self, "scaler"):`` initialisation)."""
    for ancestor in model.index.ancestors(node):
        if ancestor is stop:
            return False
        if isinstance(ancestor, (cst.If, cst.IfExp)):
            text = model.module.code_for_node(ancestor.test).lower()
            if any(word.lower() in text for word in words):
                return True
    return False


# -- which scalers a statement works with, and when they are on ------------------------------


def conditions_around(
    model: ModuleModel, node: cst.CSTNode, stop: cst.CSTNode | None = None
) -> tuple[Condition, ...]:
    """The branches of ``if`` statements and conditional expressions ``node`` sits in, up to
    ``stop`` or its function, normalised (``if not x`` is the false branch of ``if x``)."""
    found: list[Condition] = []
    child = node
    for ancestor in model.index.ancestors(node):
        if ancestor is stop or isinstance(ancestor, _NESTED_SCOPES):
            break
        if isinstance(ancestor, (cst.If, cst.IfExp)) and child is not ancestor.test:
            condition = normalise(model, ancestor.test)
            if child is ancestor.body:
                found.append(condition)
            else:
                found.append(condition.other_branch())
        child = ancestor
    return tuple(found)


def enabling_conditions(
    model: ModuleModel, construction: ScalerConstruction
) -> tuple[Condition, ...]:
    """What must hold for the scaler to exist and be on: the branches its construction sits
    in, and its ``enabled=`` test when that is decided at run time."""
    conditions = conditions_around(model, construction.call)
    if construction.instance.enabled is not None:
        return conditions
    expr = _enabled_expr(construction)
    if expr is None:
        # `**kwargs`, a partial: something decides, and we cannot say what.
        return (*conditions, Condition("<unknown enabled>", True))
    return (*conditions, normalise(model, expr))


def _enabled_expr(construction: ScalerConstruction) -> cst.BaseExpression | None:
    call = construction.call
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == "enabled":
            return arg.value
    device_first = construction.instance.symbol in (
        Symbol.GRAD_SCALER,
        Symbol.SHARDED_GRAD_SCALER,
    )
    positional = [a.value for a in call.args if a.keyword is None and not a.star]
    position = 5 if device_first else 4
    return positional[position] if len(positional) > position else None


@dataclass(frozen=True)
class ScalerReach:
    """The GradScalers the code around a statement trains with."""

    constructions: tuple[ScalerConstruction, ...]
    #: a scaler the module does not build (a parameter, an attribute set elsewhere) is used.
    opaque: bool


def scalers_reaching(model: ModuleModel, node: cst.CSTNode) -> ScalerReach:
    """The scalers that the function around ``node`` (plus those its class keeps on ``self``;
    the module's top-level code for a top-level statement) builds, uses or hands on,
    following calls into helpers of the module."""
    function = model.index.enclosing_function(node)
    root = function.body if function is not None else model.module
    memo = _REACH.setdefault(model, {})
    reach = memo.get(root)
    if reach is None:
        by_call = {c.call: c for c in scaler_constructions(model)}
        reach = memo[root] = scalers_reaching_roots(model, [root], by_call)
    owner = model.index.enclosing_class(node)
    if function is None or owner is None:
        return reach
    # A scaler kept on `self` (built in `__init__`, used in `train_step`) serves every
    # method; a local scaler of another method (another test of a large test class) does not.
    kept = tuple(
        c
        for c in scaler_constructions(model)
        if c.target is not None
        and c.target.startswith("self.")
        and model.index.enclosing_class(c.call) is owner
        and may_be_enabled(c)
    )
    merged = {c.call: c for c in (*reach.constructions, *kept)}
    return ScalerReach(tuple(merged.values()), reach.opaque)


_REACH: weakref.WeakKeyDictionary[ModuleModel, dict[cst.CSTNode, ScalerReach]] = (
    weakref.WeakKeyDictionary()
)


def scalers_reaching_roots(
    model: ModuleModel, roots: list[cst.CSTNode], by_call: dict[cst.Call, ScalerConstruction]
) -> ScalerReach:
    found: dict[cst.Call, ScalerConstruction] = {}
    opaque = False
    for root in roots:
        for call in model.transitive_calls(root):
            if call in by_call:
                found[call] = by_call[call]
            exprs: list[cst.BaseExpression] = [arg.value for arg in call.args]
            if method_name(call) in ("scale", "unscale_", "step", "update"):
                target = receiver(call)
                if target is not None:
                    exprs.append(target)
            for expr in exprs:
                if not scaler_like(model, expr):
                    continue
                instances = model.scaler_instances(expr)
                for instance in instances:
                    if instance.call in by_call:
                        found[instance.call] = by_call[instance.call]
                # One another module of the project built is not in `by_call`: as opaque
                # as a parameter.
                if not instances or any(
                    i.origin is not None and i.enabled is not False for i in instances
                ):
                    opaque = True
    return ScalerReach(
        tuple(c for c in found.values() if may_be_enabled(c)),
        opaque,
    )


def surely_scaled(model: ModuleModel, node: cst.CSTNode) -> bool:
    """Whether a GradScaler that is on whenever ``node`` runs trains the code around it.

    A scaler built under another flag than the one ``node`` runs under (``if args.half:
    model.half()`` next to ``GradScaler(enabled=args.amp)``), or in the other branch of the
    same test, does not count: the analysis cannot tell that both are on together.
    """
    reach = scalers_reaching(model, node)
    where = set(conditions_around(model, node))
    for construction in reach.constructions:
        needs = enabling_conditions(model, construction)
        if any(Condition(c.key, not c.branch) in where for c in needs):
            continue  # the other branch of the test `node` runs under
        if set(needs) <= where:
            return True
    return reach.opaque and not where and not reach.constructions


def built_for_float16_only(model: ModuleModel, node: cst.CSTNode) -> bool:
    """``node`` (a GradScaler's construction) runs only under a precision test (``if
    args.precision == "fp16":``): whoever wrote it meant the scaler for float16, whatever
    the autocast regions around say. Not so a test that picks bfloat16 (``GradScaler() if
    use_bfloat16 else None``): that scaler is built exactly when the regions are bfloat16."""
    return any(
        _DTYPE_TEST.search(condition.key) and not _picks_bfloat16(condition)
        for condition in conditions_around(model, node)
    )


def _picks_bfloat16(condition: Condition) -> bool:
    """The branch taken is the bfloat16 one: the test names bfloat16 and no float16, and
    holds (``use_bf16``, ``precision == "bf16"``) or, for ``!=`` / ``not in``, fails."""
    key = condition.key
    if not _BFLOAT16.search(key) or _FLOAT16.search(key):
        return False
    negated = "!=" in key or " not in " in key
    return condition.branch != negated


def autocast_off_at(model: ModuleModel, node: cst.CSTNode, with_node: cst.With) -> bool:
    """Whether every autocast the ``with`` enters is off where ``node`` runs, by a branch
    on its own ``enabled=`` flag: ``with autocast(enabled=use_amp):`` around ``if use_amp:
    scaler.scale(loss).backward() else: loss.backward()`` (MONAI's tutorials)."""
    regions = model.autocast_regions(with_node)
    if not regions:
        return False
    branches = conditions_around(model, node, stop=with_node)
    if not branches:
        return False
    for region in regions:
        flag = next(
            (
                arg.value
                for arg in region.call.args
                if arg.keyword and arg.keyword.value == "enabled"
            ),
            None,
        )
        if flag is None or region.origin is not None:
            return False
        on = normalise(model, flag)
        if not any(c.key == on.key and c.branch != on.branch for c in branches):
            return False
    return True
