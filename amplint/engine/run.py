"""Runs the selected rules over one source file; fixes it until nothing changes.

The engine knows no rule by name: it asks the registry for rules, the rules for reports,
and turns reports into :class:`~amplint.findings.Finding` objects with positions, noqa
filtering and text-edit fixes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from amplint.catalog import BUG_REPORT_URL, INTERNAL_ERROR_CODE, entry, name_of
from amplint.engine.prefilter import (
    CodeFacts,
    SourceWords,
    all_words,
    candidate_codes,
    inspect_code,
    mentions_amp,
    words_of,
)
from amplint.engine.source import ParsedSource, SourceError, error_finding, parse, parse_text
from amplint.findings import Applicability, Finding, Fix, Position

# The rules, the analysis and libcst are imported only once a file passed the prefilter:
# most files never need them, and they are most of a one-file run's time.
if TYPE_CHECKING:
    import ast

    from amplint.analysis.values import ImportLookup
    from amplint.engine.contract import FixPlan, Report, Rule
    from amplint.engine.fixes import ModuleLayout
    from amplint.engine.project import FileView

#: Fix passes per file before giving up on reaching a fixed point.
MAX_FIX_PASSES = 10


def select_rules(codes: Collection[str]) -> list[type[Rule]]:
    from amplint.engine.registry import rules_for

    return rules_for(codes)


@dataclass
class LintResult:
    """One source's findings, with what the fixes and the caller still need of its parse."""

    findings: list[Finding]
    parsed: ParsedSource | None = None
    #: Fixes not yet turned into edits (``lint_bytes(..., fixes=False)``), by finding key.
    pending: dict[tuple[str, Position], FixPlan] = field(default_factory=dict)
    layout: ModuleLayout | None = None
    #: Analysed on the part of the module the rules can see (``lint_bytes(..., sliced=True)``):
    #: findings are the whole file's, fixes have titles but no edits.
    sliced: bool = False
    #: Some finding rests on what the analysed text says nowhere (``Report.whole_module``):
    #: made on a part of the module, it needs the whole.
    needs_whole_module: bool = False
    _resolved: dict[tuple[str, Position, bool], Fix | None] = field(
        default_factory=dict, repr=False
    )

    def fix_summary(self, finding: Finding) -> tuple[str, Applicability] | None:
        """The fix's title and applicability, without computing its edits."""
        if finding.fix is not None:
            return finding.fix.message, finding.fix.applicability
        plan = self.pending.get(_key(finding))
        return None if plan is None else (plan.message, plan.applicability)

    def fix_of(self, finding: Finding, *, local: bool = True) -> Fix | None:
        """The finding's fix with its edits, computed on first use from the kept syntax tree.

        ``local`` edits are diffed over the statements the fix touches only: they give the
        same text as ``amplint fix``'s edits, which are diffed over the whole file.
        """
        if finding.fix is not None:
            return finding.fix
        if self.sliced:
            raise ValueError("a sliced lint result has no fix edits: lint the whole file")
        key = _key(finding)
        if (*key, local) in self._resolved:
            return self._resolved[(*key, local)]
        plan = self.pending.get(key)
        fix = None
        if plan is not None and self.layout is not None:
            try:
                fix = _fix(plan, self.layout, local=local)
            except Exception:
                fix = None
        self._resolved[(*key, local)] = fix
        return fix


def _key(finding: Finding) -> tuple[str, Position]:
    return (finding.code, finding.location)


def _fix(plan: FixPlan, layout: ModuleLayout, *, local: bool) -> Fix | None:
    # Whole-file diffs for everything amplint prints or applies, so edits never change with
    # the shortcut; region diffs where only the resulting text matters.
    from amplint.engine.fixes import text_edits

    edits = layout.local_edits(plan) if local else text_edits(layout.text, layout.fixed_text(plan))
    return Fix(plan.applicability, plan.message, edits) if edits else None


@dataclass
class FixResult:
    """What fixing one source did: its new bytes, the fixes applied, what remains."""

    #: the fixed file's bytes, or None when nothing changed.
    data: bytes | None
    applied: int
    remaining: list[Finding] = field(default_factory=list)


