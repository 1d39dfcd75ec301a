"""The framework rules (AMP022-AMP025, and AMP001/AMP006 on framework code) through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from amplint.cli import main

FIELD_SCRIPTS = Path(__file__).resolve().parent / "fixtures" / "frameworks"

HF = """\
import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

model = AutoModelForCausalLM.from_pretrained("gpt2", torch_dtype=torch.float16)
args = TrainingArguments("out", fp16=True, bf16=True)
Trainer(model=model, args=args, train_dataset=data).train()
"""

LIGHTNING = """\
import lightning as L

trainer = L.Trainer(accelerator="cpu", precision="16-mixed", max_epochs=1)
trainer.fit(model, loader)
"""

ACCELERATE = """\
import torch
from accelerate import Accelerator

accelerator = Accelerator(mixed_precision="fp16")
scaler = torch.amp.GradScaler()
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for x in loader:
    loss = scaler.scale(model(x))
    accelerator.backward(loss)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
"""

LORA = """\
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

model = AutoModelForCausalLM.from_pretrained("gpt2", torch_dtype=torch.float16)
model = get_peft_model(model, LoraConfig(r=8))
Trainer(model=model, args=TrainingArguments("out", fp16=True), train_dataset=data).train()
"""


def run(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "hf.py").write_text(HF)
    (tmp_path / "lit.py").write_text(LIGHTNING)
    (tmp_path / "acc.py").write_text(ACCELERATE)
    (tmp_path / "lora.py").write_text(LORA)
    return tmp_path


def test_check_reports_each_framework_mistake_at_its_line(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = run(["check", "--no-cache", "--output-format", "json"], project, monkeypatch)
    assert code == 1
    found = sorted(
        (f["filename"], f["location"]["row"], f["code"], f["fix"] is not None)
        for f in json.loads(out)
    )
    assert found == [
        ("acc.py", 9, "AMP025", False),
        ("acc.py", 10, "AMP006", True),
        ("hf.py", 4, "AMP022", True),
        ("hf.py", 5, "AMP023", False),
        ("lit.py", 3, "AMP024", True),
    ]


def test_concise_lines_name_the_framework_and_its_remedy(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = run(["check", "--no-cache", "lit.py", "acc.py"], project, monkeypatch)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("acc.py:9:5: AMP025 the loss is already scaled by your GradScaler")
    assert lines[1].startswith("acc.py:10:5: AMP006 `torch.nn.utils.clip_grad_norm_` runs on")
    assert "use `accelerator.clip_grad_norm_(...)`" in lines[1]
    assert lines[2].startswith("lit.py:3:11: AMP024 [*] float16 mixed precision asked of a")
    assert 'runs "bf16-mixed" instead' in lines[2]


def test_fix_writes_what_lightning_runs_on_a_cpu(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _ = run(["fix", "--no-cache", "lit.py"], project, monkeypatch)
    assert code == 0
    assert (project / "lit.py").read_text() == LIGHTNING.replace('"16-mixed"', '"bf16-mixed"')


def test_unsafe_fixes_load_float32_weights_and_use_accelerates_clip(tmp_path: Path) -> None:
    (tmp_path / "hf.py").write_text(HF)
    (tmp_path / "acc.py").write_text(ACCELERATE)
    safe = subprocess.run(
        [sys.executable, "-m", "amplint", "fix", "--no-cache", "--select", "AMP022,AMP006", "."],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert (tmp_path / "hf.py").read_text() == HF, safe.stdout
    unsafe = subprocess.run(
        [
            sys.executable,
            "-m",
            "amplint",
            "fix",
            "--no-cache",
            "--unsafe-fixes",
            "--select",
            "AMP022,AMP006",
            ".",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert unsafe.returncode == 0, unsafe.stdout + unsafe.stderr
    assert (tmp_path / "hf.py").read_text() == HF.replace(
        "torch_dtype=torch.float16", "torch_dtype=torch.float32"
    )
    assert (tmp_path / "acc.py").read_text() == ACCELERATE.replace(
        "torch.nn.utils.clip_grad_norm_(", "accelerator.clip_grad_norm_("
    )


def test_frozen_base_with_adapters_is_quiet(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = run(["check", "--no-cache", "lora.py"], project, monkeypatch)
    assert (code, out.strip()) == (0, "All checks passed!")


@pytest.mark.parametrize("code", ["AMP022", "AMP023", "AMP024", "AMP025"])
def test_rule_documentation_in_ruffs_shape(code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(main, ["rule", code], catch_exceptions=False)
    assert result.exit_code == 0
    for heading in ("## What it does", "## Why is this bad?", "## Example", "## References"):
        assert heading in result.stdout


def test_static_and_runtime_agree_on_the_field_scripts() -> None:
    """The linter finds, without running anything, what `amplint run` finds in the field-test
    scripts (tests/runtime/test_runtime_frameworks.py)."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "amplint",
            "check",
            "--no-cache",
            "--output-format",
            "json",
            str(FIELD_SCRIPTS),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = sorted(
        (f["code"], Path(f["filename"]).name, f["location"]["row"])
        for f in json.loads(completed.stdout)
    )
    assert found == [
        (
            "AMP001",
            "accelerate_backward_in_autocast.py",
            _line("accelerate_backward_in_autocast.py", "accelerator.backward(loss)"),
        ),
        ("AMP001", "lightning_bf16_cpu.py", _line("lightning_bf16_cpu.py", "AMP001 here")),
    ]


def _line(script: str, marker: str) -> int:
    lines = (FIELD_SCRIPTS / script).read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if marker in line)


def test_prefilter_parses_only_files_that_switch_a_framework_to_fp16() -> None:
    """Framework scripts whose precision comes from the command line, or that only mention a
    framework in a docstring, never reach libcst for the framework rules."""
    from amplint.engine.prefilter import candidate_rules
    from amplint.engine.registry import rule_by_code

    rules = [rule_by_code(code) for code in ("AMP022", "AMP023", "AMP024", "AMP025")]
    literal = (
        b'import lightning as L\ntrainer = L.Trainer(accelerator="cpu", precision = "16-mixed")\n'
    )
    from_flags = (
        b"import lightning as L\ntrainer = L.Trainer(accelerator=a.device, precision=a.p)\n"
    )
    docstring = b'"""Like transformers: fp16=True, use_cpu=True."""\nimport os\n'
    assert [r.code for r in candidate_rules(literal, rules)[0]] == ["AMP024"]
    assert candidate_rules(from_flags, rules)[0] == []
    assert candidate_rules(docstring, rules)[0] == []
