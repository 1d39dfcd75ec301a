"""One training iteration as an ordered list of gradient events, with the ``if``s they sit under.

The scaler call-ordering rules (AMP004, AMP005, AMP006, AMP011, AMP016, AMP018, AMP019,
AMP021) all ask the same question: in one iteration, in which order do the backward passes,
``scaler.unscale_``, gradient clipping, ``scaler.step``/``optimizer.step``, ``update`` and
``zero_grad`` run, and under which conditions? This module answers it once per module.

- An *iteration* is :meth:`ModuleModel.training_iteration` of a call that takes part in a
  step (a loop body, or the body of a step function).
- Its *events* are those calls in evaluation order; calls into helpers of the same module
  are followed (with their parameters renamed to the caller's expressions), so a driver
  that calls ``self.backward(loss)`` then ``self.step()`` is seen as one sequence.
- Each event carries its *conditions*: the ``if`` tests around it (and around the helper
  calls that led to it), normalised so that ``if scaler is None:`` / ``if scaler is not
  None:`` and ``if not amp:`` / ``if amp:`` are recognised as the two branches of one test,
  and two ``if (i + 1) % accum == 0:`` blocks as the same boundary.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from weakref import WeakKeyDictionary

import libcst as cst

from amplint.analysis.clipping import is_torch_clip
from amplint.analysis.model import (
    MAX_HELPER_DEPTH,
    ModuleModel,
    method_name,
    parameters_as_called,
    receiver,
    walk_body,
)
from amplint.analysis.scalers import scaler_state
from amplint.analysis.scopes import (
    NESTED_SCOPE_TYPES,
    BindingKind,
    dotted_name,
    iter_children,
)
from amplint.analysis.symbols import Symbol

_ANCHOR_METHODS = frozenset({"backward", "unscale_", "step", "update", "zero_grad"})
_SCALER_METHODS = frozenset({"step", "scale", "unscale_", "update"})


class Kind(Enum):
    BACKWARD = "backward"  # loss.backward(): gradients at their natural magnitude
    SCALED_BACKWARD = "scaled-backward"  # scaler.scale(loss).backward()
    MAYBE_SCALED_BACKWARD = "maybe-scaled-backward"  # `out.backward()`, `out` sometimes scaled
    UNSCALE = "unscale_"
    CLIP = "clip"
    SCALER_STEP = "scaler.step"
    OPTIMIZER_STEP = "optimizer.step"
    UPDATE = "update"
    ZERO_GRAD = "zero_grad"


@dataclass(frozen=True)
class Condition:
    """One branch of a test: ``key`` is the normalised test, ``branch`` the side taken."""

    key: str
    branch: bool
    #: the test as written (not compared)
    test: cst.BaseExpression | None = field(default=None, compare=False, hash=False)
    #: taken from an earlier ``if test: continue`` (or break, return, raise) rather than
    #: an enclosing ``if``: it separates two passes' events within a pass only, and the
    #: gradients of a pass that left early still accumulate into the next (see
    #: :func:`branches`); accumulation boundaries (AMP016) read it, branch logic does not.
    guard: bool = field(default=False, compare=False, hash=False)

    def other_branch(self, *, guard: bool = False) -> Condition:
        return Condition(self.key, not self.branch, self.test, guard)


def branches(event: Event) -> tuple[Condition, ...]:
    """The conditions of the enclosing tests ``event`` runs under (guards left out)."""
    return tuple(c for c in event.conditions if not c.guard)


@dataclass(eq=False)
class Frame:
    """The function an event's call sits in, reached from the iteration through ``via``."""

    function: cst.FunctionDef | None
    via: tuple[cst.Call, ...] = ()
    #: parameter -> (the caller's key for the argument or None, whether it is a scaler)
    params: dict[str, tuple[str | None, bool]] = field(default_factory=dict)
    #: names bound inside the helper (its locals are not the caller's)
    locals: frozenset[str] = frozenset()
    #: whether ``self`` is the caller's ``self`` (``self.helper()``)
    shares_self: bool = True
    #: parameter -> the scaler (key, as the caller spells it) when the caller handed over
    #: ``scaler.scale(...)``, None when it handed over something that may be scaled
    scaled: dict[str, tuple[str | None, str | None] | None] = field(default_factory=dict)


@dataclass(eq=False)
class Event:
    kind: Kind
    call: cst.Call
    order: int
    conditions: tuple[Condition, ...]
    #: loops between the iteration and the call (the call repeats within one iteration)
    loops: tuple[cst.For | cst.While, ...]
    frame: Frame
    #: the scaler (scaler events, scaled backward) as an iteration-wide key, and as written
    scaler: str | None = None
    scaler_local: str | None = None
    #: the optimizer (step, unscale_, zero_grad receiver) likewise
    optimizer: str | None = None
    optimizer_local: str | None = None