def lint_bytes(
    data: bytes,
    filename: str,
    codes: Collection[str],
    *,
    prefilter: bool = True,
    fixes: bool = True,
    previous: LintResult | None = None,
    project: FileView | None = None,
    sliced: bool = False,
    any_syntax_error: bool = False,
) -> LintResult:
    """Findings for one file's bytes.

    With ``fixes=False`` no fix is computed: findings carry ``fix=None`` and the result
    keeps the syntax tree and the rules' fix plans, so :meth:`LintResult.fix_summary` and
    :meth:`LintResult.fix_of` answer later, for the findings someone asks about.

    ``previous`` is the result for an earlier version of the same file (with ``fixes=False``
    it keeps its tree): the statements an edit left alone are then not parsed again.

    ``project`` is the file's view of the project it is checked in (None: on its own): the
    analysis then sees into the project modules it imports.

    ``sliced`` (with ``fixes=False``) lets a large file be analysed on the part of it the
    candidate rules can see (see :mod:`amplint.engine.slicing`): same findings, a fraction
    of the parse; the result then has fix titles but no edits.

    ``any_syntax_error``: a file no rule needs is checked for syntax even when it says
    nothing of AMP (see :func:`_syntax_only`).
    """
    facts = None
    readmitted: set[str] = set()
    if prefilter:
        selected = codes
        # The project's look at dropped rules and the syntax check of a file no rule needs
        # search the same words again: share them.
        words = SourceWords(data)
        codes, facts = candidate_codes(data, codes, words)
        if project is not None and len(codes) < len(selected):
            from amplint.engine.project import CROSS_MODULE_CODES

            kept = set(codes)
            dropped = [code for code in selected if code not in kept and code in CROSS_MODULE_CODES]
            if dropped:
                back = project.readmit(data, select_rules(dropped), words, facts)
                readmitted = {rule.code for rule in back}
                codes = [code for code in selected if code in kept or code in readmitted]
        if not codes:
            return LintResult(
                _syntax_only(data, filename, facts, words, selected, any_syntax_error)
            )
    rules = select_rules(codes)
    if not rules:
        return LintResult([])
    if facts is None:
        facts = inspect_code(data)
    if facts.refusal is not None:
        error = SourceError(facts.refusal, Position(*facts.position))
        return LintResult([error_finding(filename, error)])
    parsed, layout = _reparse(data, previous) if previous is not None else (None, None)
    syntax = facts.tree
    imports = project.imports() if project is not None else None
    # Only a report that shows titles, not edits, may take the shortcuts below: the part of
    # the module the rules can see, and pieces checked only where they have findings.
    shortcuts = sliced and not fixes and prefilter and parsed is None
    part = None
    if shortcuts and not readmitted:
        part = _slice(data, syntax, [rule.code for rule in rules])
    from amplint.engine.piecewise import PIECEWISE_ABOVE, plan_cuts  # libcst's turn has come

    cuts = None
    if shortcuts and (part is not None or len(data) > PIECEWISE_ABOVE):
        # CPython's tree of the file, held through libcst's parse, would add to the run's
        # memory peak (10 MB for a 100 KB module): findings are placed on the part, and
        # placing the rare findings of a large file parses it again. Where the whole file
        # is cut into pieces, the places to cut are read from the tree before it goes.
        if part is None and syntax is not None:
            cuts = plan_cuts(syntax, data)
        facts.tree = syntax = None
    if part is not None:
        try:
            parsed = parse(part, verify=False)
        except SourceError:  # the part is valid Python when the whole is; never trust it
            parsed, part = None, None
    if parsed is None:
        try:
            parsed = parse(data, syntax=syntax or cuts, verify=not shortcuts)
        except SourceError as error:
            return LintResult([error_finding(filename, _cpython_said(facts, error))])
    result = _lint_result(parsed, filename, rules, fixes, layout, syntax, imports, part is not None)
    if not parsed.verified and result.findings and not _adds_up(result):
        # The pieces did not add up to the text: their findings cannot be trusted.
        whole = parse(part if part is not None else data)
        result = _lint_result(whole, filename, rules, fixes, None, None, imports, part is not None)
    if part is not None and result.needs_whole_module:
        # What the part does not say, the units left out may: the whole module decides.
        whole = parse(data)
        result = _lint_result(whole, filename, rules, fixes, None, None, imports, False)
    return result


