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


def test_paths_are_shown_as_ruff_shows_them(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Below the working directory: relative, however the argument was spelled; above it:
    # as given.
    sub = project / "sub"
    sub.mkdir()
    (sub / "loop.py").write_text(BUGGY)
    for argument in ("sub", "./sub", "sub/../sub", str(sub)):
        _, out, _ = run(["check", "--no-cache", argument], project, monkeypatch)
        assert out.splitlines()[0].startswith("sub/loop.py:4:10: AMP003"), argument
    _, out, _ = run(["check", "--no-cache", "../train.py"], sub, monkeypatch)
    assert out.splitlines()[0].startswith("../train.py:4:10: AMP003")


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


SILENCED_AND_NOT = """\
import torch


def evaluate(model, x):
    with torch.cuda.amp.autocast():  # noqa: AMP007 the old cluster's torch
        return model(x)


def train(model, x):
    with torch.cuda.amp.autocast():
        return model(x)
"""


def test_a_fix_never_rewrites_a_silenced_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AMP007's fix rewrites every deprecated use of the module at once; the line a
    `# noqa` keeps is one of them, so the other finding is reported without a fix."""
    path = tmp_path / "train.py"
    path.write_text(SILENCED_AND_NOT)
    code, out, _ = run(["check", "--no-cache"], tmp_path, monkeypatch)
    assert code == 1 and out.startswith("train.py:10:10: AMP007 `torch.cuda")  # no [*]
    assert "fixable" not in out
    assert run(["fix", "--no-cache", "--unsafe-fixes"], tmp_path, monkeypatch)[0] == 1
    assert path.read_text() == SILENCED_AND_NOT
    # Without the noqa both uses are rewritten by the same fix.
    path.write_text(SILENCED_AND_NOT.replace("  # noqa: AMP007 the old cluster's torch", ""))
    assert run(["fix", "--no-cache"], tmp_path, monkeypatch)[0] == 0
    assert path.read_text().count('torch.amp.autocast("cuda", dtype=torch.float16)') == 2


def test_a_noqa_line_a_fix_only_encloses_keeps_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AMP003's fix rewrites the loop around a line silenced for every code (flake8's long
    line) and leaves that line as it was: the fix stands."""
    path = tmp_path / "train.py"
    path.write_text(
        "import torch\n"
        "for x in loader:\n"
        "    optimizer.zero_grad()\n"
        '    with torch.autocast("cuda", dtype=torch.float16):\n'
        "        loss = model(x)\n"
        "    loss.backward()\n"
        '    print(f"a long line about {loss.item()}")  # noqa\n'
        "    optimizer.step()\n"
    )
    code, out, _ = run(["check", "--no-cache"], tmp_path, monkeypatch)
    assert code == 1 and "AMP003 [*]" in out
    assert run(["fix", "--no-cache"], tmp_path, monkeypatch)[0] == 0
    fixed = path.read_text()
    assert "scaler.scale(loss).backward()" in fixed
    assert '    print(f"a long line about {loss.item()}")  # noqa\n' in fixed


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
    assert out.startswith("--- a/train.py\n+++ b/train.py\n")
    assert (project / "train.py").read_text() == BUGGY
    # A file outside the working folder is named by its absolute path, as it is (not as
    # `a//tmp/...`).
    (project / "elsewhere").mkdir()
    absolute = str(project / "train.py")
    code, out, _ = run(["fix", "--diff", absolute], project / "elsewhere", monkeypatch)
    assert out.startswith(f"--- {absolute}\n+++ {absolute}\n")


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


def test_fix_writes_through_a_symbolic_link(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The link stays a link and the file it points at gets the fix, as ruff does."""
    (project / "shared").mkdir()
    target = project / "shared" / "loop.py"
    target.write_text(BUGGY)
    link = project / "linked.py"
    link.symlink_to(target)
    code, _, _ = run(["fix", "--unsafe-fixes", "linked.py"], project, monkeypatch)
    assert code == 0
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert "scaler.update()" in target.read_text()
    assert [p.name for p in (project / "shared").iterdir()] == ["loop.py"]  # no temporary


def test_file_changed_while_fixing_is_not_overwritten(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import amplint.engine.run

    real_fix = amplint.engine.run.fix_bytes

    def edit_meanwhile(data, filename, codes, **options):  # type: ignore[no-untyped-def]
        (project / "train.py").write_text(BUGGY + "# edited in the editor\n")
        return real_fix(data, filename, codes, **options)

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


# --------------------------------------------------------------------------- ruff's habits, catalog

HALF = """\
import torch
model = Net().cuda().half()
optimizer = torch.optim.AdamW(model.parameters(), fused=True)
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
"""
FIXED = (
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
BROKEN = "import torch\nwith torch.autocast('cuda')\n    loss.backward()\n"


def amplint(
    args: list[str], cwd: Path, *, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AMPLINT, *args],
        cwd=cwd,
        input=stdin,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("bad", ["nope.py", "notes.txt"])
def test_an_error_is_never_beside_all_checks_passed(
    bad: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "notes.txt").write_text("not python\n")
    code, out, err = run(["check", "clean.py", bad], project, monkeypatch)
    assert code == 2 and bad in err
    assert out == "1 path was not checked: see the error above.\n"
    code, out, _ = run(["check", "train.py", bad], project, monkeypatch)
    assert code == 2
    assert out.splitlines()[-3:-1] == [
        "Found 2 errors.",
        "1 path was not checked: see the error above.",
    ]
    process = amplint(["check", "clean.py", bad], project)
    assert process.returncode == 2 and "All checks passed!" not in process.stdout


def test_cache_lives_at_the_project_root_and_ignores_itself(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "demo"\n')
    package = tmp_path / "src" / "demo"
    package.mkdir(parents=True)
    (package / "train.py").write_text(BUGGY)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    assert amplint(["check", "."], package).returncode == 1
    cache = tmp_path / ".amplint_cache"
    assert not (package / ".amplint_cache").exists()
    assert (cache / ".gitignore").read_text().splitlines()[-1] == "*"
    tag = (cache / "CACHEDIR.TAG").read_text()
    assert tag.startswith("Signature: 8a477f597d28d172789f06886806bc55\n")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "amplint_cache" not in status and "src/demo/train.py" in status


def test_cache_dir_option_and_environment_variable(
    project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path_factory.mktemp("caches")
    assert run(["check", "--cache-dir", str(elsewhere / "a")], project, monkeypatch)[0] == 1
    assert list((elsewhere / "a").glob("*/*.json"))
    assert amplint(["check"], project, env={"AMPLINT_CACHE_DIR": str(elsewhere / "b")}).returncode
    assert (elsewhere / "b" / "CACHEDIR.TAG").is_file()
    assert not (project / ".amplint_cache").exists()
    # `clean` follows the same choice, and never removes a directory amplint did not make.
    (elsewhere / "mine").mkdir()
    (elsewhere / "mine" / "keep.txt").write_text("x")
    run(["clean", "--cache-dir", str(elsewhere / "mine")], project, monkeypatch)
    assert (elsewhere / "mine" / "keep.txt").exists()
    run(["clean", "--cache-dir", str(elsewhere / "a")], project, monkeypatch)
    assert not (elsewhere / "a").exists()


def test_check_fix_is_fix(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(["check", "--fix", "--show-fixes", "train.py"], project, monkeypatch)
    assert code == 0
    assert (project / "train.py").read_text() == FIXED
    assert out.splitlines() == [
        "Fixed 2 errors:",
        "- train.py: 2 fixes",
        "",
        "Found 2 errors (2 fixed, 0 remaining).",
    ]


def test_check_fix_applies_unsafe_fixes_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "half.py"
    path.write_text(HALF)
    code, out, _ = run(["check", "--fix", "half.py"], tmp_path, monkeypatch)
    assert code == 1 and path.read_text() == HALF
    assert "1 hidden fix can be enabled with the `--unsafe-fixes` option" in out
    code, _, _ = run(["check", "--fix", "--unsafe-fixes", "half.py"], tmp_path, monkeypatch)
    assert code == 0
    assert path.read_text() == HALF.replace("Net().cuda().half()", "Net().cuda()")


def test_check_diff_writes_nothing(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(["check", "--diff", "train.py"], project, monkeypatch)
    assert code == 1 and (project / "train.py").read_text() == BUGGY
    assert out.startswith("--- a/train.py\n+++ b/train.py\n")
    assert "+    scaler.update()\n" in out and err == "Would fix 2 errors.\n"


def test_quiet_prints_findings_only(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(["check", "-q"], project, monkeypatch)
    assert code == 1
    assert [line.split(" ")[1] for line in out.splitlines()] == ["AMP003", "AMP001"]
    code, out, _ = run(["check", "--quiet", "clean.py"], project, monkeypatch)
    assert (code, out) == (0, "")


def test_exclude_options_on_the_command_line(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "legacy").mkdir()
    (project / "legacy" / "old.py").write_text(BUGGY)
    code, out, _ = run(["check", "--extend-exclude", "legacy,train.py"], project, monkeypatch)
    assert (code, out) == (0, "All checks passed!\n")
    # --exclude replaces the defaults too: a build/ folder is checked again.
    (project / "build").mkdir()
    (project / "build" / "gen.py").write_text(BUGGY)
    code, out, _ = run(["check", "--exclude", "legacy", "-q"], project, monkeypatch)
    assert "build/gen.py:6:9: AMP001" in out and "legacy" not in out


def test_force_exclude_keeps_named_files_out(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "build").mkdir()
    (project / "build" / "gen.py").write_text(BUGGY)
    assert run(["check", "build/gen.py"], project, monkeypatch)[0] == 1
    code, out, _ = run(["check", "--force-exclude", "build/gen.py"], project, monkeypatch)
    assert (code, out) == (0, "All checks passed!\n")
    (project / "pyproject.toml").write_text("[tool.amplint]\nforce-exclude = true\n")
    assert amplint(["check", "build/gen.py"], project).returncode == 0
    assert amplint(["check", "--no-force-exclude", "build/gen.py"], project).returncode == 1


def test_stdin_check_and_fix(project: Path) -> None:
    checked = amplint(["check", "-"], project, stdin=BUGGY)
    assert checked.returncode == 1
    assert checked.stdout.startswith("-:4:10: AMP003 [*]")
    named = amplint(["check", "--stdin-filename", "pkg/train.py"], project, stdin=BUGGY)
    assert "pkg/train.py:6:9: AMP001" in named.stdout
    fixed = amplint(["check", "--fix", "--stdin-filename", "train.py", "-"], project, stdin=BUGGY)
    assert (fixed.returncode, fixed.stdout) == (0, FIXED)
    assert "Found 2 errors (2 fixed, 0 remaining)." in fixed.stderr
    assert (project / "train.py").read_text() == BUGGY  # the file itself is not touched
    diff = amplint(["check", "--diff", "-"], project, stdin=BUGGY)
    assert diff.returncode == 1 and "+    scaler.update()" in diff.stdout


def test_stdin_filename_honours_per_file_ignores_and_force_exclude(project: Path) -> None:
    (project / "pyproject.toml").write_text(
        '[tool.amplint]\nper-file-ignores = { "scripts/*" = ["AMP001"] }\n'
        'extend-exclude = ["vendored"]\n'
    )
    out = amplint(["check", "--stdin-filename", "scripts/t.py"], project, stdin=BUGGY).stdout
    assert "AMP003" in out and "AMP001" not in out
    args = ["check", "--force-exclude", "--fix", "--stdin-filename", "vendored/t.py"]
    excluded = amplint(args, project, stdin=BUGGY)
    assert (excluded.returncode, excluded.stdout) == (0, BUGGY)


def test_stdin_cannot_mix_with_paths(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(["check", "-", "train.py"], project, monkeypatch)
    assert code == 2 and out == "" and "cannot be combined" in err


def test_statistics_honour_json(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["check", "--statistics", "--output-format", "json"]
    code, out, _ = run(args, project, monkeypatch)
    assert code == 1
    assert json.loads(out) == [
        {
            "code": "AMP001",
            "name": "backward-inside-autocast",
            "count": 1,
            "fixable": True,
            "fixable_count": 1,
        },
        {
            "code": "AMP003",
            "name": "fp16-without-gradscaler",
            "count": 1,
            "fixable": True,
            "fixable_count": 1,
        },
    ]
    assert json.loads(amplint(args, project).stdout) == json.loads(out)


def test_show_fixes_on_check_describes_each_fix(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(["check", "--show-fixes", "train.py"], project, monkeypatch)
    assert code == 1
    lines = out.splitlines()
    assert lines[1].startswith("  = help: Create a `torch.amp.GradScaler`")
    assert lines[1].endswith("(safe fix)")
    assert lines[3].startswith("  = help: Move the backward pass and what follows it out")


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (["check", "--selct", "AMP001"], "--select"),
        (["chek"], "did you mean 'check'?"),
        (["check", "--select", "AMP0001"], "did you mean AMP001?"),
        (["check", "--ignore", "backward-inside-autocast"], "did you mean AMP001?"),
        (["rule", "AMP10"], "a prefix of AMP101, AMP102, AMP103"),
    ],
)
def test_mistakes_get_a_did_you_mean(
    args: list[str], suggestion: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(args, project, monkeypatch)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and suggestion in err


def test_config_errors_name_the_file(project: Path) -> None:
    config = project / "pyproject.toml"
    config.write_text('[tool.amplint]\nextend-selct = ["AMP001"]\n')
    result = amplint(["check"], project)
    assert result.returncode == 2 and result.stdout == ""
    assert f"{config}: unknown key 'extend-selct'" in result.stderr
    assert "did you mean 'extend-select'?" in result.stderr
    config.write_text('[tool.amplint]\nignore = ["AMP0003"]\n')
    result = amplint(["check"], project)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"amplint: error: {config}: 'ignore': unknown rule selector: AMP0003 (did you mean AMP003?)"
    )


def test_json_url_and_sarif_metadata_come_from_the_catalog(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, out, _ = run(["check", "--output-format", "json", "train.py"], project, monkeypatch)
    urls = {item["code"]: item["url"] for item in json.loads(out)}
    assert urls["AMP001"] == "https://github.com/amplint/amplint/blob/main/docs/rules/AMP001.md"
    assert (REPO / "docs" / "rules" / "AMP001.md").is_file()
    sarif = json.loads(amplint(["check", "--output-format", "sarif"], project).stdout)
    driver = sarif["runs"][0]["tool"]["driver"]
    assert driver["informationUri"] == "https://github.com/amplint/amplint"
    rule = next(item for item in driver["rules"] if item["id"] == "AMP001")
    assert rule["helpUri"] == urls["AMP001"]
    assert rule["shortDescription"]["text"] == "backward pass runs inside an autocast region"
    assert rule["fullDescription"]["text"].startswith("Checks for .backward(),")
    assert rule["help"]["markdown"].startswith("# backward-inside-autocast (AMP001)")


def test_full_format_shows_context_and_the_fix_as_a_diff(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["check", "--output-format", "full", "--select", "AMP001", "train.py"]
    code, out, _ = run(args, project, monkeypatch)
    assert code == 1
    assert out == (
        "train.py:6:9: AMP001 [*] `loss.backward()` runs the backward pass inside an autocast "
        "region; leave the `with` block before calling backward\n"
        "  |\n"
        '4 |     with torch.autocast("cuda"):\n'
        "5 |         loss = model(x)\n"
        "6 |         loss.backward()\n"
        "  |         ^^^^^^^^^^^^^^^ AMP001\n"
        "7 |     optimizer.step()\n"
        "  |\n"
        "  = help: Move the backward pass and what follows it out of the autocast block\n"
        "\n"
        "  Safe fix:\n"
        '  4 4 |      with torch.autocast("cuda"):\n'
        "  5 5 |          loss = model(x)\n"
        "  6   | -        loss.backward()\n"
        "    6 | +    loss.backward()\n"
        "  7 7 |      optimizer.step()\n"
        "\n"
        "Found 1 error.\n"
        "[*] 1 fixable with the `amplint fix` command.\n"
    )
    assert amplint(args, project).stdout == out


def test_syntax_error_is_reported_whatever_the_selection(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "broken.py").write_text(BROKEN)
    for args in (
        ["--select", "AMP007"],
        ["--ignore", "ALL"],
        ["--select", "AMP1"],  # runtime codes only: no static rule runs at all
    ):
        code, out, _ = run(["check", "--no-cache", "broken.py", *args], project, monkeypatch)
        # Where CPython (and so the interpreter) places it, not libcst's next line.
        assert code == 1 and out.startswith("broken.py:2:28: AMP999 SyntaxError: expected ':'"), (
            args,
            out,
        )
    (project / "pyproject.toml").write_text(
        '[tool.amplint]\nper-file-ignores = { "broken.py" = ["ALL"] }\n'
    )
    (project / "broken.py").write_text(BROKEN.replace("'cuda')", "'cuda')  # noqa"))
    result = amplint(["check", "broken.py"], project)
    assert result.returncode == 1 and ": AMP999 " in result.stdout


def test_a_named_file_reports_its_syntax_error_even_without_amp(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file named on the command line (pre-commit's list, an editor's file) is checked
    for syntax as ruff would, whatever it says; a folder's walk judges only the modules
    that say something of AMP (parsing all of a large tree costs more than the analysis)."""
    (project / "plain").mkdir()
    (project / "plain" / "broken.py").write_text("import os\n\ndef f(:\n    pass\n")
    for command in ("check", "fix"):
        for cached in (["--no-cache"], []):
            code, out, _ = run([command, *cached, "plain/broken.py"], project, monkeypatch)
            assert code == 1, (command, cached, out)
            assert out.startswith("plain/broken.py:3:7: AMP999 SyntaxError"), (command, out)
    code, out, _ = run(["check", "plain"], project, monkeypatch)
    assert code == 0 and "AMP999" not in out
    # The folder's cached verdict does not answer for the named file, nor the reverse.
    code, out, _ = run(["check", "plain/broken.py"], project, monkeypatch)
    assert code == 1 and ": AMP999 " in out
    assert (project / "plain" / "broken.py").read_text().startswith("import os\n")


def test_rules_lists_every_catalog_code_with_where_it_is_caught(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amplint.catalog import CATALOG

    code, out, _ = run(["rules"], project, monkeypatch)
    assert code == 0
    rows = {line.split()[0]: line.split()[1:5] for line in out.splitlines()[1:]}
    assert sorted(rows) == sorted(item.code for item in CATALOG)
    assert rows["AMP001"] == ["backward-inside-autocast", "both", "yes", "yes"]
    assert rows["AMP015"][1] == "static"
    assert rows["AMP104"] == ["gradient-underflow", "runtime", "no", "yes"]
    assert rows["AMP999"] == ["syntax-error", "static", "no", "always"]
    for item in CATALOG:
        page = run(["rule", item.code.lower()], project, monkeypatch)
        assert page[0] == 0 and page[1].startswith(f"# {item.name} ({item.code})")
    assert "## Thresholds" in run(["rule", "AMP103"], project, monkeypatch)[1]
    assert "always reported" in run(["rule", "AMP999"], project, monkeypatch)[1]


def test_listing_and_option_errors_import_no_rule_and_no_libcst(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from amplint.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "loaded = [m for m in sys.modules if m == 'libcst' or m.startswith('amplint.rules')]\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
    )
    for args in (
        ["rules"],
        ["rule", "AMP001"],
        ["rule", "AMP105"],
        ["check", "--select", "AMP777"],
        ["check", "--bogus"],
    ):
        result = subprocess.run(
            [sys.executable, "-c", probe, *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "LOADED []" in result.stderr, (args, result.stderr)


def test_ruff_habits_in_a_real_process(project: Path) -> None:
    quiet = amplint(["check", "-q", "--extend-exclude", "clean.py"], project)
    assert quiet.returncode == 1 and len(quiet.stdout.splitlines()) == 2
    shown = amplint(["check", "--show-fixes", "train.py"], project)
    assert shown.stdout.count("  = help: ") == 2
    excluded = amplint(["check", "--extend-exclude", "train.py"], project)
    assert (excluded.returncode, excluded.stdout) == (0, "All checks passed!\n")
    mistyped = amplint(["check", "--exlude", "x"], project)
    assert mistyped.returncode == 2 and "did you mean --exclude?" in mistyped.stderr
    assert len(mistyped.stderr.splitlines()) == 1 and "Traceback" not in mistyped.stderr
    # Another tool's name for an option this command has under its own.
    assert "(did you mean --output-format json?)" in amplint(["check", "--json"], project).stderr
    fixed = amplint(["check", "--fix", "train.py"], project)
    assert fixed.returncode == 0 and (project / "train.py").read_text() == FIXED
    assert fixed.stdout == "Found 2 errors (2 fixed, 0 remaining).\n"


def test_stdin_through_clicks_runner(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    args = ["check", "--fix", "--stdin-filename", "train.py"]
    result = CliRunner().invoke(main, args, input=BUGGY, catch_exceptions=False)
    assert (result.exit_code, result.stdout) == (0, FIXED)
    result = CliRunner().invoke(main, ["check", "-"], input=CLEAN, catch_exceptions=False)
    assert (result.exit_code, result.stdout) == (0, "All checks passed!\n")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--no-healt", "no such option: --no-healt (did you mean --no-health?)"),
        ("--json", "no such option: --json (did you mean --report FILE?)"),
    ],
)
def test_run_refuses_an_unknown_option_before_the_script(option: str, message: str) -> None:
    """A mistyped option is not taken for the script's name (python's can't-open-file error)."""
    result = CliRunner().invoke(main, ["run", option, "train.py"])
    assert result.exit_code == 2
    assert message in result.output
    assert "can't open file" not in result.output
