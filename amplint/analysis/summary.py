"""What the other modules of a project may ask about one module: a small, serialisable summary.

A rule in ``train.py`` that meets ``optimizer, scaler = init_opt()`` needs one fact of
``helper.py``: ``init_opt`` returns a GradScaler in position 1. The summary holds such facts
and nothing else, as plain JSON-able data, so it can be kept and compared cheaply:

- module-level names whose values are known (a GradScaler, a dtype, an autocast factory);
- for each module-level function, what it returns (whole, or per tuple position), and
  whether it checkpoints an optimizer's state without any GradScaler's state (save or load);
- for each class, whether it is a GradScaler subclass (else its instances are not scalers);
- the module's imports, so that re-exports (``__init__.py``) can be followed.

A *fact* is a tuple: ``("scaler", symbol, enabled, device, line, shared)``, ``("none",)``,
``("null",)`` (a null context), ``("null-factory",)`` (a class making them), ``("factory",
device, dtype, enabled)`` (an autocast factory), ``("dtype", name)``, ``("autocast", device,
dtype, enabled, line, switch)`` (``switch``: where a caller decides ``enabled``, see
:func:`~amplint.analysis.values.enabled_switch`), ``("optimizer",)``, ``("object",)`` (an
instance of a class of that module that is no GradScaler). A value with any possibility the
analysis cannot name gets no facts at all: the importing module then knows nothing about
it, as before.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

import libcst as cst

from amplint.analysis.checkpoints import (
    dict_handed_to_saving_helper,
    forwards_first_argument_to_save,
    is_torch_save,
    mentions_scaler,
)
from amplint.analysis.model import (
    ModuleModel,
    calls_in,
    mapping_extended,
    method_name,
    receiver,
    walk_body,
)
from amplint.analysis.scopes import BindingKind, Scope
from amplint.analysis.symbols import AUTOCAST_SYMBOLS, DTYPE_NAMES, SCALER_SYMBOLS, Symbol
from amplint.analysis.values import (
    AutocastRegion,
    NoneValue,
    NullContext,
    OptimizerInstance,
    ScalerInstance,
    SymbolValue,
    Value,
    enabled_switch,
    walk_function_body,
)

Fact = tuple[Any, ...]
Facts = tuple[Fact, ...]

#: Words without which a module holds no fact a rule asks about (imports aside), in lower
#: case: a substring test of the lowered bytes is many times faster than a regex. A
#: checkpoint helper may only hand its ``optimizer.state_dict()`` to a saving helper.
_AMP_WORDS = (
    b"scaler",
    b"autocast",
    b"float16",
    b".half",
    b"torch.save",
    b"state_dict(",
    # a helper that runs the backward pass (AMP001 through a call of it inside autocast)
    b".backward(",
    b"autograd.grad(",
)


def has_amp_words(data: bytes) -> bool:
    lowered = data.lower()
    return any(word in lowered for word in _AMP_WORDS)


@dataclass
class FunctionSummary:
    #: positional parameter names, in order (``self`` included for methods; only module
    #: functions are summarised).
    params: tuple[str, ...] = ()
    #: what a call returns, as a whole (None: unknown).
    returns: Facts | None = None
    #: what each position of a returned tuple holds, where every ``return`` agrees.
    items: dict[int, Facts] = field(default_factory=dict)
    #: line of a ``torch.save`` of an optimizer's state with no GradScaler state anywhere in
    #: the function; None when there is none (or the function may save a scaler's state).
    saves_without_scaler: int | None = None
    #: likewise for ``optimizer.load_state_dict(...)`` with no scaler restored.
    restores_without_scaler: int | None = None
    #: it hands its first argument to ``torch.save`` unchanged (``save_on_master``).
    saves_first_argument: bool = False
    #: a call runs a backward pass (its own, or a helper's of its module).
    runs_backward: bool = False
    #: ... one that an autocast region around the call covers (not inside a region the
    #: function turns off itself).
    runs_backward_under_autocast: bool = False


@dataclass
class ModuleSummary:
    #: the module's path as shown to users (for messages: "built in helper.py:4").
    path: str = ""
    names: dict[str, Facts] = field(default_factory=dict)
    functions: dict[str, FunctionSummary] = field(default_factory=dict)
    #: class name -> whether it is a GradScaler subclass.
    classes: dict[str, bool] = field(default_factory=dict)
    #: local name -> (level, module, name or None): ``from ..a import b as c`` is
    #: ``c: (2, "a", "b")``; ``import a.b as c`` is ``c: (0, "a.b", None)``.
    imports: dict[str, tuple[int, str, str | None]] = field(default_factory=dict)
    #: the module trains with a GradScaler itself (its own checks report its checkpoints).
    scales_losses: bool = False
    #: classes whose instances, called, run a backward pass that an autocast region around
    #: the call covers (timm's and MAE's ``NativeScaler``: ``loss_scaler(loss, optimizer)``).
    backward_on_call: list[str] = field(default_factory=list)

    def makes_autocast(self, names: set[str] | None = None) -> bool:
        """Whether a name or function of the module (of ``names``, when given) hands out an
        autocast region or an autocast factory (what an importing module's ``with`` may
        enter)."""
        facts = [v for k, v in self.names.items() if names is None or k in names]
        for name, function in self.functions.items():
            if names is not None and name not in names:
                continue
            facts.extend(function.items.values())
            if function.returns is not None:
                facts.append(function.returns)
        return any(fact[0] in ("autocast", "factory") for group in facts for fact in group)

    def runs_backward(self, names: set[str] | None = None) -> bool:
        """Whether a function of the module (of ``names``, when given), or an instance of
        one of its classes when called, runs a backward pass."""
        return any(
            function.runs_backward
            for name, function in self.functions.items()
            if names is None or name in names
        ) or any(names is None or name in names for name in self.backward_on_call)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "names": {k: [list(f) for f in v] for k, v in self.names.items()},
            "functions": {
                name: {
                    "params": list(f.params),
                    "returns": None if f.returns is None else [list(x) for x in f.returns],
                    "items": {str(k): [list(x) for x in v] for k, v in f.items.items()},
                    "saves_without_scaler": f.saves_without_scaler,
                    "restores_without_scaler": f.restores_without_scaler,
                    "runs_backward": f.runs_backward,
                    "runs_backward_under_autocast": f.runs_backward_under_autocast,
                    "saves_first_argument": f.saves_first_argument,
                }
                for name, f in self.functions.items()
            },
            "classes": dict(self.classes),
            "imports": {k: list(v) for k, v in self.imports.items()},
            "scales_losses": self.scales_losses,
            "backward_on_call": list(self.backward_on_call),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModuleSummary:
        def facts(raw: list[list[Any]]) -> Facts:
            return tuple(tuple(x) for x in raw)

        return cls(
            path=data["path"],
            names={k: facts(v) for k, v in data["names"].items()},
            functions={
                name: FunctionSummary(
                    tuple(f["params"]),
                    None if f["returns"] is None else facts(f["returns"]),
                    {int(k): facts(v) for k, v in f["items"].items()},
                    f["saves_without_scaler"],
                    f["restores_without_scaler"],
                    f.get("saves_first_argument", False),
                    f.get("runs_backward", False),
                    f.get("runs_backward_under_autocast", False),
                )
                for name, f in data["functions"].items()
            },
            classes=dict(data["classes"]),
            imports={k: (v[0], v[1], v[2]) for k, v in data["imports"].items()},
            scales_losses=data["scales_losses"],
            backward_on_call=list(data.get("backward_on_call", [])),
        )


# -- imports (CPython's ast: cheap, and enough for modules with no AMP words) ----------------


def module_imports(tree: ast.Module) -> dict[str, tuple[int, str, str | None]]:
    """Names bound by the module's top-level imports (under ``if``/``try`` too)."""
    found: dict[str, tuple[int, str, str | None]] = {}
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    found[alias.asname] = (0, alias.name, None)
                else:
                    top = alias.name.split(".")[0]
                    found[top] = (0, top, None)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name != "*":
                    found[alias.asname or alias.name] = (node.level, node.module or "", alias.name)
        elif isinstance(node, (ast.If, ast.Try)):
            pending.extend(node.body)
            pending.extend(node.orelse)
            if isinstance(node, ast.Try):
                pending.extend(node.finalbody)
                for handler in node.handlers:
                    pending.extend(handler.body)
    return found


