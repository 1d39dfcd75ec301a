"""Jupyter notebooks: checked and fixed as their code cells, reported by cell."""

from __future__ import annotations

import ast
import difflib
import json
import subprocess
import sys
from pathlib import Path

import hypothesis
import nbformat
import pytest
from click.testing import CliRunner
from hypothesis import strategies as st

from amplint.api import check_source
from amplint.cli import cli
from amplint.engine.registry import all_rules
from amplint.notebook import check_notebook, fix_notebook
from tests.notebooks import code_sources, notebook, write

AMPLINT = [sys.executable, "-m", "amplint"]
ALL_CODES = frozenset(rule.code for rule in all_rules())

SETUP = """\
import torch
scaler = torch.amp.GradScaler("cuda")"""
LOOP = """\
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)"""


def _run(*args: str, cwd: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False, env={"NO_COLOR": "1"})
    del cwd
    return result.exit_code, result.stdout, result.stderr


# ------------------------------------------------------------------ every rule, cut into cells


def _cut_into_cells(source: str) -> list[str]:
    """One cell per top-level statement (comments and blank lines go with the next one)."""
    lines = source.splitlines(keepends=True)
    ends = [node.end_lineno or node.lineno for node in ast.parse(source).body]
    cells, start = [], 0
    for end in ends:
        cells.append("".join(lines[start:end]))
        start = end
    if start < len(lines):
        cells[-1] += "".join(lines[start:])
    return [cell[:-1] if cell.endswith("\n") else cell for cell in cells]


def _examples() -> list[tuple[str, int]]:
    return [(rule.code, index) for rule in all_rules() for index in range(len(rule.invalid))]


#: Examples whose fix, with one cell per statement, moves a line out of its cell into
#: another (`scaler.update()` after the loop, moved into it): not applied in a notebook.
_MOVED_ACROSS_CELLS = {("AMP002", 3)}


@pytest.mark.parametrize(("code", "index"), _examples())
def test_every_invalid_example_is_found_in_its_cell_and_fixed_there(code: str, index: int) -> None:
    rule = next(rule for rule in all_rules() if rule.code == code)
    example = rule.invalid[index]
    source = example.source
    cells = _cut_into_cells(source)
    parts = [part for cell in cells for part in (cell, ("md", "-"))]
    nb = notebook([("md", "# Training"), *parts, "print('done')"])
    data = nbformat.writes(nb).encode()

    # Where each row of the file lies: (cell number counting markdown cells, row in cell).
    places = []
    for position, cell in enumerate(nb.cells, 1):
        if cell.cell_type == "code":
            places.extend((position, row) for row in range(1, len(cell.source.splitlines()) + 1))
    expected = {
        (f.code, *places[f.location.row - 1], f.location.column)
        for f in check_source(source.encode(), "example.py", {code})
    }
    found = check_notebook(data, "example.ipynb", {code}).findings
    assert {(f.code, f.cell, f.location.row, f.location.column) for f in found} == expected
    assert sum(f.code == code for f in found) == example.count

    fixed = fix_notebook(data, "example.ipynb", {code}, unsafe=True)
    if example.fixed is None or (code, index) in _MOVED_ACROSS_CELLS:
        assert fixed.data is None
        assert all(f.fix is None for f in found if f.code == code)
        return
    assert fixed.data is not None
    after = nbformat.reads(fixed.data.decode(), as_version=4)
    nbformat.validate(after)
    sources = [c.source for c in after.cells if c.cell_type == "code" and c.source]
    assert sources.pop() == "print('done')"
    assert "\n".join(sources).rstrip("\n") == example.fixed.rstrip("\n")
    for source in sources:  # each cell still runs on its own in Jupyter
        ast.parse(source)
    assert fix_notebook(fixed.data, "example.ipynb", {code}, unsafe=True).data is None


# ------------------------------------------------------------------ one module across cells