@dataclass(eq=False)
class Iteration:
    root: cst.CSTNode
    events: list[Event]
    #: iteration-wide keys of what is handed to code the module does not show
    #: (``train_one_epoch(model, scaler)`` imported from elsewhere): it may step or update
    escaped: frozenset[str] = frozenset()

    def of(self, *kinds: Kind) -> list[Event]:
        return [e for e in self.events if e.kind in kinds]

    def between(self, first: Event | None, last: Event | None) -> list[Event]:
        """Events strictly after ``first`` and before ``last`` (None: open end)."""
        low = first.order if first is not None else -1
        high = last.order if last is not None else len(self.events)
        return [e for e in self.events if low < e.order < high]

    @property
    def scalers(self) -> set[str]:
        return {e.scaler for e in self.events if e.scaler is not None}


def exclusive(a: Event, b: Event) -> bool:
    """Whether the two events sit in opposite branches of the same test, or one in the
    branch of ``x and y`` that says not both while the other runs under ``x`` and under
    ``y`` (``if amp and kind == "torch": scaler.step() else: optimizer.step()`` beside a
    scaled backward under ``if amp: if kind == "torch":``): never both run."""
    mine = {(c.key, c.branch) for c in branches(a)}
    if any((c.key, not c.branch) in mine for c in branches(b)):
        return True
    return _denies_all(a, b) or _denies_all(b, a)


def _denies_all(a: Event, b: Event) -> bool:
    """``a`` runs where ``x and y ...`` is false (or ``x or y ...`` true) and ``b`` where
    every operand is true (or false)."""
    theirs = {(c.key, c.branch) for c in branches(b)}
    for condition in branches(a):
        test = condition.test
        if not isinstance(test, cst.BooleanOperation):
            continue
        conjunction = isinstance(test.operator, cst.And)
        if condition.branch is conjunction:
            continue  # `x and y` true (or `x or y` false): each operand's side is known
        operands = _operands(test, type(test.operator))
        wanted = conjunction  # every operand true for `and`, false for `or`
        if all((key, branch is wanted) in theirs for key, branch in operands):
            return True
    return False


def _operands(
    test: cst.BooleanOperation, operator: type[cst.BaseBooleanOp]
) -> list[tuple[str, bool]]:
    """The normalised operands of a chain of one boolean operator (``a and b and c``)."""
    parts: list[cst.BaseExpression] = []
    pending: list[cst.BaseExpression] = [test]
    while pending:
        node = pending.pop()
        if isinstance(node, cst.BooleanOperation) and isinstance(node.operator, operator):
            pending += [node.right, node.left]  # `(a and b) and c` is `a and b and c`
            continue
        parts.append(node)
    return [(c.key, c.branch) for c in (_normalised(_BARE, part) for part in parts)]


def nested(a: Event, b: Event) -> bool:
    """Whether one event's conditions include the other's: whenever the more deeply
    conditioned one runs, so does the other (within the same pass)."""
    mine, theirs = set(branches(a)), set(branches(b))
    return mine <= theirs or theirs <= mine


def together(a: Event, b: Event) -> bool:
    """Surely run in the same pass whenever the more conditional of the two runs."""
    return nested(a, b) and not exclusive(a, b)


def same_frame(a: Event, b: Event) -> bool:
    return a.frame.via == b.frame.via


def usable_at(model: ModuleModel, owner: Event, role: str, site: Event) -> str | None:
    """How ``owner``'s scaler or optimizer (``role``) is spelled at ``site``'s call, if it
    can be named there at all."""
    key: str | None = getattr(owner, role)
    local: str | None = getattr(owner, f"{role}_local")
    if key is None or local is None:
        return None
    if same_frame(owner, site):
        return local
    if not site.frame.via:
        return None if key.startswith("<") else key  # iteration-wide keys are the root's
    head = local.split(".")[0]
    if owner.frame.function is not None and (
        head in owner.frame.params or head in owner.frame.locals
    ):
        return None
    if head in site.frame.params or head in site.frame.locals:
        return None
    if head == "self":
        same_class = model.index.enclosing_class(owner.call) is model.index.enclosing_class(
            site.call
        )
        shared = owner.frame.shares_self and site.frame.shares_self
        return local if same_class and shared else None
    return local if head in model.index.module_scope.bindings else None


# -- classification ---------------------------------------------------------------------------


_IDENTITY_WRAPPERS = frozenset({"typing.cast", "typing_extensions.cast"})


def unwrap_identity(model: ModuleModel, expr: cst.BaseExpression) -> cst.BaseExpression:
    """``cast(Tensor, x)`` is ``x``: wrappers that return their argument unchanged."""
    while isinstance(expr, cst.Call) and model.evaluator.qualified_names(expr.func) & (
        _IDENTITY_WRAPPERS
    ):
        positional = [a.value for a in expr.args if a.keyword is None and not a.star]
        keyword = [a.value for a in expr.args if a.keyword is not None and a.keyword.value == "val"]
        values = positional[1:2] or keyword
        if not values:
            break
        expr = values[0]
    return expr


def scale_call(model: ModuleModel, expr: cst.BaseExpression) -> cst.Call | None:
    """The ``scaler.scale(x)`` call ``expr`` is, seen through identity wrappers."""
    expr = unwrap_identity(model, expr)
    if isinstance(expr, cst.Call) and method_name(expr) == "scale":
        return expr
    return None


