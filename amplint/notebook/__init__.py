"""Jupyter notebooks: checked and fixed like Python files, cell by cell.

``jsonfile`` reads a notebook's cells and writes edited sources back in the file's own
layout; ``cells`` joins the code cells into one module (IPython syntax masked) and maps
positions back to cells. This module runs the ordinary engine over that module.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from amplint.catalog import PARSE_ERROR_CODE
from amplint.discovery import NOTEBOOK_SUFFIX, is_notebook
from amplint.findings import Finding, Fix, Position
from amplint.notebook.cells import CodeCell, NotebookModule, cell_edits
from amplint.notebook.jsonfile import NotebookError, NotebookFile, read_notebook, write_sources

if TYPE_CHECKING:
    from amplint.engine.project import FileView
    from amplint.engine.run import LintResult

__all__ = [
    "NOTEBOOK_SUFFIX",
    "CodeCell",
    "NotebookCheck",
    "NotebookError",
    "NotebookFix",
    "NotebookLint",
    "NotebookModule",
    "analysed_text",
    "check_notebook",
    "check_notebook_file",
    "fix_notebook",
    "fix_notebook_file",
    "is_notebook",
    "lint_cells",
    "lint_module",
    "lint_notebook",
    "read_notebook",
]


@dataclass
class NotebookCheck:
    findings: list[Finding]
    #: why the notebook was not analysed (a kernel that is not Python), else None.
    skipped: str | None = None
    #: why the file is no notebook amplint can read (bad JSON, not nbformat 4), else None.
    error: str | None = None
    #: the cache key of what was analysed (the code cells), None when nothing was.
    digest: str | None = None
    #: ``digest`` equals the cached one: nothing was analysed, the cached findings hold.
    unchanged: bool = False


@dataclass
class NotebookFix:
    #: the fixed notebook's bytes, or None when nothing changed.
    data: bytes | None
    applied: int
    remaining: list[Finding] = field(default_factory=list)
    #: unified diff of the changed cells, one hunk group per cell.
    diff: str = ""
    skipped: str | None = None
    #: a file that is no notebook amplint can read: its one-line reason.
    error: str | None = None

    @property
    def errors(self) -> list[str]:
        return [] if self.error is None else [self.error]

    @property
    def notes(self) -> list[str]:
        return [] if self.skipped is None else [self.skipped]


def code_cells(notebook: NotebookFile) -> list[CodeCell]:
    return [CodeCell(c.number, c.source) for c in notebook.cells if c.cell_type == "code"]


def skip_reason(notebook: NotebookFile) -> str | None:
    language = notebook.language
    # "python", and the spellings some kernels use ("python3", "ipython3").
    if language is None or language.removeprefix("i").startswith("python"):
        return None
    return f"kernel language is {language}, not Python; skipped"


def check_notebook(
    data: bytes, filename: str, codes: Collection[str], *, with_edits: bool = True
) -> NotebookCheck:
    """Findings of a notebook's bytes; raises NotebookError for a file that is no notebook."""
    notebook = read_notebook(data)
    reason = skip_reason(notebook)
    if reason is not None:
        return NotebookCheck([], reason)
    return NotebookCheck(lint_notebook(notebook, filename, codes, with_edits=with_edits))


def check_notebook_file(
    data: bytes,
    filename: str,
    codes: Collection[str],
    with_edits: bool = True,
    cached_digest: str | None = None,
    project: FileView | None = None,
) -> NotebookCheck:
    """``check_notebook`` for a file of a run: errors as values, and a cache key made of
    the code cells alone (hashing megabytes of outputs would cost more than the analysis,
    and no output changes a finding)."""
    from amplint.cache import content_hash

    try:
        notebook = read_notebook(data)
    except NotebookError as error:
        return NotebookCheck([], error=str(error))
    text = analysed_text(notebook)
    if text is None:
        return NotebookCheck([], skip_reason(notebook))  # not cached: the note repeats
    # A longer markdown cell moves the code on disk without changing it: the positions
    # SARIF and GitHub output point at are part of the key.
    keyed = text + "\0" + notebook.code_layout()
    digest = content_hash(keyed.encode("utf-8", errors="surrogatepass"))
    if digest == cached_digest:
        return NotebookCheck([], digest=digest, unchanged=True)
    findings = lint_notebook(notebook, filename, codes, with_edits=with_edits, project=project)
    return NotebookCheck(findings, digest=digest)


def fix_notebook_file(
    data: bytes,
    filename: str,
    codes: Collection[str],
    *,
    unsafe: bool = False,
    project: FileView | None = None,
) -> NotebookFix:
    """``fix_notebook`` for a file of a run: a file that is no notebook is an error value."""
    try:
        return fix_notebook(data, filename, codes, unsafe=unsafe, project=project)
    except NotebookError as error:
        return NotebookFix(None, 0, error=str(error))


