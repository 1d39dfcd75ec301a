"""The architecture is checked from the imports: a forbidden crossing fails CI."""

from __future__ import annotations

from pathlib import Path

from layering import crossings

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {ROOT / "amplint": "amplint", ROOT / "runtime": "amplint.runtime"}


def test_no_part_imports_what_it_must_not() -> None:
    assert [str(c) for c in crossings(PACKAGES)] == []


def _package(tmp_path: Path, files: dict[str, str]) -> dict[Path, str]:
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {tmp_path / "amplint": "amplint", tmp_path / "runtime": "amplint.runtime"}


def test_a_forbidden_import_in_a_temporary_module_is_caught(tmp_path: Path) -> None:
    roots = _package(
        tmp_path,
        {
            "amplint/__init__.py": "",
            "amplint/engine/__init__.py": "",
            "amplint/engine/run.py": "from amplint.rules import amp001_backward\n",
            "amplint/engine/emit.py": "from ..output import concise\n",
            "amplint/rules/amp001_backward.py": "from amplint.engine.contract import Rule\n",
            "amplint/analysis/model.py": "import torch\n",
            "amplint/catalog.py": "import dataclasses\nimport libcst\n",
            "amplint/api.py": "from amplint.runtime import install\n",
            "amplint/cli.py": "from amplint.runtime.runner import run_script\n",
            "runtime/__init__.py": "import torch\nfrom amplint.catalog import entry\n",
            "runtime/scaler.py": "import libcst\nfrom amplint.engine import run\n",
        },
    )
    found = {(c.importer, c.imported) for c in crossings(roots)}
    assert found == {
        ("amplint.engine.run", "amplint.rules.amp001_backward"),
        ("amplint.engine.emit", "amplint.output"),
        ("amplint.engine.emit", "amplint.output.concise"),
        ("amplint.analysis.model", "torch"),
        ("amplint.catalog", "libcst"),
        ("amplint.api", "amplint.runtime"),
        ("amplint.api", "amplint.runtime.install"),
        ("amplint.runtime.scaler", "libcst"),
        ("amplint.runtime.scaler", "amplint.engine"),
        ("amplint.runtime.scaler", "amplint.engine.run"),
    }


def test_lazy_imports_inside_functions_count_too(tmp_path: Path) -> None:
    roots = _package(
        tmp_path,
        {"amplint/output/json.py": "def emit():\n    import torch\n", "runtime/x.py": ""},
    )
    assert [(c.importer, c.imported) for c in crossings(roots)] == [
        ("amplint.output.json", "torch")
    ]