def is_scale_call(model: ModuleModel, expr: cst.BaseExpression) -> str | None:
    """``scaler.scale(x)`` (also through ``cast(...)``): the scaler's state (see
    :func:`scaler_state`)."""
    call = scale_call(model, expr)
    target = receiver(call) if call is not None else None
    return scaler_state(model, target) if target is not None else None


def scaler_of_scale_call(model: ModuleModel, expr: cst.BaseExpression) -> cst.BaseExpression | None:
    call = scale_call(model, expr)
    return receiver(call) if call is not None else None


def _wraps_scale_call(model: ModuleModel, expr: cst.CSTNode) -> bool:
    """A ``scaler.scale(...)`` call anywhere inside ``expr``: a call's arguments or its
    receiver (``scaler.scale(loss).mean()``), arithmetic, a list of losses, a generator
    (``sum(scaler.scale(l) for l in losses)``), a walrus. What then reaches the backward
    may well be scaled: it is never taken for an unscaled loss."""
    pending: list[cst.CSTNode] = [expr]
    while pending:
        node = pending.pop()
        if isinstance(node, cst.Call) and is_scale_call(model, node) == "enabled":
            return True
        if not isinstance(node, cst.Lambda):
            pending.extend(node.children)
    return False


def _assigned_a_scaled_value(model: ModuleModel, target: cst.BaseExpression) -> bool:
    """``out["loss"] = scaler.scale(out["loss"])`` somewhere in the function of ``target``
    (``out["loss"].backward()``): an element or attribute that may hold a scaled loss."""
    function = model.index.enclosing_function(target)
    return any(t.deep_equals(target) for t in _scaled_targets(model, function or model.module))


_SCALED_TARGETS: WeakKeyDictionary[ModuleModel, dict[cst.CSTNode, list[cst.BaseExpression]]] = (
    WeakKeyDictionary()
)


def _scaled_targets(model: ModuleModel, scope: cst.CSTNode) -> list[cst.BaseExpression]:
    """The elements and attributes the function (or module) ``scope`` assigns a value
    holding a scale call to; found once per scope (a script's every backward asks)."""
    known = _SCALED_TARGETS.setdefault(model, {})
    if scope not in known:
        body = scope.body if isinstance(scope, cst.FunctionDef) else scope
        known[scope] = [
            t.target
            for node in walk_body(body)
            if isinstance(node, cst.Assign) and _wraps_scale_call(model, node.value)
            for t in node.targets
            if isinstance(t.target, (cst.Subscript, cst.Attribute))
        ]
    return known[scope]


# -- building iterations ----------------------------------------------------------------------

_CACHE: WeakKeyDictionary[ModuleModel, list[Iteration]] = WeakKeyDictionary()


def iterations(model: ModuleModel) -> list[Iteration]:
    """Every training iteration of the module, each with its ordered events (memoised)."""
    cached = _CACHE.get(model)
    if cached is not None:
        return cached
    roots: dict[cst.CSTNode, None] = {}
    for call in model.index.calls:
        name = method_name(call)
        if (
            name in _ANCHOR_METHODS
            or is_torch_clip(model, call)
            or model.evaluator.is_symbol(call.func, Symbol.AUTOGRAD_BACKWARD)
            or (model.helper_of(call) is not None and model.runs_backward(call))
        ):
            if model.is_dead(call):
                continue
            roots.setdefault(model.training_iteration(call), None)
    result = []
    for root in roots:
        walker = _Walker(model)
        events = walker.events(root)
        result.append(Iteration(root, events, frozenset(walker.escaped)))
    _CACHE[model] = result
    return result


def iteration_of(model: ModuleModel, call: cst.Call) -> tuple[Iteration, Event] | None:
    """The iteration in which ``call`` is an event (the first one found), with the event."""
    for iteration in iterations(model):
        for event in iteration.events:
            if event.call is call:
                return iteration, event
    return None


def normalise(model: ModuleModel, test: cst.BaseExpression) -> Condition:
    """``if not x`` / ``if x is None`` are the false branch of ``if x``."""
    return _normalised(model.module, test)


#: renders an expression's code where no module is at hand (an expression's code does not
#: depend on the module's indentation or newlines).
_BARE = cst.Module(body=[])


def _normalised(module: cst.Module, test: cst.BaseExpression) -> Condition:
    branch = True
    while True:
        if test.lpar:
            test = test.with_changes(lpar=(), rpar=())
        if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
            branch = not branch
            test = test.expression
            continue
        if (
            isinstance(test, cst.Comparison)
            and len(test.comparisons) == 1
            and isinstance(test.comparisons[0].comparator, cst.Name)
            and test.comparisons[0].comparator.value == "None"
            and isinstance(test.comparisons[0].operator, (cst.Is, cst.IsNot))
        ):
            if isinstance(test.comparisons[0].operator, cst.Is):
                branch = not branch
            test = test.left
            continue
        break
    key = " ".join(module.code_for_node(test).split())
    return Condition(key, branch, test)


def _caught(model: ModuleModel, handler: cst.ExceptHandler) -> Condition:
    """The branch an ``except`` clause runs on."""
    label = model.snippet(handler.type) if handler.type is not None else ""
    return Condition(f"except {label}", True)


