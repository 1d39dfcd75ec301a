"""Names imported from the project's other modules, as the evaluator's values.

The engine (:mod:`amplint.engine.project`) finds the module an import names and its
:class:`~amplint.analysis.summary.ModuleSummary`; this module turns the summary's facts into
values of the importing module: ``init_opt()`` gives a GradScaler at position 1,
``from helper import amp_ctx`` an autocast factory, ``Wrapper()`` of another module an
object that is surely no GradScaler. A value made elsewhere carries an
:class:`~amplint.analysis.values.Origin` and a stand-in call that is no node of this
module, so no rule takes it for a construction of its own (nor fixes it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import libcst as cst

from amplint.analysis.model import ModuleModel, method_name, receiver
from amplint.analysis.summary import Facts, FunctionSummary, ModuleSummary
from amplint.analysis.symbols import Symbol
from amplint.analysis.values import (
    UNKNOWN,
    AutocastRegion,
    ImportedValue,
    ImportLookup,
    NoneValue,
    NullContext,
    OptimizerInstance,
    Origin,
    ScalerInstance,
    SymbolValue,
    Value,
    enabled_at_call,
)

#: Re-exports followed before giving up (``pkg/__init__.py`` -> ``pkg/helper.py`` -> ...).
_MAX_HOPS = 4
_DTYPES = {"float16": Symbol.FLOAT16, "bfloat16": Symbol.BFLOAT16, "float32": Symbol.FLOAT32}


class SummarySource(Protocol):
    """Where summaries come from (the engine's project, for one importing file)."""

    def locate(self, importer: str, level: int, parts: tuple[str, ...]) -> tuple[str, int] | None:
        """The file of the longest prefix of ``parts`` that is a project module (relative
        to ``importer`` for ``level`` > 0), and how many parts that prefix took."""

    def summary(self, path: str) -> ModuleSummary | None: ...


@dataclass(frozen=True)
class ProjectObject:
    """An object another module of the project makes that is no GradScaler, autocast or
    optimizer (an instance of its own class: timm's ``NativeScaler`` wrapper and kin)."""

    #: calling it runs a backward pass (its class's ``__call__`` does).
    backward_on_call: bool = False


@dataclass(frozen=True, eq=False)
class ImportedFunction(ImportedValue):
    name: str
    facts: FunctionSummary
    path: str
    #: its module trains with a GradScaler (and so reports its own checkpoints).
    module_trains: bool = False

    def called(self, call: cst.Call) -> frozenset[Value]:
        return _values(self.facts.returns, call, self.path, self.name)

    def unpacked(self, call: cst.Call, position: int) -> frozenset[Value]:
        return _values(self.facts.items.get(position), call, self.path, self.name)

    def runs_backward(self, under_autocast: bool = False) -> bool:
        if under_autocast:
            return self.facts.runs_backward_under_autocast
        return self.facts.runs_backward

    def saves_first_argument(self) -> bool:
        return self.facts.saves_first_argument


@dataclass(frozen=True, eq=False)
class ImportedClass(ImportedValue):
    name: str
    is_scaler: bool
    path: str
    #: its instances, called, run a backward pass.
    backward_on_call: bool = False

    def called(self, call: cst.Call) -> frozenset[Value]:
        if not self.is_scaler:
            return frozenset({ProjectObject(self.backward_on_call)})
        # A GradScaler subclass: a scaler, with what it is given unknown.
        fact = ("scaler", Symbol.GRAD_SCALER.value, None, None, 0, False)
        return _values((fact,), call, self.path, self.name)


@dataclass(frozen=True, eq=False)
class ImportedFactory(ImportedValue):
    """``partial(torch.autocast, ...)`` kept in another module: calling it enters autocast."""

    device: str | None
    dtype: str | None
    enabled: bool | None
    path: str
    name: str

    def called(self, call: cst.Call) -> frozenset[Value]:
        fact = ("autocast", self.device, self.dtype, self.enabled, 0, None)
        return _values((fact,), call, self.path, self.name)


class ProjectImports(ImportLookup):
    """The evaluator's view of the project, for one importing file."""

    def __init__(self, source: SummarySource, importer: str) -> None:
        self.source = source
        self.importer = importer
        self._memo: dict[str, tuple[str, str] | None] = {}

    def value_of(self, qualified_name: str, site: cst.CSTNode) -> frozenset[Value] | None:
        if qualified_name == "torch" or qualified_name.startswith("torch."):
            return None  # torch's meaning is amplint's symbol table, never a project module
        target = self._resolve(qualified_name)
        if target is None:
            return None
        return self._value(*target, site)

    def _resolve(self, qualified_name: str) -> tuple[str, str] | None:
        """``(module file, attribute)`` that a binding's qualified name denotes."""
        if qualified_name in self._memo:
            return self._memo[qualified_name]
        dots = len(qualified_name) - len(qualified_name.lstrip("."))
        parts = tuple(p for p in qualified_name[dots:].split(".") if p)
        # The scope layer writes `from .a import b` as ".a.b" and `from . import a` as
        # "..a": a string with several dots may be either; only an answer both agree on,
        # or the only one that exists, is taken.
        readings = []
        if dots == 0:
            readings.append((0, parts))
        else:
            if len(parts) >= 2:
                readings.append((dots, parts))
            if dots >= 2:
                readings.append((dots - 1, parts))
        answers = {self._attribute(level, found) for level, found in readings}
        answers.discard(None)
        result = answers.pop() if len(answers) == 1 else None
        self._memo[qualified_name] = result
        return result

    def _attribute(
        self, level: int, parts: tuple[str, ...], importer: str | None = None
    ) -> tuple[str, str] | None:
        located = self.source.locate(importer or self.importer, level, parts)
        if located is None:
            return None
        path, used = located
        rest = parts[used:]
        return (path, rest[0]) if len(rest) == 1 else None

    def _value(
        self, path: str, name: str, site: cst.CSTNode, hops: int = 0
    ) -> frozenset[Value] | None:
        summary = self.source.summary(path)
        if summary is None:
            return None
        function = summary.functions.get(name)
        if function is not None:
            return frozenset(
                {ImportedFunction(name, function, summary.path, summary.scales_losses)}
            )
        if name in summary.classes:
            return frozenset(
                {
                    ImportedClass(
                        name,
                        summary.classes[name],
                        summary.path,
                        name in summary.backward_on_call,
                    )
                }
            )
        facts = summary.names.get(name)
        if facts is not None:
            return _values(facts, site, summary.path, name)
        spec = summary.imports.get(name)
        if spec is None or hops >= _MAX_HOPS:
            return None
        level, module, imported = spec
        if imported is None or (level == 0 and module.split(".")[0] == "torch"):
            return None
        parts = (*[p for p in module.split(".") if p], imported)
        target = self._attribute(level, tuple(parts), importer=path)
        if target is None:
            return None
        return self._value(*target, site, hops + 1)


def _values(facts: Facts | None, site: cst.CSTNode, path: str, via: str) -> frozenset[Value]:
    if not facts:
        return frozenset({UNKNOWN})
    values: set[Value] = set()
    for fact in facts:
        kind = fact[0]
        if kind == "scaler":
            _, symbol, enabled, device, line, shared = fact
            values.add(
                ScalerInstance(
                    cst.Call(func=cst.Name("GradScaler")),  # a stand-in: no node of this module
                    Symbol(symbol),
                    enabled,
                    device,
                    origin=Origin(site, _where(path, line), via, shared),
                )
            )
        elif kind == "autocast":
            _, device, dtype, enabled, line, switch = fact
            if enabled is None and switch is not None and isinstance(site, cst.Call):
                enabled = enabled_at_call(site, switch)
            values.add(
                AutocastRegion(
                    call=cst.Call(func=cst.Name("autocast")),
                    symbol=Symbol.AUTOCAST,
                    device=device,
                    device_literal=device,
                    dtype=dtype,
                    enabled=enabled,
                    origin=Origin(site, _where(path, line), via),
                )
            )
        elif kind == "factory":
            # A function returning `partial(torch.autocast, ...)`: calling what it returns
            # enters autocast.
            _, device, dtype, enabled = fact
            values.add(ImportedFactory(device, dtype, enabled, path, via))
        elif kind == "null-factory":
            values.add(SymbolValue(Symbol.NULL_CONTEXT))
        elif kind == "none":
            values.add(NoneValue())
        elif kind == "null":
            values.add(NullContext())
        elif kind == "optimizer":
            values.add(OptimizerInstance())
        elif kind == "object":
            values.add(ProjectObject())
        elif kind == "dtype" and fact[1] in _DTYPES:
            values.add(SymbolValue(_DTYPES[fact[1]]))
        else:
            values.add(UNKNOWN)
    return frozenset(values)


def _where(path: str, line: int) -> str:
    return f"{path}:{line}" if line else path


# -- what the rules ask ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportedScaler:
    """A GradScaler another module built, used to train here; ``site`` is this module's
    expression that brought it in (``init_opt()``, ``helper.scaler``)."""

    site: cst.CSTNode
    instance: ScalerInstance
    where: str
    via: str


def imported_scalers(model: ModuleModel) -> list[ImportedScaler]:
    """The scalers built by other modules of the project that this module scales, unscales
    or steps with, one per site (empty for a file checked on its own)."""
    if model.imports is None:
        return []
    found: dict[cst.CSTNode, ImportedScaler] = {}
    for call in model.index.calls:
        target = receiver(call)
        if method_name(call) not in ("scale", "unscale_", "step") or target is None:
            continue
        for instance in model.scaler_instances(target):
            origin = instance.origin
            if origin is not None and origin.site not in found:
                found[origin.site] = ImportedScaler(origin.site, instance, origin.where, origin.via)
    return list(found.values())


@dataclass(frozen=True)
class CheckpointHelperCall:
    """A call of another module's function that checkpoints an optimizer without a scaler."""

    call: cst.Call
    name: str
    where: str
    #: "save" or "load"
    side: str
    #: the helper's own module trains with a scaler (and reports the helper itself).
    reported_there: bool


def checkpoint_helper_calls(model: ModuleModel) -> list[CheckpointHelperCall]:
    """Calls of the project's checkpoint helpers that drop the GradScaler's state."""
    if model.imports is None:
        return []
    found = []
    for call in model.index.calls:
        if not isinstance(call.func, (cst.Name, cst.Attribute)):
            continue
        callees = model.evaluator.evaluate(call.func)
        if len(callees) != 1:
            continue
        (callee,) = callees
        if not isinstance(callee, ImportedFunction):
            continue
        for side, line in (
            ("save", callee.facts.saves_without_scaler),
            ("load", callee.facts.restores_without_scaler),
        ):
            if line is not None:
                found.append(
                    CheckpointHelperCall(
                        call, callee.name, _where(callee.path, line), side, callee.module_trains
                    )
                )
    return found