def _lint_result(
    parsed: ParsedSource,
    filename: str,
    rules: Sequence[type[Rule]],
    fixes: bool,
    layout: ModuleLayout | None,
    syntax: ast.Module | None,
    imports: object,
    sliced: bool,
) -> LintResult:
    result = LintResult([], parsed, sliced=sliced)
    result.findings = lint_parsed(
        parsed,
        filename,
        rules,
        lazy=None if fixes else result,
        layout=layout,
        syntax=syntax if layout is None else None,
        imports=imports,  # type: ignore[arg-type]
    )
    return result


def _adds_up(result: LintResult) -> bool:
    """Whether the tree's code is its text (the code of each top-level statement is what
    placing the findings generated already)."""
    layout = result.layout
    if layout is not None:
        return layout.statement_spans() is not None
    parsed = result.parsed
    return parsed is not None and parsed.module.code == parsed.text


def _slice(data: bytes, syntax: ast.Module | None, codes: list[str]) -> bytes | None:
    from amplint.engine.slicing import SLICE_ABOVE, relevant_slice

    if syntax is None or len(data) <= SLICE_ABOVE:
        return None
    return relevant_slice(data, syntax, all_words(), [groups for _, groups in words_of(codes)])


def _syntax_only(
    data: bytes,
    filename: str,
    facts: CodeFacts | None,
    words: SourceWords | None = None,
    searched: Collection[str] = (),
    any_syntax_error: bool = False,
) -> list[Finding]:
    """The syntax-error finding of a file no selected rule needs: a file that mentions AMP
    at all (any file, with ``any_syntax_error``) is checked for syntax whatever the
    selection, as ruff reports syntax errors. ``searched``: the codes whose words the
    prefilter looked for already (and found none of, in code, as ``facts`` is None)."""
    if facts is None:
        from amplint.catalog import static_codes

        if not any_syntax_error and (
            set(static_codes()) <= set(searched) or not mentions_amp(data, words)
        ):
            return []
        facts = inspect_code(data)
    if facts.refusal is not None:
        return [error_finding(filename, SourceError(facts.refusal, Position(*facts.position)))]
    if facts.names is not None:
        return []
    try:  # CPython's parser refused it: libcst, which may know newer syntax, decides
        parse(data)
    except SourceError as error:
        return [error_finding(filename, _cpython_said(facts, error))]
    return []


def _cpython_said(facts: CodeFacts | None, error: SourceError) -> SourceError:
    """The syntax error to report when libcst refused the file: CPython's, where CPython
    refused it too (it locates the error where the interpreter will), else libcst's."""
    if facts is None or facts.syntax_error is None or not error.message.startswith("SyntaxError"):
        return error
    message, position = facts.syntax_error
    return SourceError(message, Position(*position))


def _reparse(data: bytes, previous: LintResult) -> tuple[ParsedSource | None, ModuleLayout | None]:
    """``data`` parsed by reusing ``previous``'s tree where the text did not change."""
    from amplint.engine.incremental import reparse

    old, old_layout = previous.parsed, previous.layout
    if old is None or old_layout is None or b"\x00" in data:
        return None, None
    try:
        text = data.decode(old.module.encoding)
    except (UnicodeDecodeError, LookupError):
        return None, None
    if text.startswith("\ufeff") or old.text.startswith("\ufeff"):
        return None, None
    try:
        spliced = reparse(text, old, old_layout)
    except RecursionError:
        return None, None
    return spliced if spliced is not None else (None, None)


def lint_parsed(
    parsed: ParsedSource,
    filename: str,
    rules: Sequence[type[Rule]],
    *,
    lazy: LintResult | None = None,
    layout: ModuleLayout | None = None,
    syntax: ast.Module | None = None,
    imports: ImportLookup | None = None,
) -> list[Finding]:
    """Findings of an already parsed file; with ``lazy``, fixes are left as plans in it.

    ``layout`` is a :class:`ModuleLayout` of ``parsed`` made earlier (its generated code is
    reused); its parents are filled in here. ``syntax`` is CPython's tree of the same text,
    where the prefilter made one. ``imports`` lets the analysis see the project's other
    modules (see :mod:`amplint.engine.project`).
    """
    from amplint.analysis.model import forget_memos

    try:
        return _lint_parsed(parsed, filename, rules, lazy, layout, syntax, imports)
    finally:
        forget_memos()


