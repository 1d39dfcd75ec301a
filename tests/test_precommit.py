"""The pre-commit hooks, run by real pre-commit: `try-repo` against this working tree, and the
README's snippet, as written, against a fresh clone of this repository."""

from __future__ import annotations

import os
import re
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
    # (A clean run after the fix is the README snippet's test: each try-repo installs anew.)


def _readme_snippet() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### pre-commit") :]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def _published_clone(tmp_path: Path, branch: str) -> Path:
    """A fresh clone of this repository whose ``branch`` holds the working tree as it is
    (committed or not), standing in for the published repository."""
    published = tmp_path / "published"
    _git(tmp_path, "clone", "--quiet", "--no-hardlinks", str(REPO), str(published))
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source, target = REPO / name, published / name
        if source.is_file() and not source.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif not source.exists() and target.exists():
            target.unlink()  # deleted in the working tree
    _git(published, "checkout", "-q", "-B", branch)
    _git(published, "add", "-A")
    _git(
        published,
        *("-c", "user.name=dev", "-c", "user.email=dev@example.com"),
        *("commit", "-q", "--allow-empty", "-m", "working tree"),
    )
    return published


def _pre_commit(repo: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PRE_COMMIT), *args],
        cwd=repo,
        env={**os.environ, "PRE_COMMIT_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_readme_snippet_works_as_copied(
    user_repo: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    snippet = _readme_snippet()
    url = re.search(r"repo: (\S+)", snippet)
    rev = re.search(r"rev: (\S+)", snippet)
    assert url is not None and rev is not None
    published = _published_clone(tmp_path, rev.group(1))
    (user_repo / "build").mkdir()
    (user_repo / "build" / "generated.py").write_text(BUGGY)
    config = user_repo / ".pre-commit-config.yaml"
    config.write_text(snippet.replace(url.group(1), published.as_uri()))
    _git(user_repo, "add", ".")
    home = tmp_path_factory.mktemp("pre-commit-home")

    checked = _pre_commit(user_repo, home, "run", "--all-files")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "train.py:8:5: AMP002" in checked.stdout
    # pre-commit names build/generated.py explicitly; the hook's --force-exclude keeps it out.
    assert "generated.py" not in checked.stdout

    # The snippet's comment: `args: [--fix]` fixes in place and reports the rest.
    config.write_text(
        config.read_text().replace("- id: amplint ", "- id: amplint\n        args: [--fix]\n#")
    )
    fixed = _pre_commit(user_repo, home, "run", "--all-files")
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr  # files were modified
    assert "    scaler.update()\n" in (user_repo / "train.py").read_text()
    assert (user_repo / "build" / "generated.py").read_text() == BUGGY

    again = _pre_commit(user_repo, home, "run", "--all-files")
    assert again.returncode == 0, again.stdout + again.stderr

    # `pre-commit autoupdate`, as the README advises, pins the published commit (a commit
    # rev is pre-commit's ordinary case; installing it again would only cost time here).
    updated = _pre_commit(user_repo, home, "autoupdate")
    assert updated.returncode == 0, updated.stdout + updated.stderr
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=published, capture_output=True, text=True, check=True
    ).stdout.strip()
    pinned = re.search(r"rev: (\S+)", config.read_text())
    assert pinned is not None and pinned.group(1) in (head, *_tags(published))


def _tags(repo: Path) -> list[str]:
    listed = subprocess.run(
        ["git", "tag", "--list"], cwd=repo, capture_output=True, text=True, check=True
    )
    return listed.stdout.split()


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
