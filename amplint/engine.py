"""Runs the selected rules over one source file; fixes it until nothing changes.

The engine knows no rule by name: it asks the registry for rules, the rules for reports,
and turns reports into :class:`~amplint.findings.Finding` objects with positions, noqa
filtering and text-edit fixes.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from libcst.metadata import MetadataWrapper, PositionProvider

from amplint.analysis.model import ModuleModel
from amplint.findings import Finding, Fix, Position
from amplint.fixes import apply_edits, apply_plan, overlaps, text_edits
from amplint.noqa import is_silenced, noqa_lines
from amplint.prefilter import candidate_rules, inspect_code
from amplint.registry import all_rules
from amplint.rules.base import Report, Rule, RuleContext
from amplint.source import ParsedSource, SourceError, error_finding, parse, parse_text

#: Fix passes per file before giving up on reaching a fixed point.
MAX_FIX_PASSES = 10


def select_rules(codes: Collection[str]) -> list[type[Rule]]:
    return [rule for rule in all_rules() if rule.code in codes]


@dataclass
class LintResult:
    findings: list[Finding]
    parsed: ParsedSource | None = None


@dataclass
class FixResult:
    #: the fixed file's bytes, or None when nothing changed.
    data: bytes | None
    applied: int
    remaining: list[Finding] = field(default_factory=list)


def lint_bytes(
    data: bytes, filename: str, codes: Collection[str], *, prefilter: bool = True
) -> LintResult:
    rules = select_rules(codes)
    facts = None
    if prefilter:
        rules, facts = candidate_rules(data, rules)
    if not rules:
        return LintResult([])
    if facts is None:
        facts = inspect_code(data)
    if facts.refusal is not None:
        error = SourceError(facts.refusal, Position(*facts.position))
        return LintResult([error_finding(filename, error)])
    try:
        parsed = parse(data)
    except SourceError as error:
        return LintResult([error_finding(filename, error)])
    return LintResult(lint_parsed(parsed, filename, rules), parsed)


def lint_parsed(parsed: ParsedSource, filename: str, rules: Sequence[type[Rule]]) -> list[Finding]:
    try:
        model = ModuleModel(parsed.module, parsed.text)
        reports: list[Report] = []
        for rule in rules:
            context = RuleContext(model, rule.code)
            rule().check(context)
            reports.extend(context.reports)
        return _to_findings(parsed, filename, reports) if reports else []
    except RecursionError:
        # libcst's metadata and code generation recurse in Python: a deep expression that
        # CPython's own parser accepted can still exhaust the interpreter's stack here.
        return [error_finding(filename, SourceError("source is nested too deeply to analyse"))]


def _to_findings(parsed: ParsedSource, filename: str, reports: list[Report]) -> list[Finding]:
    positions = MetadataWrapper(parsed.module, unsafe_skip_copy=True).resolve(PositionProvider)
    silenced = noqa_lines(parsed.text)
    lines = parsed.text.splitlines()
    names = {rule.code: rule.name for rule in all_rules()}
    findings: dict[tuple[str, Position], Finding] = {}
    for report in reports:
        code_range = positions[report.node]
        start = Position(code_range.start.line, code_range.start.column + 1)
        end = Position(code_range.end.line, code_range.end.column + 1)
        if is_silenced(silenced, start.row, report.code):
            continue
        fix = None
        if report.fix is not None:
            edits = text_edits(parsed.text, apply_plan(parsed.module, report.fix))
            if edits:
                fix = Fix(report.fix.applicability, report.fix.message, edits)
        key = (report.code, start)
        findings.setdefault(
            key,
            Finding(
                code=report.code,
                message=report.message,
                filename=filename,
                location=start,
                end_location=end,
                fix=fix,
                name=names.get(report.code, ""),
                source_line=lines[start.row - 1] if start.row <= len(lines) else "",
            ),
        )
    return sorted(findings.values(), key=Finding.sort_key)


def fix_bytes(
    data: bytes, filename: str, codes: Collection[str], *, unsafe: bool = False
) -> FixResult:
    """Apply every applicable fix, pass after pass, until the file stops changing.

    The result always parses: a pass whose output would not parse is dropped.
    """
    result = lint_bytes(data, filename, codes)
    if result.parsed is None:
        return FixResult(None, 0, result.findings)
    parsed = result.parsed
    # Fixes may add the words another rule needs (AMP003 adds a GradScaler), so the fix loop
    # runs every selected rule.
    rules = select_rules(codes)
    findings = result.findings
    applied = 0
    original_text = parsed.text
    for _ in range(MAX_FIX_PASSES):
        chosen = _non_overlapping(findings, unsafe)
        if not chosen:
            break
        new_text = apply_edits(parsed.text, [e for f in chosen for e in f.fix.edits])  # type: ignore[union-attr]
        if new_text == parsed.text:
            break
        try:
            reparsed = parse_text(new_text, parsed)
        except SourceError:
            break
        applied += len(chosen)
        parsed = reparsed
        findings = lint_parsed(parsed, filename, rules)
    if parsed.text == original_text:
        return FixResult(None, 0, findings)
    return FixResult(parsed.encode(parsed.text), applied, findings)


def _non_overlapping(findings: Sequence[Finding], unsafe: bool) -> list[Finding]:
    chosen: list[Finding] = []
    for finding in findings:
        fix = finding.fix
        if fix is None or (fix.applicability == "unsafe" and not unsafe):
            continue
        if any(overlaps(fix.edits, other.fix.edits) for other in chosen):  # type: ignore[union-attr]
            continue
        chosen.append(finding)
    return chosen
