"""The runtime's codes and names are the catalog's: one list, read by both halves."""

from __future__ import annotations

import ast
import pathlib

import amplint.runtime as ar
from amplint.runtime import findings

from amplint import catalog

RUNTIME_DIR = pathlib.Path(findings.__file__).parent


def _codes_used_in_runtime_sources() -> set[str]:
    """Every "AMPnnn" string literal in the runtime's modules."""
    used: set[str] = set()
    for path in RUNTIME_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                value = node.value
                if len(value) == 6 and value.startswith("AMP") and value[3:].isdigit():
                    used.add(value)
    return used


def test_every_runtime_message_belongs_to_a_runtime_code_of_the_catalog() -> None:
    for code in findings.MESSAGES:
        item = catalog.entry(code)
        assert item is not None, f"{code} has a runtime message but no catalog entry"
        assert item.runtime, f"{code} is caught {item.caught!r} in the catalog"


def test_every_code_the_runtime_mentions_is_in_the_catalog_and_caught_at_runtime() -> None:
    used = _codes_used_in_runtime_sources()
    assert "AMP001" in used and "AMP107" in used  # the scan sees the runtime's codes
    for code in used:
        item = catalog.entry(code)
        assert item is not None, f"the runtime uses {code}, which the catalog lacks"
        assert item.caught != "static", f"the runtime reports {code}, caught 'static'"


def test_every_code_the_catalog_says_the_runtime_catches_is_reported_by_it() -> None:
    used = _codes_used_in_runtime_sources()
    for item in catalog.CATALOG:
        if item.runtime:
            assert item.code in used, f"{item.code} is caught {item.caught!r}, never at runtime"


def test_messages_carry_the_catalog_name() -> None:
    text = findings.message_for("AMP018", call="clip_grad_norm_")
    assert text.startswith("AMP018 clip-error-if-nonfinite: ")
    for code in findings.MESSAGES:
        assert catalog.entry(code).name == findings.name_of(code)  # type: ignore[union-attr]


def test_a_real_finding_names_its_code_as_the_catalog_does(quiet: None) -> None:
    import torch

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = ar.GradScaler("cpu")
    with ar.checking() as seen:
        scaler.scale(model(torch.randn(3, 4)).sum()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)
        scaler.unscale_(optimizer)
        scaler.step(optimizer)
        scaler.update()
    (finding,) = [f for f in seen.findings if f.code == "AMP018"]
    assert finding.message.startswith("AMP018 clip-error-if-nonfinite:")


def test_catalog_thresholds_are_the_runtime_defaults_and_options() -> None:
    """The catalog documents each threshold; HealthConfig is where it takes effect. Both
    must say the same, and every option the catalog names must exist."""
    from dataclasses import fields

    from amplint.runtime.health_config import HealthConfig

    defaults = {field.name: field.default for field in fields(HealthConfig)}
    documented = {t.name: t for item in catalog.CATALOG for t in item.thresholds}
    assert set(documented) == set(defaults)
    for name, threshold in documented.items():
        assert threshold.default == defaults[name], name
    from amplint.runtime.runner import build_parser

    parser = build_parser()
    for name, threshold in documented.items():
        value = [] if isinstance(threshold.default, bool) else [str(threshold.default)]
        options = parser.parse_args([threshold.run_option, *value, "train.py"])
        expected = (not threshold.default) if isinstance(threshold.default, bool) else None
        assert getattr(options, name) == (threshold.default if expected is None else expected)