def test_a_scaler_made_in_one_cell_is_the_scaler_of_a_later_cell(tmp_path: Path) -> None:
    path = write(tmp_path / "train.ipynb", [SETUP, ("md", "## Loop"), "model = Net()", LOOP])
    code, out, _ = _run("check", "--no-cache", str(path), cwd=tmp_path)
    assert code == 1
    assert f"{path}:cell 4:5:5: AMP002 [*]" in out
    assert out.count("AMP0") == 1


def test_noqa_on_a_cell_line_silences_it(tmp_path: Path) -> None:
    quiet = LOOP.replace("scaler.step(optimizer)", "scaler.step(optimizer)  # noqa: AMP002")
    path = write(tmp_path / "train.ipynb", [SETUP, quiet])
    code, out, _ = _run("check", "--no-cache", str(path), cwd=tmp_path)
    assert (code, out.strip()) == (0, "All checks passed!")


# ------------------------------------------------------------------ IPython syntax


MAGICS = """\
%matplotlib inline
%load_ext autoreload
!pip install -q torch
files = !ls data
model?
?torch.amp.GradScaler
torch.autocast??
pip install einops
import torch"""


def test_ipython_syntax_is_masked_not_reported(tmp_path: Path) -> None:
    cells = [
        MAGICS,
        "%%bash\nfor f in *.py; do echo $f; done",
        "%%writefile helper.py\nwith torch.autocast('cuda'):\n    loss.backward()",
        "%%capture\nscaler = torch.amp.GradScaler('cuda')",
        "%%time\n"
        + LOOP.replace("    scaler.step(optimizer)", "    !nvidia-smi\n    scaler.step(optimizer)"),
        "%timeit model(x)\n%time torch.cuda.amp.GradScaler()",
    ]
    path = write(tmp_path / "magic.ipynb", cells)
    findings = check_notebook(path.read_bytes(), "magic.ipynb", ALL_CODES).findings
    got = {(f.code, f.cell, f.location.row, f.location.column) for f in findings}
    # The %%bash and %%writefile cells are not Python run by the kernel: not checked. The
    # %%time and %%capture bodies are. `%time STMT` is checked at STMT's own column.
    assert got == {("AMP002", 5, 7, 5), ("AMP007", 6, 2, 7)}


def test_operators_at_a_line_start_are_python_in_a_cell_with_magics(tmp_path: Path) -> None:
    """A formatter puts `!=` and `%` at the start of continuation lines: in a `%%time` cell
    they are still Python's operators, not shell escapes or magics."""
    body = (
        "%%time\n"
        + LOOP
        + "\nvalid = (\n    labels\n    != -1\n)\nnote = (\n    '%d steps'\n    % steps\n)"
    )
    path = write(tmp_path / "ops.ipynb", [SETUP, body])
    findings = check_notebook(path.read_bytes(), "ops.ipynb", ALL_CODES).findings
    assert [(f.code, f.cell, f.location.row) for f in findings] == [("AMP002", 2, 6)]


def test_a_timed_statement_with_a_comment_is_still_seen_and_kept(tmp_path: Path) -> None:
    """`%time scaler.update()  # slow?` runs the update: no false AMP002, whose "safe" fix
    would add a second update() (torch then asserts). A fix elsewhere in the cell keeps
    the timed line and its comment as written."""
    timed = LOOP.replace(
        "    scaler.step(optimizer)",
        "    scaler.step(optimizer)\n    %time scaler.update()  # is it slow?",
    )
    path = write(tmp_path / "timed.ipynb", [SETUP, timed])
    assert check_notebook(path.read_bytes(), "timed.ipynb", ALL_CODES).findings == []
    legacy = timed.replace('torch.autocast("cuda")', "torch.cuda.amp.autocast()")
    path = write(tmp_path / "legacy.ipynb", [SETUP, legacy])
    fixed = fix_notebook(path.read_bytes(), "legacy.ipynb", ALL_CODES)
    assert fixed.data is not None
    path.write_bytes(fixed.data)
    source = code_sources(path)[1]
    assert "torch.amp.autocast(" in source
    assert "    %time scaler.update()  # is it slow?" in source.splitlines()
    # A noqa comment after the timed statement silences it, as on any line.
    silenced = (
        "with torch.autocast('cuda'):\n"
        "    loss = model(x)\n"
        "    %time loss.backward()  # noqa: AMP001"
    )
    path = write(tmp_path / "silenced.ipynb", [SETUP, silenced])
    assert check_notebook(path.read_bytes(), "silenced.ipynb", ALL_CODES).findings == []
    assert fix_notebook(path.read_bytes(), "silenced.ipynb", ALL_CODES).data is None


