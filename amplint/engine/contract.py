"""The contract between the engine and the rules: what a rule is, sees and reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import libcst as cst

from amplint.catalog import ALWAYS_REPORTED, Docs, Entry, documentation, entry
from amplint.findings import Applicability

if TYPE_CHECKING:
    from amplint.analysis.model import ModuleModel

#: How a fix changes one node: a new node, or a function of the node after inner fixes ran.
Replacement = (
    cst.CSTNode
    | cst.FlattenSentinel
    | cst.RemovalSentinel
    | Callable[[cst.CSTNode], cst.CSTNode | cst.FlattenSentinel | cst.RemovalSentinel]
)


@dataclass
class FixPlan:
    """A fix as CST replacements keyed by the original nodes; the engine turns it into edits."""

    message: str
    replacements: dict[cst.CSTNode, Replacement]
    applicability: Applicability = "safe"


@dataclass(frozen=True)
class Report:
    code: str
    node: cst.CSTNode
    message: str
    fix: FixPlan | None = None
    #: The finding rests on something the module says nowhere (see :meth:`RuleContext.report`).
    whole_module: bool = False


@dataclass(frozen=True)
class Invalid:
    """An example the rule must flag.

    ``line`` is the 1-based line of the first finding; ``count`` how many findings of the
    rule's code it gives. ``fixed`` is the whole file after ``amplint fix`` (None: no fix is
    offered); ``unsafe=True`` means the fix needs ``--unsafe-fixes``.
    """

    source: str
    line: int
    fixed: str | None = None
    unsafe: bool = False
    count: int = 1


class RuleContext:
    """What a rule sees: the module's semantic model and a way to report."""

    def __init__(self, model: ModuleModel, code: str) -> None:
        self.model = model
        self._code = code
        self.reports: list[Report] = []

    def report(
        self,
        node: cst.CSTNode,
        message: str,
        fix: FixPlan | None = None,
        *,
        whole_module: bool = False,
    ) -> None:
        """``whole_module``: the finding rests on the absence of something anywhere in the
        module (AMP017: no sign of CUDA in the file), not only on the code around ``node``.
        A large module may be analysed on the part its rules' words point to (see
        :mod:`amplint.engine.slicing`), where such an absence proves nothing: the engine
        then analyses the whole module before it reports."""
        self.reports.append(Report(self._code, node, message, fix, whole_module))


class RuleDefinitionError(Exception):
    """A rule that disagrees with the catalog; raised when its module is imported."""


class Rule:
    """Base class of every rule. Subclasses are registered by defining them in amplint.rules.

    A rule declares only its ``code``: its name, summary, docs and default come from the
    catalog entry of that code; ``fixable`` follows from its examples and must agree with the
    catalog's. A rule whose module or class name does not spell the catalog's name is
    refused at import.
    """

    code: ClassVar[str]
    entry: ClassVar[Entry]
    name: ClassVar[str]
    summary: ClassVar[str]
    docs: ClassVar[Docs]
    default_enabled: ClassVar[bool]
    fixable: ClassVar[bool]
    #: The prefilter's contract: words that must occur in the source for the rule to fire.
    #: Every group must match; within a group any one word (matched as a whole word, or,
    #: written ``"~part"``, as part of any identifier in any case; written ``"!word"``, only
    #: where it occurs outside a table or a comparison: see ``prefilter.LIVE``). The other
    #: forms (``"^module"``, ``"=keyword:literal"``) are documented there too.
    tokens: ClassVar[tuple[tuple[str, ...], ...]]
    valid: ClassVar[tuple[str, ...]] = ()
    invalid: ClassVar[tuple[Invalid, ...]] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            return
        found = entry(cls.code)
        if found is None or not found.static or found.code in ALWAYS_REPORTED:
            raise RuleDefinitionError(
                f"rule {cls.__module__}.{cls.__qualname__}: {cls.code} is not a static code "
                "of amplint.catalog"
            )
        _check_spelling(cls, found)
        cls.entry = found
        cls.name = found.name
        cls.summary = found.summary
        cls.docs = found.docs
        cls.default_enabled = found.default_enabled
        cls.fixable = any(example.fixed is not None for example in cls.invalid)
        if cls.fixable != found.fixable:
            # The catalog says it for listings that import no rule; the examples prove it.
            shown = "show a fix" if cls.fixable else "show no fix"
            raise RuleDefinitionError(
                f"rule {cls.code} ({found.name}): its examples {shown} but the catalog says "
                f"fixable={found.fixable}"
            )

    def check(self, context: RuleContext) -> None:
        raise NotImplementedError

    @classmethod
    def documentation(cls) -> str:
        return documentation(cls.entry, fixable=cls.fixable)


def _check_spelling(rule: type[Rule], found: Entry) -> None:
    words = found.name.split("-")
    module = found.code.lower() + "_" + "_".join(words)
    actual_module = rule.__module__.rpartition(".")[2]
    if actual_module != module:
        raise RuleDefinitionError(
            f"rule {rule.code} ({found.name}) lives in module {actual_module!r}; "
            f"the catalog's name asks for {module!r}"
        )
    if rule.__name__.lower() != "".join(words):
        raise RuleDefinitionError(
            f"rule {rule.code} ({found.name}) is class {rule.__name__!r}; "
            f"the catalog's name asks for {''.join(w.capitalize() for w in words)!r}"
        )
