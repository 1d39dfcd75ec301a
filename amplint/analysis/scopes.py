"""One pass over a module: parents, scopes and what each name is bound to.

This is the light name-resolution layer: imports with their aliases, assignments,
parameters and definitions per scope, with Python's lookup rules (class bodies are not
visible from the functions inside them). It never evaluates anything.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from enum import Enum

import libcst as cst


class BindingKind(Enum):
    IMPORT = "import"
    ASSIGN = "assign"
    PARAM = "param"
    FUNCTION = "function"
    CLASS = "class"
    OTHER = "other"  # loop targets, `with ... as`, tuple unpacking: value unknown


@dataclass(frozen=True)
class Binding:
    kind: BindingKind
    #: IMPORT: the qualified name; otherwise empty.
    qualified_name: str = ""
    #: ASSIGN: the assigned expression; FUNCTION/CLASS: the definition; PARAM: the Param.
    node: cst.CSTNode | None = None
    #: the scope in which ``node`` must be evaluated.
    scope: Scope | None = None
    #: OTHER from ``a, b = value``: the assigned value and this name's position in it.
    unpacked: tuple[cst.BaseExpression, int] | None = None


@dataclass(eq=False)
class Scope:
    node: cst.CSTNode  # Module, FunctionDef, ClassDef or Lambda
    parent: Scope | None
    bindings: dict[str, list[Binding]] = field(default_factory=lambda: defaultdict(list))

    @property
    def is_class(self) -> bool:
        return isinstance(self.node, cst.ClassDef)

    def lookup(self, name: str) -> list[Binding]:
        """Bindings visible for ``name`` from this scope, by Python's LEGB rule."""
        scope: Scope | None = self
        first = True
        while scope is not None:
            if (first or not scope.is_class) and name in scope.bindings:
                return scope.bindings[name]
            first = False
            scope = scope.parent
        return []


@dataclass(eq=False)
class ClassInfo:
    node: cst.ClassDef
    scope: Scope
    methods: dict[str, cst.FunctionDef] = field(default_factory=dict)
    #: ``self.<attr> = value`` anywhere in the class's methods, with the method's scope.
    attributes: dict[str, list[Binding]] = field(default_factory=lambda: defaultdict(list))


_HANDLERS: dict[type, tuple[dict[type, Callable], dict[type, Callable]]] = {}


def _handlers(owner: type) -> tuple[dict[type, Callable], dict[type, Callable]]:
    """``visit_<Node>`` / ``leave_<Node>`` methods of ``owner``, keyed by libcst node type."""
    if owner not in _HANDLERS:
        enter: dict[type, Callable] = {}
        leave: dict[type, Callable] = {}
        for attribute in dir(owner):
            prefix, _, node_name = attribute.partition("_")
            node_type = getattr(cst, node_name, None)
            if prefix in ("visit", "leave") and isinstance(node_type, type):
                (enter if prefix == "visit" else leave)[node_type] = getattr(owner, attribute)
        _HANDLERS[owner] = (enter, leave)
    return _HANDLERS[owner]


def dotted_name(node: cst.BaseExpression) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts: list[str] = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if not isinstance(node, cst.Name):
        return None
    parts.append(node.value)
    return ".".join(reversed(parts))


def _import_module_name(node: cst.BaseExpression | None) -> str:
    if node is None:
        return ""
    return dotted_name(node) or ""  # type: ignore[arg-type]


_FIELDS: dict[type, tuple[str, ...]] = {}
#: Fields whose source position comes first although libcst declares them later.
_LEADING_FIELDS = ("decorators",)


#: Fields that hold only layout (whitespace, comments, punctuation, operators): no rule ever
#: asks about them, and skipping them halves the nodes an analysis walks.
_LAYOUT_FIELDS = frozenset(
    {
        "colon", "comma", "dot", "equal", "semicolon", "lpar", "rpar", "lbrace", "rbrace",
        "lbracket", "rbracket", "first_colon", "second_colon", "header", "footer",
        "leading_lines", "lines_after_decorators", "empty_lines", "newline", "operator",
        "trailing_whitespace", "leading_whitespace", "comment", "asynchronous", "indent",
        "separator", "trailing_comma",
    }
)  # fmt: skip


