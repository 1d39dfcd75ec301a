"""Every rule's own examples, turned into test cases: adding a rule never touches this file."""

from __future__ import annotations

import ast

import pytest

from amplint.engine.contract import Invalid, Rule
from amplint.engine.fixes import apply_edits
from amplint.engine.prefilter import candidate_rules, identifiers, may_fire, may_fire_in_code
from amplint.engine.registry import all_rules
from amplint.engine.run import fix_bytes, lint_bytes

VALID = [
    pytest.param(rule, source, id=f"{rule.code}-valid-{i}")
    for rule in all_rules()
    for i, source in enumerate(rule.valid)
]
INVALID = [
    pytest.param(rule, example, id=f"{rule.code}-invalid-{i}")
    for rule in all_rules()
    for i, example in enumerate(rule.invalid)
]


@pytest.mark.parametrize(("rule", "source"), VALID)
def test_valid_example_has_no_finding(rule: type[Rule], source: str) -> None:
    findings = lint_bytes(source.encode(), "example.py", {rule.code}).findings
    assert findings == []


@pytest.mark.parametrize(("rule", "example"), INVALID)
def test_invalid_example_is_reported_at_its_line(rule: type[Rule], example: Invalid) -> None:
    findings = lint_bytes(example.source.encode(), "example.py", {rule.code}).findings
    assert [f.code for f in findings] == [rule.code] * example.count
    assert findings[0].location.row == example.line
    assert (findings[0].fix is not None) == (example.fixed is not None)
    # A message is one line of concise output, also where it quotes a call over several.
    assert all("\n" not in finding.message for finding in findings)


@pytest.mark.parametrize(("rule", "example"), INVALID)
def test_fix_gives_the_expected_file(rule: type[Rule], example: Invalid) -> None:
    data = example.source.encode()
    safe_only = fix_bytes(data, "example.py", {rule.code}, unsafe=False)
    fixed = fix_bytes(data, "example.py", {rule.code}, unsafe=True)
    if example.fixed is None:
        assert fixed.data is None
        return
    assert fixed.data is not None
    assert fixed.data.decode() == example.fixed
    ast.parse(fixed.data)
    if example.unsafe:
        assert safe_only.data is None
    else:
        assert safe_only.data == fixed.data
    again = fix_bytes(fixed.data, "example.py", {rule.code}, unsafe=True)
    assert again.data is None
    assert not any(f.code == rule.code and f.fix for f in again.remaining)


@pytest.mark.parametrize(("rule", "example"), INVALID)
def test_prefilter_lets_every_invalid_example_through(rule: type[Rule], example: Invalid) -> None:
    data = example.source.encode()
    assert may_fire(data, [rule]) == [rule]
    names = identifiers(data)
    assert names is not None and may_fire_in_code(names, [rule]) == [rule]
    assert candidate_rules(data, [rule])[0] == [rule]


def test_prefilter_skips_files_that_cannot_matter() -> None:
    source = b'"""Mentions torch.autocast and loss.backward() in a docstring."""\nimport os\n'
    assert may_fire(source, list(all_rules())) != []  # the words are there...
    assert candidate_rules(source, list(all_rules()))[0] == []  # ...but not as code
    assert lint_bytes(b"autocast(\n", "broken.py", {r.code for r in all_rules()}).findings == []


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.code)
def test_rule_is_documented_and_exemplified(rule: type[Rule]) -> None:
    assert rule.code.startswith("AMP") and len(rule.code) == 6
    assert rule.name == rule.name.lower() and " " not in rule.name
    text = rule.documentation()
    for heading in ("## What it does", "## Why is this bad?", "## Example", "## Fix safety"):
        assert heading in text
    assert rule.valid and rule.invalid
    assert rule.fixable == any(e.fixed is not None for e in rule.invalid)


def test_codes_are_unique() -> None:
    codes = [rule.code for rule in all_rules()]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize(("rule", "example"), INVALID)
def test_a_single_findings_fix_alone_gives_the_expected_file(
    rule: type[Rule], example: Invalid
) -> None:
    """What an editor's quick fix applies: the one finding's edits, once. No second pass
    may repair what the first broke (a fix that moved another loop's update)."""
    if example.fixed is None or example.count != 1:
        return
    data = example.source.encode()
    (finding,) = lint_bytes(data, "example.py", {rule.code}).findings
    assert finding.fix is not None
    assert apply_edits(example.source, list(finding.fix.edits)) == example.fixed
