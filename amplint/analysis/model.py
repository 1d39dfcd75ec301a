"""The questions every rule asks of a module, answered once and the same way for all."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from typing import Literal

import libcst as cst

from amplint.analysis.scalers import FEATURE_SCALER, named_like_scaler
from amplint.analysis.scopes import NESTED_SCOPE_TYPES, ModuleIndex, dotted_name, iter_children
from amplint.analysis.symbols import Symbol
from amplint.analysis.values import (
    AutocastRegion,
    Evaluator,
    ImportedValue,
    ImportLookup,
    NoneValue,
    NullContext,
    OptimizerInstance,
    ScalerInstance,
    SchedulerInstance,
    Unknown,
)

_NESTED_SCOPES = (cst.FunctionDef, cst.ClassDef, cst.Lambda)
_OPTIMIZER_NAME = re.compile(r"(^|_)(opt|optim|optimi[sz]er)s?\d*($|_)|optimi[sz]er", re.IGNORECASE)
_SCHEDULER_NAME = re.compile(r"sched|lr_", re.IGNORECASE)
# Line breaks in a snippet: after an opening bracket, before a closing one (with a magic
# trailing comma), and elsewhere.
_OPEN_BREAK = re.compile(r"([(\[{])[ \t]*\n\s*")
_CLOSE_BREAK = re.compile(r",?[ \t]*\n\s*([)\]}])")
_BREAK = re.compile(r"[ \t]*\n\s*")


AutocastState = Literal["enabled", "disabled"]

#: how deep any analysis follows calls into helpers of the module (a driver calling
#: ``self.backward()`` calling ``self._scale_and_backward()`` ...): deep enough for real
#: trainers, shallow enough that a call graph never costs more than a few walks.
MAX_HELPER_DEPTH = 6


def walk_body(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """Nodes under ``node`` in source order, not entering nested functions/classes/lambdas."""
    stack = [child for child in reversed(list(iter_children(node)))]
    while stack:
        current = stack.pop()
        if type(current) in NESTED_SCOPE_TYPES:
            continue
        yield current
        stack.extend(reversed(list(iter_children(current))))


#: Whether ``name[key] = value`` may put what the caller looks for into the dict.
EntryTest = Callable[[cst.BaseExpression, cst.BaseExpression], bool]


def mapping_extended(
    nodes: Iterable[cst.CSTNode], name: str, adds: EntryTest | None = None
) -> bool:
    """Whether ``nodes`` grow the dict called ``name`` after it was built:
    ``name["x"] = ...``, ``name.update(...)`` or ``name.setdefault(...)``. With ``adds``,
    an item assigned under one key counts only where ``adds(key, value)`` says it may
    matter (``ckpt["model"] = model.state_dict()`` adds no scaler)."""
    for node in nodes:
        if (
            isinstance(node, cst.Call)
            and method_name(node) in ("update", "setdefault")
            and dotted_name(receiver(node) or cst.Name("_")) == name
            and (adds is None or any(adds(key, value) for key, value in _added_items(node)))
        ):
            return True
        if isinstance(node, cst.AnnAssign) and _item_of(node.target, name) is not None:
            return True
        if isinstance(node, cst.Assign):
            for target in node.targets:
                key = _item_of(target.target, name)
                if key is not None and (adds is None or key is True or adds(key, node.value)):
                    return True
    return False


def _added_items(call: cst.Call) -> Iterator[tuple[cst.BaseExpression, cst.BaseExpression]]:
    """(key, value) of what ``d.update(...)`` / ``d.setdefault(...)`` puts in the dict; a
    computed key (an ``Ellipsis``) where it cannot be read: another dict, ``**spread``."""
    unknown = cst.Ellipsis()
    if method_name(call) == "setdefault":
        if call.args and call.args[0].keyword is None and not call.args[0].star:
            value = call.args[1].value if len(call.args) > 1 else cst.Name("None")
            yield call.args[0].value, value
        else:
            yield unknown, unknown
        return
    for arg in call.args:
        if arg.keyword is not None:
            yield cst.SimpleString(repr(arg.keyword.value)), arg.value
        elif not arg.star and isinstance(arg.value, cst.Dict):
            for element in arg.value.elements:
                if isinstance(element, cst.DictElement):
                    yield element.key, element.value
                else:
                    yield unknown, unknown
        else:
            yield unknown, unknown


def _item_of(target: cst.BaseExpression, name: str) -> cst.BaseExpression | bool | None:
    """The key of ``name[key]`` as an assignment target; True for a slice or several
    keys, None when ``target`` is not an item of ``name``."""
    if not isinstance(target, cst.Subscript) or dotted_name(target.value) != name:
        return None
    if len(target.slice) == 1 and isinstance(target.slice[0].slice, cst.Index):
        return target.slice[0].slice.value
    return True


#: Memo of :func:`calls_in` for the file being analysed: a new :class:`ModuleModel` empties
#: it, so that no file's nodes outlive its lint (an LRU cache kept thousands of subtrees of
#: earlier files alive in a worker). Libcst nodes cannot be weakly referenced.
_CALLS: dict[cst.CSTNode, tuple[cst.Call, ...]] = {}


def forget_memos() -> None:
    """Drop the memo of :func:`calls_in` once a file's rules have run: it holds subtrees of
    that file, which would otherwise stay alive through the next file's parse (the peak)."""
    _CALLS.clear()