def _child_fields(node_type: type) -> tuple[str, ...]:
    names = _FIELDS.get(node_type)
    if names is None:
        declared = [
            f.name
            for f in fields(node_type)
            if f.name not in _LAYOUT_FIELDS and not f.name.startswith("whitespace")
        ]
        leading = [name for name in _LEADING_FIELDS if name in declared]
        names = (*leading, *(name for name in declared if name not in leading))
        _FIELDS[node_type] = names
    return names


#: Nodes that open a scope of their own, as exact types: hot loops test ``type(node) in``
#: this rather than ``isinstance`` (libcst's node classes are ABCs, and slow to test).
NESTED_SCOPE_TYPES: frozenset[type[cst.CSTNode]] = frozenset(
    {cst.FunctionDef, cst.ClassDef, cst.Lambda}
)


def iter_children(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """The children of ``node`` that carry meaning, in source order (layout is skipped).

    Reading the dataclass fields directly is several times faster than libcst's visitor
    machinery, which rebuilds every node it passes through.
    """
    for name in _child_fields(type(node)):
        value = getattr(node, name)
        kind = type(value)
        if kind is list or kind is tuple:
            for item in value:
                if _is_node(type(item)):
                    yield item
        elif _is_node(kind):
            yield value


def names_read(root: cst.CSTNode) -> list[str]:
    """Every variable name under ``root``: attribute names and keyword names are none
    (``self.loss(...)`` and ``f(loss=...)`` do not read or bind a variable ``loss``)."""
    names: list[str] = []
    stack: list[cst.CSTNode] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, cst.Name):
            names.append(node.value)
        elif isinstance(node, (cst.Attribute, cst.Arg)):
            stack.append(node.value)
        else:
            stack.extend(iter_children(node))
    return names


_NODE_TYPES: dict[type, bool] = {}


def _is_node(kind: type) -> bool:
    """``issubclass(kind, cst.CSTNode)``, memoised: CSTNode is an ABC, and its
    ``isinstance`` check is the slowest part of walking a tree."""
    known = _NODE_TYPES.get(kind)
    if known is None:
        known = _NODE_TYPES[kind] = issubclass(kind, cst.CSTNode)
    return known