# -- the facts of a parsed module ----------------------------------------------------------------


def summarise(
    model: ModuleModel, path: str, imports: dict[str, tuple[int, str, str | None]]
) -> ModuleSummary:
    """The summary of one module, from its model (built once, by whoever imports it)."""
    from amplint.analysis.lifecycle import scales_losses

    summary = ModuleSummary(path=path, imports=imports)
    index = model.index
    for name, info in index.class_by_name.items():
        if index.module_scope.bindings.get(name, []) and all(
            b.kind is BindingKind.CLASS for b in index.module_scope.bindings[name]
        ):
            summary.classes[name] = any(
                model.evaluator.symbols(base.value) & SCALER_SYMBOLS for base in info.node.bases
            )
            call = info.methods.get("__call__")
            if call is not None and model.function_runs_backward_under_autocast(call):
                summary.backward_on_call.append(name)
    for name, bindings in index.module_scope.bindings.items():
        if bindings and all(b.kind is BindingKind.ASSIGN and b.node is not None for b in bindings):
            found: list[Fact] = []
            for binding in bindings:
                facts = _facts(model, binding.node, index.module_scope, shared=True)  # type: ignore[arg-type]
                if facts is None:
                    break
                found.extend(facts)
            else:
                if found and any(f[0] != "none" for f in found):
                    summary.names[name] = tuple(dict.fromkeys(found))
    for name, function in index.module_functions.items():
        if len(index.module_scope.bindings.get(name, [])) != 1:
            continue  # redefined, or also assigned: which one runs is not known
        summary.functions[name] = _function_summary(model, function)
    summary.scales_losses = scales_losses(model)
    return summary


