"""A re-run of the same command over an unchanged tree is answered by its run record, and
any change to the tree, the command or the outcome's kind goes back to the per-file path."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from amplint import api
from amplint.cache import FindingsCache
from amplint.config import load_settings
from tests.notebooks import write
from tests.samples import BACKWARD_IN_AUTOCAST

CLEAN = "import os\n\n\ndef join(x):\n    return os.path.join(x, 'a')\n"


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "train.py").write_text(BACKWARD_IN_AUTOCAST)
    for i in range(3):
        (root / "pkg" / f"util_{i}.py").write_text(CLEAN)
    return root


def _check(paths: list[Path]) -> api.RunResult:
    settings = load_settings(None, paths[0])
    return api.check_paths(paths, settings, api.Selection(), jobs=1)


def _seen(result: api.RunResult) -> list[tuple[str, int, str]]:
    return [(f.filename, f.location.row, f.code) for f in result.findings]


def _per_file_path_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the per-file cache and any analysis fail: only the run record can answer."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the per-file path ran")

    monkeypatch.setattr(FindingsCache, "__init__", refuse)
    monkeypatch.setattr(api, "_lint_all", refuse)


def test_an_unchanged_tree_is_answered_by_its_run_record(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _check([Path("src")])
    assert [code for _, _, code in _seen(first)] == ["AMP001"]
    records = list((tree.parent / ".amplint_cache").rglob("*.run.json"))
    assert len(records) == 1
    with monkeypatch.context() as patched:
        _per_file_path_forbidden(patched)
        second = _check([Path("src")])
    assert _seen(second) == _seen(first)
    assert second.files_checked == first.files_checked == 4
    assert [f.fix for f in second.findings] == [f.fix for f in first.findings]


def _edit(tree: Path) -> None:
    train = tree / "pkg" / "train.py"
    train.write_text(train.read_text().replace(".backward()", ".backward()  # noqa"))


def _add(tree: Path) -> None:
    (tree / "pkg" / "other.py").write_text(BACKWARD_IN_AUTOCAST)


def _remove(tree: Path) -> None:
    (tree / "pkg" / "train.py").unlink()


def _rename(tree: Path) -> None:
    (tree / "pkg" / "train.py").rename(tree / "pkg" / "loop.py")


def _touch(tree: Path) -> None:
    os.utime(tree / "pkg" / "util_0.py")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_edit, []),
        (_add, [("src/pkg/other.py", 6, "AMP001"), ("src/pkg/train.py", 6, "AMP001")]),
        (_remove, []),
        (_rename, [("src/pkg/loop.py", 6, "AMP001")]),
        (_touch, [("src/pkg/train.py", 6, "AMP001")]),
    ],
)
def test_any_change_to_the_tree_misses_the_record(
    tree: Path,
    change: Callable[[Path], None],
    expected: list[tuple[str, int, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _check([Path("src")])
    change(tree)
    assert _seen(_check([Path("src")])) == expected
    # The new outcome is recorded in turn: the next run is answered from it.
    with monkeypatch.context() as patched:
        _per_file_path_forbidden(patched)
        assert _seen(_check([Path("src")])) == expected


def test_each_command_has_its_own_record(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _seen(_check([Path("src")])) == [("src/pkg/train.py", 6, "AMP001")]
    # The same files named another way, and from another folder, are shown as named.
    assert _seen(_check([Path("src/pkg")])) == [("src/pkg/train.py", 6, "AMP001")]
    monkeypatch.chdir(tree)
    assert _seen(_check([Path("pkg")])) == [("pkg/train.py", 6, "AMP001")]
    assert _seen(_check([Path(".")])) == [("pkg/train.py", 6, "AMP001")]
    monkeypatch.chdir(tree.parent)
    assert _seen(_check([Path("src")])) == [("src/pkg/train.py", 6, "AMP001")]


def test_a_run_that_left_a_file_out_is_not_recorded(tree: Path) -> None:
    # A notebook of another language is left out with a note: every run must say so again.
    write(
        tree / "other.ipynb",
        ["library(torch)"],
        metadata={
            "kernelspec": {"name": "ir", "display_name": "R", "language": "R"},
            "language_info": {"name": "R"},
        },
    )
    for _ in range(2):
        result = _check([Path("src")])
        assert [path.name for path, _ in result.notes] == ["other.ipynb"]
    assert not list((tree.parent / ".amplint_cache").rglob("*.run.json"))


def test_a_damaged_record_is_ignored(tree: Path) -> None:
    first = _check([Path("src")])
    (record,) = (tree.parent / ".amplint_cache").rglob("*.run.json")
    for damage in ("{", json.dumps({"signature": None}), json.dumps([1, 2])):
        record.write_text(damage)
        assert _seen(_check([Path("src")])) == _seen(first)


def test_a_file_that_could_not_be_read_is_not_recorded(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Readable next time with nothing changed on disk (permissions, a lock): check it again.
    from amplint.engine.source import SourceError, read_bytes

    def locked(path: Path) -> bytes:
        if Path(path).name == "train.py":
            raise SourceError("cannot read file: Permission denied")
        return read_bytes(path)

    with monkeypatch.context() as patched:
        patched.setattr(api, "read_bytes", locked)
        assert [code for _, _, code in _seen(_check([Path("src")]))] == ["AMP999"]
    assert _seen(_check([Path("src")])) == [("src/pkg/train.py", 6, "AMP001")]


def test_other_commands_replace_the_record_instead_of_piling_up(tree: Path) -> None:
    # pre-commit names other files on each commit: one record per settings and selection.
    names = sorted(path.name for path in (tree / "pkg").iterdir())
    for name in names:
        _check([Path("src/pkg") / name])
    for first, second in itertools.pairwise(names):
        _check([Path("src/pkg") / first, Path("src/pkg") / second])
    assert len(list((tree.parent / ".amplint_cache").rglob("*.run.json"))) == 2
    assert _seen(_check([Path("src/pkg/train.py")])) == [("src/pkg/train.py", 6, "AMP001")]
