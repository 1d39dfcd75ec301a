"""The part of a large module the candidate rules can see: everything else blanked out.

libcst's parse is most of a cold run, and most of it goes to large modules whose AMP words
sit in a few functions (torch's 450 KB ``distributed_test.py`` steps a GradScaler in two of
its four hundred test methods). :func:`relevant_slice` keeps, of the module's statements and
of the members of its classes (at any depth), the *units*:

1. the *seeds*: those that mention an AMP word (any rule's) that few units of the module
   mention (``GradScaler`` anywhere; ``step`` in a training script, not in a library where
   every other method steps something), and for each candidate rule those that mention
   its rarest word group (a rule fires only where all its groups meet, so its rarest group
   marks every place it can);
2. the units that read a value a seed assigns from an AMP word (or from a name so bound
   before it), outside a function or to ``self`` (the ``self.gs.update()`` of a method
   without any AMP word, when ``__init__`` made ``self.gs = GradScaler()``), or a name a
   seed imports (``with ac():`` after ``from torch.cuda.amp import autocast as ac``); the
   units that call a function handing out an AMP object (a factory, a property, a
   context manager yielding inside ``autocast``); an AMP object kept on ``self`` is read
   also from base-class methods and through other receivers (``trainer.gs.update()``);
   and the units that call a seed function of the module, or call in a loop a seed
   method making an AMP object each time (a GradScaler made for each batch);
3. then, until nothing changes, the units that define what a kept unit reads: the helper a
   training loop calls, the import it resolves through, the module constant, the method or
   ``self`` attribute of the reader's class or its bases, as the analysis resolves it (a
   function's own parameters and locals are not reads: every test method has its ``rank``
   and ``model``);
4. and of a kept class, its header and the members Python calls without naming them
   (``__init__``, ``__call__``, ``forward``, not bookkeeping like ``__repr__``); a class
   whose members all went keeps the one that reads least, for a body.

Dropped units become blank lines, so every kept line keeps its number and columns, and
comments stay where they were (``noqa`` included). The result is only for reporting: a
fix's edits are always computed on the whole file.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from amplint.engine.prefilter import KEYWORD, PART, bare

#: Files below this many bytes are analysed whole: slicing them saves little.
SLICE_ABOVE = 32 * 1024
#: A slice that keeps more than this share of the lines is not worth the second look.
MAX_KEPT_SHARE = 0.8
#: An AMP word mentioned by at most this share of a module's units (or this many) marks
#: them as seeds: ``GradScaler`` does in any module, ``step`` does in a training script but
#: not in a library where every other method steps something. (The seeds each candidate
#: rule needs come from its rarest word group; these are a margin. At 5%, torch's
#: ``distributed_test.py``, 538 units, took every unit that says ``grad``, ``dtype``,
#: ``step`` or ``zero_grad`` (12-24 each), and its slice kept 5,555 lines for 2,414 now.)
RARE_SHARE = 0.02
MIN_RARE = 4


@dataclass(eq=False)
class _Unit:
    first: int  # first line, decorators included
    last: int
    #: every identifier of its code (for seeds), bare names read, ``self.<name>`` read.
    words: set[str]
    names: set[str]
    self_attributes: set[str]
    #: names it binds outside functions (its own included), ``self.<name>`` it assigns.
    binds: set[str]
    binds_attributes: set[str]
    owner: _Unit | None  # the class whose body holds it
    #: of those, the ones bound to a value (not a ``def``, ``class`` or method name).
    assigns: set[str] = field(default_factory=set)
    implicit: bool = False  # a member Python calls by itself (dunders, forward)
    #: its statements (a class split into members: none, its header binds nothing).
    statements: list[ast.stmt] = field(default_factory=list)
    #: it is a ``def`` or ``class`` (not a statement that runs when the module loads).
    defines: bool = False
    star: bool = False  # holds ``from ... import *``: it may define any name, so it stays
    members: list[_Unit] = field(default_factory=list)
    #: attributes it reads on other receivers than ``self`` (``trainer.gs``).
    other_attributes: set[str] = field(default_factory=set)


def relevant_slice(
    data: bytes,
    tree: ast.Module,
    vocabulary: Iterable[str],
    groups_by_rule: Iterable[Sequence[Sequence[str]]],
) -> bytes | None:
    """``data`` with the units no candidate rule can see blanked; None when slicing is not
    worth it or not safe (see the module's docstring). ``vocabulary``: every rule's words;
    ``groups_by_rule``: the candidate rules' word groups."""
    if not _plain_lines(data):
        return None
    lines = data.splitlines(keepends=True)
    units = _units(tree.body, None, lines)
    flat = list(_all(units))
    vocabulary, groups_by_rule = set(vocabulary), [list(groups) for groups in groups_by_rule]
    every = {*vocabulary, *(w for groups in groups_by_rule for g in groups for w in g)}
    found = _seeds(flat, vocabulary, groups_by_rule, every)
    if found is None:
        return None
    seeds, seeding = found
    kept = _closure(flat, seeds, _Vocabulary(every), _Vocabulary(seeding))
    keep = [True] * len(lines)
    for unit in flat:
        if unit not in kept:
            _mark(keep, unit.first, unit.last, False)
    for unit in kept:  # a kept class's header stays; its members decide for themselves
        _mark(keep, unit.first, unit.members[0].first - 1 if unit.members else unit.last, True)
    if sum(keep) > MAX_KEPT_SHARE * len(lines):
        return None
    return b"".join(line if keep[number] else _blank(line) for number, line in enumerate(lines))


def _plain_lines(data: bytes) -> bool:
    """Whether blanking whole lines is safe: UTF-8 (or ASCII), no NUL, no form feeds or
    bare carriage returns that CPython and ``bytes.splitlines`` might count differently."""
    if b"\x00" in data or b"\x0c" in data:
        return False
    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
        return False
    head = data.split(b"\n", 2)[:2]
    return not any(b"coding" in line and line.lstrip().startswith(b"#") for line in head)


def _units(body: list[ast.stmt], owner: _Unit | None, lines: list[bytes]) -> list[_Unit]:
    """The units of a body. Statements that share a line (``a = 1; b = 2``) are one unit,
    and a class whose body starts on its header's line (``class A: x = 1``) is not split:
    whole lines are blanked."""
    units: list[_Unit] = []
    for statement in body:
        opening: ast.AST = statement
        for decorator in getattr(statement, "decorator_list", ()):
            if decorator.lineno < opening.lineno:  # type: ignore[attr-defined]
                opening = decorator
        first, last = opening.lineno, statement.end_lineno or statement.lineno  # type: ignore[attr-defined]
        if units and units[-1].last >= first and not units[-1].members:
            joined = units[-1]
            joined.last = max(joined.last, last)
            joined.statements.append(statement)
            _read(statement, joined)
            continue
        if isinstance(statement, ast.ClassDef) and _splittable(statement, lines):
            header: list[ast.AST] = [
                *statement.decorator_list,
                *statement.bases,
                *statement.keywords,
            ]
            unit = _Unit(first, last, set(), set(), set(), {statement.name}, set(), owner)
            for node in header:
                _read(node, unit, header=True)
            unit.members = _units(statement.body, unit, lines)
        else:
            unit = _Unit(first, last, set(), set(), set(), set(), set(), owner)
            unit.statements.append(statement)
            unit.defines = isinstance(statement, _DEFINITIONS)
            _read(statement, unit)
        if owner is not None and isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = statement.name
            unit.implicit = name == "forward" or (
                name.startswith("__") and name.endswith("__") and name not in _BOOKKEEPING
            )
            unit.binds_attributes.add(name)
        if owner is not None and not isinstance(statement, ast.ClassDef):
            unit.binds_attributes |= unit.binds  # class-level names are attributes too
        units.append(unit)
    return units


def _splittable(statement: ast.ClassDef, lines: list[bytes]) -> bool:
    """Whether the class's body starts on a line of its own (members that share a line
    with each other are joined into one unit). A class with no function or class in its
    body is a record (a dataclass's fields, a NamedTuple's): kept or dropped whole, as the
    analysis reads its fields in order (``asdict(Snapshot(model_sd, optimizer_sd))``)."""
    if not any(isinstance(member, _DEFINITIONS) for member in statement.body):
        return False
    first: ast.AST = statement.body[0]
    for decorator in getattr(first, "decorator_list", ()):
        if decorator.lineno < first.lineno:  # type: ignore[attr-defined]
            first = decorator
    return first.lineno > statement.lineno and _starts_line(lines, first.lineno, first.col_offset)  # type: ignore[attr-defined]


def _starts_line(lines: list[bytes], line: int, column: int) -> bool:
    # A decorator's node starts after its ``@``.
    return line <= len(lines) and lines[line - 1][:column].strip() in (b"", b"@")


def _all(units: list[_Unit]) -> Iterator[_Unit]:
    for unit in units:
        yield unit
        yield from _all(unit.members)


#: Dunders Python calls for bookkeeping (printing, hashing, pickling, class creation), never
#: on the way into a training step: a kept class does not keep them by itself. (A kept base
#: class's ``__init_subclass__`` in dynamo's ``higher_order_ops.py`` registers every
#: subclass, and through it every subclass's ``call_function`` joined the slice.)
_BOOKKEEPING = frozenset(
    {
        "__init_subclass__",
        "__class_getitem__",
        "__set_name__",
        "__repr__",
        "__str__",
        "__format__",
        "__hash__",
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__reduce__",
        "__reduce_ex__",
        "__getstate__",
        "__setstate__",
        "__copy__",
        "__deepcopy__",
        "__sizeof__",
        "__dir__",
        "__instancecheck__",
        "__subclasscheck__",
    }
)

#: The receivers through which the analysis follows attributes (``self.scaler``).
_SELF = frozenset({"self", "cls"})
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_SCOPES = frozenset({ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.comprehension})


def _read(node: ast.AST, unit: _Unit, *, header: bool = False) -> None:
    """One walk of a unit: its identifiers (as the prefilter's :func:`scan` collects them),
    what it reads from outside itself (a function's parameters and locals are its own
    business: every test method has its ``rank`` and ``model``), and what it binds that
    other units can reach (names bound outside functions, its own name included, ``self``
    attributes assigned anywhere, ``global`` names). ``header``: a class's bases and
    decorators, which bind nothing."""
    words, names, attributes, others = (
        unit.words,
        unit.names,
        unit.self_attributes,
        unit.other_attributes,
    )
    bound, bound_attributes, assigns = unit.binds, unit.binds_attributes, unit.assigns
    local: set[str] = set()
    declared: set[str] = set()
    name_type, attribute_type, alias_type, import_from_type = (
        ast.Name,
        ast.Attribute,
        ast.alias,
        ast.ImportFrom,
    )
    load, node_type = ast.Load, ast.AST
    stack: list[tuple[ast.AST, bool]] = [(node, False)]
    while stack:
        current, inside = stack.pop()
        kind = type(current)
        if kind is name_type:
            identifier = current.id  # type: ignore[attr-defined]
            words.add(identifier)
            if type(current.ctx) is load:  # type: ignore[attr-defined]
                names.add(identifier)
            else:
                local.add(identifier)
                if not inside and not header:
                    bound.add(identifier)
                    assigns.add(identifier)
            continue
        if kind is attribute_type:
            attribute = current.attr  # type: ignore[attr-defined]
            words.add(attribute)
            receiver = current.value  # type: ignore[attr-defined]
            if type(receiver) is name_type and receiver.id in _SELF:
                attributes.add(attribute)
                if type(current.ctx) is not load:  # type: ignore[attr-defined]
                    bound_attributes.add(attribute)
                    assigns.add(attribute)
            else:
                others.add(attribute)
        elif kind is alias_type:
            words.update(current.name.split("."))  # type: ignore[attr-defined]
            if current.asname:  # type: ignore[attr-defined]
                words.add(current.asname)  # type: ignore[attr-defined]
            if current.name == "*":  # type: ignore[attr-defined]
                unit.star = True
            elif not inside and not header:
                alias = current.asname or current.name.partition(".")[0]  # type: ignore[attr-defined]
                bound.add(alias)
                assigns.add(alias)  # an import of an AMP name: its readers use it
            continue
        elif kind is import_from_type:
            if current.module:  # type: ignore[attr-defined]
                words.update(current.module.split("."))  # type: ignore[attr-defined]
        elif kind is ast.keyword:
            value = current.value  # type: ignore[attr-defined]
            if current.arg and type(value) is ast.Constant and isinstance(value.value, (str, int)):  # type: ignore[attr-defined]
                words.add(f"{KEYWORD}{current.arg}:{value.value}")  # type: ignore[attr-defined]
        elif kind is ast.arg:
            local.add(current.arg)  # type: ignore[attr-defined]
        elif kind is ast.Global or kind is ast.Nonlocal:
            declared.update(current.names)  # type: ignore[attr-defined]
            if kind is ast.Global:  # a module name the function assigns: as if outside
                bound.update(current.names)  # type: ignore[attr-defined]
                assigns.update(current.names)  # type: ignore[attr-defined]
        elif kind in _DEFINITIONS and not inside and not header:
            bound.add(current.name)  # type: ignore[attr-defined]
        if kind in _SCOPES:
            inside = True
        for name in current._fields:
            value = getattr(current, name, None)
            if type(value) is list:
                for item in value:
                    if isinstance(item, node_type):
                        stack.append((item, inside))
            elif isinstance(value, node_type):
                stack.append((value, inside))
    if isinstance(node, _FUNCTIONS):
        names -= local - declared


def _holders(units: list[_Unit], vocabulary: Iterable[str]) -> dict[str, list[_Unit]]:
    """word -> the units that mention it, for every word of the vocabulary."""
    plain: dict[str, list[_Unit]] = {}
    parts: dict[str, list[_Unit]] = {}
    for word in vocabulary:
        if word.startswith(PART):
            parts[word] = []
        else:
            plain.setdefault(bare(word), [])
    for unit in units:
        for word in unit.words:
            found = plain.get(word)
            if found is not None:
                found.append(unit)
        if parts:
            lowered = "\0".join(unit.words).lower()
            for word, found in parts.items():
                if word[1:].lower() in lowered:
                    found.append(unit)
    holders = dict(parts)
    for word in vocabulary:
        if not word.startswith(PART):
            holders[word] = plain[bare(word)]
    return holders


def _seeds(
    units: list[_Unit],
    vocabulary: Iterable[str],
    groups_by_rule: Iterable[Sequence[Sequence[str]]],
    words: set[str],
) -> tuple[set[_Unit], set[str]] | None:
    """The units that mention an AMP word that is rare in this module, and for each
    candidate rule those that mention its rarest group; and those words. None when a group
    is mentioned by no unit (its words came from elsewhere, a project module: slicing could
    not place it). ``words``: the vocabulary's and the groups' together."""
    holders = _holders(units, words)
    rare = max(MIN_RARE, RARE_SHARE * len(units))
    seeds: set[_Unit] = {unit for unit in units if unit.star}
    seeding: set[str] = set()
    for word in vocabulary:
        if holders[word] and len(holders[word]) <= rare:
            seeds.update(holders[word])
            seeding.add(word)
    for groups in groups_by_rule:
        best: tuple[set[_Unit], Sequence[str]] | None = None
        for group in groups:
            found = {unit for word in group for unit in holders[word]}
            if not found:
                return None
            if best is None or len(found) < len(best[0]):
                best = (found, group)
        if best is not None:
            seeds |= best[0]
            seeding.update(best[1])
    return seeds, seeding


def _closure(
    units: list[_Unit], seeds: set[_Unit], vocabulary: _Vocabulary, seeding: _Vocabulary
) -> set[_Unit]:
    """The seeds, what they read through names (transitively), and what reads the values
    they assign from AMP words (``vocabulary``) or hand out from the words that made them
    seeds (``seeding``)."""
    name_binders: dict[str, list[_Unit]] = {}
    attribute_binders: dict[str, list[_Unit]] = {}
    name_readers: dict[str, list[_Unit]] = {}
    attribute_readers: dict[str, list[_Unit]] = {}
    #: readers of an attribute on another receiver than ``self``.
    other_readers: dict[str, list[_Unit]] = {}
    for unit in units:
        for name in unit.other_attributes:
            other_readers.setdefault(name, []).append(unit)
        for name in unit.binds:
            name_binders.setdefault(name, []).append(unit)
        for name in unit.binds_attributes:
            attribute_binders.setdefault(name, []).append(unit)
        for name in unit.names:
            name_readers.setdefault(name, []).append(unit)
        for name in unit.self_attributes:
            attribute_readers.setdefault(name, []).append(unit)
    bases = _bases(units)

    def resolves(binder: _Unit, reader: _Unit) -> bool:
        """Whether ``self.<name>`` read in ``reader`` may be what ``binder`` binds: as the
        analysis resolves it, through the reader's class and its bases. A function outside
        a class may take any instance."""
        if binder.owner is None or reader.owner is None:
            return True
        return binder.owner in bases.get(reader.owner, (reader.owner,))

    def reaches(binder: _Unit, reader: _Unit) -> bool:
        """Whether an AMP object ``binder`` puts on ``self`` may be what ``reader`` reads:
        through the reader's class and its bases, or a base class's method reading what a
        subclass binds (a base ``finish()`` updating the scaler the subclass made)."""
        return resolves(binder, reader) or (
            reader.owner in bases.get(binder.owner, ())  # type: ignore[arg-type]
        )

    pending = _handed_on(
        seeds,
        vocabulary,
        seeding,
        name_readers,
        attribute_readers,
        resolves,
        reaches=reaches,
        other_readers=other_readers,
    )
    # The names module-level assignments bind (a script's `model`), and the module-level
    # statements that read each: they work on the object, though they bind nothing.
    module_values = {name for unit in units if unit.owner is None for name in unit.assigns}
    kept: set[_Unit] = set()
    while pending:
        while pending:
            unit = pending.pop()
            if unit in kept:
                continue
            kept.add(unit)
            for name in unit.names:
                pending.extend(name_binders.get(name, ()))
                if name in module_values:  # `model.half()`, a loop freezing its parameters
                    pending.extend(
                        reader
                        for reader in name_readers.get(name, ())
                        if reader.owner is None and not reader.members and not reader.defines
                    )
            for name in unit.self_attributes:
                binders = attribute_binders.get(name, ())
                pending.extend(binder for binder in binders if resolves(binder, unit))
            if unit.owner is not None:
                pending.append(unit.owner)
            pending.extend(member for member in unit.members if member.implicit)
        # A class needs a body: one whose members all went keeps the member that reads
        # least (and what that one reaches, like any other kept unit).
        pending = [
            min(unit.members, key=_reach_of)
            for unit in kept
            if unit.members and not any(member in kept for member in unit.members)
        ]
    return kept


def _handed_on(
    seeds: set[_Unit],
    vocabulary: _Vocabulary,
    seeding: _Vocabulary,
    name_readers: dict[str, list[_Unit]],
    attribute_readers: dict[str, list[_Unit]],
    resolves: Callable[[_Unit, _Unit], bool],
    *,
    reaches: Callable[[_Unit, _Unit], bool],
    other_readers: dict[str, list[_Unit]],
) -> list[_Unit]:
    """The seeds and the units through which their AMP objects are handed on: what reads a
    value a seed makes, and what reads it from those readers in turn (``ctx_cls = _AC``
    after ``_AC = torch.autocast``), up to :data:`_PASSED_ON` units on (an AMP object
    itself up to :data:`_OBJECTS_PASSED_ON`: a chain of getters). A reader passes on
    only what it binds from such a value, never values of its own (library code says
    ``torch`` everywhere). The callers of a seed function or method are looked at with the
    seeds (they may bind its result: ``self.gs = self._build()``, or hand it on: ``return
    self._build()``); a seed function's callers join in any case (how often it runs can be
    the finding: a GradScaler made in a helper that a training loop calls each step), a
    method's only if they bind what it hands out or call it in a loop (a test suite's
    helper methods are called by hundreds of tests). Each level is taken
    to a fixpoint (``self.gs = _GX`` after ``_GX = GradScaler()``: seeds hand values to each
    other), so the result does not depend on the order of the units."""
    found_units: list[_Unit] = list(seeds)
    made = {name for seed in seeds if seed.defines for name in seed.binds - seed.assigns}
    callers: list[_Unit] = []
    for seed in seeds:
        if not seed.defines:
            continue
        for name in seed.binds - seed.assigns:
            if seed.owner is None:
                callers.extend(name_readers.get(name, ()))
                found_units.extend(name_readers.get(name, ()))
            readers = [
                reader
                for reader in attribute_readers.get(name, ())
                if reader.owner is not None and resolves(seed, reader)
            ]
            callers.extend(readers)
            if readers and _makes_anew(seed, seeding):
                found_units.extend(r for r in readers if _calls_in_loop(r, name))
    carriers: set[str] = set()
    holders: set[str] = set()  # the names that hold an AMP object itself (see below)
    level = {*seeds, *callers}
    passed = set(level)
    for hops in range(_OBJECTS_PASSED_ON + 1):
        found: dict[_Unit, set[str]] = {}
        objects: dict[_Unit, set[str]] = {}
        grown = True
        while grown:
            grown = False
            for unit in level:
                is_seed = unit in seeds
                names, objects[unit] = _valued_assigns(
                    unit,
                    vocabulary if is_seed else None,
                    carriers | made,
                    hands_out=seeding if is_seed else None,
                    handed_on=holders,
                )
                if names - found.get(unit, set()) or objects[unit] - holders:
                    found[unit] = names
                    carriers |= names
                    holders |= objects[unit]
                    grown = True
        level = set()
        for unit, names in found.items():
            found_units.append(unit)
            for name in names:
                held = name in objects[unit]
                if hops > _PASSED_ON and not held:
                    continue  # this far, only the objects themselves are followed
                readers = [
                    *name_readers.get(name, ()),
                    *(r for r in attribute_readers.get(name, ()) if reaches(unit, r)),
                ]
                if held:  # an AMP object kept on an instance: `trainer.gs`
                    readers += other_readers.get(name, ())
                found_units.extend(readers)
                if hops < (_OBJECTS_PASSED_ON if held else _PASSED_ON):
                    level.update(reader for reader in readers if reader not in passed)
        passed |= level
    return found_units


#: How many units past the seeds an AMP value is followed as it is handed on: two
#: (``ctx_cls = _AC`` after ``_AC = torch.autocast``, then ``self.ctx = ctx_cls``). Further,
#: the names that carry it (module names, ``self`` attributes, unscoped) would reach much of
#: a library for nothing.
_PASSED_ON = 2
#: How many units past the seeds an AMP object itself is followed (a getter returning what
#: another getter returns, ``self._ctx`` at the end): objects are few where values are many.
_OBJECTS_PASSED_ON = 4


def _reach_of(unit: _Unit) -> tuple[int, int, int]:
    """How much keeping ``unit`` may pull in after it: what it reads, then its length."""
    return (len(unit.names) + len(unit.self_attributes), unit.last - unit.first, unit.first)


class _Vocabulary:
    """Words of the rules, to tell the statements that say one."""

    def __init__(self, words: Iterable[str]) -> None:
        words = set(words)
        self.plain = frozenset(bare(word) for word in words if not word.startswith(PART))
        self.parts = tuple(word[1:].lower() for word in words if word.startswith(PART))

    def says(self, identifiers: set[str]) -> bool:
        if not identifiers.isdisjoint(self.plain):
            return True
        lowered = "\0".join(identifiers).lower()
        return any(part in lowered for part in self.parts)


#: Statements that bind names to values, and where their targets are.
_BINDINGS: dict[type[ast.AST], tuple[str, ...]] = {
    ast.Assign: ("targets",),
    ast.AnnAssign: ("target",),
    ast.AugAssign: ("target",),
    ast.NamedExpr: ("target",),
    ast.For: ("target",),
    ast.AsyncFor: ("target",),
    ast.withitem: ("optional_vars",),
}


def _valued_assigns(
    unit: _Unit,
    vocabulary: _Vocabulary | None,
    carriers: set[str],
    *,
    hands_out: _Vocabulary | None = None,
    handed_on: set[str] | frozenset[str] = frozenset(),
) -> tuple[set[str], set[str]]:
    """Of the names and ``self`` attributes ``unit`` assigns, those that may hold an AMP
    object: bound by a statement that says an AMP word (``self.gs = GradScaler("cuda")``,
    ``acc = Accelerator(mixed_precision="fp16")``, an import), or from a name such a
    statement bound before (``gs = GradScaler("cuda"); self.gs = gs``), transitively. What
    other units may read an AMP object through. A seed of a thousand lines assigns much
    else (dynamo's ``self.source = AttrSource(...)``), and every method that reads that
    would join the slice for nothing. Without ``vocabulary`` (a unit that only reads an AMP
    object), only what is bound from ``carriers``, names known to hold AMP values.

    A function's own name joins when it hands an AMP object to its callers: it returns or
    yields what a call of a ``hands_out`` word makes (the words that made it a seed:
    ``return torch.autocast("cuda")``; ``torch`` in a return says nothing), what a name of
    ``handed_on`` holds (``return self._build()``, ``return self._gs``), or a local bound so
    (``ctx = torch.autocast("cuda"); return ctx``); or it yields inside such a region (a
    context manager); ``handed_on`` holds the names known to hold such objects.

    Also returned: of the names, those that hold an AMP object itself, made so (the
    function's own, the ``self`` attributes bound to one): other objects may reach them."""
    found: set[str] = set()
    bindings: list[tuple[set[str], set[tuple[bool, str]]]] = []  # what it reads, binds
    makings: list[tuple[set[str], set[tuple[bool, str]]]] = []  # what makes it, what it binds
    handed: list[set[str]] = []  # what makes what its returns and yields hand out
    regions: list[set[str]] = []  # what makes the contexts its ``with`` statements enter
    yields = False
    own = _own_target(unit)
    for statement in unit.statements:
        for node in ast.walk(statement):
            kind = type(node)
            if kind in _HANDING_OUT:
                given = node.value  # type: ignore[attr-defined]
                if given is not None:
                    handed.append(_makers(given))
                yields = yields or kind is not ast.Return
                continue
            if kind is ast.withitem:
                regions.append(_makers(node.context_expr))  # type: ignore[attr-defined]
            fields = _BINDINGS.get(kind)
            if fields is None:
                if vocabulary is not None and isinstance(
                    node, (ast.Import, ast.ImportFrom, ast.Global)
                ):
                    found |= _identifiers(node) & unit.assigns  # imports only name things
                continue
            # A loop's body is not what its target is bound to.
            said = node.iter if isinstance(node, (ast.For, ast.AsyncFor)) else node
            targets: set[tuple[bool, str]] = set()
            for name in fields:
                value = getattr(node, name)
                for target in value if isinstance(value, list) else [value]:
                    if target is not None:
                        targets |= _targets(target)
            if targets:
                bindings.append((_identifiers(said), targets))
                value = getattr(node, "value", None) or getattr(node, "context_expr", None)
                if value is not None and kind is not ast.AugAssign:
                    makings.append((_makers(value), targets))
    # The names bound to AMP values so far, locals included (``gs`` above); a binding that
    # reads one of them binds AMP values in turn.
    valued_targets = _valued(
        bindings,
        lambda reads: (
            (vocabulary is not None and vocabulary.says(reads)) or not reads.isdisjoint(carriers)
        ),
    )
    for attribute, name in valued_targets:
        if name in (unit.binds_attributes if attribute else unit.binds):
            found.add(name)  # a function's local of the same name as a module name is not
    found &= unit.assigns
    if yields:  # a generator, a context manager: it hands out the regions it yields in
        handed += regions

    def hands(makers: set[str]) -> bool:
        return (hands_out is not None and hands_out.says(makers)) or not makers.isdisjoint(
            handed_on
        )

    holding = _valued(makings, hands)
    held = {name for _, name in holding}
    # The ``self`` attributes bound to an AMP object itself (not all a seed assigns from a
    # statement saying ``torch``), and the function if it hands one out.
    objects = {name for attribute, name in holding if attribute} & unit.binds_attributes
    objects &= unit.assigns
    if own is not None and any(hands(makers) or not makers.isdisjoint(held) for makers in handed):
        found.add(own)
        objects.add(own)
    return found, objects


def _makers(value: ast.AST, *, calls_only: bool = False) -> set[str]:
    """What makes the object an expression gives: the function it calls (its last name),
    the name or attribute it reads (unless ``calls_only``), either branch of a conditional
    or a boolean operator, the items of a tuple or list."""
    kind = type(value)
    if kind is ast.Call:
        return _makers(value.func)  # type: ignore[attr-defined]
    if kind is ast.Name:
        return set() if calls_only else {value.id}  # type: ignore[attr-defined]
    if kind is ast.Attribute:
        return set() if calls_only else {value.attr}  # type: ignore[attr-defined]
    if kind is ast.IfExp:
        parts = [value.body, value.orelse]  # type: ignore[attr-defined]
    elif kind is ast.BoolOp:
        parts = value.values  # type: ignore[attr-defined]
    elif kind is ast.Tuple or kind is ast.List:
        parts = value.elts  # type: ignore[attr-defined]
    elif kind is ast.Await:
        parts = [value.value]  # type: ignore[attr-defined]
    else:
        return set()
    return {name for part in parts for name in _makers(part, calls_only=calls_only)}


def _valued(
    bindings: list[tuple[set[str], set[tuple[bool, str]]]], says: Callable[[set[str]], bool]
) -> set[tuple[bool, str]]:
    """The targets of the bindings that read what ``says`` accepts, or a name such a
    binding bound (transitively, in any order)."""
    valued: set[str] = set()
    valued_targets: set[tuple[bool, str]] = set()
    pending = bindings
    while pending:
        left = []
        for reads, targets in pending:
            if says(reads) or not reads.isdisjoint(valued):
                valued_targets |= targets
                valued.update(name for _, name in targets)
            else:
                left.append((reads, targets))
        if len(left) == len(pending):
            break
        pending = left
    return valued_targets


#: What hands a value to a function's caller.
_HANDING_OUT = (ast.Return, ast.Yield, ast.YieldFrom)


def _own_target(unit: _Unit) -> str | None:
    """The name a function unit binds itself to (a ``self`` attribute for a method)."""
    if not unit.defines or len(unit.statements) != 1:
        return None
    statement = unit.statements[0]
    return statement.name if isinstance(statement, _FUNCTIONS) else None


def _makes_anew(unit: _Unit, seeding: _Vocabulary) -> bool:
    """Whether each call of the function makes an object named by a word that made it a
    seed (``scaler = GradScaler()``, ``with autocast():``): then how often it runs counts."""
    for statement in unit.statements:
        for node in ast.walk(statement):
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)):
                made = node.value
            elif isinstance(node, ast.withitem):
                made = node.context_expr
            else:
                continue
            if made is not None and seeding.says(_makers(made, calls_only=True)):
                return True
    return False


