"""`amplint run` on the frameworks' own minimal loops, on CPU, with the real frameworks.

The scripts under ``tests/fixtures/frameworks`` build tiny models in code (no download) and
train them with Accelerate, Lightning and transformers' ``Trainer``. They need the optional
``frameworks`` extra (``pip install -e '.[frameworks]'``); without it the suite is skipped
with that reason. ``benchmarks/field_test_frameworks.py`` runs it and reports timings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "fixtures" / "frameworks"


def _missing(*packages: str) -> list[str]:
    return [name for name in packages if importlib.util.find_spec(name) is None]


def needs(*packages: str) -> pytest.MarkDecorator:
    missing = _missing(*packages)
    return pytest.mark.skipif(
        bool(missing),
        reason=f"needs {', '.join(missing)}: pip install -e '.[frameworks]'",
    )


pytestmark = pytest.mark.frameworks


def amplint_run(tmp_path: Path, script: str, *args: str) -> tuple[dict[str, Any], str, int]:
    """Run a fixture script as a user would, through the CLI in a fresh process."""
    report = tmp_path / "report.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "amplint",
            "run",
            "--report",
            str(report),
            str(SCRIPTS / script),
            *list(args),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        # As a user's shell has it: a PYTHONWARNINGS=ignore of whoever runs the suite (the
        # field-test benchmark sets it for its own noise) would hide amplint's warnings.
        env={k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"},
    )
    return json.loads(report.read_text()), completed.stderr, completed.returncode


def sites(report: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(f["code"], Path(f["filename"]).name, f["line"]) for f in report["findings"]]


def line_of(script: str, marker: str) -> int:
    lines = (SCRIPTS / script).read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if marker in line)


@needs("accelerate")
def test_accelerate_bf16_loop_is_clean(tmp_path: Path) -> None:
    report, stderr, status = amplint_run(tmp_path, "accelerate_bf16_cpu.py")
    assert status == 0, stderr
    assert report["findings"] == []


@needs("accelerate")
def test_accelerate_backward_in_its_autocast_points_at_the_users_line(tmp_path: Path) -> None:
    report, stderr, status = amplint_run(tmp_path, "accelerate_backward_in_autocast.py")
    assert status == 0, stderr
    line = line_of("accelerate_backward_in_autocast.py", "accelerator.backward(loss)")
    # The user's `accelerator.backward(loss)`, not accelerate's `loss.backward()` inside it.
    assert sites(report) == [("AMP001", "accelerate_backward_in_autocast.py", line)]
    assert report["findings"][0]["count"] == 8


@needs("lightning")
@pytest.mark.parametrize("mode", ["auto", "manual"])
def test_lightning_documented_loops_are_clean(tmp_path: Path, mode: str) -> None:
    """Lightning runs `training_step` under its own autocast: `manual_backward` and
    `opt.step()` there are its design, not the user's misuse."""
    report, stderr, status = amplint_run(tmp_path, "lightning_bf16_cpu.py", mode)
    assert status == 0, stderr
    assert report["findings"] == []


@needs("lightning")
def test_lightning_users_own_autocast_is_still_checked(tmp_path: Path) -> None:
    report, stderr, status = amplint_run(tmp_path, "lightning_bf16_cpu.py", "manual-own-autocast")
    assert status == 0, stderr
    line = line_of("lightning_bf16_cpu.py", "AMP001 here")
    assert sites(report) == [("AMP001", "lightning_bf16_cpu.py", line)]


@needs("lightning")
def test_lightning_built_scaler_is_amplints_and_has_health_statistics(tmp_path: Path) -> None:
    report, stderr, status = amplint_run(tmp_path, "lightning_fp16_plugin_cpu.py")
    assert status == 0, stderr
    assert report["findings"] == []
    summary = report["summary"]
    assert summary["steps"] == 8  # 64 samples / batch 8, every step through Lightning's scaler
    assert summary["scale"]["max"] == 65536.0
    assert summary["skipped_steps"] == 1  # the first step backs the scale off, as torch does


@needs("lightning")
def test_lightning_half_module_reported_with_lightnings_remedy_before_valueerror(
    tmp_path: Path,
) -> None:
    report, stderr, status = amplint_run(tmp_path, "lightning_fp16_plugin_cpu.py", "half")
    assert status != 0
    assert "ValueError: Attempting to unscale FP16 gradients." in stderr
    line = line_of("lightning_fp16_plugin_cpu.py", "trainer.fit(module, loader)")
    assert sites(report) == [("AMP022", "lightning_fp16_plugin_cpu.py", line)]
    message = report["findings"][0]["message"]
    assert 'precision="16-true"' in message and "Lightning" in message
    # Reported (the warning printed) before torch's error ended the run.
    assert stderr.index("AMP022") < stderr.index("ValueError: Attempting to unscale")


@needs("transformers", "accelerate")
def test_transformers_trainer_tiny_model_is_clean(tmp_path: Path) -> None:
    report, stderr, status = amplint_run(tmp_path, "hf_trainer_cpu.py", str(tmp_path / "out"))
    assert status == 0, stderr
    assert report["findings"] == []
    assert "done" not in stderr