def lint_notebook(
    notebook: NotebookFile,
    filename: str,
    codes: Collection[str],
    *,
    with_edits: bool = True,
    project: FileView | None = None,
) -> list[Finding]:
    findings = lint_cells(
        code_cells(notebook), filename, codes, with_edits=with_edits, project=project
    )
    return [with_file_span(notebook, finding) for finding in findings]


def with_file_span(notebook: NotebookFile, finding: Finding) -> Finding:
    """The finding with where its span is stored in the notebook's JSON text."""
    if finding.cell is None:
        return finding
    start, end = finding.location, finding.end_location
    first = Position(*notebook.file_position(finding.cell, start.row, start.column))
    last = Position(*notebook.file_position(finding.cell, end.row, end.column))
    return replace(finding, file_span=(first, max(first, last)))


def analysed_text(notebook: NotebookFile) -> str | None:
    """Everything the findings depend on (the code cells, numbered), for a cache key; None
    for a notebook that is skipped."""
    if skip_reason(notebook) is not None:
        return None
    return "\x00".join(f"{cell.number}\x01{cell.text}" for cell in code_cells(notebook))


@dataclass
class NotebookLint:
    """Findings of code cells (positions in their cells), and their fixes on request."""

    module: NotebookModule
    findings: list[Finding]
    #: the engine's result with fixes still as plans (``lazy=True``), else None.
    result: LintResult | None = None
    #: each cell finding's finding in the module, for :meth:`fix_of`.
    origin: dict[Finding, Finding] = field(default_factory=dict)

    def fix_of(self, finding: Finding) -> Fix | None:
        """The finding's fix with its edits in cell coordinates (each edit names its cell)."""
        original = self.origin.get(finding)
        if original is None or self.result is None:
            return finding.fix
        fix = self.result.fix_of(original)
        return None if fix is None else _cell_fix(self.module, fix)


def lint_cells(
    cells: Iterable[CodeCell],
    filename: str,
    codes: Collection[str],
    *,
    with_edits: bool = True,
    project: FileView | None = None,
) -> list[Finding]:
    """Findings of code cells taken as one module, with positions in their cells;
    ``project``: the notebook's view of the project it sits in (the modules it imports)."""
    module = NotebookModule.build(cells)
    return lint_module(module, filename, codes, with_edits=with_edits, project=project).findings


def lint_module(
    module: NotebookModule,
    filename: str,
    codes: Collection[str],
    *,
    with_edits: bool = True,
    lazy: bool = False,
    project: FileView | None = None,
) -> NotebookLint:
    """Lint the module; ``lazy`` keeps fixes as plans, made by ``fix_of`` on request (what
    an editor wants: a check computes no edits, a quick fix only its own)."""
    from amplint.engine.run import lint_bytes

    if not module.cells:
        return NotebookLint(module, [])
    fixes = with_edits and not lazy
    text = module.text.encode("utf-8", "surrogatepass")
    result = lint_bytes(text, filename, codes, fixes=fixes, project=project)
    lint = NotebookLint(module, [], result if lazy else None)
    for finding in result.findings:
        fix = finding.fix
        if fix is not None:
            fix = _cell_fix(module, fix)
        else:
            summary = result.fix_summary(finding)
            if summary is not None:
                fix = Fix(summary[1], summary[0], ())
                # One that would move code between cells is not applied: not offered either.
                made = None if lazy else result.fix_of(finding, local=False)
                if not lazy and (made is None or _cell_fix(module, made) is None):
                    fix = None
        mapped = to_cell_finding(module, finding, fix)
        lint.findings.append(mapped)
        if lazy:
            lint.origin[mapped] = finding
    broken = [f.cell for f in lint.findings if f.code == PARSE_ERROR_CODE]
    if broken and not lazy and len(module.cells) > 1:
        # Jupyter runs cells one by one: a scratch cell that does not parse leaves the
        # others running. They are checked without it (its lines left blank, so every
        # other cell keeps its rows); their findings are said, without fixes.
        cells = [
            CodeCell(cell.number, "\n" * cell.text.count("\n")) if cell.number in broken else cell
            for cell in module.cells
        ]
        rest = lint_module(
            NotebookModule.build(cells), filename, codes, with_edits=False, project=project
        )
        lint.findings += [replace(f, fix=None) for f in rest.findings if f.cell not in broken]
    lint.findings.sort(key=Finding.sort_key)
    return lint


