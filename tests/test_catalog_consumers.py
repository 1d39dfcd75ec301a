"""What reads the catalog besides the command line: the editor's docs, SARIF, the rules."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from amplint.catalog import CATALOG, by_code, docs_url, documentation
from amplint.engine.contract import Invalid, Rule, RuleDefinitionError
from amplint.engine.registry import all_rules
from amplint.findings import Finding, Position
from amplint.lsp.docs import DocLinks, rule_markdown
from amplint.output import emit


def test_catalog_fixable_is_what_the_rules_examples_show() -> None:
    rules = {rule.code: rule for rule in all_rules()}
    for item in CATALOG:
        if item.code in rules:
            assert item.fixable == rules[item.code].fixable, item.code
        else:
            assert not item.fixable, f"{item.code} has no rule, so no fix"


def test_a_rule_that_contradicts_the_catalog_on_fixes_is_refused() -> None:
    namespace = {
        "__module__": "amplint.rules.amp019_closure_with_gradscaler",
        "code": "AMP019",
        "tokens": (("step",),),
        "invalid": (Invalid("scaler.step(opt, closure)\n", line=1, fixed="scaler.step(opt)\n"),),
    }
    with pytest.raises(RuleDefinitionError, match=r"AMP019.*show a fix.*fixable=False"):
        type("ClosureWithGradscaler", (Rule,), namespace)


@pytest.mark.parametrize("code", ["AMP001", "AMP104", "AMP999"])
def test_editor_docs_cover_every_code(code: str, tmp_path: Path) -> None:
    item = by_code()[code]
    page = rule_markdown(code)
    assert page == documentation(item, fixable=item.fixable)
    assert page.startswith(f"# {item.name} ({code})")
    finding = Finding(code, "m", "t.py", Position(1, 1), Position(1, 2))
    href = DocLinks(root=tmp_path).href(finding)
    assert href is not None and href.startswith("file:")
    assert Path(href.removeprefix("file://")).read_text(encoding="utf-8") == page
    assert rule_markdown("AMP777") is None


def test_sarif_rules_carry_catalog_metadata_for_a_runtime_code() -> None:
    stream = io.StringIO()
    finding = Finding("AMP104", "m", "t.py", Position(1, 1), Position(1, 2))
    emit("sarif", [finding], stream)
    run = json.loads(stream.getvalue())["runs"][0]
    rule = run["tool"]["driver"]["rules"][0]
    assert rule["name"] == "gradient-underflow"
    assert rule["helpUri"] == docs_url("AMP104")
    assert rule["properties"] == {"caught": "runtime", "fixable": False}
    assert "## Thresholds" in rule["help"]["markdown"]