def _function_summary(model: ModuleModel, function: cst.FunctionDef) -> FunctionSummary:
    params = tuple(p.name.value for p in (*function.params.posonly_params, *function.params.params))
    result = FunctionSummary(params=params)
    scope = model.index.functions[function]
    if any(
        model.evaluator.is_symbol(d.decorator, Symbol.CONTEXTMANAGER) for d in function.decorators
    ):
        values = model.evaluator.evaluate(cst.Call(func=function.name), scope)
        result.returns = _from_values(model, values, shared=False)
    else:
        returns = [
            node.value
            for node in walk_function_body(function)
            if type(node) is cst.Return and node.value is not None  # type: ignore[attr-defined]
        ]
        if returns and not _is_generator(function):
            _returns(model, returns, scope, result)
    result.saves_without_scaler = _saves_without_scaler(model, function)
    result.restores_without_scaler = _restores_without_scaler(model, function)
    result.saves_first_argument = forwards_first_argument_to_save(model, function)
    result.runs_backward = model.function_runs_backward(function)
    result.runs_backward_under_autocast = model.function_runs_backward_under_autocast(function)
    return result


def _is_generator(function: cst.FunctionDef) -> bool:
    return any(type(node) is cst.Yield for node in walk_function_body(function))


def _returns(
    model: ModuleModel, returns: list[cst.BaseExpression], scope: Scope, result: FunctionSummary
) -> None:
    tuples = [r for r in returns if isinstance(r, cst.Tuple)]
    if len(tuples) == len(returns):
        sizes = {len(t.elements) for t in tuples}
        if len(sizes) != 1 or any(
            isinstance(e, cst.StarredElement) for t in tuples for e in t.elements
        ):
            return
        for position in range(sizes.pop()):
            found: list[Fact] = []
            for returned in tuples:
                facts = _facts(model, returned.elements[position].value, scope, shared=False)
                if facts is None:
                    break
                found.extend(facts)
            else:
                result.items[position] = tuple(dict.fromkeys(found))
        return
    if tuples:
        return
    found = []
    for returned in returns:
        facts = _facts(model, returned, scope, shared=False)
        if facts is None:
            return
        found.extend(facts)
    result.returns = tuple(dict.fromkeys(found))