def test_a_fix_in_a_crlf_cell_keeps_its_line_ends(tmp_path: Path) -> None:
    """Cells stored with CRLF line ends and no final line end: a line a fix appends after
    the last one is joined with CRLF, and no stray carriage return is left behind."""
    nb = notebook([SETUP, LOOP])
    for cell in nb.cells:
        cell.source = cell.source.replace("\n", "\r\n")
    path = tmp_path / "crlf.ipynb"
    nbformat.write(nb, str(path))
    fixed = fix_notebook(path.read_bytes(), "crlf.ipynb", ALL_CODES)
    assert fixed.data is not None
    path.write_bytes(fixed.data)
    source = code_sources(path)[1]
    assert source == LOOP.replace("\n", "\r\n") + "\r\n    scaler.update()"


def test_a_cell_that_is_not_python_even_after_masking_is_one_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.ipynb", [SETUP, "x = (\n!ls"])
    findings = check_notebook(path.read_bytes(), "broken.ipynb", ALL_CODES).findings
    assert [(f.code, f.cell) for f in findings] == [("AMP999", 2)]


def test_a_cell_that_does_not_parse_leaves_the_other_cells_checked(tmp_path: Path) -> None:
    """Jupyter runs the cells one by one: the loop's missing update() in cell 3 is still
    said, at its row, without a fix (the file as a whole does not parse)."""
    path = write(tmp_path / "scratch.ipynb", [SETUP, "print(('unclosed'", LOOP])
    findings = check_notebook(path.read_bytes(), "scratch.ipynb", ALL_CODES).findings
    assert [(f.code, f.cell) for f in findings] == [("AMP999", 2), ("AMP002", 3)]
    assert findings[1].fix is None
    fixed = fix_notebook(path.read_bytes(), "scratch.ipynb", ALL_CODES)
    assert fixed.data is None
    # `amplint fix` says what is left as `check` says it: the other cells' findings too.
    assert [(f.code, f.cell) for f in fixed.remaining] == [("AMP999", 2), ("AMP002", 3)]


def test_a_notebook_on_standard_input_is_fixed_and_diffed_as_a_file(tmp_path: Path) -> None:
    path = write(tmp_path / "train.ipynb", [SETUP, LOOP])
    data = path.read_bytes()

    def stdin(*options: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*AMPLINT, "check", "--no-cache", "--stdin-filename", "train.ipynb", *options, "-"],
            cwd=tmp_path,
            input=data,
            capture_output=True,
            check=False,
        )

    diff = stdin("--diff")
    assert diff.returncode == 1
    assert diff.stdout.decode().startswith("--- a/train.ipynb:cell 2\n")
    assert "+    scaler.update()" in diff.stdout.decode()
    fixed = stdin("--fix")
    assert fixed.returncode == 0, fixed.stderr
    path.write_bytes(fixed.stdout)  # what a pipeline writes back: a notebook, fixed
    assert "scaler.update()" in code_sources(path)[1]
    assert check_notebook(fixed.stdout, "train.ipynb", ALL_CODES).findings == []