def _leaves(block: cst.BaseSuite) -> bool:
    """Whether a block always ends by leaving the statements after it: its last statement
    is a ``continue``, ``break``, ``return`` or ``raise``."""
    body = block.body
    last = body[-1] if isinstance(body, (list, tuple)) and body else None
    if isinstance(block, cst.IndentedBlock):
        if not isinstance(last, cst.SimpleStatementLine) or not last.body:
            return False
        last = last.body[-1]
    return isinstance(last, (cst.Continue, cst.Break, cst.Return, cst.Raise))


def _is_false(test: cst.BaseExpression) -> bool:
    return (isinstance(test, cst.Name) and test.value in ("False", "TYPE_CHECKING")) or (
        isinstance(test, cst.Integer) and test.value == "0"
    )


_Item = tuple[str, cst.CSTNode, tuple[Condition, ...], tuple, Frame]


class _Walker:
    def __init__(self, model: ModuleModel) -> None:
        self.model = model
        self.result: list[Event] = []
        #: the scaler a helper's scaled parameter carries, for the event being classified
        self._carried: tuple[str | None, str | None] | None = None
        self.escaped: set[str] = set()

    def events(self, root: cst.CSTNode) -> list[Event]:
        frame = Frame(
            self.model.index.enclosing_function(root) if root is not self.model.module else None
        )
        if frame.function is not None and root is frame.function:
            root = frame.function.body
        start: cst.CSTNode = root.body if isinstance(root, (cst.For, cst.While)) else root
        self._run([("node", start, (), (), frame)])
        return self.result

    def _run(self, stack: list[_Item]) -> None:
        model = self.model
        while stack:
            what, node, conds, loops, frame = stack.pop()
            if what == "emit":
                assert isinstance(node, cst.Call)
                self._emit(node, conds, loops, frame, stack)
                continue
            kind = type(node)
            if kind in NESTED_SCOPE_TYPES:
                continue
            if kind is cst.If or kind is cst.IfExp:
                condition = normalise(model, node.test)
                flipped = condition.other_branch()
                if node.orelse is not None:
                    stack.append(("node", node.orelse, (*conds, flipped), loops, frame))
                if not _is_false(node.test):
                    stack.append(("node", node.body, (*conds, condition), loops, frame))
                stack.append(("node", node.test, conds, loops, frame))
                continue
            if kind is cst.For:
                if node.orelse is not None:
                    stack.append(("node", node.orelse, conds, loops, frame))
                stack.append(("node", node.body, conds, (*loops, node), frame))
                stack.append(("node", node.iter, conds, loops, frame))
                continue
            if kind is cst.While:
                if node.orelse is not None:
                    stack.append(("node", node.orelse, conds, loops, frame))
                stack.append(("node", node.body, conds, (*loops, node), frame))
                stack.append(("node", node.test, conds, (*loops, node), frame))
                continue
            if kind is cst.ExceptHandler:
                handler = (*conds, _caught(model, node))
                stack.append(("node", node.body, handler, loops, frame))
                continue
            if kind is cst.Try:
                # `else:` runs when no handler did: the other branch of each.
                if node.finalbody is not None:
                    stack.append(("node", node.finalbody, conds, loops, frame))
                if node.orelse is not None:
                    uncaught = tuple(_caught(model, h).other_branch() for h in node.handlers)
                    stack.append(("node", node.orelse, (*conds, *uncaught), loops, frame))
                for handler_node in reversed(node.handlers):
                    stack.append(("node", handler_node, conds, loops, frame))
                stack.append(("node", node.body, conds, loops, frame))
                continue
            if kind is cst.IndentedBlock:
                # `if (i + 1) % accum: continue` guards what follows it: those statements
                # run on the other branch of that test only.
                items: list[_Item] = []
                guarded = conds
                for statement in node.body:
                    items.append(("node", statement, guarded, loops, frame))
                    if (
                        isinstance(statement, cst.If)
                        and statement.orelse is None
                        and _leaves(statement.body)
                    ):
                        test = normalise(model, statement.test)
                        guarded = (*guarded, test.other_branch(guard=True))
                stack.extend(reversed(items))
                continue
            if kind is cst.Call:
                stack.append(("emit", node, conds, loops, frame))
            for child in reversed(list(iter_children(node))):
                stack.append(("node", child, conds, loops, frame))

    # -- one call ---------------------------------------------------------------------------

    def _emit(
        self,
        call: cst.Call,
        conds: tuple[Condition, ...],
        loops: tuple,
        frame: Frame,
        stack: list[_Item],
    ) -> None:
        model = self.model
        self._carried = None
        event = self._classify(call, frame)
        if event is not None:
            kind, scaler, optimizer = event
            scaler_key, scaler_local = self._key(scaler, frame), _text(model, scaler)
            if self._carried is not None:
                scaler_key, scaler_local = self._carried
            self.result.append(
                Event(
                    kind,
                    call,
                    len(self.result),
                    conds,
                    loops,
                    frame,
                    scaler=scaler_key,
                    scaler_local=scaler_local,
                    optimizer=self._key(optimizer, frame),
                    optimizer_local=_text(model, optimizer),
                )
            )
            return
        helper = model.helper_of(call)
        if (
            helper is None
            or len(frame.via) >= MAX_HELPER_DEPTH
            or any(model.helper_of(c) is helper for c in frame.via)
            or helper is frame.function
        ):
            return
        params, scaled = self._parameters(call, helper, frame)
        inner = Frame(
            helper,
            (*frame.via, call),
            params,
            frozenset(model.index.functions[helper].bindings),
            shares_self=_self_call(call) and frame.shares_self,
            scaled=scaled,
        )
        stack.append(("node", helper.body, conds, loops, inner))

    def _classify(
        self, call: cst.Call, frame: Frame
    ) -> tuple[Kind, cst.BaseExpression | None, cst.BaseExpression | None] | None:
        model = self.model
        name = method_name(call)
        target = receiver(call)
        first = next((a.value for a in call.args if a.keyword is None and not a.star), None)
        if model.evaluator.is_symbol(call.func, Symbol.AUTOGRAD_BACKWARD):
            if first is None:
                return None
            state = is_scale_call(model, first)
            if state == "disabled":
                return None
            if state == "enabled":
                return Kind.SCALED_BACKWARD, scaler_of_scale_call(model, first), None
            if _wraps_scale_call(model, first):
                return Kind.MAYBE_SCALED_BACKWARD, None, None
            return self._backward_of(first, frame)
        if target is None:
            return (Kind.CLIP, None, None) if is_torch_clip(model, call) else None
        if name == "backward":
            if model.helper_of(call) is not None:
                return None
            if isinstance(target, cst.NamedExpr):  # `(scaled := scaler.scale(loss)).backward()`
                target = target.value
            state = is_scale_call(model, target)
            if state == "enabled":
                return Kind.SCALED_BACKWARD, scaler_of_scale_call(model, target), None
            if state == "disabled":
                return None
            if first is not None or dotted_name(target) == "self":
                return None  # accelerator.backward(loss) and kin scale for themselves
            if _wraps_scale_call(model, target):
                # `shard_aware(scaler.scale(loss)).backward()`: whether the wrapper keeps
                # the scale is not known, so the backward is neither scaled nor unscaled.
                return Kind.MAYBE_SCALED_BACKWARD, None, None
            scaled = self._scaled_name(target)
            if scaled is not None:
                return scaled
            if isinstance(target, (cst.Subscript, cst.Attribute)) and _assigned_a_scaled_value(
                model, target
            ):
                return Kind.MAYBE_SCALED_BACKWARD, None, None
            return self._backward_of(target, frame)
        if is_torch_clip(model, call):
            return Kind.CLIP, None, None
        if name not in ("unscale_", "step", "update", "zero_grad"):
            return None
        state = self._scaler_state(target, frame)
        if state == "disabled":
            return None
        if state == "enabled":
            if name == "unscale_":
                return Kind.UNSCALE, target, first
            if name == "step":
                optimizer = first
                for arg in call.args:
                    if arg.keyword is not None and arg.keyword.value == "optimizer":
                        optimizer = arg.value
                return Kind.SCALER_STEP, target, optimizer
            if name == "update":
                return Kind.UPDATE, target, None
            return None
        if name == "zero_grad":
            return Kind.ZERO_GRAD, None, target
        if name == "step" and model.is_optimizer_step(call):
            return Kind.OPTIMIZER_STEP, None, target
        return None

    def _scaled_name(
        self, target: cst.BaseExpression
    ) -> tuple[Kind, cst.BaseExpression | None, None] | None:
        """``scaled = scaler.scale(loss)`` ... ``scaled.backward()``."""
        if not isinstance(target, cst.Name):
            return None
        bindings = self.model.index.scope_of(target).lookup(target.value)
        scalers = [
            b.node
            for b in bindings
            if b.kind is BindingKind.ASSIGN
            and isinstance(b.node, cst.BaseExpression)
            and is_scale_call(self.model, b.node) == "enabled"
        ]
        if not scalers:
            if any(
                b.kind is BindingKind.ASSIGN
                and isinstance(b.node, cst.BaseExpression)
                and _wraps_scale_call(self.model, b.node)
                for b in bindings
            ):
                # `loss = cast(Tensor, scaler.scale(loss))`, `scaler.scale(loss) / accum`
                return Kind.MAYBE_SCALED_BACKWARD, None, None
            return None
        if len(scalers) == len(bindings) and len(scalers) == 1:
            return Kind.SCALED_BACKWARD, receiver(scalers[0]), None  # type: ignore[arg-type]
        latest = self._assigned_just_before(target)
        if latest is not None and latest in scalers:
            # `loss = scaler.scale(loss)` right before `loss.backward()` in the same block.
            return Kind.SCALED_BACKWARD, receiver(latest), None  # type: ignore[arg-type]
        return Kind.MAYBE_SCALED_BACKWARD, None, None

    def _assigned_just_before(self, name: cst.Name) -> cst.BaseExpression | None:
        """The value of the last plain ``name = value`` among the simple statements right
        before ``name``'s own statement in its block; None when another kind of statement
        (a branch, a loop, an augmented assignment) comes first, or there is none."""
        model = self.model
        statement = model.statement_in_block(name)
        block = model.index.parent(statement) if statement is not None else None
        if not isinstance(block, (cst.IndentedBlock, cst.Module)):
            return None
        body = list(block.body)
        for earlier in reversed(body[: body.index(statement)]):  # type: ignore[arg-type]
            if not isinstance(earlier, cst.SimpleStatementLine):
                return None
            for small in reversed(earlier.body):
                if isinstance(small, cst.Assign):
                    targets = [t.target for t in small.targets]
                    if any(isinstance(t, cst.Name) and t.value == name.value for t in targets):
                        return small.value if len(targets) == 1 else None
                elif isinstance(small, (cst.AugAssign, cst.AnnAssign)):
                    target = small.target
                    if isinstance(target, cst.Name) and target.value == name.value:
                        return None
        return None

    def _backward_of(
        self, loss: cst.BaseExpression, frame: Frame
    ) -> tuple[Kind, cst.BaseExpression | None, None]:
        """The backward of ``loss`` where nothing local scales it: a helper's parameter
        carries what the caller handed over (``self.run_backward(scaler.scale(loss))``)."""
        if isinstance(loss, cst.Name) and loss.value not in frame.scaled and frame.via:
            # `for loss in losses: loss.backward()` over what the caller handed
            loop = _loop_binding(self.model, loss)
            if isinstance(loop, cst.Name) and loop.value in frame.scaled:
                loss = loop
        if isinstance(loss, cst.Name) and loss.value in frame.scaled:
            state = frame.scaled[loss.value]
            if state is not None:
                self._carried = state
                return Kind.SCALED_BACKWARD, None, None
            return Kind.MAYBE_SCALED_BACKWARD, None, None
        if not frame.via and frame.function is not None:
            # The iteration is the function itself: what its parameters hold is what its
            # callers hand it, and a caller of the module that hands a scaled loss
            # (Open Catalyst's trainers: `loss = self.scaler.scale(loss)`, then
            # `self._backward(loss)`) makes this backward maybe scaled.
            handed = _handed_parameters(self.model).get(frame.function, {})
            if any(handed.get(name) for name in _parameters_in(self.model, loss)):
                return Kind.MAYBE_SCALED_BACKWARD, None, None
        return Kind.BACKWARD, None, None

    def _scaler_state(self, target: cst.BaseExpression, frame: Frame) -> str | None:
        if isinstance(target, cst.Name) and target.value in frame.params:
            _, is_scaler = frame.params[target.value]
            if is_scaler:
                return "enabled"
        return scaler_state(self.model, target)

    def _parameters(
        self, call: cst.Call, helper: cst.FunctionDef, frame: Frame
    ) -> tuple[dict[str, tuple[str | None, bool]], dict[str, tuple[str | None, str | None] | None]]:
        """The helper's parameters as the caller's keys, and those handed a scaled loss."""
        mapping: dict[str, tuple[str | None, bool]] = {}
        scaled: dict[str, tuple[str | None, str | None] | None] = {}
        star = _star_parameter(helper)
        for name, arg in _bound_arguments(call, helper):
            if arg.star or (name is not None and name == star):
                # `step(*losses)`, `step(**kwargs)`, one of `*losses`: maybe scaled
                if _may_hold_a_scaled_loss(self.model, arg.value):
                    for param in _all_parameters(helper) if arg.star else [name]:
                        scaled.setdefault(param, None)
                continue
            if name is None:
                continue
            key = self._key(arg.value, frame)
            mapping[name] = (key, self._scaler_state(arg.value, frame) == "enabled")
            owner = scaler_of_scale_call(self.model, arg.value)
            if owner is not None and is_scale_call(self.model, arg.value) == "enabled":
                scaled[name] = (self._key(owner, frame), _text(self.model, owner))
            elif isinstance(arg.value, cst.Name) and arg.value.value in frame.scaled:
                scaled[name] = frame.scaled[arg.value.value]
            elif _may_hold_a_scaled_loss(self.model, arg.value):
                # `loss = self.scaler.scale(loss) if self.scaler else loss`, then handed on
                scaled[name] = None
        for param in (
            *helper.params.posonly_params,
            *helper.params.params,
            *helper.params.kwonly_params,
        ):
            mapping.setdefault(param.name.value, (None, False))
        return mapping, scaled

    def _key(self, expr: cst.BaseExpression | None, frame: Frame) -> str | None:
        """An iteration-wide name for ``expr``: helper parameters become the caller's."""
        if expr is None:
            return None
        local = _text(self.model, expr)
        if frame.function is None or not frame.via:
            return local
        head, _, rest = local.partition(".")
        if head == "self":
            # `self.helper()` from a method: the same object, so the same names.
            return local if frame.shares_self else f"<{id(frame)}>.{local}"
        if head in frame.params:
            mapped = frame.params[head][0]
            if mapped is None:
                return f"<{id(frame)}>.{local}"
            return f"{mapped}.{rest}" if rest else mapped
        if head in frame.locals:
            return f"<{id(frame)}>.{local}"
        return local


