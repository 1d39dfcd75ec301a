"""The command line as users run it: click's runner for breadth, a real subprocess for truth."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from amplint.cli import cli, main

REPO = Path(__file__).resolve().parent.parent
AMPLINT = [sys.executable, "-m", "amplint"]

BUGGY = """\
import torch

for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
        loss.backward()
    optimizer.step()
"""
CLEAN = """\
import torch

scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
"""


def run(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(BUGGY)
    (tmp_path / "clean.py").write_text(CLEAN)
    return tmp_path


def test_check_reports_editor_style_lines_and_exits_1(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(["check"], project, monkeypatch)
    assert code == 1
    lines = out.splitlines()
    assert "train.py:4:10: AMP003 [*] float16 autocast" in lines[0]
    assert lines[1].startswith("train.py:6:9: AMP001 [*] `loss.backward()` runs the backward")
    assert "Found 2 errors." in out


def test_clean_file_exits_0(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(["check", "clean.py"], project, monkeypatch)
    assert (code, out.strip()) == (0, "All checks passed!")


def test_exit_zero_select_and_ignore(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(["check", "--exit-zero"], project, monkeypatch)[0] == 0
    code, out, _ = run(["check", "--select", "AMP001"], project, monkeypatch)
    assert code == 1 and "AMP001" in out and "AMP003" not in out
    code, out, _ = run(["check", "--ignore", "AMP001,AMP003"], project, monkeypatch)
    assert code == 0


@pytest.mark.parametrize(
    "args",
    [["check", "--select", "AMP777"], ["check", "--bogus"], ["rule", "AMP777"], ["nope"]],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(args, project, monkeypatch)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("amplint: error:")


def test_json_output(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(["check", "--output-format", "json", "train.py"], project, monkeypatch)
    assert code == 1
    findings = json.loads(out)
    first = next(f for f in findings if f["code"] == "AMP001")
    assert first["location"] == {"row": 6, "column": 9}
    assert first["end_location"] == {"row": 6, "column": 24}
    assert first["filename"].endswith("train.py")
    assert first["fix"]["applicability"] == "safe"
    assert first["fix"]["edits"]


@pytest.mark.parametrize("fmt", ["full", "sarif", "github"])
def test_other_formats_name_the_code(
    fmt: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(["check", "--output-format", fmt, "train.py"], project, monkeypatch)
    assert code == 1 and "AMP001" in out


def test_statistics(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(["check", "--statistics"], project, monkeypatch)
    assert code == 1
    assert "AMP001" in out and "backward-inside-autocast" in out


def test_noqa_silences_a_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = BUGGY.replace("loss.backward()", "loss.backward()  # noqa: AMP001")
    source = source.replace('torch.autocast("cuda"):', 'torch.autocast("cuda"):  # noqa')
    (tmp_path / "train.py").write_text(source)
    assert run(["check"], tmp_path, monkeypatch)[:2] == (0, "All checks passed!\n")
    other = BUGGY.replace("loss.backward()", "loss.backward()  # noqa: AMP002")
    (tmp_path / "train.py").write_text(other)
    assert "AMP001" in run(["check"], tmp_path, monkeypatch)[1]


def test_pyproject_configuration(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "pyproject.toml").write_text('[tool.amplint]\nignore = ["AMP003"]\n')
    code, out, _ = run(["check"], project, monkeypatch)
    assert code == 1 and "AMP003" not in out and "AMP001" in out
    (project / "pyproject.toml").write_text('[tool.amplint]\nselekt = ["AMP003"]\n')
    code, out, err = run(["check"], project, monkeypatch)
    assert code == 2 and "selekt" in err and len(err.strip().splitlines()) == 1


def test_gitignore_is_honoured(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / ".gitignore").write_text("train.py\n")
    assert run(["check"], project, monkeypatch)[0] == 0


def test_unparseable_and_undecodable_files_get_one_line_each(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Files that mention AMP are parsed; those that cannot be get one AMP999 line.
    (project / "broken.py").write_text(
        "import torch\nwith torch.autocast('cuda')\n  loss.backward()\n"
    )
    (project / "latin.py").write_bytes(
        b"import torch  # caf\xe9\xff\nwith torch.autocast('cuda'):\n    loss.backward()\n"
    )
    (project / "dir.py").mkdir()
    code, out, _ = run(["check"], project, monkeypatch)
    assert code == 1
    assert any(line.startswith("broken.py:") and "AMP999" in line for line in out.splitlines())
    assert any(line.startswith("latin.py:1:1: AMP999") for line in out.splitlines())
    assert "train.py:6:9: AMP001" in out  # the run went on


def test_missing_path_is_an_error(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run(["check", "nope.py"], project, monkeypatch)
    assert code == 2 and "nope.py" in err


def test_fix_rewrites_whole_file_and_keeps_mode(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = project / "train.py"
    path.chmod(0o640)
    code, out, _ = run(["fix", "train.py"], project, monkeypatch)
    assert code == 0, out
    assert path.read_text() == (
        "import torch\n"
        'scaler = torch.amp.GradScaler("cuda")\n'
        "\n"
        "for x, y in loader:\n"
        '    with torch.autocast("cuda"):\n'
        "        loss = model(x)\n"
        "    scaler.scale(loss).backward()\n"
        "    scaler.step(optimizer)\n"
        "    scaler.update()\n"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    before = path.read_bytes()
    assert run(["fix", "train.py"], project, monkeypatch)[0] == 0
    assert path.read_bytes() == before
    assert [p.name for p in project.iterdir() if "amplint" in p.name] == []


def test_fix_diff_does_not_write(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(["fix", "--diff", "train.py"], project, monkeypatch)
    assert code == 1
    assert "+    scaler.scale(loss).backward()" in out
    assert (project / "train.py").read_text() == BUGGY


def test_exit_non_zero_on_fix(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(["fix", "--exit-non-zero-on-fix"], project, monkeypatch)[0] == 1
    assert run(["fix", "--exit-non-zero-on-fix"], project, monkeypatch)[0] == 0


@pytest.mark.parametrize(
    ("encoding_prefix", "newline", "codec"),
    [
        (b"", "\r\n", "utf-8"),
        (b"\xef\xbb\xbf", "\n", "utf-8"),
        (b"# -*- coding: latin-1 -*-\n", "\n", "latin-1"),
    ],
    ids=["crlf", "bom", "latin-1-cookie"],
)
def test_fix_keeps_every_other_byte(
    encoding_prefix: bytes,
    newline: str,
    codec: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = (
        (
            "import torch  # \xe9t\xe9\n"
            "\n"
            "\tscaler_cfg = {'quote': \"x\"}  # keep 'quotes'\n"
            "for x, y in loader:\n"
            "    with torch.autocast('cpu', dtype=torch.bfloat16):  # bf16\n"
            "        loss = model(x)   # forward\n"
            "        loss.backward()\n"
            "\n"
            "        # trailing comment\n"
            "        optimizer.step()\n"
        )
        .replace("\tscaler_cfg", "cfg")
        .replace("\n", newline)
    )
    data = encoding_prefix + body.encode(codec)
    path = tmp_path / "t.py"
    path.write_bytes(data)
    code, _, _ = run(["fix", "t.py"], tmp_path, monkeypatch)
    assert code == 0
    expected = body.replace(
        f"        loss.backward(){newline}{newline}        # trailing comment{newline}"
        f"        optimizer.step()",
        f"    loss.backward(){newline}{newline}    # trailing comment{newline}    optimizer.step()",
    )
    assert path.read_bytes() == encoding_prefix + expected.encode(codec)


def test_failed_write_leaves_the_original_intact(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", explode)
    code, out, _ = run(["fix", "train.py"], project, monkeypatch)
    assert code == 1
    assert "cannot write fixed file" in out
    assert (project / "train.py").read_text() == BUGGY
    assert sorted(p.name for p in project.iterdir()) == ["clean.py", "train.py"]


def test_file_changed_while_fixing_is_not_overwritten(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import amplint.engine.run

    real_fix = amplint.engine.run.fix_bytes

    def edit_meanwhile(data, filename, codes, *, unsafe=False):  # type: ignore[no-untyped-def]
        (project / "train.py").write_text(BUGGY + "# edited in the editor\n")
        return real_fix(data, filename, codes, unsafe=unsafe)

    monkeypatch.setattr(amplint.engine.run, "fix_bytes", edit_meanwhile)
    code, out, _ = run(["fix", "train.py"], project, monkeypatch)
    assert code == 1 and "changed while it was being fixed" in out
    assert (project / "train.py").read_text().endswith("# edited in the editor\n")


def test_rules_and_rule_docs(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(["rules"], project, monkeypatch)
    assert code == 0
    assert any(
        line.split()[:2] == ["AMP001", "backward-inside-autocast"] for line in out.splitlines()
    )
    code, out, _ = run(["rule", "amp002"], project, monkeypatch)
    assert code == 0 and out.startswith("# missing-scaler-update (AMP002)")
    assert "## Why is this bad?" in out


def test_subprocess_on_shipped_examples() -> None:
    result = subprocess.run(
        [*AMPLINT, "check", "examples/"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr
    reported = {
        tuple(line.split(":")[:2]) for line in result.stdout.splitlines() if ": AMP" in line
    }
    assert ("examples/train_mlp.py", "38") in reported
    assert ("examples/trainer_class.py", "26") in reported
    assert ("examples/accumulate.py", "41") in reported
    assert "Traceback" not in result.stderr


def test_check_works_where_torch_cannot_be_imported(tmp_path: Path) -> None:
    poisoned = tmp_path / "site"
    (poisoned / "torch").mkdir(parents=True)
    (poisoned / "torch" / "__init__.py").write_text("raise ImportError('torch is not here')\n")
    (tmp_path / "train.py").write_text(BUGGY)
    env = {**os.environ, "PYTHONPATH": str(poisoned)}
    code = (
        "import sys, runpy; sys.argv = ['amplint', 'check', 'train.py'];"
        "import amplint.cli;"
        "rc = None\n"
        "try:\n    amplint.cli.main()\nexcept SystemExit as e:\n    rc = e.code\n"
        "assert 'torch' not in sys.modules, 'amplint imported torch'\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "AMP001" in result.stdout


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "amplint" in result.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git is needed for .gitignore repos")
def test_nested_gitignore_in_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".gitignore").write_text("generated_*.py\n")
    (tmp_path / "sub" / "generated_train.py").write_text(BUGGY)
    (tmp_path / "sub" / "train.py").write_text(BUGGY)
    code, out, _ = run(["check"], tmp_path, monkeypatch)
    assert code == 1 and "sub/train.py" in out and "generated_train.py" not in out