def calls_in(node: cst.CSTNode) -> tuple[cst.Call, ...]:
    """Calls under ``node`` in source order (memoised: rules ask again and again about the
    same loop bodies, and trees never change)."""
    calls = _CALLS.get(node)
    if calls is None:
        calls = _CALLS[node] = tuple(n for n in walk_body(node) if type(n) is cst.Call)
    return calls


def parameters_as_called(call: cst.Call, function: cst.FunctionDef) -> list[str]:
    """The names of ``function``'s positional parameters that ``call``'s positional
    arguments fill, in order: ``self``/``cls`` left out where the call is on an instance
    (``obj.method(...)``, or ``obj(...)`` running ``__call__``)."""
    names = [p.name.value for p in (*function.params.posonly_params, *function.params.params)]
    on_instance = isinstance(call.func, cst.Attribute) or function.name.value == "__call__"
    if names and names[0] in ("self", "cls") and on_instance:
        return names[1:]
    return names


def method_name(call: cst.Call) -> str | None:
    return call.func.attr.value if isinstance(call.func, cst.Attribute) else None


def receiver(call: cst.Call) -> cst.BaseExpression | None:
    return call.func.value if isinstance(call.func, cst.Attribute) else None


def receiver_key(call: cst.Call) -> str | None:
    """``scaler`` / ``self.scaler``: the dotted receiver of a method call, if it is one."""
    target = receiver(call)
    return dotted_name(target) if target is not None else None