def to_cell_finding(module: NotebookModule, finding: Finding, fix: Fix | None) -> Finding:
    cell, start = module.cell_position(finding.location)
    end_cell, end = module.cell_position(finding.end_location)
    if end_cell != cell:
        end = start
    return replace(
        finding,
        location=start,
        end_location=end,
        fix=fix,
        cell=cell,
        source_line=module.cell_line(cell, start.row) if finding.code != PARSE_ERROR_CODE else "",
    )


def _cell_fix(module: NotebookModule, fix: Fix) -> Fix | None:
    """The fix with its edits in cell coordinates; None when it cannot be put into cells."""
    from amplint.engine.fixes import apply_edits

    if not fix.edits:
        return fix
    if module.moves_between_cells(fix.edits):
        return None
    changed = module.cell_texts(apply_edits(module.text, fix.edits))
    if changed is None:
        return None
    before = {cell.number: cell.text for cell in module.cells}
    return Fix(fix.applicability, fix.message, cell_edits(before, changed))


def fixed_cells(
    cells: Sequence[CodeCell], filename: str, codes: Collection[str], *, unsafe: bool = False
) -> tuple[dict[int, str], int]:
    """(new text by cell number, fixes applied) for every applicable fix, as ``amplint fix``."""
    changed, applied, _ = _fix_cells(NotebookModule.build(cells), filename, codes, unsafe)
    return changed, applied


def _fix_cells(
    module: NotebookModule,
    filename: str,
    codes: Collection[str],
    unsafe: bool,
    project: FileView | None = None,
) -> tuple[dict[int, str], int, list[Finding] | None]:
    """Changed cells, fixes applied, and (when nothing changed) the findings in cells."""
    from amplint.engine.run import fix_bytes

    if not module.cells:
        return {}, 0, []
    fixed = fix_bytes(
        module.text.encode("utf-8", "surrogatepass"),
        filename,
        codes,
        unsafe=unsafe,
        accept=lambda fix, text: not module.moves_between_cells(fix.edits, text),
        project=project,
    )
    if fixed.data is None:
        if any(f.code == PARSE_ERROR_CODE for f in fixed.remaining):
            # A cell that does not parse: the others are still checked, as `check` does.
            return {}, 0, None
        remaining = [
            to_cell_finding(module, f, None if f.fix is None else _cell_fix(module, f.fix))
            for f in fixed.remaining
        ]
        return {}, 0, sorted(remaining, key=Finding.sort_key)
    changed = module.cell_texts(fixed.data.decode("utf-8"))
    if changed is None:
        return {}, 0, None  # a fix that would cross cells is not applied
    return changed, fixed.applied, None


def fix_notebook(
    data: bytes,
    filename: str,
    codes: Collection[str],
    *,
    unsafe: bool = False,
    with_edits: bool = True,
    project: FileView | None = None,
) -> NotebookFix:
    """Fix a notebook's code cells; every byte outside the edited sources is kept."""
    notebook = read_notebook(data)
    reason = skip_reason(notebook)
    if reason is not None:
        return NotebookFix(None, 0, skipped=reason)
    cells = code_cells(notebook)
    module = NotebookModule.build(cells)
    changed, applied, remaining = _fix_cells(module, filename, codes, unsafe, project)
    if not changed:
        if remaining is None:
            remaining = lint_cells(cells, filename, codes, with_edits=with_edits, project=project)
        return NotebookFix(None, 0, [with_file_span(notebook, f) for f in remaining])
    new_data = write_sources(notebook, {number - 1: text for number, text in changed.items()})
    after = read_notebook(new_data)
    remaining = lint_notebook(after, filename, codes, with_edits=with_edits, project=project)
    before = {cell.number: cell.text for cell in cells}
    return NotebookFix(new_data, applied, remaining, cell_diff(filename, before, changed))


def cell_diff(filename: str, before: dict[int, str], after: dict[int, str]) -> str:
    """A unified diff per changed cell, headed ``a/train.ipynb:cell 4`` as ruff does."""
    parts = []
    for number in sorted(after):
        # A cell's last line has no line end in the file; giving both sides one keeps a
        # line added after it from showing that line as changed too.
        old = _terminated(before[number]).splitlines(keepends=True)
        new = _terminated(after[number]).splitlines(keepends=True)
        lines = difflib.unified_diff(
            old,
            new,
            fromfile=f"a/{filename}:cell {number}",
            tofile=f"b/{filename}:cell {number}",
        )
        parts.append("".join(line if line.endswith("\n") else line + "\n" for line in lines))
    return "".join(parts)


def _terminated(text: str) -> str:
    return text if not text or text.endswith(("\n", "\r")) else text + "\n"