def _self_call(call: cst.Call) -> bool:
    return isinstance(call.func, cst.Attribute) and dotted_name(call.func.value) == "self"


def _text(model: ModuleModel, expr: cst.BaseExpression | None) -> str | None:
    if expr is None:
        return None
    name = dotted_name(expr)
    if name is not None:
        return name
    return " ".join(model.module.code_for_node(expr).split())


def statement_call(model: ModuleModel, call: cst.Call) -> cst.SimpleStatementLine | None:
    """The line ``call`` is, when it is an expression statement of its own in a block."""
    statement = model.statement_in_block(call)
    if (
        isinstance(statement, cst.SimpleStatementLine)
        and len(statement.body) == 1
        and isinstance(statement.body[0], cst.Expr)
        and statement.body[0].value is call
    ):
        return statement
    return None


def _code(model: ModuleModel, node: cst.CSTNode) -> str:
    return model.module.code_for_node(node)


_ACCUMULATION = re.compile(
    r"accum|grad_acc|sync|boundary|should_(update|step)|update_step|is_last|micro", re.IGNORECASE
)


def accumulation_like(model: ModuleModel, condition: Condition) -> bool:
    """``(i + 1) % accum == 0``, ``sync_now`` (bound to such a test), ``should_update()``."""
    if "%" in condition.key or _ACCUMULATION.search(condition.key):
        return True
    test = condition.test
    if isinstance(test, cst.Name):
        for binding in model.index.scope_of(test).lookup(test.value):
            value = binding.node
            if (
                binding.kind is BindingKind.ASSIGN
                and value is not None
                and "%" in _code(model, value)
            ):
                return True
            if binding.kind is BindingKind.PARAM and _handed_an_accumulation_test(
                model, test, test.value
            ):
                return True
    return False