def test_fix_keeps_magics_and_their_place(tmp_path: Path) -> None:
    cell = (
        "%%time\nfor x, y in loader:\n    with torch.autocast('cuda'):\n        loss = model(x)\n"
        "        scaler.scale(loss).backward()\n        !echo step\n    scaler.step(optimizer)\n"
        "    scaler.update()"
    )
    path = write(tmp_path / "t.ipynb", [SETUP + "\n%matplotlib inline", cell])
    code, _, _ = _run("fix", "--no-cache", str(path), cwd=tmp_path)
    assert code == 0
    assert code_sources(path) == [
        SETUP + "\n%matplotlib inline",
        "%%time\nfor x, y in loader:\n    with torch.autocast('cuda'):\n        loss = model(x)\n"
        "    scaler.scale(loss).backward()\n    !echo step\n    scaler.step(optimizer)\n"
        "    scaler.update()",
    ]


# ------------------------------------------------------------------ fixes keep the file


def _changed_lines_are_sources(before: str, after: str) -> None:
    """Every line the fix changed is one element of a code cell's source list."""
    sources = {line for cell in json.loads(after)["cells"] for line in _lines(cell["source"])}
    matcher = difflib.SequenceMatcher(a=before.splitlines(), b=after.splitlines())
    for tag, _, _, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for line in after.splitlines()[j1:j2]:
            value = line.strip().rstrip(",").removeprefix('"source": ')
            assert json.loads(value) in sources, line


def _lines(source: str | list[str]) -> list[str]:
    return source if isinstance(source, list) else [source]


def _without_code_sources(text: str) -> dict:
    document = json.loads(text)
    for cell in document["cells"]:
        if cell["cell_type"] == "code":
            cell["source"] = None
    return document


def _rich_notebook():  # type: ignore[no-untyped-def]
    nb = notebook(
        [
            ("md", "# Mixed precision ✓\n![plot](attachment:plot.png)"),
            "import torch\nfrom torch.cuda.amp import GradScaler",
            "scaler = GradScaler()\nmodel = Net().cuda()",
            LOOP,
        ],
        metadata={"accelerator": "GPU", "colab": {"provenance": []}},
    )
    nb.cells[0].attachments = {"plot.png": {"image/png": "iVBORw0KGgo=" * 200}}
    nb.cells[2].outputs.append(
        nbformat.v4.new_output("display_data", data={"image/png": "AAAA" * 5000}, metadata={})
    )
    nb.cells[2].metadata = {"tags": ["setup"], "collapsed": False}
    return nb


@pytest.mark.parametrize(
    "layout",
    ["nbformat", "indent-2-strings", "one-line-lists", "crlf-no-final-newline", "ascii-escaped"],
)
def test_fix_changes_only_code_cell_sources_in_the_files_own_layout(
    tmp_path: Path, layout: str
) -> None:
    nb = _rich_notebook()
    if layout == "nbformat":
        text = nbformat.writes(nb) + "\n"
    else:
        document = json.loads(nbformat.writes(nb))
        if layout == "indent-2-strings":
            for cell in document["cells"]:
                cell["source"] = "".join(cell["source"])
            text = json.dumps(document, indent=2, ensure_ascii=False)
        elif layout == "one-line-lists":
            for cell in document["cells"]:
                cell["source"] = "".join(cell["source"]).splitlines(keepends=True)
            text = json.dumps(document, indent=1, ensure_ascii=False)
            text = "\n".join(_inline_lists(text.splitlines())) + "\n"
        elif layout == "crlf-no-final-newline":
            for cell in document["cells"]:
                cell["source"] = "".join(cell["source"]).splitlines(keepends=True)
            text = json.dumps(document, indent=4, ensure_ascii=False).replace("\n", "\r\n")
        else:
            for cell in document["cells"]:
                cell["source"] = "".join(cell["source"]).splitlines(keepends=True)
            text = json.dumps(document, indent=1, ensure_ascii=True, sort_keys=True) + "\n"
    path = tmp_path / "train.ipynb"
    path.write_bytes(text.encode())

    code, _, _ = _run("fix", "--no-cache", str(path), cwd=tmp_path)
    assert code == 0
    after = path.read_bytes().decode()
    assert after != text
    nbformat.validate(nbformat.reads(after, as_version=4))
    assert _without_code_sources(after) == _without_code_sources(text)
    assert list(json.loads(after)) == list(json.loads(text))  # key order
    assert after.endswith("\n") == text.endswith("\n")
    assert ("\r\n" in after) == ("\r\n" in text)
    assert ("\\u2713" in after) == ("\\u2713" in text)
    for old, new in zip(json.loads(text)["cells"], json.loads(after)["cells"], strict=True):
        assert type(old["source"]) is type(new["source"])
    if "\n" in text and layout != "one-line-lists":
        _changed_lines_are_sources(text.replace("\r\n", "\n"), after.replace("\r\n", "\n"))
    sources = [
        "".join(_lines(c["source"])) for c in json.loads(after)["cells"] if c["cell_type"] == "code"
    ]
    assert sources == [
        "import torch\nfrom torch.amp import GradScaler",
        'scaler = GradScaler("cuda")\nmodel = Net().cuda()',
        LOOP + "\n    scaler.update()",
    ]

    # A second fix changes nothing, byte for byte.
    code, _, _ = _run("fix", "--no-cache", str(path), cwd=tmp_path)
    assert (code, path.read_bytes().decode()) == (0, after)


