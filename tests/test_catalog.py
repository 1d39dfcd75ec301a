"""One catalog: every code in one place, rules that must agree with it, and a rule's failure
that is reported instead of stopping the run."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from amplint import catalog
from amplint.cli import main
from amplint.engine.contract import Invalid, Rule, RuleContext, RuleDefinitionError
from amplint.engine.registry import all_rules, collect_rules
from amplint.engine.run import lint_bytes

ROOT = Path(__file__).resolve().parent.parent


def test_every_static_code_has_exactly_one_rule_and_every_rule_an_entry() -> None:
    static = {
        entry.code
        for entry in catalog.CATALOG
        if entry.static and entry.code not in catalog.ALWAYS_REPORTED
    }
    assert {rule.code for rule in all_rules()} == static


def test_codes_are_unique_and_well_formed() -> None:
    codes = [entry.code for entry in catalog.CATALOG]
    assert len(codes) == len(set(codes))
    names = [entry.name for entry in catalog.CATALOG]
    assert len(names) == len(set(names))
    for entry in catalog.CATALOG:
        assert entry.code.startswith("AMP") and entry.code[3:].isdigit() and len(entry.code) == 6
        assert entry.name == entry.name.lower() and " " not in entry.name
        assert entry.caught in ("static", "runtime", "both")
        if entry.code.startswith("AMP1"):
            assert entry.caught == "runtime" and entry.thresholds, entry.code


def test_the_catalog_refuses_a_duplicate_code(monkeypatch: pytest.MonkeyPatch) -> None:
    first = catalog.CATALOG[0]
    monkeypatch.setattr(catalog, "CATALOG", (*catalog.CATALOG, first))
    catalog.by_code.cache_clear()
    try:
        with pytest.raises(ValueError, match=f"code {first.code} is listed twice"):
            catalog.by_code()
    finally:
        monkeypatch.undo()
        catalog.by_code.cache_clear()


def test_the_catalog_imports_only_the_standard_library() -> None:
    tree = ast.parse((ROOT / "amplint" / "catalog.py").read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert {name.partition(".")[0] for name in imported} <= set(sys.stdlib_module_names) | {
        "__future__"
    }


def test_runtime_codes_document_their_thresholds_and_options() -> None:
    text = catalog.documentation(catalog.entry("AMP104"), fixable=False)  # type: ignore[arg-type]
    assert "## Thresholds" in text
    assert "`underflow_share` (default `0.1`)" in text
    assert "install(underflow_share=...)" in text and "--underflow-share" in text
    assert "Caught by the runtime checks" in text


def test_always_reported_codes_are_documented_and_not_selectable() -> None:
    for code in catalog.ALWAYS_REPORTED:
        entry = catalog.entry(code)
        assert entry is not None
        assert "always reported" in entry.docs.why_bad
        assert code not in catalog.known_codes()


# ---------------------------------------------------------------- a strict registry


def _rule_class(module: str, class_name: str, code: str) -> type[Rule]:
    known = catalog.entry(code)
    fixed = "y\n" if known is not None and known.fixable else None
    namespace = {
        "__module__": module,
        "code": code,
        "tokens": (("x",),),
        "invalid": (Invalid("x\n", 1, fixed=fixed),),
    }
    return type(class_name, (Rule,), namespace)


def test_a_rule_must_live_in_the_module_its_catalog_name_spells() -> None:
    with pytest.raises(RuleDefinitionError, match="'amp002_missing_scaler_update'"):
        _rule_class("amplint.rules.amp002_update", "MissingScalerUpdate", "AMP002")


def test_a_rule_class_must_spell_its_catalog_name() -> None:
    with pytest.raises(RuleDefinitionError, match="'MissingScalerUpdate'"):
        _rule_class("amplint.rules.amp002_missing_scaler_update", "UpdateRule", "AMP002")


@pytest.mark.parametrize("code", ["AMP000", "AMP104", "AMP999"])
def test_a_rule_needs_a_static_catalog_code(code: str) -> None:
    with pytest.raises(RuleDefinitionError, match=f"{code} is not a static code"):
        _rule_class("amplint.rules.amp000_x", "X", code)


def _module(name: str, *rules: type[Rule]) -> types.ModuleType:
    module = types.ModuleType(name)
    for rule in rules:
        setattr(module, rule.__name__, rule)
    return module


def test_the_registry_refuses_a_code_claimed_twice() -> None:
    name = "amplint.rules.amp002_missing_scaler_update"
    one = _module(name, _rule_class(name, "MissingScalerUpdate", "AMP002"))
    two = _module(name, _rule_class(name, "MissingScalerUpdate", "AMP002"))
    with pytest.raises(RuleDefinitionError, match="AMP002 is claimed by two rules"):
        collect_rules([one, two])


def test_the_registry_refuses_a_module_without_exactly_one_rule() -> None:
    with pytest.raises(RuleDefinitionError, match="exactly one rule, found 0"):
        collect_rules([types.ModuleType("amplint.rules.amp099_empty")])


def test_fixable_follows_from_the_examples_and_must_agree_with_the_catalog() -> None:
    name = "amplint.rules.amp019_closure_with_gradscaler"  # not fixable in the catalog
    namespace = {
        "__module__": name,
        "code": "AMP019",
        "tokens": (("x",),),
        "invalid": (Invalid("x\n", 1),),
    }
    assert type("ClosureWithGradScaler", (Rule,), namespace).fixable is False
    namespace["invalid"] = (Invalid("x\n", 1, fixed="y\n"),)
    with pytest.raises(RuleDefinitionError, match="fixable=False"):
        type("ClosureWithGradScaler", (Rule,), namespace)


# ---------------------------------------------------------------- a rule's failure is contained

BUGGY = textwrap.dedent(
    """\
    import torch

    scaler = torch.amp.GradScaler("cuda")
    for x, y in loader:
        with torch.autocast("cuda"):
            loss = model(x)
            scaler.scale(loss).backward()
        scaler.step(optimizer)
    """
)


def _boom(self: Rule, context: RuleContext) -> None:
    raise KeyError("unexpected node")


def test_a_failing_rule_becomes_one_internal_error_and_the_others_still_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rule = next(rule for rule in all_rules() if rule.code == "AMP002")
    monkeypatch.setattr(rule, "check", _boom)
    findings = lint_bytes(BUGGY.encode(), "train.py", catalog.default_codes()).findings
    codes = [finding.code for finding in findings]
    assert codes.count("AMP998") == 1 and "AMP001" in codes and "AMP002" not in codes
    (error,) = [finding for finding in findings if finding.code == "AMP998"]
    assert "rule AMP002 (missing-scaler-update)" in error.message
    assert "KeyError" in error.message and "report it" in error.message


def test_check_goes_on_and_exits_2_after_a_rule_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = next(rule for rule in all_rules() if rule.code == "AMP002")
    monkeypatch.setattr(rule, "check", _boom)
    (tmp_path / "a.py").write_text(BUGGY)
    (tmp_path / "b.py").write_text(BUGGY)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["check", "--no-cache", "a.py", "b.py"])
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    for name in ("a.py", "b.py"):
        assert any(line.startswith(f"{name}:1:1: AMP998") for line in lines), result.output
        assert any(line.startswith(f"{name}:7:9: AMP001") for line in lines), result.output
    assert "Traceback" not in result.output


BREAK_A_RULE = (
    "import sys\n"
    "from amplint.rules import amp002_missing_scaler_update as module\n"
    "def boom(self, context):\n"
    "    raise KeyError('unexpected node')\n"
    "module.MissingScalerUpdate.check = boom\n"
    "from amplint.cli import main\n"
    "sys.argv[0] = 'amplint'\n"
    "main()\n"
)


def test_check_in_a_real_process_with_a_broken_rule(tmp_path: Path) -> None:
    for index in range(12):  # enough files for the process pool
        (tmp_path / f"t{index}.py").write_text(BUGGY)
    done = subprocess.run(
        [sys.executable, "-c", BREAK_A_RULE, "check", "--no-cache", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout.count(": AMP998 ") == 12 and done.stdout.count(": AMP001 ") == 12
    assert "Traceback" not in done.stdout + done.stderr


def test_the_language_server_stays_up_when_a_rule_fails(tmp_path: Path) -> None:
    from lsp_helpers import LspClient

    client = LspClient(
        [sys.executable, "-c", BREAK_A_RULE, "server"],
        cwd=tmp_path,
        env={"AMPLINT_CACHE_DIR": str(tmp_path / "cache")},
    )
    try:
        client.initialize(tmp_path, options={"debounceMs": 0})
        uri = (tmp_path / "train.py").as_uri()
        mark = client.mark()
        client.open(uri, BUGGY)
        codes = {d["code"] for d in client.diagnostics(uri, mark, version=1)}
        assert {"AMP998", "AMP001"} <= codes and "AMP002" not in codes
        # Still answering: a second document gets its diagnostics too.
        other = (tmp_path / "other.py").as_uri()
        mark = client.mark()
        client.open(other, BUGGY)
        assert "AMP001" in {d["code"] for d in client.diagnostics(other, mark, version=1)}
        assert client.shutdown() == 0
    finally:
        client.kill()


# ---------------------------------------------------------------- the syntax-error code


def test_a_syntax_error_is_reported_whatever_the_selection(tmp_path: Path) -> None:
    broken = "import torch\nscaler = torch.amp.GradScaler(\n"
    everything = lint_bytes(broken.encode(), "t.py", catalog.default_codes()).findings
    narrow = lint_bytes(broken.encode(), "t.py", ["AMP020"]).findings
    assert [f.code for f in everything] == [f.code for f in narrow] == ["AMP999"]
    assert narrow[0].name == "syntax-error"
    # A file that does not mention AMP is not parsed at all, whatever the selection.
    assert lint_bytes(b"def f(:\n", "t.py", catalog.default_codes()).findings == []
