"""Which files ``amplint check PATHS`` looks at (amplint.discovery)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from amplint.config import Settings
from amplint.discovery import discover


def touch(root: Path, *relatives: str) -> None:
    for relative in relatives:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n", encoding="utf-8")


def found(root: Path, *paths: Path, settings: Settings | None = None) -> list[str]:
    """Discovered files as POSIX paths relative to ``root``; fails on any error."""
    result = discover(list(paths) or [root], settings or Settings(project_root=root))
    assert result.errors == []
    return [Path(os.path.relpath(p, root)).as_posix() for p in result.files]


def test_walks_directories_for_py_and_pyi_sorted(tmp_path: Path) -> None:
    touch(tmp_path, "b.py", "a/z.pyi", "a/y.py", "notes.txt", "data.pyc", "a/b/c.py")
    assert found(tmp_path) == ["a/b/c.py", "a/y.py", "a/z.pyi", "b.py"]


def test_paths_keep_the_spelling_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path, "src/a.py")
    monkeypatch.chdir(tmp_path)
    result = discover([Path("src")], Settings(project_root=tmp_path))
    assert result.files == [Path("src/a.py")]


def test_files_named_twice_are_listed_once(tmp_path: Path) -> None:
    touch(tmp_path, "src/a.py", "src/b.py")
    listed = found(tmp_path, tmp_path / "src", tmp_path / "src" / "a.py", tmp_path / "src")
    assert listed == ["src/a.py", "src/b.py"]


def test_default_excludes_are_skipped(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "keep.py",
        ".venv/lib/x.py",
        "venv/x.py",
        "pkg/__pycache__/x.py",
        "build/x.py",
        "dist/x.py",
        "node_modules/x.py",
        ".git/hooks/x.py",
        ".tox/x.py",
        ".amplint_cache/x.py",
        "lib/site-packages/x.py",
    )
    assert found(tmp_path) == ["keep.py"]


def test_exclude_replaces_defaults(tmp_path: Path) -> None:
    touch(tmp_path, "build/x.py", "legacy/y.py", "z.py")
    settings = Settings(exclude=("legacy",), project_root=tmp_path)
    assert found(tmp_path, settings=settings) == ["build/x.py", "z.py"]


def test_extend_exclude_adds_to_defaults(tmp_path: Path) -> None:
    touch(tmp_path, "build/x.py", "gen/y.py", "src/gen_z.py", "src/keep.py", "tests/fixtures/f.py")
    settings = Settings(
        extend_exclude=("gen/", "gen_*.py", "tests/fixtures"), project_root=tmp_path
    )
    assert found(tmp_path, settings=settings) == ["src/keep.py"]


def test_anchored_exclude_only_matches_from_the_root(tmp_path: Path) -> None:
    touch(tmp_path, "scripts/a.py", "src/scripts/b.py")
    settings = Settings(extend_exclude=("/scripts",), project_root=tmp_path)
    assert found(tmp_path, settings=settings) == ["src/scripts/b.py"]


def test_gitignore_root_and_nested(tmp_path: Path) -> None:
    touch(tmp_path, "a.py", "generated.py", "out/x.py", "pkg/local.py", "pkg/keep.py", "pkg/o.py")
    (tmp_path / ".gitignore").write_text("generated.py\nout/\no.py\n")
    (tmp_path / "pkg" / ".gitignore").write_text("local.py\n!o.py\n")
    assert found(tmp_path) == ["a.py", "pkg/keep.py", "pkg/o.py"]


def test_gitignore_above_the_walked_directory_applies(tmp_path: Path) -> None:
    touch(tmp_path, "src/a.py", "src/secret_b.py")
    (tmp_path / ".gitignore").write_text("secret_*.py\n")
    assert found(tmp_path, tmp_path / "src") == ["src/a.py"]


def test_gitignore_of_enclosing_repository_applies_above_project_root(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("tmp_*.py\n")
    project = tmp_path / "project"
    touch(project, "a.py", "tmp_b.py")
    assert found(project, settings=Settings(project_root=project)) == ["a.py"]


def test_git_info_exclude_is_honoured(tmp_path: Path) -> None:
    (tmp_path / ".git" / "info").mkdir(parents=True)
    (tmp_path / ".git" / "info" / "exclude").write_text("scratch.py\n")
    touch(tmp_path, "a.py", "scratch.py")
    assert found(tmp_path) == ["a.py"]


def test_nested_repository_does_not_inherit_outer_gitignore(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("vendored_*.py\n")
    (tmp_path / "sub" / ".git").mkdir(parents=True)
    touch(tmp_path, "vendored_a.py", "sub/vendored_b.py")
    assert found(tmp_path) == ["sub/vendored_b.py"]


def test_explicit_file_bypasses_gitignore_and_default_excludes(tmp_path: Path) -> None:
    touch(tmp_path, "build/gen.py", "ignored.py")
    (tmp_path / ".gitignore").write_text("ignored.py\n")
    listed = found(tmp_path, tmp_path / "build" / "gen.py", tmp_path / "ignored.py")
    assert listed == ["build/gen.py", "ignored.py"]


def test_explicit_directory_bypasses_default_excludes_but_not_below(tmp_path: Path) -> None:
    touch(tmp_path, "build/gen.py", "build/__pycache__/x.py", "build/build/y.py")
    assert found(tmp_path, tmp_path / "build") == ["build/gen.py"]


def test_explicit_gitignored_directory_is_walked(tmp_path: Path) -> None:
    touch(tmp_path, "out/x.py", "out/skip.py")
    (tmp_path / ".gitignore").write_text("out/\nskip.py\n")
    assert found(tmp_path, tmp_path / "out") == ["out/x.py"]


def test_explicit_file_still_honours_user_excludes(tmp_path: Path) -> None:
    touch(tmp_path, "legacy/old.py", "new.py")
    settings = Settings(extend_exclude=("legacy/",), project_root=tmp_path)
    listed = found(tmp_path, tmp_path / "legacy" / "old.py", tmp_path / "new.py", settings=settings)
    assert listed == ["new.py"]


def test_explicit_file_without_py_suffix(tmp_path: Path) -> None:
    script = tmp_path / "train"
    script.write_text("#!/usr/bin/env python3\nimport torch\n")
    (tmp_path / "README.md").write_text("# hi\n")
    result = discover([script, tmp_path / "README.md"], Settings(project_root=tmp_path))
    assert result.files == [script]
    assert result.errors == [
        (tmp_path / "README.md", "not a Python file (expected .py, .pyi or .ipynb)")
    ]


def test_missing_path_and_stdin_are_errors(tmp_path: Path) -> None:
    touch(tmp_path, "a.py")
    missing = tmp_path / "missing.py"
    result = discover([missing, Path("-"), tmp_path / "a.py"], Settings(project_root=tmp_path))
    assert result.files == [tmp_path / "a.py"]
    reasons = dict(result.errors)
    assert reasons[missing] == "no such file or directory"
    assert "not supported" in reasons[Path("-")]
    assert all("\n" not in reason for reason in reasons.values())


def test_directory_named_like_a_module_is_walked(tmp_path: Path) -> None:
    touch(tmp_path, "weird.py/inner.py")
    assert found(tmp_path) == ["weird.py/inner.py"]
    assert found(tmp_path, tmp_path / "weird.py") == ["weird.py/inner.py"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_loop_terminates(tmp_path: Path) -> None:
    touch(tmp_path, "pkg/a.py")
    (tmp_path / "pkg" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "pkg" / "self").symlink_to(tmp_path / "pkg", target_is_directory=True)
    assert found(tmp_path) == ["pkg/a.py"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlinked_directory_and_file_are_followed_dangling_link_skipped(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    touch(outside, "lib.py", "mod.py")
    project = tmp_path / "project"
    project.mkdir()
    (project / "linked").symlink_to(outside, target_is_directory=True)
    (project / "alias.py").symlink_to(outside / "mod.py")
    (project / "dangling.py").symlink_to(project / "nowhere.py")
    listed = found(project, settings=Settings(project_root=project))
    assert listed == ["alias.py", "linked/lib.py", "linked/mod.py"]


def test_unreadable_directory_is_recorded_and_walk_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch(tmp_path, "locked/a.py", "open/b.py")
    locked = str(tmp_path / "locked")
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        # chmod cannot lock root out, so the refusal is simulated.
        if os.path.abspath(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = discover([tmp_path], Settings(project_root=tmp_path))
    assert result.files == [tmp_path / "open" / "b.py"]
    assert result.errors == [(tmp_path / "locked", "cannot read directory: Permission denied")]


def test_fifo_named_py_is_not_a_file(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs named pipes")
    os.mkfifo(tmp_path / "pipe.py")
    touch(tmp_path, "a.py")
    assert found(tmp_path) == ["a.py"]
    result = discover([tmp_path / "pipe.py"], Settings(project_root=tmp_path))
    assert result.files == []
    assert result.errors == [(tmp_path / "pipe.py", "not a regular file or directory")]


def test_directory_outside_project_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    other = tmp_path / "other"
    touch(other, "a.py", ".venv/x.py", "build/y.py")
    assert found(other, other, settings=Settings(project_root=root)) == ["a.py"]
