"""What a rule is: a self-documenting, self-testing check over one module's model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import libcst as cst

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

    def report(self, node: cst.CSTNode, message: str, fix: FixPlan | None = None) -> None:
        self.reports.append(Report(self._code, node, message, fix))


@dataclass(frozen=True)
class RuleDocs:
    """Documentation in ruff's shape; ``amplint rule CODE`` prints it."""

    what_it_does: str
    why_bad: str
    example: str
    use_instead: str
    fix_safety: str
    references: tuple[str, ...] = field(default_factory=tuple)


class Rule:
    """Base class of every rule. Subclasses are registered by defining them in amplint.rules."""

    code: ClassVar[str]
    name: ClassVar[str]
    summary: ClassVar[str]
    docs: ClassVar[RuleDocs]
    #: The prefilter's contract: words that must occur in the source for the rule to fire.
    #: Every group must match; within a group any one word (matched as a whole word, or,
    #: written ``"~part"``, as part of any identifier in any case).
    tokens: ClassVar[tuple[tuple[str, ...], ...]]
    fixable: ClassVar[bool] = False
    default_enabled: ClassVar[bool] = True
    valid: ClassVar[tuple[str, ...]] = ()
    invalid: ClassVar[tuple[Invalid, ...]] = ()

    def check(self, context: RuleContext) -> None:
        raise NotImplementedError

    @classmethod
    def documentation(cls) -> str:
        docs = cls.docs
        parts = [
            f"# {cls.name} ({cls.code})",
            "",
            f"Fix is {'sometimes available' if cls.fixable else 'not available'}.",
            "",
            "## What it does",
            docs.what_it_does.strip(),
            "",
            "## Why is this bad?",
            docs.why_bad.strip(),
            "",
            "## Example",
            "```python",
            docs.example.strip("\n"),
            "```",
            "",
            "Use instead:",
            "```python",
            docs.use_instead.strip("\n"),
            "```",
            "",
            "## Fix safety",
            docs.fix_safety.strip(),
        ]
        if docs.references:
            parts += ["", "## References", *(f"- {ref}" for ref in docs.references)]
        return "\n".join(parts) + "\n"
