"""The pre-commit hooks, run by real `pre-commit try-repo` against this repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PRE_COMMIT = Path(sys.executable).with_name("pre-commit")

BUGGY = """\
import torch

scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    optimizer.zero_grad()
"""

pytestmark = pytest.mark.skipif(
    not PRE_COMMIT.exists() or shutil.which("git") is None, reason="needs pre-commit and git"
)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def user_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "user"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "dev@example.com")
    _git(repo, "config", "user.name", "dev")
    (repo / "train.py").write_text(BUGGY)
    _git(repo, "add", "train.py")
    return repo


def _try_repo(repo: Path, hook: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(home)}
    return subprocess.run(
        [str(PRE_COMMIT), "try-repo", str(REPO), hook, "--all-files", "--verbose"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_check_and_fix_hooks(user_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("pre-commit-home")
    checked = _try_repo(user_repo, "amplint", home)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "train.py:8:5: AMP002" in checked.stdout

    fixed = _try_repo(user_repo, "amplint-fix", home)
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr  # files were modified
    assert "    scaler.update()\n" in (user_repo / "train.py").read_text()

    again = _try_repo(user_repo, "amplint", home)
    assert again.returncode == 0, again.stdout + again.stderr


def test_hooks_check_and_fix_a_notebook(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.notebooks import code_sources, write

    repo = tmp_path / "notebooks"
    repo.mkdir()
    _git(repo, "init", "-q")
    cells = [
        'import torch\nscaler = torch.amp.GradScaler("cuda")',
        ("md", "## Training"),
        "%%time\n" + BUGGY.split("\n", 3)[3].rstrip("\n"),
    ]
    write(repo / "train.ipynb", cells)
    _git(repo, "add", "train.ipynb")
    home = tmp_path_factory.mktemp("pre-commit-home")

    checked = _try_repo(repo, "amplint", home)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "train.ipynb:cell 3:6:5: AMP002" in checked.stdout

    fixed = _try_repo(repo, "amplint-fix", home)
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr
    assert code_sources(repo / "train.ipynb")[1].endswith(
        "    scaler.step(optimizer)\n    scaler.update()\n    optimizer.zero_grad()"
    )
    assert _try_repo(repo, "amplint", home).returncode == 0