class ModuleIndex:
    """Parents, scopes, bindings, classes and the statements a rule usually starts from."""

    def __init__(self, module: cst.Module) -> None:
        self.module = module
        self.parents: dict[cst.CSTNode, cst.CSTNode] = {}
        self.scope_of_node: dict[cst.CSTNode, Scope] = {}
        self.module_scope = Scope(module, None)
        self.classes: dict[cst.ClassDef, ClassInfo] = {}
        self.class_by_name: dict[str, ClassInfo] = {}
        self.functions: dict[cst.FunctionDef, Scope] = {}
        self.module_functions: dict[str, cst.FunctionDef] = {}
        self.calls: list[cst.Call] = []
        self.withs: list[cst.With] = []
        #: identifiers (not strings or comments) that mention a scaler.
        self.scaler_identifiers: set[str] = set()
        self._scopes: list[Scope] = [self.module_scope]
        self._classes: list[ClassInfo | None] = [None]
        self._walk(module)

    def _walk(self, root: cst.CSTNode) -> None:
        """Depth-first, in source order, with an explicit stack (no recursion limit)."""
        enter, leave = _handlers(type(self))
        stack: list[tuple[cst.CSTNode, cst.CSTNode | None, bool]] = [(root, None, False)]
        while stack:
            node, parent, leaving = stack.pop()
            node_type = type(node)
            if leaving:
                leave[node_type](self, node)
                continue
            if parent is not None:
                self.parents[node] = parent
            self.scope_of_node[node] = self._scopes[-1]
            handler = enter.get(node_type)
            if handler is not None:
                handler(self, node)
            if node_type in leave:
                stack.append((node, None, True))
            children = list(iter_children(node))
            for child in reversed(children):
                stack.append((child, node, False))

    @property
    def _scope(self) -> Scope:
        return self._scopes[-1]

    def _bind(self, name: str, binding: Binding, scope: Scope | None = None) -> None:
        (scope or self._scope).bindings[name].append(binding)

    # -- scopes ------------------------------------------------------------------------------

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        enclosing = self._scope
        self._bind(node.name.value, Binding(BindingKind.FUNCTION, node=node, scope=enclosing))
        if enclosing is self.module_scope:
            self.module_functions[node.name.value] = node
        owner = self._classes[-1]
        if owner is not None and enclosing is owner.scope:
            owner.methods[node.name.value] = node
        scope = Scope(node, enclosing)
        self.functions[node] = scope
        self._scopes.append(scope)
        # Methods keep the class they belong to so `self.x = ...` lands on it; nested plain
        # functions inside a method still see the same `self`.
        self._classes.append(owner)
        for param in _all_params(node.params):
            self._bind(param.name.value, Binding(BindingKind.PARAM, node=param, scope=scope))

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._scopes.pop()
        self._classes.pop()

    def visit_Lambda(self, node: cst.Lambda) -> None:
        scope = Scope(node, self._scope)
        self._scopes.append(scope)
        for param in _all_params(node.params):
            self._bind(param.name.value, Binding(BindingKind.PARAM, node=param, scope=scope))

    def leave_Lambda(self, original_node: cst.Lambda) -> None:
        self._scopes.pop()

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._bind(node.name.value, Binding(BindingKind.CLASS, node=node, scope=self._scope))
        scope = Scope(node, self._scope)
        info = ClassInfo(node, scope)
        self.classes[node] = info
        self.class_by_name.setdefault(node.name.value, info)
        self._scopes.append(scope)
        self._classes.append(info)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self._scopes.pop()
        self._classes.pop()

    # -- bindings ------------------------------------------------------------------------

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            full = _import_module_name(alias.name)
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                self._bind(alias.asname.name.value, Binding(BindingKind.IMPORT, full))
            else:
                top = full.split(".")[0]
                self._bind(top, Binding(BindingKind.IMPORT, top))

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if isinstance(node.names, cst.ImportStar):
            return
        prefix = "." * len(node.relative) + _import_module_name(node.module)
        for alias in node.names:
            name = _import_module_name(alias.name)
            local = name
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                local = alias.asname.name.value
            self._bind(local, Binding(BindingKind.IMPORT, f"{prefix}.{name}"))

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            self._bind_target(target.target, node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self._bind_target(node.target, node.value)
        elif isinstance(node.target, cst.Name):
            self._bind(node.target.value, Binding(BindingKind.OTHER))

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._bind_target(node.target, None)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self._bind_target(node.target, node.value)

    def visit_For(self, node: cst.For) -> None:
        self._bind_target(node.target, None)

    def visit_WithItem(self, node: cst.WithItem) -> None:
        if node.asname is not None:
            self._bind_target(node.asname.name, None)

    def visit_With(self, node: cst.With) -> None:
        self.withs.append(node)

    def visit_ExceptHandler(self, node: cst.ExceptHandler) -> None:
        if node.name is not None:
            self._bind_target(node.name.name, None)

    def visit_Call(self, node: cst.Call) -> None:
        self.calls.append(node)

    def visit_Name(self, node: cst.Name) -> None:
        if "scaler" in node.value.lower():
            self.scaler_identifiers.add(node.value)

    def _bind_target(self, target: cst.BaseExpression, value: cst.BaseExpression | None) -> None:
        if isinstance(target, cst.Name):
            kind = BindingKind.ASSIGN if value is not None else BindingKind.OTHER
            self._bind(target.value, Binding(kind, node=value, scope=self._scope))
        elif isinstance(target, (cst.Tuple, cst.List)):
            starred = any(isinstance(e, cst.StarredElement) for e in target.elements)
            for position, element in enumerate(target.elements):
                inner = element.value
                if isinstance(inner, cst.StarredElement):
                    inner = inner.value
                if isinstance(inner, cst.Name) and value is not None and not starred:
                    # Still unknown here; an importing module's analysis may see into it.
                    unpacked = (value, position)
                    binding = Binding(BindingKind.OTHER, scope=self._scope, unpacked=unpacked)
                    self._bind(inner.value, binding)
                else:
                    self._bind_target(inner, None)
        elif isinstance(target, cst.Attribute) and value is not None:
            owner = self._classes[-1]
            receiver = target.value
            if owner is not None and isinstance(receiver, cst.Name) and receiver.value == "self":
                owner.attributes[target.attr.value].append(
                    Binding(BindingKind.ASSIGN, node=value, scope=self._scope)
                )

    # -- queries -------------------------------------------------------------------------

    def parent(self, node: cst.CSTNode) -> cst.CSTNode | None:
        return self.parents.get(node)

    def ancestors(self, node: cst.CSTNode) -> list[cst.CSTNode]:
        chain = []
        current = self.parents.get(node)
        while current is not None:
            chain.append(current)
            current = self.parents.get(current)
        return chain

    def scope_of(self, node: cst.CSTNode) -> Scope:
        return self.scope_of_node.get(node, self.module_scope)

    def enclosing_class(self, node: cst.CSTNode) -> ClassInfo | None:
        for ancestor in self.ancestors(node):
            if isinstance(ancestor, cst.ClassDef):
                return self.classes.get(ancestor)
        return None

    def lineage(self, info: ClassInfo) -> list[ClassInfo]:
        """``info`` and its base classes defined in this module, nearest first (a base
        named twice in the module, or one imported, ends the walk: it cannot be known)."""
        result = [info]
        pending = [info]
        while pending and len(result) < 8:
            current = pending.pop(0)
            for base in current.node.bases:
                name = base.value.value if isinstance(base.value, cst.Name) else None
                found = self.class_by_name.get(name) if name is not None else None
                if found is None or found in result:
                    continue
                if sum(1 for c in self.classes.values() if c.node.name.value == name) != 1:
                    continue
                result.append(found)
                pending.append(found)
        return result

    def class_attribute(self, info: ClassInfo, attribute: str) -> list[Binding]:
        """``self.<attribute> = ...`` of the class, else of its nearest same-module base
        that sets it (``self.amp_autocast`` made in the base class's ``__init__``)."""
        for owner in self.lineage(info):
            if attribute in owner.attributes:
                return owner.attributes[attribute]
        return []

    def class_method(self, info: ClassInfo, name: str) -> cst.FunctionDef | None:
        """The method ``self.<name>`` runs: the class's own, else its nearest same-module
        base's (a subclass override wins, as in Python's lookup)."""
        for owner in self.lineage(info):
            if name in owner.methods:
                return owner.methods[name]
            if name in owner.attributes:
                return None  # an instance attribute shadows a base-class method
        return None

    def enclosing_function(self, node: cst.CSTNode) -> cst.FunctionDef | None:
        for ancestor in self.ancestors(node):
            if isinstance(ancestor, cst.FunctionDef):
                return ancestor
        return None

    def statement_of(self, node: cst.CSTNode) -> cst.BaseStatement | None:
        """The statement (simple line or compound) that contains ``node``."""
        current: cst.CSTNode | None = node
        while current is not None and not isinstance(current, cst.BaseStatement):
            current = self.parents.get(current)
        return current


def _all_params(params: cst.Parameters) -> list[cst.Param]:
    found = [*params.posonly_params, *params.params, *params.kwonly_params]
    if isinstance(params.star_arg, cst.Param):
        found.append(params.star_arg)
    if params.star_kwarg is not None:
        found.append(params.star_kwarg)
    return found