def _handed_an_accumulation_test(model: ModuleModel, use: cst.Name, name: str) -> bool:
    """``if update_grad:`` in a wrapper that a caller of the module hands
    ``update_grad=(i + 1) % accum == 0`` (timm's and MAE's loss scaler)."""
    function = model.index.enclosing_function(use)
    return function is not None and name in _accumulation_parameters(model).get(function, ())


_HANDED: WeakKeyDictionary[ModuleModel, dict[cst.FunctionDef, set[str]]] = WeakKeyDictionary()
_HANDED_VALUES: WeakKeyDictionary[ModuleModel, dict[cst.FunctionDef, dict[str, bool]]] = (
    WeakKeyDictionary()
)


def handed_loss(model: ModuleModel, backward: Event) -> str | None:
    """Where the loss of a backward in a function that is itself the iteration comes from,
    when it is made of the function's parameters only: "unseen" (no call of the module
    hands them anything: the callers are elsewhere), "unscaled" (calls of the module hand
    them, none of them something that may be scaled); None when the loss is not the
    parameters' (or a caller may hand a scaled one: the backward is not a plain one)."""
    frame = backward.frame
    if frame.via or frame.function is None:
        return None
    loss = _loss_of(model, backward.call)
    names = _parameters_in(model, loss) if loss is not None else set()
    if not names:
        return None
    handed = _handed_parameters(model).get(frame.function, {})
    return "unscaled" if names.intersection(handed) else "unseen"


