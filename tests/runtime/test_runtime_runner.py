"""`run_script` end to end, in fresh interpreters, as `amplint run` uses it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BUGGY = textwrap.dedent(
    """\
    import sys
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    for step in range(int(sys.argv[1])):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(torch.randn(4, 8)).float().pow(2).mean()
            scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
    print("argv", sys.argv)
    """
)

CORRECT = textwrap.dedent(
    """\
    import sys
    import torch
    from torch import nn
    from torch.amp import GradScaler  # bound before amplint installs: still checked

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = GradScaler("cpu")
    assert type(scaler).__module__ == sys.argv[2], type(scaler).__module__
    for step in range(3):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(torch.randn(4, 8)).float().pow(2).mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    print("loss", round(loss.item(), 6), "file", __file__ == sys.argv[0] or __file__)
    if sys.argv[1] == "raise":
        raise KeyError("boom")
    sys.exit(int(sys.argv[1]))
    """
)


def run_amplint(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys; from amplint.runtime.runner import run_script; "
        "sys.exit(run_script(sys.argv[1], sys.argv[4:], mode=sys.argv[2], "
        "report_path=sys.argv[3] or None))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    (tmp_path / "buggy.py").write_text(BUGGY)
    (tmp_path / "correct.py").write_text(CORRECT)
    return tmp_path


def test_buggy_script_findings_and_report(scripts: Path) -> None:
    report = scripts / "report.json"
    result = run_amplint("buggy.py", "warn", str(report), "3", cwd=scripts)
    assert result.returncode == 0, result.stderr
    assert "argv ['buggy.py', '3']" in result.stdout
    assert "amplint: 2 AMP finding(s)" in result.stderr
    script = str(scripts / "buggy.py")
    assert f"{script}:13: AmpWarning: AMP001" in result.stderr
    document = json.loads(report.read_text())
    assert document["mode"] == "warn" and document["exit_status"] == 0
    assert document["script"] == script
    found = [(f["code"], f["filename"], f["line"], f["count"]) for f in document["findings"]]
    assert found == [("AMP001", script, 13, 3), ("AMP006", script, 14, 3)]
    assert set(document["findings"][0]) == {
        "code",
        "message",
        "filename",
        "line",
        "count",
        "first_step",
    }


def test_correct_script_output_and_exit_status_unchanged(scripts: Path) -> None:
    plain = subprocess.run(
        [sys.executable, "correct.py", "3", "torch.amp.grad_scaler"],
        capture_output=True,
        text=True,
        cwd=scripts,
        timeout=120,
    )
    assert plain.returncode == 3, plain.stderr
    report = scripts / "report.json"
    checked = run_amplint(
        "correct.py", "raise", str(report), "3", "amplint.runtime.scaler", cwd=scripts
    )
    assert checked.returncode == 3, checked.stderr
    assert checked.stdout == plain.stdout
    assert "amplint" not in checked.stderr
    document = json.loads(report.read_text())
    assert document["findings"] == [] and document["exit_status"] == 3


def test_report_written_when_the_script_raises(scripts: Path) -> None:
    report = scripts / "report.json"
    result = run_amplint(
        "correct.py", "log", str(report), "raise", "amplint.runtime.scaler", cwd=scripts
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "KeyError: 'boom'"
    assert 'File "' + str(scripts / "correct.py") + '", line 20' in result.stderr
    assert "runpy" not in result.stderr
    assert json.loads(report.read_text())["exit_status"] == 1


def test_python_dash_m_entry_point(scripts: Path) -> None:
    report = scripts / "r.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "amplint.runtime.runner",
            "--mode",
            "log",
            "--report",
            str(report),
            "buggy.py",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=scripts,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "argv ['buggy.py', '2']" in result.stdout
    assert [f["code"] for f in json.loads(report.read_text())["findings"]] == ["AMP001", "AMP006"]


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_examples_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from amplint.runtime import report, reset
    from amplint.runtime.runner import run_script

    correct = str(EXAMPLES / "runtime_correct_train.py")
    status = run_script(correct, ["--steps", "2", "--exit-code", "4"], mode="raise")
    captured = capsys.readouterr()
    assert status == 4
    assert captured.out.startswith("trained 2 steps")
    assert "amplint" not in captured.err
    assert report() == []

    reset()
    buggy = str(EXAMPLES / "runtime_buggy_train.py")
    report_path = tmp_path / "report.json"
    with pytest.warns(UserWarning):
        status = run_script(buggy, ["--steps", "2"], mode="warn", report_path=str(report_path))
    assert status == 0
    found = [(f["code"], f["filename"]) for f in json.loads(report_path.read_text())["findings"]]
    assert found == [("AMP001", buggy), ("AMP006", buggy)]
    assert "amplint: 2 AMP finding(s)" in capsys.readouterr().err


def test_missing_script_and_bad_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from amplint.runtime.runner import run_script

    report_path = tmp_path / "r.json"
    status = run_script(str(tmp_path / "absent.py"), [], report_path=str(report_path))
    assert status == 2
    assert "can't open file" in capsys.readouterr().err
    assert json.loads(report_path.read_text())["exit_status"] == 2
    argv = sys.argv[:]
    with pytest.raises(ValueError, match="mode"):
        run_script(str(tmp_path / "absent.py"), [], mode="loud")
    assert sys.argv == argv


def test_an_uncaught_exception_goes_through_the_scripts_excepthook(tmp_path: Path) -> None:
    # torchrun's rank prefix, rich and wandb install sys.excepthook: python calls it.
    (tmp_path / "hooked.py").write_text(
        "import sys\n"
        "def hook(kind, value, tb):\n"
        "    print(f'HOOKED {kind.__name__}: {value}', file=sys.stderr)\n"
        "sys.excepthook = hook\n"
        "raise RuntimeError('boom')\n",
        encoding="utf-8",
    )
    result = run_amplint("hooked.py", "warn", "", cwd=tmp_path)
    assert result.returncode == 1
    assert "HOOKED RuntimeError: boom" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_hook_that_prints_the_exceptions_own_traceback_starts_at_the_script(
    tmp_path: Path,
) -> None:
    # torch.distributed's rank-prefixing hook formats ``value.__traceback__``, not ``tb``.
    (tmp_path / "own.py").write_text(
        "import sys, traceback\n"
        "def hook(kind, value, tb):\n"
        "    sys.stderr.write('HOOKED\\n' + ''.join(traceback.format_exception(value)))\n"
        "sys.excepthook = hook\n"
        "def fail():\n"
        "    raise RuntimeError('boom')\n"
        "fail()\n",
        encoding="utf-8",
    )
    result = run_amplint("own.py", "warn", "", cwd=tmp_path)
    assert result.returncode == 1
    assert "HOOKED" in result.stderr
    frames = [line for line in result.stderr.splitlines() if line.startswith("  File ")]
    assert len(frames) == 2 and all("own.py" in line for line in frames), result.stderr


def test_torchs_error_from_a_stand_in_shows_the_traceback_python_shows(tmp_path: Path) -> None:
    # scaler.step() twice without update(): torch raises inside amplint's stand-in; the
    # traceback goes from the user's line to torch's, as under plain python.
    (tmp_path / "twice.py").write_text(
        "import torch\n"
        "model = torch.nn.Linear(4, 1)\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "scaler = torch.amp.GradScaler('cpu')\n"
        "for _ in range(2):\n"
        "    scaler.scale(model(torch.randn(2, 4)).sum()).backward()\n"
        "    scaler.step(opt)\n",
        encoding="utf-8",
    )
    result = run_amplint("twice.py", "warn", "", cwd=tmp_path)
    assert result.returncode == 1
    assert "step() has already been called since the last update()" in result.stderr
    assert 'twice.py", line 7' in result.stderr and "grad_scaler.py" in result.stderr
    assert "runtime/scaler.py" not in result.stderr and "runtime/runner.py" not in result.stderr