def _lint_parsed(
    parsed: ParsedSource,
    filename: str,
    rules: Sequence[type[Rule]],
    lazy: LintResult | None,
    layout: ModuleLayout | None,
    syntax: ast.Module | None,
    imports: ImportLookup | None,
) -> list[Finding]:
    from amplint.analysis.model import ModuleModel
    from amplint.engine.contract import RuleContext
    from amplint.engine.fixes import ModuleLayout

    try:
        try:
            model = ModuleModel(parsed.module, parsed.text, imports)
        except Exception as error:
            return [internal_error(filename, "the analysis shared by every rule", error)]
        reports: list[Report] = []
        failures: list[Finding] = []
        for rule in rules:
            context = RuleContext(model, rule.code)
            try:
                rule().check(context)
            except RecursionError:
                raise
            except Exception as error:
                failures.append(internal_error(filename, f"rule {rule.code} ({rule.name})", error))
                continue
            reports.extend(context.reports)
        if layout is None:
            layout = ModuleLayout(parsed.module, parsed.text, model.index.parents, syntax=syntax)
        else:
            layout.parents = model.index.parents
        if lazy is not None:
            lazy.layout = layout
            lazy.needs_whole_module = any(report.whole_module for report in reports)
        findings = _to_findings(parsed, filename, reports, layout, lazy) if reports else []
        return failures + findings
    except RecursionError:
        # libcst's metadata and code generation recurse in Python: a deep expression that
        # CPython's own parser accepted can still exhaust the interpreter's stack here.
        return [error_finding(filename, SourceError("source is nested too deeply to analyse"))]


def internal_error(filename: str, culprit: str, error: Exception) -> Finding:
    """The diagnostic of a rule that raised: names it and asks for a bug report."""
    where = error.__traceback__
    while where is not None and where.tb_next is not None:
        where = where.tb_next
    origin = (
        f" at {where.tb_frame.f_code.co_filename.rpartition('/')[2]}:{where.tb_lineno}"
        if where is not None
        else ""
    )
    return Finding(
        code=INTERNAL_ERROR_CODE,
        message=(
            f"internal error in {culprit}: {type(error).__name__}: {error}{origin}; "
            f"this is a bug in amplint, please report it at {BUG_REPORT_URL}"
        ),
        filename=filename,
        location=Position(1, 1),
        end_location=Position(1, 1),
        name=name_of(INTERNAL_ERROR_CODE),
    )


def _to_findings(
    parsed: ParsedSource,
    filename: str,
    reports: list[Report],
    layout: ModuleLayout,
    lazy: LintResult | None,
) -> list[Finding]:
    from amplint.engine.noqa import is_silenced, noqa_lines

    positions = layout.positions(report.node for report in reports)
    silenced = noqa_lines(parsed.text)
    lines = parsed.text.splitlines()
    failures: list[Finding] = []
    findings: dict[tuple[str, Position], Finding] = {}
    for report in reports:
        code_range = positions[report.node]
        start = Position(code_range.start.line, code_range.start.column + 1)
        end = Position(code_range.end.line, code_range.end.column + 1)
        if is_silenced(silenced, start.row, report.code):
            continue
        key = (report.code, start)
        if key in findings:
            continue
        fix = None
        if report.fix is not None:
            # A lazy result keeps the plan; its edits are made here only where noqa comments
            # keep lines of this code, to be checked against them.
            kept = {row for row in silenced if is_silenced(silenced, row, report.code)}
            made = None
            if lazy is None or kept:
                try:
                    made = _fix(report.fix, layout, local=False)
                except RecursionError:
                    raise
                except Exception as error:
                    failures.append(internal_error(filename, f"the fix of {report.code}", error))
            if made is not None and _rewrites_lines(made, kept):
                pass  # the fix would rewrite a line the user keeps: none is offered
            elif lazy is not None:
                lazy.pending[key] = report.fix
            else:
                fix = made
        findings.setdefault(
            key,
            Finding(
                code=report.code,
                message=report.message,
                filename=filename,
                location=start,
                end_location=end,
                fix=fix,
                name=known.name if (known := entry(report.code)) is not None else "",
                source_line=lines[start.row - 1] if start.row <= len(lines) else "",
            ),
        )
    return failures + sorted(findings.values(), key=Finding.sort_key)