def _inline_lists(lines: list[str]) -> list[str]:
    """Put every ``"source": [...]`` list on one line (another editor's layout)."""
    out: list[str] = []
    collecting: list[str] | None = None
    for line in lines:
        if collecting is not None:
            collecting.append(line.strip())
            if line.strip().startswith("]"):
                out[-1] += " ".join(collecting)
                collecting = None
            continue
        out.append(line)
        if line.rstrip().endswith('"source": ['):
            collecting = []
    return out


def test_fix_diff_shows_each_changed_cell(tmp_path: Path) -> None:
    path = write(tmp_path / "t.ipynb", [SETUP, ("md", "x"), LOOP, "print(loss)"])
    before = path.read_bytes()
    code, out, _ = _run("fix", "--diff", "--no-cache", str(path), cwd=tmp_path)
    assert code == 1
    assert path.read_bytes() == before
    assert out == (
        f"--- a/{path}:cell 3\n+++ b/{path}:cell 3\n@@ -3,3 +3,4 @@\n"
        "         loss = model(x)\n     scaler.scale(loss).backward()\n"
        "     scaler.step(optimizer)\n+    scaler.update()\n"
    )


# ------------------------------------------------------------------ output formats


def test_json_sarif_and_github_point_at_the_notebook_cell(tmp_path: Path) -> None:
    path = write(tmp_path / "t.ipynb", [SETUP, LOOP])
    _, out, _ = _run("check", "--no-cache", "--output-format", "json", str(path), cwd=tmp_path)
    [finding] = json.loads(out)
    assert finding["cell"] == 2
    assert finding["location"] == {"row": 5, "column": 5}
    assert finding["filename"] == str(path)
    [edit] = finding["fix"]["edits"]
    assert edit["cell"] == 2 and edit["content"].strip() == "scaler.update()"

    # SARIF and GitHub point into the file: at the JSON string holding the cell's line 5.
    lines = path.read_text().splitlines()
    row = next(n for n, line in enumerate(lines, 1) if '"    scaler.step(optimizer)"' in line)
    column = lines[row - 1].index('"') + 2 + 4
    _, out, _ = _run("check", "--no-cache", "--output-format", "sarif", str(path), cwd=tmp_path)
    [result] = json.loads(out)["runs"][0]["results"]
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"].endswith("t.ipynb")
    assert result["properties"] == {"cell": 2, "cellLocation": {"row": 5, "column": 5}}
    assert location["region"] == {
        "startLine": row,
        "startColumn": column,
        "endLine": row,
        "endColumn": column + len("scaler.step(optimizer)"),
    }
    assert "fixes" not in result

    _, out, _ = _run("check", "--no-cache", "--output-format", "github", str(path), cwd=tmp_path)
    assert out.startswith(
        f"::error title=amplint (AMP002) in cell 2,file={path},line={row},col={column},"
    )
    assert f"{path}:cell 2:5:5: AMP002" in out