def _calls_in_loop(unit: _Unit, method: str) -> bool:
    """Whether ``unit`` calls ``self.<method>`` in the body of a loop or a comprehension:
    how often a method runs can be the finding (a GradScaler made anew for each batch)."""
    for statement in unit.statements:
        for node in ast.walk(statement):
            if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
                repeated: list[ast.AST] = [*node.body]
            elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
                repeated = [node.elt]
            elif isinstance(node, ast.DictComp):
                repeated = [node.key, node.value]
            else:
                continue
            for part in repeated:
                for inner in ast.walk(part):
                    if (
                        type(inner) is ast.Call
                        and type(inner.func) is ast.Attribute
                        and inner.func.attr == method
                        and type(inner.func.value) is ast.Name
                        and inner.func.value.id in _SELF
                    ):
                        return True
    return False


def _targets(target: ast.AST) -> set[tuple[bool, str]]:
    """What an assignment to ``target`` binds, as (is a ``self`` attribute, name)."""
    kind = type(target)
    if kind is ast.Name:
        return {(False, target.id)}  # type: ignore[attr-defined]
    if kind is ast.Attribute:
        receiver = target.value  # type: ignore[attr-defined]
        if type(receiver) is ast.Name and receiver.id in _SELF:
            return {(True, target.attr)}  # type: ignore[attr-defined]
        return set()
    if kind is ast.Starred:
        return _targets(target.value)  # type: ignore[attr-defined]
    if kind is ast.Tuple or kind is ast.List:
        return {found for item in target.elts for found in _targets(item)}  # type: ignore[attr-defined]
    return set()