class ModuleModel:
    def __init__(self, module: cst.Module, text: str, imports: ImportLookup | None = None) -> None:
        _CALLS.clear()
        self.module = module
        self.text = text
        self.index = ModuleIndex(module)
        #: the project's other modules (None: the file is checked on its own).
        self.imports = imports
        self.evaluator = Evaluator(self.index, imports)
        self._runs_backward_memo: dict[cst.FunctionDef, bool] = {}
        self._under_autocast_memo: dict[cst.FunctionDef, bool] = {}
        #: (function, positional parameters as called) -> it hands the caller's first
        #: argument to ``torch.save`` (see :mod:`amplint.analysis.checkpoints`).
        self.forwards_to_save_memo: dict[tuple[cst.FunctionDef, int], bool] = {}
        self._backward_or_scale: dict[cst.CSTNode, bool] = {}
        self._helpers: dict[cst.Call, cst.FunctionDef | None] = {}
        self._transitive: dict[cst.CSTNode, tuple[cst.Call, ...]] = {}

    def snippet(self, node: cst.CSTNode, limit: int | None = None) -> str:
        """``node``'s source for a message: on one line (a message is one line of concise
        output, and editors show it as one), cut to ``limit`` characters with "...".

        A call laid out one argument a line reads as written on one line: no space after an
        opening bracket or before a closing one, no trailing comma before it."""
        text = self.module.code_for_node(node)
        if "\n" in text:
            text = _OPEN_BREAK.sub(r"\1", text.strip())
            text = _CLOSE_BREAK.sub(r"\1", text)
            text = _BREAK.sub(" ", text)
        if limit is not None and len(text) > limit:
            text = text[: limit - 3] + "..."
        return text

    # -- autocast --------------------------------------------------------------------------

    def autocast_regions(self, with_node: cst.With) -> list[AutocastRegion]:
        regions = []
        for item in with_node.items:
            for value in self.evaluator.evaluate(item.item):
                if isinstance(value, AutocastRegion):
                    regions.append(value)
        return regions

    def autocast_state(self, with_node: cst.With) -> AutocastState | None:
        """``enabled`` if entering the ``with`` may turn autocast on, ``disabled`` if it surely
        turns it off, None when it is not an autocast region at all."""
        regions = self.autocast_regions(with_node)
        if not regions:
            return None
        if any(region.may_be_enabled for region in regions):
            return "enabled"
        return "disabled"

    def enclosing_autocast(self, node: cst.CSTNode) -> cst.With | None:
        """The innermost ``with`` around ``node`` (in the same function) that sets autocast."""
        for ancestor in self.index.ancestors(node):
            if isinstance(ancestor, _NESTED_SCOPES):
                return None
            if (
                isinstance(ancestor, cst.With)
                and _in_with_body(node, ancestor, self.index)
                and self.autocast_state(ancestor) is not None
            ):
                return ancestor
        return None

    @cached_property
    def autocast_withs(self) -> list[cst.With]:
        return [w for w in self.index.withs if self.autocast_state(w) is not None]

    # -- calls -----------------------------------------------------------------------------

    def is_direct_backward(self, call: cst.Call) -> bool:
        if self.evaluator.is_symbol(call.func, Symbol.AUTOGRAD_BACKWARD, Symbol.AUTOGRAD_GRAD):
            return True
        if method_name(call) != "backward":
            return False
        # `self.backward(loss)` that this module defines is judged by its body instead.
        return self.evaluator.resolve_local_callable(call) is None

    def helper_of(self, call: cst.Call) -> cst.FunctionDef | None:
        """The same-module function, method or callable class instance ``call`` runs."""
        if call in self._helpers:
            return self._helpers[call]
        helper = self.evaluator.resolve_local_callable(
            call
        ) or self.evaluator.resolve_called_instance_class(call)
        self._helpers[call] = helper
        return helper

    def runs_backward(self, call: cst.Call) -> bool:
        if self.is_direct_backward(call):
            return True
        helper = self.helper_of(call)
        if helper is not None:
            return self.function_runs_backward(helper)
        return self.imported_runs_backward(call)

    def runs_backward_under_autocast(self, call: cst.Call) -> bool:
        """Whether ``call`` runs a backward pass that an autocast region around the call
        covers: a direct one, or one in a helper outside any region the helper itself
        turns off (``with torch.autocast("cuda", enabled=False): loss.backward()``)."""
        if self.is_direct_backward(call):
            return True
        helper = self.helper_of(call)
        if helper is not None:
            return self.function_runs_backward_under_autocast(helper)
        return self.imported_runs_backward(call, under_autocast=True)

    def function_runs_backward_under_autocast(self, function: cst.FunctionDef) -> bool:
        memo = self._under_autocast_memo
        if function in memo:
            return memo[function]
        memo[function] = False  # recursion guard
        result = any(
            self.runs_backward_under_autocast(call) and not self._turned_off_in(call, function)
            for call in calls_in(function.body)
        )
        memo[function] = result
        return result

    def _turned_off_in(self, node: cst.CSTNode, function: cst.FunctionDef) -> bool:
        """Whether a ``with`` of ``function`` that surely turns autocast off holds ``node``."""
        for ancestor in self.index.ancestors(node):
            if ancestor is function:
                return False
            if isinstance(ancestor, cst.With) and self.autocast_state(ancestor) == "disabled":
                return True
        return False

    def imported_runs_backward(self, call: cst.Call, *, under_autocast: bool = False) -> bool:
        """Whether ``call`` runs a function of another project module whose summary says it
        runs a backward pass (checked with its project only)."""
        if self.imports is None or not isinstance(call.func, (cst.Name, cst.Attribute)):
            return False
        callees = self.evaluator.evaluate(call.func)
        if len(callees) != 1:
            return False
        (callee,) = callees
        from amplint.analysis.imported import ProjectObject  # imports this module

        if isinstance(callee, ProjectObject):
            return callee.backward_on_call  # `loss_scaler(loss, optimizer)`
        return isinstance(callee, ImportedValue) and callee.runs_backward(under_autocast)

    def function_runs_backward(self, function: cst.FunctionDef) -> bool:
        memo = self._runs_backward_memo
        if function in memo:
            return memo[function]
        memo[function] = False  # recursion guard
        result = any(self.runs_backward(call) for call in calls_in(function.body))
        memo[function] = result
        return result

    def transitive_calls(self, node: cst.CSTNode) -> list[cst.Call]:
        """Calls under ``node``, plus those of same-module helpers it calls, transitively."""
        known = self._transitive.get(node)
        if known is None:
            known = self._transitive[node] = tuple(self._collect_transitive(node))
        return list(known)

    def _collect_transitive(self, node: cst.CSTNode) -> list[cst.Call]:
        seen: set[cst.FunctionDef] = set()
        result: list[cst.Call] = []

        def collect(root: cst.CSTNode) -> None:
            for call in calls_in(root):
                result.append(call)
                helper = self.helper_of(call)
                if helper is not None and helper not in seen:
                    seen.add(helper)
                    collect(helper.body)

        collect(node)
        return result

    # -- what an object is -----------------------------------------------------------------

    def is_scaler(self, expr: cst.BaseExpression) -> bool:
        """Surely a GradScaler (or None when AMP is off), as far as the module shows."""
        values = self.evaluator.evaluate(expr)
        has_scaler = any(isinstance(v, ScalerInstance) for v in values)
        return has_scaler and all(isinstance(v, (ScalerInstance, NoneValue)) for v in values)

    def scaler_instances(self, expr: cst.BaseExpression) -> list[ScalerInstance]:
        return [v for v in self.evaluator.evaluate(expr) if isinstance(v, ScalerInstance)]

    def is_optimizer(self, expr: cst.BaseExpression) -> bool:
        values = self.evaluator.evaluate(expr)
        if any(isinstance(v, (ScalerInstance, SchedulerInstance, NullContext)) for v in values):
            return False
        if any(isinstance(v, OptimizerInstance) for v in values):
            return True
        if not all(isinstance(v, Unknown) for v in values):
            return False
        name = _last_name(expr)
        return bool(name and _OPTIMIZER_NAME.search(name) and not _SCHEDULER_NAME.search(name))

    def is_optimizer_step(self, call: cst.Call) -> bool:
        target = receiver(call)
        return (
            method_name(call) == "step"
            and target is not None
            and not call.args
            and self.is_optimizer(target)
        )

    @cached_property
    def mentions_scaling(self) -> bool:
        """Any sign of loss scaling in the module: then "no GradScaler" claims are unsafe.

        Feature scalers of tabular code (scikit-learn's ``StandardScaler`` and kin, and
        variables holding only them) are not loss scaling.
        """
        loss_scaler_names = {
            name
            for name in self.index.scaler_identifiers
            if named_like_scaler(name) and not self._holds_feature_scaler(name)
        }
        return bool(loss_scaler_names) or any(
            method_name(call) in ("scale", "unscale_", "scale_loss") for call in self.index.calls
        )

    def _holds_feature_scaler(self, name: str) -> bool:
        """Every binding of ``name``, at the top level or in any function, is a feature
        scaler (``scaler = StandardScaler()`` inside a training function too)."""
        scopes = [self.index.module_scope, *self.index.functions.values()]
        values = [b.node for scope in scopes for b in scope.bindings.get(name, [])]
        return bool(values) and all(
            isinstance(v, cst.Call)
            and isinstance(v.func, (cst.Name, cst.Attribute))
            and FEATURE_SCALER.match(_last_name(v.func) or "")
            for v in values
        )

    # -- structure -------------------------------------------------------------------------

    def is_dead(self, node: cst.CSTNode) -> bool:
        """Under ``if False:`` / ``if 0:`` / ``if TYPE_CHECKING:``: never runs."""
        child = node
        for ancestor in self.index.ancestors(node):
            if isinstance(ancestor, cst.If) and child is ancestor.body:
                test = ancestor.test
                if (isinstance(test, cst.Name) and test.value in ("False", "TYPE_CHECKING")) or (
                    isinstance(test, cst.Integer) and test.value == "0"
                ):
                    return True
            child = ancestor
        return False

    def enclosing_loops(self, node: cst.CSTNode) -> list[cst.For | cst.While]:
        """Loops around ``node`` within its function, innermost first."""
        loops: list[cst.For | cst.While] = []
        child = node
        for ancestor in self.index.ancestors(node):
            if isinstance(ancestor, _NESTED_SCOPES):
                break
            if isinstance(ancestor, (cst.For, cst.While)) and child is ancestor.body:
                loops.append(ancestor)
            child = ancestor
        return loops

    def training_iteration(self, node: cst.CSTNode) -> cst.CSTNode:
        """The unit that is one training iteration around ``node``.

        The innermost enclosing loop that runs a backward; else the outermost loop; else the
        function (or module) body. Inner loops over optimizers are thus not iterations.
        """
        loops = self.enclosing_loops(node)
        for loop in loops:
            if self._runs_backward_or_scales(loop):
                return loop
        function = self.index.enclosing_function(node)
        body = function.body if function is not None else self.module
        if loops and not self._runs_backward_or_scales(body):
            return loops[-1]
        # A step function whose only loop is over optimizers: the call is the iteration.
        return body

    def _runs_backward_or_scales(self, node: cst.CSTNode) -> bool:
        known = self._backward_or_scale.get(node)
        if known is None:
            known = any(self.runs_backward(c) or method_name(c) == "scale" for c in calls_in(node))
            self._backward_or_scale[node] = known
        return known

    def update_anchor(self, step: cst.Call, iteration: cst.CSTNode) -> cst.BaseStatement | None:
        """The statement after which ``scaler.update()`` belongs for this optimizer step.

        The step's own statement (so an accumulation ``if`` keeps it), lifted out of any loop
        nested inside the iteration (a loop over several optimizers).
        """
        anchor = self.statement_in_block(step)
        for loop in self.enclosing_loops(step):
            if anchor is None or loop is iteration:
                break
            anchor = self.statement_in_block(loop)
        return anchor

    def statement_in_block(self, node: cst.CSTNode) -> cst.BaseStatement | None:
        """The statement around ``node`` that sits directly in an indented block or module."""
        current: cst.CSTNode | None = node
        while current is not None:
            parent = self.index.parent(current)
            if isinstance(current, cst.BaseStatement) and isinstance(
                parent, (cst.IndentedBlock, cst.Module)
            ):
                return current
            if isinstance(parent, cst.SimpleStatementSuite):
                return None  # `if x: a(); b()` on one line: no statement slot to use
            current = parent
        return None


def _in_with_body(node: cst.CSTNode, with_node: cst.With, index: ModuleIndex) -> bool:
    current: cst.CSTNode | None = node
    while current is not None and current is not with_node:
        if current is with_node.body:
            return True
        current = index.parent(current)
    return False


def _last_name(expr: cst.BaseExpression) -> str | None:
    if isinstance(expr, cst.Subscript):
        expr = expr.value
    if isinstance(expr, cst.Attribute):
        return expr.attr.value
    if isinstance(expr, cst.Name):
        return expr.value
    return None