def _loss_of(model: ModuleModel, call: cst.Call) -> cst.BaseExpression | None:
    """What a backward call backs up: ``torch.autograd.backward(loss)``'s first argument
    (or ``tensors=``), ``loss.backward()``'s receiver."""
    if model.evaluator.is_symbol(call.func, Symbol.AUTOGRAD_BACKWARD):
        for arg in call.args:
            if arg.star:
                return None
            if arg.keyword is None or arg.keyword.value == "tensors":
                return arg.value
        return None
    return receiver(call)


#: Tensor methods that keep the loss what it was (a reduction, a cast): their receiver is
#: the loss. Any other method call computes something new (``model.loss(out, y)``).
_LOSS_KEEPING = frozenset(
    {"mean", "sum", "float", "double", "half", "squeeze", "reshape", "view", "clone", "to"}
)


def _parameters_in(model: ModuleModel, loss: cst.BaseExpression) -> set[str]:
    """The parameters of its function that ``loss`` is made of, when it is made of them
    alone (names never rebound in the function), in arithmetic or reduced
    (``(loss / accum).mean()``); empty when any part is something else: a local
    (``(loss / accum_steps)`` with ``loss`` computed here), or a call's result."""
    found: set[str] = set()
    pending: list[cst.BaseExpression] = [loss]
    while pending:
        expr = pending.pop()
        if isinstance(expr, cst.Name):
            bindings = model.index.scope_of(expr).lookup(expr.value)
            if expr.value in ("self", "cls") or not bindings:
                return set()
            if all(binding.kind is BindingKind.OTHER for binding in bindings):
                # `for loss in losses:` over a parameter: the losses are the parameter's
                loop = _loop_binding(model, expr)
                if loop is None:
                    return set()
                pending.append(loop)
                continue
            if any(binding.kind is not BindingKind.PARAM for binding in bindings):
                return set()
            found.add(expr.value)
        elif isinstance(expr, cst.BinaryOperation):
            pending += (expr.left, expr.right)
        elif isinstance(expr, cst.UnaryOperation):
            pending.append(expr.expression)
        elif (
            isinstance(expr, cst.Call)
            and isinstance(expr.func, cst.Attribute)
            and expr.func.attr.value in _LOSS_KEEPING
        ):
            pending.append(expr.func.value)
        elif isinstance(expr, (cst.Integer, cst.Float, cst.Attribute)):
            continue  # a constant or a setting (`self.accum`): a factor, not the loss
        else:
            return set()
    return found