def _rewrites_lines(fix: Fix, rows: set[int]) -> bool:
    """Whether the fix changes the text of one of ``rows``: the lines whose ``# noqa``
    silences its code. A fix that spans several findings (AMP007 rewrites an import with
    all its uses) must not rewrite the one the user asked to leave alone; a line the fix
    only encloses (a `with` block it splits, a loop it puts a scaler before) is left as it
    was and does not count."""
    for edit in fix.edits:
        start, end = edit.location, edit.end_location
        if start == end:  # an insertion: inside a line it changes that line
            touched = range(start.row, start.row + 1) if start.column > 1 else range(0)
        else:  # a replacement ending at a line's start leaves that line alone
            last = end.row - 1 if end.column == 1 else end.row
            touched = range(start.row, last + 1)
        if rows.intersection(touched):
            return True
    return False


def fix_bytes(
    data: bytes,
    filename: str,
    codes: Collection[str],
    *,
    unsafe: bool = False,
    linted: LintResult | None = None,
    project: FileView | None = None,
    accept: Callable[[Fix, str], bool] | None = None,
    any_syntax_error: bool = False,
) -> FixResult:
    """Apply every applicable fix, pass after pass, until the file stops changing.

    The result always parses: a pass whose output would not parse is dropped. ``linted``
    is ``lint_bytes`` of the same ``data`` and ``codes`` made before (possibly with
    ``fixes=False``); it stands in for the first pass's parse and lint. ``accept``: which
    fixes the caller can apply to the text as earlier passes left it (a notebook's: those
    that stay in one cell). ``any_syntax_error`` as for :func:`lint_bytes`.
    """
    result = (
        linted
        if linted is not None
        else lint_bytes(data, filename, codes, project=project, any_syntax_error=any_syntax_error)
    )
    if result.parsed is None:
        return FixResult(None, 0, result.findings)
    parsed = result.parsed
    # Fixes may add the words another rule needs (AMP003 adds a GradScaler), so the fix loop
    # runs every selected rule.
    rules = select_rules(codes)
    findings = [
        finding
        if finding.fix is not None or result.fix_summary(finding) is None
        else replace(finding, fix=result.fix_of(finding, local=False))
        for finding in result.findings
    ]

    applied = 0
    original_text = parsed.text
    for _ in range(MAX_FIX_PASSES):
        chosen = _non_overlapping(findings, unsafe, accept, parsed.text)
        if not chosen:
            break
        attempt = _apply_parsing(parsed, chosen)
        if attempt is None and len(chosen) > 1:
            # Two fixes that do not overlap may still not combine (one dedents a block the
            # other inserts into at the old indentation): the first alone, then look again.
            chosen = chosen[:1]
            attempt = _apply_parsing(parsed, chosen)
        if attempt is None:
            break
        reparsed = attempt
        applied += len(chosen)
        parsed = reparsed
        imports = project.imports() if project is not None else None
        findings = lint_parsed(parsed, filename, rules, imports=imports)  # type: ignore[arg-type]
    if parsed.text == original_text:
        return FixResult(None, 0, findings)
    # One fix may clear several findings (AMP007 rewrites an import and all its uses at once):
    # count the findings that are gone, as ruff does, not the edits made.
    gone = Counter((f.code, f.message) for f in result.findings)
    gone.subtract((f.code, f.message) for f in findings)
    cleared = sum(count for count in gone.values() if count > 0)
    return FixResult(parsed.encode(parsed.text), cleared or applied, findings)


def _apply_parsing(parsed: ParsedSource, chosen: Sequence[Finding]) -> ParsedSource | None:
    """The source with the chosen fixes applied, parsed; None when it is unchanged or does
    not parse."""
    from amplint.engine.fixes import apply_edits

    new_text = apply_edits(parsed.text, [e for f in chosen for e in f.fix.edits])  # type: ignore[union-attr]
    if new_text == parsed.text:
        return None
    try:
        return parse_text(new_text, parsed)
    except SourceError:
        return None


def _non_overlapping(
    findings: Sequence[Finding],
    unsafe: bool,
    accept: Callable[[Fix, str], bool] | None = None,
    text: str = "",
) -> list[Finding]:
    from amplint.engine.fixes import overlaps

    chosen: list[Finding] = []
    for finding in findings:
        fix = finding.fix
        if fix is None or (fix.applicability == "unsafe" and not unsafe):
            continue
        if accept is not None and not accept(fix, text):
            continue
        if any(overlaps(fix.edits, other.fix.edits) for other in chosen):  # type: ignore[union-attr]
            continue
        chosen.append(finding)
    return chosen
