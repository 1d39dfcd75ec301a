"""The console script parses the plain ``amplint check [FLAGS] PATHS`` itself, without
click; what it does must be what the click command line does with the same arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from amplint.cache import CACHE_DIR_ENV
from amplint.cli import cli
from amplint.command import QUICK_FLAGS, Options, quick_options
from tests.notebooks import write
from tests.samples import BACKWARD_IN_AUTOCAST

CLICK = "from amplint.cli import main; main()"
CONSOLE_SCRIPT = "from amplint.launch import main; main()"
# The console script, reporting at exit whether click was imported.
PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('click' in sys.modules, file=open('click.txt', 'w')))\n"
    "from amplint.launch import main\n"
    "main()\n"
)


def _clicks_options(args: list[str]) -> Options:
    context = cli.commands["check"].make_context("check", list(args))
    return Options(**context.params)


@pytest.mark.parametrize("flag", sorted(QUICK_FLAGS))
def test_each_quick_flag_means_what_click_parses(
    flag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    args = [flag, "a.py", "src"]
    assert quick_options(["check", *args]) == _clicks_options(args)
    # Flags may come after the paths, as click allows.
    assert quick_options(["check", "a.py", flag]) == _clicks_options(["a.py", flag])


def test_the_defaults_are_clicks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    assert quick_options(["check"]) == _clicks_options([]) == Options()
    assert quick_options(["check", "a.py"]) == _clicks_options(["a.py"])


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["fix", "a.py"],
        ["rules"],
        ["check", "--select", "AMP001", "a.py"],
        ["check", "--select=AMP001", "a.py"],
        ["check", "--output-format", "json", "a.py"],
        ["check", "--fix", "a.py"],
        ["check", "-"],
        ["check", "--", "-a.py"],
        ["check", "--help"],
        ["check", "--no-cach", "a.py"],
        ["check", ""],
        ["checks", "a.py"],
    ],
)
def test_every_other_form_is_clicks(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    assert quick_options(args) is None


def test_the_cache_directory_variable_is_clicks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, "elsewhere")
    assert quick_options(["check", "a.py"]) is None


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "pyproject.toml").write_text('[tool.amplint]\nextend-exclude = ["legacy"]\n')
    (root / "src").mkdir()
    (root / "src" / "train.py").write_text(BACKWARD_IN_AUTOCAST)
    (root / "src" / "clean.py").write_text("import os\n")
    (root / "src" / "broken.py").write_text("def f(:\n")
    (root / "legacy").mkdir()
    (root / "legacy" / "old.py").write_text(BACKWARD_IN_AUTOCAST)
    (root / "notes.txt").write_text("not python\n")
    write(root / "src" / "nb.ipynb", ["import torch", BACKWARD_IN_AUTOCAST])
    return root


def _run(program: str, args: list[str], cwd: Path) -> tuple[int, str, str]:
    completed = subprocess.run(
        [sys.executable, "-c", program, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in __import__("os").environ.items() if k != CACHE_DIR_ENV},
    )
    return completed.returncode, completed.stdout, completed.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--no-cache", "src/clean.py"],
        ["check", "--no-cache", "src/train.py"],
        ["check", "--no-cache", "src/broken.py"],
        ["check", "--no-cache", "src/nb.ipynb", "-q"],
        ["check", "--no-cache", "--force-exclude", "legacy/old.py", "src/clean.py"],
        ["check", "--no-cache", "legacy/old.py"],
        ["check", "--no-cache", "missing.py", "notes.txt", "src/clean.py"],
        ["check", "--no-cache", "--statistics", "src"],
        ["check", "--no-cache", "--exit-zero", "--show-fixes", "."],
        ["check", "src", "--no-force-exclude"],
        ["check", "--no-cache", "--quiet", "src/train.py", "src/train.py"],
    ],
)
def test_the_console_script_does_what_click_does(project: Path, args: list[str]) -> None:
    quick = _run(PROBE, args, project)
    assert (project / "click.txt").read_text().strip() == "False", "click was imported"
    assert quick == _run(CLICK, args, project)
    # The cache, read this time, answers the same.
    assert _run(CONSOLE_SCRIPT, args, project) == quick


def test_a_user_error_is_one_line(project: Path, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.amplint]\nselectt = []\n")
    (tmp_path / "a.py").write_text("import os\n")
    quick = _run(CONSOLE_SCRIPT, ["check", "a.py"], tmp_path)
    assert quick == _run(CLICK, ["check", "a.py"], tmp_path)
    status, out, err = quick
    assert status == 2 and out == ""
    assert err.startswith("amplint: error: ") and err.count("\n") == 1


def test_a_clean_file_imports_neither_click_nor_libcst(project: Path) -> None:
    # The one-file call editors and pre-commit make imports neither click nor libcst.
    program = (
        "import json, sys\n"
        "from amplint.launch import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(m for m in ('click', 'libcst') if m in sys.modules)))\n"
    )
    status, out, _ = _run(program, ["check", "--force-exclude", "src/clean.py"], project)
    assert status == 0
    assert json.loads(out.splitlines()[-1]) == []


def test_an_unreadable_path_is_clicks_to_refuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # click's Path type refuses a path the user may not read, with its own message.
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.py").write_text("import os\n")
    monkeypatch.setattr("os.access", lambda path, mode: False)
    assert quick_options(["check", "a.py"]) is None
    # A path that does not exist is amplint's to report, as click lets it through.
    assert quick_options(["check", "missing.py"]) == Options(paths=(Path("missing.py"),))