def test_cached_findings_keep_their_cells(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "t.ipynb", [SETUP, LOOP])
    first = _run("check", "t.ipynb", cwd=tmp_path)
    second = _run("check", "t.ipynb", cwd=tmp_path)
    assert first == second
    assert "t.ipynb:cell 2:5:5: AMP002" in second[1]


def test_cached_notebook_findings_point_where_the_code_lies_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A longer markdown cell moves the code down the file without changing it: the
    cached finding's file position (SARIF, GitHub) moves with it."""
    monkeypatch.chdir(tmp_path)

    def github_line() -> int:
        _, out, _ = _run("check", "--output-format", "github", "t.ipynb", cwd=tmp_path)
        return int(out.split(",line=", 1)[1].split(",", 1)[0])

    write(tmp_path / "t.ipynb", [SETUP, ("md", "# Notes"), LOOP])
    before = github_line()
    write(tmp_path / "t.ipynb", [SETUP, ("md", "# Notes\n" + "more\n" * 20), LOOP])
    assert github_line() == before + 20


# ------------------------------------------------------------------ discovery and bad input


def test_directories_and_gitignore_cover_notebooks(tmp_path: Path) -> None:
    write(tmp_path / "a.ipynb", [SETUP, LOOP])
    (tmp_path / "scratch").mkdir()
    write(tmp_path / "scratch" / "b.ipynb", [SETUP, LOOP])
    (tmp_path / ".gitignore").write_text("scratch/\n")
    (tmp_path / ".ipynb_checkpoints").mkdir()  # Jupyter's autosave copies: not checked
    write(tmp_path / ".ipynb_checkpoints" / "a-checkpoint.ipynb", [SETUP, LOOP])
    (tmp_path / "c.py").write_text(SETUP + "\n" + LOOP + "\n")
    code, out, _ = _run("check", "--no-cache", str(tmp_path), cwd=tmp_path)
    assert code == 1
    assert "a.ipynb:cell 2:5:5: AMP002" in out
    assert "c.py:7:5: AMP002" in out
    assert "b.ipynb" not in out and "checkpoint" not in out


def test_bad_notebooks_are_one_line_each_and_the_rest_is_checked(tmp_path: Path) -> None:
    (tmp_path / "broken.ipynb").write_text('{"cells": [}')
    (tmp_path / "old.ipynb").write_text(json.dumps({"nbformat": 3, "worksheets": []}))
    (tmp_path / "list.ipynb").write_text("[1, 2]")
    (tmp_path / "new.ipynb").write_bytes(b"")  # an editor's new notebook, not yet saved
    write(tmp_path / "good.ipynb", [SETUP, LOOP])
    for command in ("check", "fix"):
        result = subprocess.run(
            [*AMPLINT, command, "--no-cache", "."],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        errors = result.stderr.strip().splitlines()
        assert errors == [
            "amplint: error: broken.ipynb: not valid JSON: Expecting value (line 1, column 12)",
            "amplint: error: list.ipynb: not a Jupyter notebook (valid JSON, but not an object)",
            "amplint: error: old.ipynb: nbformat 3 is not supported (amplint reads nbformat 4; "
            "convert it with `jupyter nbconvert --to notebook --inplace`)",
        ], result.stderr
        assert "Traceback" not in result.stderr
    assert "scaler.update()" in code_sources(tmp_path / "good.ipynb")[1]
    assert (tmp_path / "new.ipynb").read_bytes() == b""


def test_a_notebook_of_another_language_is_skipped_with_a_note(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.ipynb",
        ["library(torch)"],
        metadata={
            "kernelspec": {"name": "ir", "display_name": "R", "language": "R"},
            "language_info": {"name": "R"},
        },
    )
    code, out, err = _run("check", "--no-cache", str(path), cwd=tmp_path)
    assert code == 0
    assert err.strip() == f"amplint: note: {path}: kernel language is r, not Python; skipped"
    assert "All checks passed!" in out


def test_an_empty_language_name_is_no_language_the_kernel_spec_is_asked(
    tmp_path: Path,
) -> None:
    """Some exporters write `"language_info": {"name": ""}` for a python3 kernel."""
    path = write(
        tmp_path / "exported.ipynb",
        [SETUP, LOOP],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3"},
            "language_info": {"name": "", "version": ""},
        },
    )
    code, out, err = _run("check", "--no-cache", str(path), cwd=tmp_path)
    assert (code, err) == (1, "")
    assert "AMP002" in out


