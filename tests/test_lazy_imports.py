"""A file no rule can matter to is checked without importing a rule module, libcst, the
notebook machinery or the output formats it does not print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from amplint.catalog import static_codes
from amplint.engine.registry import all_rules, rules_for
from amplint.engine.words import WORDS

# Runs the command line in a fresh interpreter, then lists the heavy modules it imported.
_PROBE = """
import json, sys
from amplint.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    status = exit.code
heavy = sorted(
    name for name in sys.modules
    if name in ("libcst", "amplint.notebook", "amplint.output.sarif", "amplint.output.json")
    or name.startswith(("amplint.rules.", "amplint.analysis"))
)
print(json.dumps({"status": status, "heavy": heavy}))
"""


def _imports(tmp_path: Path, *args: str) -> tuple[int, list[str]]:
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    last = completed.stdout.strip().splitlines()[-1]
    result = json.loads(last)
    return result["status"], result["heavy"]


def test_word_table_matches_the_rules() -> None:
    assert {rule.code: rule.tokens for rule in all_rules()} == WORDS, (
        "amplint/engine/words.py is stale: run `python -m amplint.engine.words`"
    )


@pytest.mark.parametrize(
    "source",
    [
        # No AMP word at all.
        "import os\n\n\ndef join(x):\n    return os.path.join(x, 'a')\n",
        # The words, but only in a docstring and a comment: the ast stage drops it.
        '"""Call loss.backward() outside torch.autocast, then optimizer.step()."""\n'
        "# scaler = torch.amp.GradScaler()\nimport os\n",
    ],
)
def test_clean_file_imports_no_rule_and_no_libcst(tmp_path: Path, source: str) -> None:
    (tmp_path / "clean.py").write_text(source)
    for options in ([], ["--select", "AMP001,AMP007", "--ignore", "AMP007"], ["--select", "ALL"]):
        status, heavy = _imports(tmp_path, "check", "--no-cache", *options, "clean.py")
        assert status == 0
        assert heavy == []


def test_a_training_loop_still_loads_the_rules(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(
        "import torch\n"
        "for x in loader:\n"
        "    with torch.autocast('cuda'):\n"
        "        loss = model(x)\n"
        "        loss.backward()\n"
    )
    status, heavy = _imports(tmp_path, "check", "--no-cache", "train.py")
    assert status == 1
    assert "libcst" in heavy
    assert "amplint.rules.amp001_backward_inside_autocast" in heavy
    # Only the rules whose words the file has are imported: it never says unscale_.
    assert "amplint.rules.amp011_unscale_twice" not in heavy


def test_rules_for_finds_each_rule_by_its_catalog_spelling() -> None:
    # A fresh interpreter, so that the rules are found one module at a time.
    probe = (
        "import sys\n"
        "from amplint.catalog import static_codes\n"
        "from amplint.engine import registry\n"
        "one = [f'{r.__module__}.{r.__name__}' for c in static_codes()"
        " for r in registry.rules_for([c, 'AMP101'])]\n"
        "assert registry.all_rules.cache_info().currsize == 0\n"
        "print(' '.join(one))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    expected = [f"{rule.__module__}.{rule.__name__}" for rule in all_rules()]
    assert completed.stdout.split() == expected
    assert [rule.code for rule in rules_for(static_codes())] == list(static_codes())
