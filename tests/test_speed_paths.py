"""The fast paths (prefilter, cache, process pool) never change what is reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from amplint import api
from amplint.analysis.api_names import DEPRECATED
from amplint.catalog import known_codes
from amplint.config import load_settings
from amplint.engine.run import lint_bytes
from amplint.findings import Finding, Position

CORPUS = Path(__file__).resolve().parent / "fixtures" / "corpus"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The corpus plus many files that mention AMP only in prose (so the pool has work)."""
    root = tmp_path / "tree"
    shutil.copytree(CORPUS, root)
    noise = root / "noise"
    noise.mkdir()
    for i in range(40):
        (noise / f"module_{i}.py").write_text(
            f'"""Uses torch.autocast and loss.backward() and optimizer.step() ({i})."""\n'
            "import os\n"
        )
    return root


def _keys(result: api.RunResult) -> list[tuple[str, int, int, str, bool]]:
    return [
        (Path(f.filename).name, f.location.row, f.location.column, f.code, f.fix is not None)
        for f in result.findings
    ]


def test_prefilter_cache_and_pool_agree(
    tree: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, tree)
    codes = frozenset(known_codes())
    serial = api.check_paths([tree], settings, codes, use_cache=False, jobs=1)
    pooled = api.check_paths([tree], settings, codes, use_cache=False, jobs=2)
    cold = api.check_paths([tree], settings, codes, use_cache=True, jobs=2)
    warm = api.check_paths([tree], settings, codes, use_cache=True, jobs=2)
    assert (tmp_path / ".amplint_cache").is_dir()
    assert serial.findings  # the corpus has mistakes in it
    assert _keys(serial) == _keys(pooled) == _keys(cold) == _keys(warm)
    assert [f.fix for f in serial.findings] == [f.fix for f in warm.findings]

    unfiltered = sorted(
        (path.name, f.location.row, f.location.column, f.code, f.fix is not None)
        for path in sorted(tree.rglob("*.py"))
        for f in lint_bytes(path.read_bytes(), str(path), codes, prefilter=False).findings
    )
    assert sorted(_keys(serial)) == unfiltered


def test_warm_run_parses_nothing(
    tree: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, tree)
    selection = api.Selection()
    first = api.check_paths([tree], settings, selection, jobs=1)

    import amplint.engine.source

    def no_parsing(data: bytes) -> None:
        raise AssertionError("a warm run parsed a file")

    monkeypatch.setattr(amplint.engine.source, "parse", no_parsing)
    monkeypatch.setattr("amplint.engine.run.parse", no_parsing)
    second = api.check_paths([tree], settings, selection, jobs=1)
    assert _keys(first) == _keys(second)


def test_an_edited_file_is_analysed_again(
    tree: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, tree)
    codes = frozenset(known_codes())
    before = api.check_paths([tree], settings, codes, jobs=1)
    target = tree / "invalid" / "mnist_backward_in_autocast.py"
    target.write_text(target.read_text().replace("# expect: AMP001", "# noqa: AMP001"))
    after = api.check_paths([tree], settings, codes, jobs=1)
    assert len(after.findings) == len(before.findings) - 1