def test_a_huge_output_is_not_analysed(tmp_path: Path) -> None:
    nb = notebook([SETUP, LOOP])
    # 40 MB of base64 "image" and a log: only the sources are read as code.
    nb.cells[1].outputs.append(
        nbformat.v4.new_output("display_data", data={"image/png": "A" * 40_000_000}, metadata={})
    )
    nb.cells[0].outputs[0].text = "loss = nan\n" * 200_000
    path = tmp_path / "big.ipynb"
    nbformat.write(nb, str(path))
    findings = check_notebook(path.read_bytes(), "big.ipynb", ALL_CODES).findings
    assert [(f.code, f.cell, f.location.row) for f in findings] == [("AMP002", 2, 5)]


def test_subprocess_check_names_cells(tmp_path: Path) -> None:
    write(tmp_path / "train.ipynb", [SETUP, ("md", "loop"), LOOP])
    result = subprocess.run(
        [*AMPLINT, "check", "--no-cache", "train.ipynb"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == (
        "train.ipynb:cell 3:5:5: AMP002 [*] `scaler.step(...)` is not followed by "
        "`scaler.update()` in the training iteration; the loss scale never adapts"
    )


def test_a_fixed_module_goes_back_into_its_cells_or_not_at_all() -> None:
    from amplint.notebook import CodeCell, NotebookModule

    module = NotebookModule.build([CodeCell(1, "a = 1"), CodeCell(3, "%pwd\nb = 2")])
    assert module.text == "a = 1\npass  # amplint-ipython:0\nb = 2\n"
    # A line inserted at a boundary goes with the line it precedes; magics come back.
    assert module.cell_texts("a = 1\nx = 0\npass  # amplint-ipython:0\nb = 2\n") == {
        3: "x = 0\n%pwd\nb = 2"
    }
    # An indented line at a boundary continues the block the previous cell ends in.
    loop = NotebookModule.build([CodeCell(1, "for x in y:\n    f(x)"), CodeCell(2, "g()")])
    assert loop.cell_texts("for x in y:\n    f(x)\n    h(x)\ng()\n") == {
        1: "for x in y:\n    f(x)\n    h(x)"
    }
    # Re-indented with its block, a magic keeps the new indentation.
    assert module.cell_texts("a = 1\nif a:\n    pass  # amplint-ipython:0\nb = 2\n") == {
        3: "if a:\n    %pwd\nb = 2"
    }
    # A magic dropped, or code merged across two cells, cannot be put back: no fix.
    assert module.cell_texts("a = 1\nb = 2\n") is None
    plain = NotebookModule.build([CodeCell(1, "a = 1"), CodeCell(2, "b = 2")])
    assert plain.cell_texts("c = (1,\n     2,\n     3)\n") is None
    assert plain.cell_texts("a = 2\nb = 3\n") == {1: "a = 2", 2: "b = 3"}


@pytest.mark.parametrize(
    "layout", ["lists", "string-sources", "ascii-escaped", "several-lines-an-element"]
)
def test_sarif_regions_are_where_the_code_is_stored_whatever_the_layout(
    tmp_path: Path, layout: str
) -> None:
    loop = LOOP.replace("    scaler.step(optimizer)", "    print('é\\t'); scaler.step(optimizer)")
    document = json.loads(nbformat.writes(notebook([SETUP, ("md", "ü"), loop])))
    for cell in document["cells"]:
        source = "".join(cell["source"])
        cell["source"] = source if layout == "string-sources" else source.splitlines(True)
        if layout == "several-lines-an-element":  # as sphinx-gallery writes them
            lines = cell["source"]
            cell["source"] = ["".join(lines[:2]), "".join(lines[2:])] if len(lines) > 2 else lines
    text = json.dumps(document, indent=1, ensure_ascii=layout == "ascii-escaped")
    path = tmp_path / "t.ipynb"
    path.write_text(text)
    _, out, _ = _run("check", "--no-cache", "--output-format", "sarif", str(path), cwd=tmp_path)
    [result] = json.loads(out)["runs"][0]["results"]
    region = result["locations"][0]["physicalLocation"]["region"]
    [(row, line)] = [(n, x) for n, x in enumerate(text.splitlines(), 1) if "scaler.step(" in x]
    column = line.index("scaler.step(optimizer)") + 1
    if layout == "several-lines-an-element":  # `\n` is two characters in the file
        assert line.index("scaler.step(") > line.index("\\n")
    assert (region["startLine"], region["startColumn"]) == (row, column)
    assert (region["endLine"], region["endColumn"]) == (row, column + 22)


_LINES = [
    "import torch",
    "x = 1",
    "for i in range(3):",
    "    y = i",
    "    !echo $i",
    "    %time f(i)",
    "%matplotlib inline",
    "!pip install -q torch \\",
    "    einops",
    "files = !ls",
    "model?",
    "pip install x",
    "%%time",
    "%%bash",
    "# comment?",
    "",
    "s = '''",
    "%not a magic inside a string",
    "'''",
]


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(
    st.lists(st.lists(st.sampled_from(_LINES), max_size=8).map("\n".join), max_size=5)
)
def test_masking_round_trips_any_cells(texts: list[str]) -> None:
    from amplint.notebook import CodeCell, NotebookModule

    module = NotebookModule.build([CodeCell(n, text) for n, text in enumerate(texts, 1)])
    # Unchanged module text gives back every cell unchanged; rows map into real cell rows.
    assert module.cell_texts(module.text) == {}
    assert module.unmask(module.text) == module.plain_text
    assert len(module.text.splitlines()) == len(module.rows)
    for cell, row in module.rows:
        assert 1 <= row <= len(texts[cell - 1].splitlines())


# ------------------------------------------------------------------ projects


def test_a_notebook_sees_into_the_modules_of_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notebook imports its scaler from a helper module beside it: checked with its
    folder it is one module of the project, as a script would be, and fixed as such. A
    change of the helper reaches the cached verdict."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "amp_utils.py").write_text(
        "import torch\n\ndef new_scaler():\n    return torch.amp.GradScaler('cuda')\n"
    )
    setup = "import torch\nfrom amp_utils import new_scaler\nscaler = new_scaler()"
    write(tmp_path / "train.ipynb", [setup, LOOP])
    code, out, _ = _run("check", ".", cwd=tmp_path)
    assert code == 1 and "train.ipynb:cell 2:5:5: AMP002 [*]" in out
    # The helper stops making a GradScaler: the cached finding goes.
    (tmp_path / "amp_utils.py").write_text("def new_scaler():\n    return None\n")
    code, out, _ = _run("check", ".", cwd=tmp_path)
    assert (code, out.strip()) == (0, "All checks passed!")
    (tmp_path / "amp_utils.py").write_text(
        "import torch\n\ndef new_scaler():\n    return torch.amp.GradScaler('cuda')\n"
    )
    code, _, _ = _run("fix", ".", cwd=tmp_path)
    assert code == 0
    assert code_sources(tmp_path / "train.ipynb")[1] == LOOP + "\n    scaler.update()"
