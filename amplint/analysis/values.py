"""Abstract values: what an expression can be, as far as AMP is concerned.

``evaluate`` answers with a set of possibilities, so ``nullcontext() if cpu else
torch.autocast("cuda")`` is "a null context or a CUDA autocast", and callers decide how
sure they need to be. Anything the analysis cannot see through is :data:`UNKNOWN`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import libcst as cst

from amplint.analysis.scopes import (
    NESTED_SCOPE_TYPES,
    Binding,
    BindingKind,
    ModuleIndex,
    Scope,
    dotted_name,
    iter_children,
)
from amplint.analysis.symbols import (
    AUTOCAST_SYMBOLS,
    DTYPE_NAMES,
    SCALER_SYMBOLS,
    Symbol,
    symbol_for,
)

#: The classes whose calls make an AMP object (:meth:`Evaluator.made_by`).
_MAKERS = AUTOCAST_SYMBOLS | SCALER_SYMBOLS

_MAX_DEPTH = 8


@dataclass(frozen=True)
class SymbolValue:
    """A torch/stdlib object itself, e.g. ``torch.autocast`` (not a call of it)."""

    symbol: Symbol
    #: keyword arguments bound by ``functools.partial(symbol, ...)``.
    bound: tuple[tuple[str, cst.BaseExpression], ...] = ()
    bound_positional: tuple[cst.BaseExpression, ...] = ()


@dataclass(frozen=True)
class AutocastRegion:
    """A call of an autocast constructor: entering it turns autocast on (maybe)."""

    call: cst.Call = field(repr=False)
    symbol: Symbol
    #: "cuda", "cpu", ... when written as a literal; None when not known statically.
    device: str | None
    #: the literal device string as written (``"cuda:0"``), None when not a literal.
    device_literal: str | None
    #: "float16" / "bfloat16" / "float32"; None when the dtype cannot be known.
    dtype: str | None
    #: True / False when literal, None when decided at run time (``enabled=args.amp``).
    enabled: bool | None
    #: the expression that gave the device, for fixes that reuse it.
    device_expr: cst.BaseExpression | None = field(default=None, compare=False, repr=False)
    #: where another module of the project made it (``call`` is then a stand-in, not a node
    #: of this module's tree); None for a region made here.
    origin: Origin | None = field(default=None, compare=False, repr=False)

    @property
    def may_be_enabled(self) -> bool:
        return self.enabled is not False


@dataclass(frozen=True)
class NullContext:
    """``contextlib.nullcontext()`` and friends: the "AMP off" stand-in."""


@dataclass(frozen=True)
class ScalerInstance:
    call: cst.Call = field(repr=False)
    symbol: Symbol
    enabled: bool | None
    #: "cuda" / "cpu" when known; torch.amp.GradScaler() defaults to "cuda".
    device: str | None = None
    #: where another module of the project built it (``call`` is then a stand-in); None
    #: for a scaler built here.
    origin: Origin | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class OptimizerInstance:
    """An instance of a ``torch.optim`` optimizer class."""


@dataclass(frozen=True)
class SchedulerInstance:
    """An instance of a ``torch.optim.lr_scheduler`` class."""


@dataclass(frozen=True)
class NoneValue:
    pass


@dataclass(frozen=True)
class Origin:
    """A value made in another module of the project: the call of this module that got it
    (``site``) and where it was made (``where``: ``"helper.py:12"``)."""

    site: cst.CSTNode = field(repr=False)
    where: str
    #: the imported function or name the value came through, as written at the site.
    via: str = ""
    #: a module-level object of that module: its own functions may use it unseen.
    shared: bool = False


class ImportedValue:
    """What another module of the project defines (a function, a class): see
    :mod:`amplint.analysis.imported`. Calling it or unpacking its result asks its summary."""

    def called(self, call: cst.Call) -> frozenset[Value]:
        return frozenset({UNKNOWN})

    def unpacked(self, call: cst.Call, position: int) -> frozenset[Value]:
        return frozenset({UNKNOWN})

    def runs_backward(self, under_autocast: bool = False) -> bool:
        """Whether calling it runs a backward pass (``under_autocast``: one that an autocast
        region around the call covers, not one the function turns autocast off for)."""
        return False

    def saves_first_argument(self) -> bool:
        """Whether calling it hands its first argument to ``torch.save`` unchanged."""
        return False


class ImportLookup:
    """The project's modules as an evaluator sees them (None: a file checked on its own)."""

    def value_of(self, qualified_name: str, site: cst.CSTNode) -> frozenset[Value] | None:
        """What an imported name is, or None when no module of the project defines it."""
        return None