def _facts(
    model: ModuleModel, expr: cst.BaseExpression, scope: Scope, *, shared: bool
) -> Facts | None:
    """What ``expr`` is, as facts; None when any possibility is unknown."""
    instance = _local_class_instance(model, expr, scope)
    if instance is not None:
        return (instance,)
    if isinstance(expr, cst.Name) and expr.value != "None":
        # A module-level object returned by a function stays reachable from its module.
        bindings = scope.lookup(expr.value)
        shared = shared or any(b.scope is model.index.module_scope for b in bindings)
    return _from_values(model, model.evaluator.evaluate(expr, scope), shared=shared)


def _local_class_instance(
    model: ModuleModel, expr: cst.BaseExpression, scope: Scope
) -> Fact | None:
    """``Wrapper(...)`` of a class this module defines (directly, or through one name)."""
    if isinstance(expr, cst.Name):
        bindings = scope.lookup(expr.value)
        if len(bindings) != 1 or bindings[0].kind is not BindingKind.ASSIGN:
            return None
        expr = bindings[0].node  # type: ignore[assignment]
        scope = bindings[0].scope or scope
    if not isinstance(expr, cst.Call) or not isinstance(expr.func, cst.Name):
        return None
    bindings = scope.lookup(expr.func.value)
    if len(bindings) != 1 or bindings[0].kind is not BindingKind.CLASS:
        return None
    info = model.index.classes.get(bindings[0].node)  # type: ignore[arg-type]
    if info is None:
        return None
    if any(model.evaluator.symbols(base.value) & SCALER_SYMBOLS for base in info.node.bases):
        return ("scaler", Symbol.GRAD_SCALER.value, None, None, _line(model, expr), False)
    return ("object",)


def _from_values(model: ModuleModel, values: frozenset[Value], *, shared: bool) -> Facts | None:
    found: list[Fact] = []
    for value in values:
        if isinstance(value, ScalerInstance):
            if value.origin is not None:
                return None  # another module's: its own summary answers for it
            enabled = value.enabled
            if enabled is True and _built_for_float16_only(model, value.call):
                enabled = None  # built for float16 only, whatever this module's regions say
            found.append(
                (
                    "scaler",
                    value.symbol.value,
                    enabled,
                    value.device,
                    _line(model, value.call),
                    shared,
                )
            )
        elif isinstance(value, AutocastRegion):
            if value.origin is not None:
                return None
            switch = enabled_switch(model.index, value) if value.enabled is None else None
            found.append(
                (
                    "autocast",
                    value.device,
                    value.dtype,
                    value.enabled,
                    _line(model, value.call),
                    switch,
                )
            )
        elif isinstance(value, NoneValue):
            found.append(("none",))
        elif isinstance(value, NullContext):
            found.append(("null",))
        elif isinstance(value, OptimizerInstance):
            found.append(("optimizer",))
        elif isinstance(value, SymbolValue) and value.symbol in DTYPE_NAMES and not value.bound:
            found.append(("dtype", DTYPE_NAMES[value.symbol]))
        elif isinstance(value, SymbolValue) and value.symbol in AUTOCAST_SYMBOLS:
            # `amp = partial(torch.autocast, "cuda", dtype=torch.bfloat16)`: a factory; what a
            # call of it makes is decided as a call with no arguments of its own.
            stand_in = cst.Call(func=cst.Name("autocast"))
            region = model.evaluator._autocast_region(value, stand_in, model.index.module_scope)
            if not isinstance(region, AutocastRegion):
                return None
            found.append(("factory", region.device, region.dtype, region.enabled))
        elif isinstance(value, SymbolValue) and value.symbol is Symbol.NULL_CONTEXT:
            # `return contextlib.suppress` (or `nullcontext`) beside an autocast factory: a
            # factory of contexts that do nothing (open_clip's `get_autocast`).
            found.append(("null-factory",))
        else:
            return None
    return tuple(found) if found else None


