"""Notebook documents (LSP 3.17 ``notebookDocument/*``): one check per notebook, shown per cell.

The code cells of an open notebook are checked together, as one module, the way
``amplint check`` checks the ``.ipynb`` file; each cell document then gets the diagnostics
that lie in it, and a quick fix asked for on a cell carries edits for every cell it changes.
pygls keeps the notebook and its cell text documents in the workspace; this module reads
them from there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lsprotocol import types

from amplint.findings import Edit, Finding
from amplint.lsp.actions import FIX_ALL_KIND, FIX_ALL_TITLE, QUICK_FIX, noqa_edit, wanted
from amplint.lsp.convert import (
    UTF16,
    contains,
    minimal_edits,
    ranges_intersect,
    split_lines,
    to_text_edits,
)
from amplint.lsp.diagnostics import finding_range, to_diagnostic
from amplint.lsp.docs import DocLinks
from amplint.lsp.document import uri_to_path
from amplint.notebook import CodeCell, NotebookLint, NotebookModule, fixed_cells, lint_module

if TYPE_CHECKING:
    from pygls.workspace import Workspace

logger = logging.getLogger(__name__)

#: What the server tells the client it syncs: every notebook's Python cells.
SYNC_OPTIONS = types.NotebookDocumentSyncOptions(
    notebook_selector=[
        types.NotebookDocumentFilterWithCells(
            cells=[types.NotebookCellLanguage(language="python")], notebook="*"
        )
    ],
    save=True,
)


@dataclass(frozen=True)
class CellText:
    number: int
    uri: str
    version: int | None
    text: str

    @property
    def lines(self) -> list[str]:
        return split_lines(self.text)


@dataclass(frozen=True)
class NotebookSnapshot:
    uri: str
    version: int
    cells: tuple[CellText, ...]

    @property
    def path(self) -> Path | None:
        return uri_to_path(self.uri)

    @property
    def filename(self) -> str:
        path = self.path
        return str(path) if path is not None else self.uri

    def code_cells(self) -> list[CodeCell]:
        return [CodeCell(cell.number, cell.text) for cell in self.cells]

    def cell(self, number: int | None) -> CellText | None:
        return next((cell for cell in self.cells if cell.number == number), None)

    def by_uri(self, uri: str) -> CellText | None:
        return next((cell for cell in self.cells if cell.uri == uri), None)


def notebook_snapshot(workspace: Workspace, uri: str) -> NotebookSnapshot | None:
    notebook = workspace.get_notebook_document(notebook_uri=uri)
    if notebook is None:
        return None
    cells = []
    for index, cell in enumerate(notebook.cells):
        if cell.kind != types.NotebookCellKind.Code:
            continue
        document = workspace.text_documents.get(cell.document)
        if document is None or (document.language_id or "python") != "python":
            continue
        cells.append(CellText(index + 1, cell.document, document.version, document.source))
    return NotebookSnapshot(notebook.uri, notebook.version, tuple(cells))


@dataclass(frozen=True)
class NotebookChecked:
    snapshot: NotebookSnapshot
    codes: frozenset[str]
    #: findings with positions in their cells; fixes made on request (``lint.fix_of``).
    lint: NotebookLint

    @property
    def findings(self) -> list[Finding]:
        return self.lint.findings

    def in_cell(self, number: int) -> list[Finding]:
        return [finding for finding in self.findings if finding.cell == number]


def check_notebook(snapshot: NotebookSnapshot, codes: frozenset[str]) -> NotebookChecked:
    # Like a Python file's check, no fix edits are made here: a quick fix makes its own.
    module = NotebookModule.build(snapshot.code_cells())
    return NotebookChecked(
        snapshot, codes, lint_module(module, snapshot.filename, codes, lazy=True)
    )


def cell_diagnostics(
    checked: NotebookChecked, links: DocLinks, encoding: str = UTF16
) -> dict[str, list[types.Diagnostic]]:
    """Diagnostics for every code cell of the notebook (empty lists clear old ones)."""
    published: dict[str, list[types.Diagnostic]] = {}
    for cell in checked.snapshot.cells:
        lines = cell.lines
        published[cell.uri] = [
            to_diagnostic(lines, finding, links, encoding)
            for finding in checked.in_cell(cell.number)
        ]
    return published


def _cell_edit(
    snapshot: NotebookSnapshot, edits: Sequence[Edit], encoding: str
) -> types.WorkspaceEdit | None:
    changes: list[types.TextDocumentEdit] = []
    for cell in snapshot.cells:
        mine = [edit for edit in edits if edit.cell == cell.number]
        if not mine:
            continue
        changes.append(
            types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(
                    uri=cell.uri, version=cell.version
                ),
                edits=to_text_edits(cell.lines, mine, encoding),  # type: ignore[arg-type]
            )
        )
    if not changes or sum(len(c.edits) for c in changes) != len(edits):
        return None  # an edit for a cell the client no longer has
    return types.WorkspaceEdit(document_changes=changes)  # type: ignore[arg-type]


def code_actions(
    checked: NotebookChecked,
    cell_uri: str,
    request: types.Range,
    only: Sequence[str] | None,
    links: DocLinks,
    encoding: str = UTF16,
) -> list[types.CodeAction]:
    """Quick fixes and noqa comments for the findings of one cell; fix-all for the notebook."""
    snapshot = checked.snapshot
    cell = snapshot.by_uri(cell_uri)
    if cell is None:
        return []
    actions: list[types.CodeAction] = []
    lines = cell.lines
    if wanted(QUICK_FIX, only):
        fixes, silencers = [], []
        for finding in checked.in_cell(cell.number):
            if not ranges_intersect(finding_range(lines, finding, encoding), request):
                continue
            diagnostic = to_diagnostic(lines, finding, links, encoding)
            fix = checked.lint.fix_of(finding) if finding.fix is not None else None
            edit = _cell_edit(snapshot, fix.edits, encoding) if fix and fix.edits else None
            if fix is not None and edit is not None:
                safe = fix.applicability == "safe"
                suffix = "" if safe else ", unsafe"
                fixes.append(
                    types.CodeAction(
                        title=f"{fix.message} ({finding.code}{suffix})",
                        kind=QUICK_FIX,
                        diagnostics=[diagnostic],
                        is_preferred=safe,
                        edit=edit,
                    )
                )
            silence = noqa_edit(cell.text, finding.location.row, finding.code)
            if silence is not None:
                silencers.append(
                    types.CodeAction(
                        title=f"Disable {finding.code} for this line",
                        kind=QUICK_FIX,
                        diagnostics=[diagnostic],
                        edit=_cell_edit(snapshot, [silence._replace(cell=cell.number)], encoding),
                    )
                )
        actions.extend([*fixes, *silencers])
    if wanted(FIX_ALL_KIND, only) and any(f.fix is not None for f in checked.findings):
        action = fix_all_action(snapshot, checked.codes, encoding)
        if action is not None:
            actions.append(action)
    return actions


def fix_all_action(
    snapshot: NotebookSnapshot, codes: Collection[str], encoding: str = UTF16
) -> types.CodeAction | None:
    """Every safe fix in every cell, exactly as ``amplint fix`` applies them to the file."""
    changed, _ = fixed_cells(snapshot.code_cells(), snapshot.filename, codes)
    changes = []
    for number, text in sorted(changed.items()):
        cell = snapshot.cell(number)
        if cell is None:
            return None
        changes.append(
            types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(
                    uri=cell.uri, version=cell.version
                ),
                edits=minimal_edits(cell.text, text, encoding),  # type: ignore[arg-type]
            )
        )
    if not changes:
        return None
    return types.CodeAction(
        title=FIX_ALL_TITLE,
        kind=FIX_ALL_KIND,
        edit=types.WorkspaceEdit(document_changes=changes),  # type: ignore[arg-type]
    )


@dataclass
class NotebookChecks:
    """Open notebooks: their latest checks and the checks still to run."""

    workspace: Callable[[], Workspace]
    codes_for: Callable[[Path | None], frozenset[str]]
    run_checker: Callable[..., object]
    publish: Callable[[str, list[types.Diagnostic]], None]
    links: Callable[[], DocLinks]
    encoding: Callable[[], str]
    checked: dict[str, NotebookChecked] = field(default_factory=dict)
    pending: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    #: cell uris diagnostics were published for, per notebook (cleared when cells go).
    shown: dict[str, set[str]] = field(default_factory=dict)

    def schedule(self, uri: str, delay: float = 0.0) -> None:
        previous = self.pending.pop(uri, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.get_running_loop().create_task(self._check_later(uri, delay))
        self.pending[uri] = task
        task.add_done_callback(lambda done: self._forget(uri, done))

    def schedule_all(self) -> None:
        self.checked.clear()
        for uri in list(self.workspace().notebook_documents):
            self.schedule(uri)

    def _forget(self, uri: str, task: asyncio.Task[None]) -> None:
        if self.pending.get(uri) is task:
            del self.pending[uri]
        if not task.cancelled() and task.exception() is not None:
            logger.error("checking notebook %s failed", uri, exc_info=task.exception())

    def _current(self, snapshot: NotebookSnapshot) -> bool:
        return notebook_snapshot(self.workspace(), snapshot.uri) == snapshot

    async def _check_later(self, uri: str, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        checked = await self.current(uri)
        if checked is None:
            return
        published = cell_diagnostics(checked, self.links(), self.encoding())
        for gone in self.shown.get(uri, set()) - published.keys():
            self.publish(gone, [])
        self.shown[uri] = set(published)
        for cell_uri, diagnostics in published.items():
            self.publish(cell_uri, diagnostics)

    async def current(self, uri: str) -> NotebookChecked | None:
        snapshot = notebook_snapshot(self.workspace(), uri)
        if snapshot is None:
            return None
        cached = self.checked.get(uri)
        if cached is not None and cached.snapshot == snapshot:
            return cached
        codes = self.codes_for(snapshot.path)
        checked: NotebookChecked = await self.run_checker(  # type: ignore[misc]
            lambda: check_notebook(snapshot, codes)
        )
        if not self._current(snapshot):
            return None
        self.checked[uri] = checked
        return checked

    def close(self, uri: str, cell_uris: Sequence[str]) -> None:
        task = self.pending.pop(uri, None)
        if task is not None:
            task.cancel()
        self.checked.pop(uri, None)
        for cell_uri in self.shown.pop(uri, set()) | set(cell_uris):
            self.publish(cell_uri, [])

    def notebook_of(self, cell_uri: str) -> str | None:
        notebook = self.workspace().get_notebook_document(cell_uri=cell_uri)
        return None if notebook is None else notebook.uri

    async def actions(self, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        uri = self.notebook_of(params.text_document.uri)
        if uri is None:
            return None
        checked = await self.current(uri)
        if checked is None:
            return None
        links, encoding = self.links(), self.encoding()
        return await self.run_checker(  # type: ignore[no-any-return]
            lambda: code_actions(
                checked,
                params.text_document.uri,
                params.range,
                params.context.only,
                links,
                encoding,
            )
        )

    async def hover_findings(
        self, params: types.HoverParams
    ) -> list[tuple[Finding, types.Range]] | None:
        """The findings under the cursor in a notebook cell (None: not a notebook cell)."""
        uri = self.notebook_of(params.text_document.uri)
        if uri is None:
            return None
        checked = await self.current(uri)
        cell = None if checked is None else checked.snapshot.by_uri(params.text_document.uri)
        if checked is None or cell is None:
            return []
        encoding, lines = self.encoding(), cell.lines
        ranged = ((f, finding_range(lines, f, encoding)) for f in checked.in_cell(cell.number))
        return [(f, rng) for f, rng in ranged if contains(rng, params.position)]