@dataclass(frozen=True)
class Unknown:
    pass


UNKNOWN = Unknown()
Value = (
    SymbolValue
    | AutocastRegion
    | NullContext
    | ScalerInstance
    | OptimizerInstance
    | SchedulerInstance
    | NoneValue
    | Unknown
)


def _literal_string(node: cst.BaseExpression) -> str | None:
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    if isinstance(node, cst.ConcatenatedString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    return None


def _literal_bool(node: cst.BaseExpression) -> bool | None:
    if isinstance(node, cst.Name) and node.value in ("True", "False"):
        return node.value == "True"
    return None


class Evaluator:
    """Evaluates expressions of one module to sets of :data:`Value`."""

    def __init__(self, index: ModuleIndex, imports: ImportLookup | None = None) -> None:
        self.index = index
        #: the project's other modules; None when the file is checked on its own.
        self.imports = imports
        self._cache: dict[cst.CSTNode, frozenset[Value]] = {}
        self._in_progress: set[cst.CSTNode] = set()

    # -- names ---------------------------------------------------------------------------

    def qualified_names(self, node: cst.BaseExpression, scope: Scope | None = None) -> set[str]:
        """Fully qualified names ``node`` may refer to, through imports and simple aliases."""
        return self._qualified(node, scope or self.index.scope_of(node), 0)

    def _qualified(self, node: cst.BaseExpression, scope: Scope, depth: int) -> set[str]:
        if depth > _MAX_DEPTH:
            return set()
        if isinstance(node, cst.Attribute):
            return {
                f"{base}.{node.attr.value}"
                for base in self._qualified(node.value, scope, depth + 1)
            }
        if not isinstance(node, cst.Name):
            return set()
        names: set[str] = set()
        for binding in scope.lookup(node.value):
            if binding.kind is BindingKind.IMPORT:
                names.add(binding.qualified_name)
            elif binding.kind is BindingKind.ASSIGN and binding.node is not None:
                value = binding.node
                if isinstance(value, (cst.Name, cst.Attribute)):
                    names |= self._qualified(value, binding.scope or scope, depth + 1)
        return names

    def symbols(self, node: cst.BaseExpression, scope: Scope | None = None) -> set[Symbol]:
        found = set()
        for name in self.qualified_names(node, scope):
            symbol = symbol_for(name)
            if symbol is not None:
                found.add(symbol)
        return found

    def made_by(self, call: cst.Call) -> list[AutocastRegion | ScalerInstance]:
        """The autocast regions and GradScalers this very call makes. Only a call of one of
        their classes (any spelling, alias or ``partial``) makes one, so a call whose callee
        is not such a class is never evaluated (evaluating a call of a local function
        evaluates what it returns: the cost of a whole-module scan of calls)."""
        if not any(
            isinstance(value, SymbolValue) and value.symbol in _MAKERS
            for value in self.evaluate(call.func)
        ):
            return []
        return [
            value
            for value in self.evaluate(call)
            if isinstance(value, (AutocastRegion, ScalerInstance)) and value.call is call
        ]

    def is_symbol(self, node: cst.BaseExpression, *symbols: Symbol) -> bool:
        return bool(self.symbols(node) & set(symbols))

    # -- values --------------------------------------------------------------------------

    def evaluate(self, node: cst.BaseExpression, scope: Scope | None = None) -> frozenset[Value]:
        scope = scope or self.index.scope_of(node)
        cached = self._cache.get(node)
        if cached is not None:
            return cached
        if node in self._in_progress:
            return frozenset({UNKNOWN})
        self._in_progress.add(node)
        try:
            result = frozenset(self._evaluate(node, scope))
        finally:
            self._in_progress.discard(node)
        self._cache[node] = result
        return result

    def _evaluate(self, node: cst.BaseExpression, scope: Scope) -> Iterable[Value]:
        if isinstance(node, cst.IfExp):
            return self.evaluate(node.body, scope) | self.evaluate(node.orelse, scope)
        if isinstance(node, cst.Name) and node.value == "None":
            return {NoneValue()}
        if isinstance(node, cst.Call):
            return self._evaluate_call(node, scope)
        if isinstance(node, (cst.Name, cst.Attribute)):
            return self._evaluate_reference(node, scope)
        return {UNKNOWN}

    def _evaluate_reference(self, node: cst.Name | cst.Attribute, scope: Scope) -> set[Value]:
        values: set[Value] = set()
        if isinstance(node, cst.Attribute):
            # `torch.amp.autocast`, `amp.GradScaler` with `amp` an imported module, ...
            qualified = self._qualified(node, scope, 0)
            for name in qualified:
                symbol = symbol_for(name)
                if symbol is not None:
                    values.add(SymbolValue(symbol))
            if values:
                return values
            if self.imports is not None:
                for name in qualified:
                    imported = self.imports.value_of(name, node)
                    if imported is not None:
                        values |= imported
                if values:
                    return values
        bindings = self._bindings_of(node, scope)
        if not bindings:
            return {UNKNOWN}
        # Every binding counts: `amp_autocast = suppress` then, under a flag,
        # `amp_autocast = partial(torch.autocast, ...)` may be either at the `with`.
        for binding in bindings:
            if binding.kind is BindingKind.IMPORT:
                symbol = symbol_for(binding.qualified_name)
                if symbol is not None:
                    values.add(SymbolValue(symbol))
                else:
                    values |= self._imported(binding.qualified_name, node)
            elif binding.kind is BindingKind.ASSIGN and binding.node is not None:
                values |= self.evaluate(binding.node, binding.scope or scope)  # type: ignore[arg-type]
            elif binding.unpacked is not None and self.imports is not None:
                values |= self._unpacked(*binding.unpacked, binding.scope or scope)
            else:
                values.add(UNKNOWN)
        return values

    def _imported(self, qualified_name: str, node: cst.CSTNode) -> frozenset[Value]:
        if self.imports is None:
            return frozenset({UNKNOWN})
        return self.imports.value_of(qualified_name, node) or frozenset({UNKNOWN})

    def _unpacked(self, value: cst.BaseExpression, position: int, scope: Scope) -> set[Value]:
        """``a, b = init()`` where ``init`` is another module's function: its ``b``."""
        if not isinstance(value, cst.Call):
            return {UNKNOWN}
        results: set[Value] = set()
        for callee in self.evaluate(value.func, scope):
            if isinstance(callee, ImportedValue):
                results |= callee.unpacked(value, position)
            else:
                results.add(UNKNOWN)
        return results or {UNKNOWN}

    def _bindings_of(self, node: cst.Name | cst.Attribute, scope: Scope) -> list[Binding]:
        if isinstance(node, cst.Name):
            return scope.lookup(node.value)
        receiver = node.value
        if isinstance(receiver, cst.Name) and receiver.value == "self":
            info = self.index.enclosing_class(node)
            if info is not None:
                attribute = node.attr.value
                inherited = self.index.class_attribute(info, attribute)
                if inherited:
                    return inherited
                prop = info.methods.get(attribute)
                if prop is not None and _is_property(prop):
                    return [
                        Binding(BindingKind.ASSIGN, node=value, scope=self.index.functions[prop])
                        for value in _return_values(prop)
                    ]
        return []

    def _evaluate_call(self, call: cst.Call, scope: Scope) -> set[Value]:
        results: set[Value] = set()
        for callee in self.evaluate(call.func, scope):
            if isinstance(callee, SymbolValue):
                results.add(self._call_symbol(callee, call, scope))
            elif isinstance(callee, ImportedValue):
                results |= callee.called(call)
            else:
                results |= self._call_local_function(call, scope)
        return results or {UNKNOWN}

    def _call_symbol(self, callee: SymbolValue, call: cst.Call, scope: Scope) -> Value:
        symbol = callee.symbol
        if symbol is Symbol.PARTIAL and call.args and call.args[0].keyword is None:
            target = [v for v in self.evaluate(call.args[0].value, scope)]
            inner = [v for v in target if isinstance(v, SymbolValue)]
            if len(inner) == 1 and len(target) == 1:
                keywords = tuple(
                    (arg.keyword.value, arg.value) for arg in call.args[1:] if arg.keyword
                )
                positional = tuple(arg.value for arg in call.args[1:] if arg.keyword is None)
                return SymbolValue(
                    inner[0].symbol,
                    inner[0].bound + keywords,
                    inner[0].bound_positional + positional,
                )
            return UNKNOWN
        if symbol in AUTOCAST_SYMBOLS:
            return self._autocast_region(callee, call, scope)
        if symbol in SCALER_SYMBOLS:
            # torch.amp.GradScaler(device, init_scale, growth_factor, backoff_factor,
            # growth_interval, enabled); the legacy classes have no device parameter.
            device_first = symbol in (Symbol.GRAD_SCALER, Symbol.SHARDED_GRAD_SCALER)
            enabled_expr = _argument(call, callee, "enabled", position=5 if device_first else 4)
            enabled = True if enabled_expr is None else _literal_bool(enabled_expr)
            device: str | None = "cuda" if symbol is Symbol.CUDA_GRAD_SCALER else "cpu"
            if device_first:
                device_expr = _argument(call, callee, "device", position=0)
                device = "cuda" if device_expr is None else _literal_string(device_expr)
            return ScalerInstance(call, symbol, enabled, device)
        if symbol is Symbol.NULL_CONTEXT:
            return NullContext()
        if symbol is Symbol.OPTIMIZER_CLASS:
            return OptimizerInstance()
        if symbol is Symbol.LR_SCHEDULER:
            return SchedulerInstance()
        return UNKNOWN

    def _autocast_region(self, callee: SymbolValue, call: cst.Call, scope: Scope) -> Value:
        symbol = callee.symbol
        if symbol is Symbol.AUTOCAST:
            device_expr = _argument(call, callee, "device_type", position=0)
            dtype_expr = _argument(call, callee, "dtype", position=1)
            device_literal = _literal_string(device_expr) if device_expr is not None else None
            device = device_literal.split(":")[0] if device_literal is not None else None
        else:
            # Legacy constructors take (enabled, dtype, cache_enabled) and fix the device.
            dtype_expr = _argument(call, callee, "dtype", position=1)
            device = "cuda" if symbol is Symbol.CUDA_AUTOCAST else "cpu"
            device_literal = None
            device_expr = None
        enabled_expr = _enabled_argument(call, callee)
        # `autocast(device_type=device, **kwargs)` (a helper forwarding its own keywords) may
        # be given any dtype and `enabled=False`: what is not written is unknown, not default.
        forwarded = any(arg.star == "**" for arg in call.args)
        if dtype_expr is None:
            dtype = None if forwarded else {"cuda": "float16", "cpu": "bfloat16"}.get(device or "")
        else:
            dtype = self._dtype_of(dtype_expr, scope)
        if enabled_expr is None:
            enabled = None if forwarded else True
        else:
            enabled = _literal_bool(enabled_expr)
        return AutocastRegion(
            call=call,
            symbol=symbol,
            device=device,
            device_literal=device_literal,
            dtype=dtype,
            enabled=enabled,
            device_expr=device_expr,
        )

    def _dtype_of(self, node: cst.BaseExpression, scope: Scope) -> str | None:
        dtypes: set[str | None] = set()
        for value in self.evaluate(node, scope):
            if isinstance(value, SymbolValue) and value.symbol in DTYPE_NAMES:
                dtypes.add(DTYPE_NAMES[value.symbol])
            else:
                dtypes.add(None)
        if len(dtypes) == 1:
            return dtypes.pop()
        return None

    def _call_local_function(self, call: cst.Call, scope: Scope) -> set[Value]:
        """What a same-module function or method returns (or yields, as a context manager),
        or a lambda bound once to a name (``amp = lambda: torch.autocast("cuda")``)."""
        if isinstance(call.func, cst.Name):
            bindings = self.index.scope_of(call).lookup(call.func.value)
            if (
                len(bindings) == 1
                and bindings[0].kind is BindingKind.ASSIGN
                and isinstance(bindings[0].node, cst.Lambda)
            ):
                body = bindings[0].node.body
                return set(self.evaluate(body, self.index.scope_of(body)))
        function = self.resolve_local_callable(call)
        if function is None:
            return {UNKNOWN}
        function_scope = self.index.functions[function]
        if any(self.is_symbol(d.decorator, Symbol.CONTEXTMANAGER) for d in function.decorators):
            regions = self._context_manager_values(function)
            return {self._as_called(value, call, function) for value in regions}
        values: set[Value] = set()
        returns = _return_values(function)
        if not returns:
            return {UNKNOWN}
        for value in returns:
            values |= self.evaluate(value, function_scope)
        return {self._as_called(value, call, function) for value in values}

    def _as_called(self, value: Value, call: cst.Call, function: cst.FunctionDef) -> Value:
        """A region the function makes, with ``enabled`` as this call decides it where the
        function leaves it to its caller (``maybe_amp(enabled=False)``)."""
        if not isinstance(value, AutocastRegion) or value.enabled is not None:
            return value
        if self.index.parent(call) is None:
            return value  # a stand-in call (a summary asking what the function makes)
        switch = enabled_switch(self.index, value, function)
        enabled = None if switch is None else enabled_at_call(call, switch)
        return value if enabled is None else replace(value, enabled=enabled)

    def _context_manager_values(self, function: cst.FunctionDef) -> set[Value]:
        """A generator context manager is an autocast region when its ``yield`` is in one."""
        regions: set[Value] = set()
        for node in _walk_function_body(function):
            if isinstance(node, cst.Yield):
                for ancestor in self.index.ancestors(node):
                    if ancestor is function:
                        break
                    if isinstance(ancestor, cst.With):
                        for item in ancestor.items:
                            regions |= {
                                v
                                for v in self.evaluate(item.item)
                                if isinstance(v, (AutocastRegion, NullContext))
                            }
        return regions or {UNKNOWN}

    def resolve_local_callable(self, call: cst.Call) -> cst.FunctionDef | None:
        """The FunctionDef a call runs when it is a function or ``self`` method of this module."""
        func = call.func
        scope = self.index.scope_of(call)
        if isinstance(func, cst.Name):
            bindings = scope.lookup(func.value)
            if len(bindings) == 1 and bindings[0].kind is BindingKind.FUNCTION:
                node = bindings[0].node
                return node if isinstance(node, cst.FunctionDef) else None
            if len(bindings) == 1 and bindings[0].kind is BindingKind.CLASS:
                info = self.index.classes.get(bindings[0].node)  # type: ignore[arg-type]
                return info.methods.get("__init__") if info else None
            return None
        if isinstance(func, cst.Attribute) and dotted_name(func.value) == "self":
            info = self.index.enclosing_class(call)
            if info is not None:
                method = self.index.class_method(info, func.attr.value)
                if method is not None and not _is_property(method):
                    return method
        return None

    def resolve_called_instance_class(self, call: cst.Call) -> cst.FunctionDef | None:
        """``obj(...)`` where ``obj`` holds an instance of a same-module class: its ``__call__``."""
        for value_node in self._assigned_nodes(call.func):
            if isinstance(value_node, cst.Call):
                func = value_node.func
                if isinstance(func, cst.Name):
                    scope = self.index.scope_of(value_node)
                    bindings = scope.lookup(func.value)
                    if len(bindings) == 1 and bindings[0].kind is BindingKind.CLASS:
                        info = self.index.classes.get(bindings[0].node)  # type: ignore[arg-type]
                        if info is not None and "__call__" in info.methods:
                            return info.methods["__call__"]
        return None

    def _assigned_nodes(self, node: cst.BaseExpression) -> list[cst.BaseExpression]:
        if not isinstance(node, (cst.Name, cst.Attribute)):
            return []
        bindings = self._bindings_of(node, self.index.scope_of(node))
        return [b.node for b in bindings if b.kind is BindingKind.ASSIGN and b.node is not None]  # type: ignore[misc]


def _argument(
    call: cst.Call, callee: SymbolValue, keyword: str, position: int | None
) -> cst.BaseExpression | None:
    """The expression given for a parameter, from the call or from a ``partial``."""
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == keyword:
            return arg.value
    for name, value in callee.bound:
        if name == keyword:
            return value
    if position is None:
        return None
    positional = [*callee.bound_positional]
    for arg in call.args:
        if arg.keyword is None and not arg.star:
            positional.append(arg.value)
    if position < len(positional):
        return positional[position]
    return None


def _enabled_argument(call: cst.Call, callee: SymbolValue) -> cst.BaseExpression | None:
    """The expression given for an autocast constructor's ``enabled``: the third argument of
    ``torch.autocast(device_type, dtype, enabled)``, the first of the legacy classes'."""
    position = 2 if callee.symbol is Symbol.AUTOCAST else 0
    return _argument(call, callee, "enabled", position=position)


def _is_property(function: cst.FunctionDef) -> bool:
    return any(
        isinstance(d.decorator, cst.Name) and d.decorator.value in ("property", "cached_property")
        for d in function.decorators
    )


def _walk_function_body(function: cst.FunctionDef) -> Iterable[cst.CSTNode]:
    """Every node of the function's own body, not descending into nested defs."""
    stack: list[cst.CSTNode] = [function.body]
    while stack:
        node = stack.pop()
        yield node
        for child in iter_children(node):
            if type(child) not in NESTED_SCOPE_TYPES:
                stack.append(child)


def _return_values(function: cst.FunctionDef) -> list[cst.BaseExpression]:
    return [
        node.value
        for node in _walk_function_body(function)
        if type(node) is cst.Return and node.value is not None  # type: ignore[attr-defined]
    ]


walk_function_body = _walk_function_body


#: Where a caller decides whether a function's autocast region is enabled: the parameter it
#: is read from, as ``(name, position or None, default or None)``; ``("**", None, True)``
#: where the function forwards its keywords to autocast (on unless given ``enabled=False``).
EnabledSwitch = tuple[str, int | None, bool | None]


def enabled_switch(
    index: ModuleIndex, region: AutocastRegion, function: cst.FunctionDef | None = None
) -> EnabledSwitch | None:
    """The switch of a region made in a function (``function``, when given, must be the
    nearest one around it); None when the function decides ``enabled`` itself.

    ``def maybe_amp(enabled=False): return torch.autocast("cuda", enabled=enabled)`` is off
    in ``maybe_amp()`` and ``maybe_amp(False)``: without the switch, every call of it would
    count as a region that may be on."""
    call = region.call
    around = next(
        (node for node in index.ancestors(call) if isinstance(node, cst.FunctionDef)), None
    )
    if around is None or (function is not None and around is not function):
        return None
    if any(arg.star == "*" for arg in call.args):
        return None
    given = _enabled_argument(call, SymbolValue(region.symbol))
    params = around.params
    if given is None:
        forwarded = params.star_kwarg
        if forwarded is not None and any(
            arg.star == "**"
            and isinstance(arg.value, cst.Name)
            and arg.value.value == forwarded.name.value
            for arg in call.args
        ):
            return ("**", None, True)
        return None
    if not isinstance(given, cst.Name):
        return None
    bindings = index.scope_of(call).lookup(given.value)
    if len(bindings) != 1 or bindings[0].kind is not BindingKind.PARAM:
        return None  # reassigned in the body, or no parameter at all
    for position, param in enumerate([*params.posonly_params, *params.params]):
        if param.name.value == given.value:
            return (given.value, position, _default_bool(param.default))
    for param in params.kwonly_params:
        if param.name.value == given.value:
            return (given.value, None, _default_bool(param.default))
    return None


def enabled_at_call(call: cst.Call, switch: EnabledSwitch) -> bool | None:
    """Whether the region is enabled as ``call`` calls its function: the literal given for
    the switch's parameter, its default when none is given; None when decided at run time."""
    parameter, position, default = switch
    if parameter == "**":
        parameter = "enabled"  # the keywords go to autocast itself
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == parameter:
            return _literal_bool(arg.value)
    if any(arg.star for arg in call.args):
        return None  # `*args` / `**kwargs`: anything may be given
    positional = [arg.value for arg in call.args if arg.keyword is None]
    if position is not None and position < len(positional):
        return _literal_bool(positional[position])
    return default


def _default_bool(node: cst.BaseExpression | None) -> bool | None:
    return None if node is None else _literal_bool(node)