def _built_for_float16_only(model: ModuleModel, node: cst.CSTNode) -> bool:
    from amplint.analysis.lifecycle import built_for_float16_only  # imports this module

    return built_for_float16_only(model, node)


def _line(model: ModuleModel, node: cst.CSTNode, within: cst.FunctionDef | None = None) -> int:
    """The 1-based line of ``node`` (for messages): where its text first occurs (after the
    header of the module function ``within``, when given: two helpers may restore the
    optimizer with the same line), as no position metadata is computed (that would copy
    the whole tree)."""
    try:
        # Its first line only: continuation lines inside brackets are printed without the
        # block's indentation.
        code = model.module.code_for_node(node).split("\n", 1)[0]
    except Exception:  # a stand-in node outside the tree
        return 0
    origin = 0
    if within is not None:
        header = re.compile(rf"^(?:async[ \t]+)?def[ \t]+{re.escape(within.name.value)}\b", re.M)
        match = header.search(model.text)
        origin = match.start() if match is not None else 0
    start = model.text.find(code, origin) if code.strip() else -1
    return model.text.count("\n", 0, start) + 1 if start >= 0 else 0


# -- checkpoint helpers ------------------------------------------------------------------------


def _saves_without_scaler(model: ModuleModel, function: cst.FunctionDef) -> int | None:
    """A ``torch.save`` of a dict literal holding an optimizer's state and, surely, no
    scaler's: every key a plain string, no ``**``, no scaler anywhere in the function. A
    dict handed to a saving helper of the module (a save behind a temporary file) counts as
    saved by the function."""
    # (where it is said: the call, or the handed dict, whose first line names no helper's
    # `def`; the dict saved)
    saves: list[tuple[cst.CSTNode, cst.Dict | None]] = []
    for call in calls_in(function.body):
        if is_torch_save(model, call):
            saves.append((call, _saved_dict(model, call)))
        elif (handed := dict_handed_to_saving_helper(model, call)) is not None:
            saves.append((handed, handed))
    if not saves or mentions_scaler(function.body):
        return None
    for where, mapping in saves:
        if mapping is None:
            continue
        if any(
            isinstance(e, cst.StarredDictElement) or not isinstance(e.key, cst.SimpleString)
            for e in mapping.elements
        ):
            continue
        if _holds_optimizer_state(model, mapping):
            return _line(model, where, function)
    return None


def _saved_dict(model: ModuleModel, call: cst.Call) -> cst.Dict | None:
    value = call.args[0].value
    if isinstance(value, cst.Dict):
        return value
    if isinstance(value, cst.Name):
        bindings = model.index.scope_of(value).lookup(value.value)
        if len(bindings) == 1 and isinstance(bindings[0].node, cst.Dict):
            function = model.index.enclosing_function(call)
            if function is not None and mapping_extended(walk_body(function.body), value.value):
                return None
            return bindings[0].node
    return None


def _holds_optimizer_state(model: ModuleModel, mapping: cst.Dict) -> bool:
    for element in mapping.elements:
        value = element.value
        if isinstance(value, cst.Call) and method_name(value) == "state_dict":
            target = receiver(value)
            if target is not None and model.is_optimizer(target):
                return True
    return False


def _restores_without_scaler(model: ModuleModel, function: cst.FunctionDef) -> int | None:
    if mentions_scaler(function.body):
        return None
    for call in calls_in(function.body):
        target = receiver(call)
        if (
            method_name(call) == "load_state_dict"
            and target is not None
            and call.args
            and isinstance(call.args[0].value, cst.Subscript)
            and model.is_optimizer(target)
        ):
            return _line(model, call, function)
    return None
