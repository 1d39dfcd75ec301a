"""Where a module names torch's AMP API: deprecated spellings, version guards, argument rewrites.

Shared by the API and device-family rules (AMP007, AMP008, AMP015, AMP017, AMP020). Name
resolution here follows imports only (never assignments): a deprecated object behind a
local alias (``ac = torch.cuda.amp.autocast``) is reported where the alias is made.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal
from weakref import WeakKeyDictionary

import libcst as cst

from amplint.analysis.model import ModuleModel
from amplint.analysis.scopes import BindingKind, Scope, dotted_name

Kind = Literal["autocast", "scaler", "custom_fwd", "custom_bwd", "function"]


@dataclass(frozen=True)
class Deprecated:
    """A deprecated AMP object and what replaces it."""

    kind: Kind
    device: str
    #: the spelling users know, e.g. ``torch.cuda.amp.autocast``.
    legacy: str
    #: the attribute of ``torch.amp`` (or of ``torch`` for functions) that replaces it.
    new_name: str

    @property
    def new_path(self) -> str:
        return f"torch.{self.new_name}" if self.kind == "function" else f"torch.amp.{self.new_name}"

    @property
    def replacement(self) -> str:
        device = f'"{self.device}"'
        if self.kind in ("autocast", "scaler"):
            return f"{self.new_path}({device}, ...)"
        if self.kind in ("custom_fwd", "custom_bwd"):
            return f"{self.new_path}(device_type={device})"
        return f"{self.new_path}({device}, ...)"


def _table() -> dict[str, Deprecated]:
    table: dict[str, Deprecated] = {}
    for device in ("cuda", "cpu"):
        base = f"torch.{device}.amp"
        autocast = Deprecated("autocast", device, f"{base}.autocast", "autocast")
        scaler = Deprecated("scaler", device, f"{base}.GradScaler", "GradScaler")
        table[f"{base}.autocast"] = table[f"{base}.autocast_mode.autocast"] = autocast
        table[f"{base}.GradScaler"] = table[f"{base}.grad_scaler.GradScaler"] = scaler
    for name, kind in (("custom_fwd", "custom_fwd"), ("custom_bwd", "custom_bwd")):
        spec = Deprecated(kind, "cuda", f"torch.cuda.amp.{name}", name)  # type: ignore[arg-type]
        table[f"torch.cuda.amp.{name}"] = table[f"torch.cuda.amp.autocast_mode.{name}"] = spec
    for legacy_device, device in (("gpu", "cuda"), ("cpu", "cpu"), ("xla", "xla"), ("ipu", "ipu")):
        for old, new in (
            (f"get_autocast_{legacy_device}_dtype", "get_autocast_dtype"),
            (f"set_autocast_{legacy_device}_dtype", "set_autocast_dtype"),
            (f"is_autocast_{legacy_device}_enabled", "is_autocast_enabled"),
            (f"set_autocast_{legacy_device}_enabled", "set_autocast_enabled"),
        ):
            if legacy_device == "gpu" and "enabled" in old:
                continue  # torch.is_autocast_enabled() itself means CUDA; no *_gpu_enabled
            table[f"torch.{old}"] = Deprecated("function", device, f"torch.{old}", new)
    return table


DEPRECATED: dict[str, Deprecated] = _table()

#: legacy modules and the modern module with the same members.
LEGACY_MODULES = {
    "torch.cuda.amp": "torch.amp",
    "torch.cpu.amp": "torch.amp",
    "torch.cuda.amp.autocast_mode": "torch.amp.autocast_mode",
    "torch.cpu.amp.autocast_mode": "torch.amp.autocast_mode",
    "torch.cuda.amp.grad_scaler": "torch.amp.grad_scaler",
    "torch.cpu.amp.grad_scaler": "torch.amp.grad_scaler",
}

#: legacy positional parameters, in order, of the classes whose new form takes a device first.
LEGACY_POSITIONAL = {
    "autocast": ("enabled", "dtype", "cache_enabled"),
    "scaler": ("init_scale", "growth_factor", "backoff_factor", "growth_interval", "enabled"),
}

#: what the new API raises on an old torch: missing names, and TypeError from
#: ``torch.is_autocast_enabled(device)`` before it took a device.
_GUARD_EXCEPTIONS = {
    "ImportError",
    "ModuleNotFoundError",
    "AttributeError",
    "TypeError",
    "Exception",
    "BaseException",
}


@dataclass(eq=False)
class ImportSite:
    statement: cst.Import | cst.ImportFrom
    alias: cst.ImportAlias
    #: what the local name denotes, e.g. ``torch.cuda.amp.autocast``.
    qualified: str
    #: the statement's module for ``from`` imports (``torch.cuda.amp``), else None.
    from_module: str | None


@dataclass(eq=False)
class Names:
    """Every name reference of a module that resolves through imports, computed once."""

    #: (scope, local name) -> import sites binding it.
    imports: dict[tuple[int, str], list[ImportSite]] = field(default_factory=dict)
    #: Name nodes in reference position (not attribute names, keywords, import aliases).
    references: list[cst.Name] = field(default_factory=list)
    #: every Attribute node outside import statements.
    attributes: list[cst.Attribute] = field(default_factory=list)
    #: every string literal (docstrings included).
    strings: list[cst.SimpleString | cst.FormattedString] = field(default_factory=list)


_CACHE: WeakKeyDictionary[ModuleModel, Names] = WeakKeyDictionary()


def names_of(model: ModuleModel) -> Names:
    cached = _CACHE.get(model)
    if cached is not None:
        return cached
    names = Names()
    skip: set[cst.CSTNode] = set()
    index = model.index
    # Exact type tests: libcst's node classes are ABCs, whose isinstance is ~5x slower, and
    # this loop sees every node of the module.
    for node in index.parents:
        kind = type(node)
        if kind is cst.Name:
            if node not in skip:
                names.references.append(node)  # type: ignore[arg-type]
        elif kind is cst.Attribute:
            if node not in skip:
                names.attributes.append(node)  # type: ignore[arg-type]
            skip.add(node.attr)  # type: ignore[attr-defined]
        elif kind is cst.Arg:
            if node.keyword is not None:  # type: ignore[attr-defined]
                skip.add(node.keyword)  # type: ignore[attr-defined]
        elif kind is cst.SimpleString or kind is cst.FormattedString:
            names.strings.append(node)  # type: ignore[arg-type]
        elif kind is cst.Import or kind is cst.ImportFrom:
            _collect_import(model, node, names, skip)  # type: ignore[arg-type]
    _CACHE[model] = names
    return names


def _collect_import(
    model: ModuleModel, node: cst.Import | cst.ImportFrom, names: Names, skip: set[cst.CSTNode]
) -> None:
    scope = model.index.scope_of(node)
    for child in _descendants(node):
        skip.add(child)
    if isinstance(node, cst.ImportFrom):
        if isinstance(node.names, cst.ImportStar) or node.relative:
            return
        module = dotted_name(node.module) if node.module is not None else None
        if module is None:
            return
        for alias in node.names:
            name = dotted_name(alias.name) or ""
            local = _asname(alias) or name
            site = ImportSite(node, alias, f"{module}.{name}", module)
            names.imports.setdefault((id(scope), local), []).append(site)
        return
    for alias in node.names:
        full = dotted_name(alias.name) or ""
        local = _asname(alias)
        if local is None:
            local, full = full.split(".")[0], full.split(".")[0]
        names.imports.setdefault((id(scope), local), []).append(ImportSite(node, alias, full, None))


def _asname(alias: cst.ImportAlias) -> str | None:
    if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
        return alias.asname.name.value
    return None


def _descendants(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    for child in node.children:
        yield child
        yield from _descendants(child)


def defining_scope(scope: Scope, name: str) -> Scope | None:
    """The scope whose binding ``scope.lookup(name)`` finds."""
    current: Scope | None = scope
    first = True
    while current is not None:
        if (first or not current.is_class) and name in current.bindings:
            return current
        first = False
        current = current.parent
    return None


def import_site(model: ModuleModel, name: cst.Name) -> ImportSite | None:
    """The one import that binds ``name`` here; None when anything else could bind it."""
    scope = model.index.scope_of(name)
    bindings = scope.lookup(name.value)
    if not bindings or any(b.kind is not BindingKind.IMPORT for b in bindings):
        return None
    owner = defining_scope(scope, name.value)
    if owner is None:
        return None
    sites = names_of(model).imports.get((id(owner), name.value), [])
    if len(sites) != len(bindings) or not sites:
        return None
    if len({s.qualified for s in sites}) > 1:
        # `try: from torch.cuda.amp import autocast` / `except ImportError: from torch.amp
        # import autocast`: on a current torch only the imports outside fallbacks run.
        sites = [s for s in sites if not is_guarded(model, s.statement)]
    # `import torch` beside `import torch.distributed`: every import binds the same module.
    if sites and all(s.qualified == sites[0].qualified for s in sites):
        return sites[0]
    return None


def is_torch_module(model: ModuleModel, name: cst.Name) -> bool:
    site = import_site(model, name)
    return site is not None and site.qualified == "torch"


def torch_name(model: ModuleModel) -> str | None:
    """The module-level name under which ``torch`` itself is imported (``torch``/``th``)."""
    for (scope_id, local), sites in names_of(model).imports.items():
        if scope_id != id(model.index.module_scope):
            continue
        bindings = model.index.module_scope.bindings.get(local, [])
        if (
            sites
            and all(s.qualified == "torch" for s in sites)
            and all(b.kind is BindingKind.IMPORT for b in bindings)
        ):
            return local
    return None


def chain_up(model: ModuleModel, name: cst.Name) -> list[cst.BaseExpression]:
    """``name`` and the attribute accesses built on it: ``torch``, ``torch.cuda``, ..."""
    chain: list[cst.BaseExpression] = [name]
    current: cst.BaseExpression = name
    while True:
        parent = model.index.parent(current)
        if isinstance(parent, cst.Attribute) and parent.value is current:
            chain.append(parent)
            current = parent
        else:
            return chain


# -- guards ----------------------------------------------------------------------------------


def is_guarded(model: ModuleModel, node: cst.CSTNode) -> bool:
    """Code that does not run on a current torch: a branch chosen by a check of torch's
    version or of the new API's presence (``if TORCH_VERSION < ...``, ``hasattr(torch,
    "amp")``), the fallback after such a check returned, or the ``except`` fallback of a
    compatibility block. (The ``try`` body runs on a current torch: it counts.)"""
    child = node
    for ancestor in model.index.ancestors(node):
        if isinstance(ancestor, (cst.If, cst.IfExp)) and _is_version_test(ancestor.test):
            return True
        if isinstance(ancestor, cst.ExceptHandler) and _is_guard_handler(ancestor):
            return True
        if isinstance(ancestor, (cst.IndentedBlock, cst.Module)) and _after_version_return(
            ancestor, child
        ):
            return True
        child = ancestor
    return False


def in_compatibility_try(model: ModuleModel, node: cst.CSTNode) -> bool:
    """In the ``try`` body of a compatibility block (one whose handler is a fallback): it runs
    on a current torch, but rewriting it would change what an older torch falls back to."""
    child = node
    for ancestor in model.index.ancestors(node):
        if (
            isinstance(ancestor, cst.Try)
            and child is ancestor.body
            and any(_is_guard_handler(h) for h in ancestor.handlers)
        ):
            return True
        child = ancestor
    return False


def _after_version_return(block: cst.IndentedBlock | cst.Module, statement: cst.CSTNode) -> bool:
    """``if hasattr(torch, "get_autocast_dtype"): ... return`` earlier in the block: what
    follows is the old-torch fallback."""
    for earlier in block.body:
        if earlier is statement:
            return False
        if (
            isinstance(earlier, cst.If)
            and _is_version_test(earlier.test)
            and isinstance(earlier.body, cst.IndentedBlock)
            and earlier.body.body
            and isinstance(earlier.body.body[-1], cst.SimpleStatementLine)
            and any(isinstance(s, (cst.Return, cst.Raise)) for s in earlier.body.body[-1].body)
        ):
            return True
    return False


#: names of the new API whose presence tells a new torch from an old one.
_NEW_API_NAMES = frozenset(
    {
        "amp",
        "autocast",
        "autocast_mode",
        "GradScaler",
        "grad_scaler",
        "custom_fwd",
        "custom_bwd",
        "get_autocast_dtype",
        "set_autocast_dtype",
        "is_autocast_available",
        "is_autocast_enabled",
        "set_autocast_enabled",
    }
)
#: words that, in a name that also says "torch", make it a version test
#: (``TORCH_VERSION``, ``is_torch_greater_or_equal``, ``_TORCH_GREATER_EQUAL_2_4``).
_TORCH_RELEASE = re.compile(r"torch_?\d")
_VERSION_WORDS = ("version", "greater", "less", "older", "newer", "at_least", "_ge_", "_lt_")


def _is_version_test(test: cst.BaseExpression) -> bool:
    """A test of torch's version (``torch.__version__``, ``TORCH_VERSION``,
    ``is_torch_greater_or_equal(...)``) or of the new API's presence
    (``hasattr(torch, "amp")``, ``hasattr(torch.amp, "GradScaler")``). Other ``hasattr``
    tests and ``is_torch_npu_available()`` say nothing about which AMP spelling exists."""
    nodes = [test, *_descendants(test)]
    words = [
        n.value if isinstance(n, cst.Name) else n.attr.value
        for n in nodes
        if isinstance(n, (cst.Name, cst.Attribute))
    ]
    mentions_torch = any("torch" in w.lower() for w in words)
    for word in words:
        lowered = word.lower()
        if "torch" in lowered and any(v in f"_{lowered}_" for v in _VERSION_WORDS):
            return True
        if _TORCH_RELEASE.search(lowered):
            return True  # `TORCH_2_4`, `_TORCH_1_13`: flags set from torch's version
        if "version" in lowered and mentions_torch:
            return True
    return any(_is_presence_check(n) for n in nodes)


def _is_presence_check(node: cst.CSTNode) -> bool:
    """``hasattr(torch..., "<new API name>")`` / ``getattr(torch..., "<name>", None)``."""
    if not (
        isinstance(node, cst.Call)
        and isinstance(node.func, cst.Name)
        and node.func.value in ("hasattr", "getattr")
        and len(node.args) >= 2
    ):
        return False
    owner = dotted_name(node.args[0].value)
    name = node.args[1].value
    return (
        owner is not None
        and owner.split(".")[0] == "torch"
        and isinstance(name, cst.SimpleString)
        and name.evaluated_value in _NEW_API_NAMES
    )


def _is_guard_handler(handler: cst.ExceptHandler) -> bool:
    """A handler that catches what the new API raises on an old torch: the guard
    exceptions themselves, or anything (``except Exception:``, a bare ``except:``), and
    falls back instead of raising again (``except: save_state(); raise`` is cleanup)."""
    if _ends_raising(handler.body):
        return False
    kind = handler.type
    if kind is None:
        return True
    elements = [e.value for e in kind.elements] if isinstance(kind, cst.Tuple) else [kind]
    return any(dotted_name(e) in _GUARD_EXCEPTIONS for e in elements)


def _ends_raising(body: cst.BaseSuite) -> bool:
    statements = body.body if isinstance(body, cst.IndentedBlock) else [body]
    last = statements[-1] if statements else None
    if isinstance(last, (cst.SimpleStatementLine, cst.SimpleStatementSuite)):
        return bool(last.body) and isinstance(last.body[-1], cst.Raise)
    return False


def literal_string(node: cst.BaseExpression | None) -> str | None:
    if isinstance(node, (cst.SimpleString, cst.ConcatenatedString)):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    return None


def argument(call: cst.Call, keyword: str, position: int | None) -> tuple[cst.Arg | None, bool]:
    """The argument given for a parameter, and whether the call hides arguments
    (``*args``/``**kwargs``) that could supply it instead."""
    hidden = any(arg.star for arg in call.args)
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == keyword:
            return arg, hidden
    if position is not None:
        positional = [a for a in call.args if a.keyword is None and not a.star]
        if any(a.star == "*" for a in call.args):
            return None, True
        if position < len(positional):
            return positional[position], hidden
    return None, hidden