def test_clean_removes_the_cache(
    tree: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from amplint.cli import cli

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(cli, ["check", "--exit-zero", str(tree)]).exit_code == 0
    assert (tmp_path / ".amplint_cache").is_dir()
    assert runner.invoke(cli, ["check", "--no-cache", "--exit-zero", str(tree)]).exit_code == 0
    result = runner.invoke(cli, ["clean"])
    assert result.exit_code == 0 and "Removed cache" in result.stderr
    assert not (tmp_path / ".amplint_cache").exists()


class _Terminal:
    def __init__(self, tty: bool) -> None:
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("tty", [True, False])
def test_progress_only_on_a_terminal_and_only_for_long_runs(
    tty: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import amplint.progress as progress_module

    clock = iter([0.0, 0.5, 3.0, 3.5, 4.0])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    stream = _Terminal(tty)
    with progress_module.Progress(stream=stream) as progress:  # type: ignore[arg-type]
        progress.update(1, 10)  # at 0.5 s: too early to show anything
        assert stream.text == ""
        progress.update(5, 10)  # at 3.0 s
    assert ("5/10 files" in stream.text) is tty


@pytest.mark.parametrize("path", sorted(CORPUS.rglob("*.py")), ids=lambda p: p.name)
def test_findings_without_edits_describe_the_same_fixes(path: Path) -> None:
    """`amplint check` (concise) skips computing edits: the same findings, the same `[*]`,
    and every described fix really has edits when computed."""
    data = path.read_bytes()
    complete = api.check_source(data, path.name, known_codes())
    described = api.check_source(data, path.name, known_codes(), with_edits=False)

    def key(f: Finding) -> tuple[str, Position, str]:
        return f.code, f.location, f.message

    assert [key(f) for f in described] == [key(f) for f in complete]
    for lazy, full in zip(described, complete, strict=True):
        assert (lazy.fix is None) == (full.fix is None)
        if full.fix is not None:
            assert lazy.fix is not None and not lazy.fix.edits and full.fix.edits
            assert (lazy.fix.applicability, lazy.fix.message) == (
                full.fix.applicability,
                full.fix.message,
            )


@pytest.mark.parametrize("path", sorted(CORPUS.rglob("*.py")), ids=lambda p: p.name)
def test_positions_from_line_numbers_match_libcst(path: Path) -> None:
    """The layout's positions (CPython's line numbers, checked against the text) equal
    libcst's own PositionProvider for every call and name of the file."""
    import libcst as cst
    from libcst.metadata import MetadataWrapper, PositionProvider

    from amplint.analysis.scopes import ModuleIndex
    from amplint.engine.fixes import ModuleLayout
    from amplint.engine.source import parse

    parsed = parse(path.read_bytes())
    index = ModuleIndex(parsed.module)
    nodes = [n for n in index.parents if isinstance(n, (cst.Call, cst.Name))]
    layout = ModuleLayout(parsed.module, parsed.text, index.parents)
    quick = layout.positions(nodes)
    assert "_spans" not in layout.__dict__, "the line-number path was not taken"
    expected = MetadataWrapper(parsed.module, unsafe_skip_copy=True).resolve(PositionProvider)
    assert all(quick[n] == expected[n] for n in nodes)


def _spellings(legacy: str) -> list[str]:
    """Ways a program reaches a deprecated AMP object: its full attribute chain, its module
    imported under an alias, its module's parent imported from, the object imported by name."""
    module, name = legacy.rsplit(".", 1)
    programs = [
        f"import torch\n\nref = {legacy}\n",
        f"import torch\nimport {module} as legacy_module\n\nref = legacy_module.{name}\n",
        f"import torch\nfrom {module} import {name} as legacy_name\n\nref = legacy_name\n",
    ]
    if "." in module:
        parent, last = module.rsplit(".", 1)
        programs.append(f"import torch\nfrom {parent} import {last} as m\n\nref = m.{name}\n")
    return programs


@pytest.mark.parametrize(
    "legacy",
    sorted({spec.legacy for spec in DEPRECATED.values()}),
)
def test_amp007_words_admit_every_spelling_of_a_deprecated_api(legacy: str) -> None:
    """AMP007's word groups are narrower than "mentions amp": any way of writing a deprecated
    API still passes them, and is reported."""
    for program in _spellings(legacy):
        data = program.encode()
        with_prefilter = lint_bytes(data, "m.py", ["AMP007"]).findings
        without = lint_bytes(data, "m.py", ["AMP007"], prefilter=False).findings
        assert with_prefilter == without, program
        assert [f.code for f in with_prefilter] == ["AMP007"], program


def test_pool_batches_keep_a_folder_together_and_start_with_the_largest(tmp_path: Path) -> None:
    # Files of one folder import the same modules: one worker summarises them once. A folder
    # larger than a batch's share is split, and the heaviest batches go first.
    items = []
    for folder, count, size in (("small", 6, 100), ("large", 4, 20_000), ("single", 1, 50_000)):
        (tmp_path / folder).mkdir()
        for n in range(count):
            path = tmp_path / folder / f"m{n}.py"
            path.write_bytes(b"#" * size)
            items.append((path, None))
    batches = api._batches(items, jobs=2)
    assert sorted(str(item[0]) for batch in batches for item in batch) == sorted(
        str(item[0]) for item in items
    )
    assert all(len({item[0].parent for item in batch}) == 1 for batch in batches)
    small = [batch for batch in batches if batch[0][0].parent.name == "small"]
    assert len(small) == 1 and len(small[0]) == 6
    assert len([b for b in batches if b[0][0].parent.name == "large"]) > 1  # split by weight
    weights = [sum(item[0].stat().st_size for item in batch) for batch in batches]
    assert weights == sorted(weights, reverse=True) and weights[0] == 50_000