def _loop_binding(model: ModuleModel, name: cst.Name) -> cst.BaseExpression | None:
    """What the enclosing ``for`` loop whose target is ``name`` iterates over, when that
    is a plain name."""
    for ancestor in model.index.ancestors(name):
        if (
            isinstance(ancestor, cst.For)
            and isinstance(ancestor.target, cst.Name)
            and ancestor.target.value == name.value
            and isinstance(ancestor.iter, cst.Name)
        ):
            return ancestor.iter
    return None


def _handed_parameters(model: ModuleModel) -> dict[cst.FunctionDef, dict[str, bool]]:
    """For each function of the module, the parameters some call of it (other than its
    own, recursive) hands a value, each with whether one such value may hold a scaled loss
    (a scale call in it, or a name assigned one); every parameter, where a call unpacks
    what may hold one (``step(*losses)``); found in one pass over the module's calls."""
    known = _HANDED_VALUES.get(model)
    if known is not None:
        return known
    known = _HANDED_VALUES[model] = {}
    for call in model.index.calls:
        function = model.helper_of(call) if call.args else None
        if function is None or model.index.enclosing_function(call) is function:
            continue
        handed = known.setdefault(function, {})
        for name, arg in _bound_arguments(call, function):
            scaled = _may_hold_a_scaled_loss(model, arg.value)
            if arg.star:
                if scaled:
                    for param in _all_parameters(function):
                        handed[param] = True
            elif name is not None:
                handed[name] = handed.get(name, False) or scaled
    return known


def _bound_arguments(
    call: cst.Call, function: cst.FunctionDef
) -> Iterator[tuple[str | None, cst.Arg]]:
    """Each argument of ``call`` with the parameter of ``function`` it fills: by keyword,
    by position (``self`` left out where bound), or the ``*args`` parameter for positions
    past the named ones; None for an unpacked ``*x``/``**x`` and for positions after one."""
    names = parameters_as_called(call, function)
    star = _star_parameter(function)
    position = 0
    lost = False  # a `*x` before: later positions are not known
    for arg in call.args:
        if arg.star:
            lost = lost or arg.star == "*"
            yield None, arg
        elif arg.keyword is not None:
            yield arg.keyword.value, arg
        elif lost:
            yield None, arg
        else:
            yield (names[position] if position < len(names) else star), arg
            position += 1


def _star_parameter(function: cst.FunctionDef) -> str | None:
    star = function.params.star_arg
    return star.name.value if isinstance(star, cst.Param) else None


def _all_parameters(function: cst.FunctionDef) -> list[str]:
    params = function.params
    found = [p.name.value for p in (*params.posonly_params, *params.params, *params.kwonly_params)]
    for star in (params.star_arg, params.star_kwarg):
        if isinstance(star, cst.Param):
            found.append(star.name.value)
    return found


_SCALED_NAMES: WeakKeyDictionary[ModuleModel, dict[tuple[object, str], bool]] = WeakKeyDictionary()


def _may_hold_a_scaled_loss(model: ModuleModel, value: cst.BaseExpression) -> bool:
    """A value with a scale call in it, or a name some assignment of its scope gives one
    (answered once per scope and name: a long script hands the same names again and
    again)."""
    if _wraps_scale_call(model, value):
        return True
    if not isinstance(value, cst.Name):
        return False
    memo = _SCALED_NAMES.setdefault(model, {})
    scope = model.index.scope_of(value)
    key = (scope, value.value)
    if key not in memo:
        memo[key] = any(
            binding.kind is BindingKind.ASSIGN
            and isinstance(binding.node, cst.BaseExpression)
            and _wraps_scale_call(model, binding.node)
            for binding in scope.lookup(value.value)
        )
    return memo[key]


def _accumulation_parameters(model: ModuleModel) -> dict[cst.FunctionDef, set[str]]:
    """For each function of the module, the parameters some call of it hands a test that
    looks like an accumulation boundary; found in one pass over the module's calls."""
    known = _HANDED.get(model)
    if known is not None:
        return known
    known = _HANDED[model] = {}
    for call in model.index.calls:
        function = model.helper_of(call) if call.args else None
        if function is None:
            continue
        star = _star_parameter(function)
        for name, arg in _bound_arguments(call, function):
            if name is None or arg.star or name == star:
                continue
            code = _code(model, arg.value)
            if "%" in code or _ACCUMULATION.search(code):
                known.setdefault(function, set()).add(name)
    return known