def _identifiers(node: ast.AST) -> set[str]:
    """The names, attributes, imported names and modules and keyword literals
    (``=precision:16-mixed``, as the prefilter writes them) of ``node``'s code."""
    found: set[str] = set()
    for inner in ast.walk(node):
        if isinstance(inner, ast.Name):
            found.add(inner.id)
        elif isinstance(inner, ast.Attribute):
            found.add(inner.attr)
        elif isinstance(inner, ast.alias):
            found.update(inner.name.split("."))
            if inner.asname:
                found.add(inner.asname)
        elif isinstance(inner, ast.ImportFrom) and inner.module:
            found.update(inner.module.split("."))
        elif isinstance(inner, ast.Global):
            found.update(inner.names)
        elif isinstance(inner, ast.keyword) and inner.arg:
            value = inner.value
            if type(value) is ast.Constant and isinstance(value.value, (str, int)):
                found.add(f"{KEYWORD}{inner.arg}:{value.value}")
    return found


def _bases(units: list[_Unit]) -> dict[_Unit, frozenset[_Unit]]:
    """Each split class -> itself and the classes of this module it derives from (a base
    named in a class's header, transitively): where the analysis looks for what ``self.x``
    is. ``self.value`` in one class says nothing about a sibling's, a subclass's or an
    unrelated class's ``self.value``: in dynamo's ``builder.py`` every tracker class has its
    own, and its own ``call_function``, though they all derive from one base."""
    classes = [unit for unit in units if unit.members]
    by_name: dict[str, list[_Unit]] = {}
    for cls in classes:
        for name in cls.binds:
            by_name.setdefault(name, []).append(cls)
    edges: dict[_Unit, set[_Unit]] = {cls: set() for cls in classes}
    for cls in classes:
        for name in cls.names:  # a split class's own names are its header's
            edges[cls].update(base for base in by_name.get(name, ()) if base is not cls)
    return {cls: _reach(cls, edges) for cls in classes}


def _reach(start: _Unit, edges: dict[_Unit, set[_Unit]]) -> frozenset[_Unit]:
    """``start`` and every class reached from it through ``edges``."""
    seen = {start}
    pending = [start]
    while pending:
        for other in edges[pending.pop()]:
            if other not in seen:
                seen.add(other)
                pending.append(other)
    return frozenset(seen)


def _mark(keep: list[bool], first: int, last: int, value: bool) -> None:
    keep[first - 1 : last] = [value] * (last - first + 1)


def _blank(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return b"\r\n"
    return b"\n" if line.endswith(b"\n") else b""
