"""The language server's notebook documents, driven by pygls's own LSP client over stdio.

The client is pygls's `LanguageClient` (not our wire probe): it speaks LSP 3.17's
``notebookDocument/*`` notifications as a notebook-aware editor does.
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from pathlib import Path

import pytest

pytest.importorskip("pygls")

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from amplint.engine.fixes import apply_edits
from amplint.findings import Edit, Position
from tests.notebooks import code_sources, write

SETUP = 'import torch\nscaler = torch.amp.GradScaler("cuda")'
LOOP = (
    "for x, y in loader:\n"
    '    with torch.autocast("cuda"):\n'
    "        loss = model(x)\n"
    "    scaler.scale(loss).backward()\n"
    "    scaler.step(optimizer)"
)
TIMEOUT = 20.0


class Editor:
    """A notebook editor's side of the conversation: cells, versions, received diagnostics."""

    def __init__(self, client: LanguageClient, uri: str, cells: list[tuple[str, str]]) -> None:
        self.client = client
        self.uri = uri
        self.version = 1
        #: (kind, text) per cell, in order; kind "code" or "markdown".
        self.cells = cells
        self.texts = {self.cell_uri(i): text for i, (_, text) in enumerate(cells)}
        self.cell_versions = {self.cell_uri(i): 1 for i in range(len(cells))}

    def cell_uri(self, index: int) -> str:
        return f"vscode-notebook-cell:{self.uri.removeprefix('file://')}#C{index}"

    def open(self) -> None:
        cells = [
            types.NotebookCell(
                kind=types.NotebookCellKind.Code
                if kind == "code"
                else types.NotebookCellKind.Markup,
                document=self.cell_uri(i),
            )
            for i, (kind, _) in enumerate(self.cells)
        ]
        documents = [
            types.TextDocumentItem(
                uri=self.cell_uri(i),
                language_id="python" if kind == "code" else "markdown",
                version=1,
                text=text,
            )
            for i, (kind, text) in enumerate(self.cells)
        ]
        self.client.notebook_document_did_open(
            types.DidOpenNotebookDocumentParams(
                notebook_document=types.NotebookDocument(
                    uri=self.uri, notebook_type="jupyter-notebook", version=1, cells=cells
                ),
                cell_text_documents=documents,
            )
        )

    def change_cell(self, index: int, text: str) -> None:
        uri = self.cell_uri(index)
        old_lines = self.texts[uri].split("\n")
        end = types.Position(line=len(old_lines) - 1, character=len(old_lines[-1]))
        self.version += 1
        self.cell_versions[uri] += 1
        self.texts[uri] = text
        self.client.notebook_document_did_change(
            types.DidChangeNotebookDocumentParams(
                notebook_document=types.VersionedNotebookDocumentIdentifier(
                    version=self.version, uri=self.uri
                ),
                change=types.NotebookDocumentChangeEvent(
                    cells=types.NotebookDocumentCellChanges(
                        text_content=[
                            types.NotebookDocumentCellContentChanges(
                                document=types.VersionedTextDocumentIdentifier(
                                    uri=uri, version=self.cell_versions[uri]
                                ),
                                changes=[
                                    types.TextDocumentContentChangePartial(
                                        range=types.Range(
                                            start=types.Position(line=0, character=0), end=end
                                        ),
                                        text=text,
                                    )
                                ],
                            )
                        ]
                    )
                ),
            )
        )

    def apply(self, edit: types.WorkspaceEdit) -> None:
        """Apply a workspace edit to the cells as an editor does (then tell the server)."""
        for change in edit.document_changes or []:
            assert isinstance(change, types.TextDocumentEdit)
            uri = change.text_document.uri
            assert change.text_document.version == self.cell_versions[uri]
            edits = [
                Edit(
                    e.new_text,
                    Position(e.range.start.line + 1, e.range.start.character + 1),
                    Position(e.range.end.line + 1, e.range.end.character + 1),
                )
                for e in change.edits
                if isinstance(e, types.TextEdit)
            ]
            index = next(i for i in range(len(self.cells)) if self.cell_uri(i) == uri)
            self.change_cell(index, apply_edits(self.texts[uri], edits))


async def _session(tmp_path: Path) -> None:
    client = LanguageClient("notebook-test", "1")
    received: dict[str, list[list[types.Diagnostic]]] = defaultdict(list)
    arrived = asyncio.Condition()

    @client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    async def diagnostics(params: types.PublishDiagnosticsParams) -> None:
        async with arrived:
            received[params.uri].append(params.diagnostics)
            arrived.notify_all()

    async def next_diagnostics(uri: str, seen: int) -> list[types.Diagnostic]:
        async with arrived:
            await asyncio.wait_for(
                arrived.wait_for(lambda: len(received[uri]) > seen), timeout=TIMEOUT
            )
            return list(received[uri][-1])

    await client.start_io(sys.executable, "-m", "amplint", "server", cwd=str(tmp_path))
    try:
        await client.initialize_async(
            types.InitializeParams(
                capabilities=types.ClientCapabilities(
                    notebook_document=types.NotebookDocumentClientCapabilities(
                        synchronization=types.NotebookDocumentSyncClientCapabilities()
                    )
                ),
                root_uri=tmp_path.as_uri(),
            )
        )
        client.initialized(types.InitializedParams())
        path = write(tmp_path / "train.ipynb", [SETUP, ("md", "## Loop"), LOOP])
        editor = Editor(
            client, path.as_uri(), [("code", SETUP), ("markdown", "## Loop"), ("code", LOOP)]
        )
        editor.open()
        loop_cell = editor.cell_uri(2)
        # The scaler of the loop cell is made in the first cell: one module, one finding.
        found = await next_diagnostics(loop_cell, 0)
        assert [(d.code, d.range.start.line, d.range.start.character) for d in found] == [
            ("AMP002", 4, 4)
        ]
        assert await next_diagnostics(editor.cell_uri(0), 0) == []

        hover = await client.text_document_hover_async(
            types.HoverParams(
                text_document=types.TextDocumentIdentifier(uri=loop_cell),
                position=types.Position(line=4, character=8),
            )
        )
        assert hover is not None and "AMP002" in str(hover.contents)

        actions = await client.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri=loop_cell),
                range=found[0].range,
                context=types.CodeActionContext(diagnostics=found),
            )
        )
        assert actions is not None
        titles = [a.title for a in actions if isinstance(a, types.CodeAction)]
        assert titles == [
            "Insert `scaler.update()` after `scaler.step(...)` (AMP002)",
            "Disable AMP002 for this line",
        ]
        quick_fix = actions[0]
        assert isinstance(quick_fix, types.CodeAction) and quick_fix.edit is not None
        seen = len(received[loop_cell])
        editor.apply(quick_fix.edit)
        assert await next_diagnostics(loop_cell, seen) == []

        # The editor's cells now read as `amplint fix` leaves the file.
        write(tmp_path / "fixed.ipynb", [SETUP, ("md", "## Loop"), LOOP])
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "amplint", "fix", "--no-cache", "fixed.ipynb", cwd=tmp_path
        )
        assert await process.wait() == 0
        assert [editor.texts[editor.cell_uri(0)], editor.texts[loop_cell]] == code_sources(
            tmp_path / "fixed.ipynb"
        )

        # Breaking the first cell's scaler away makes the loop cell's finding come back.
        seen = len(received[loop_cell])
        editor.change_cell(0, "import torch")
        again = await next_diagnostics(loop_cell, seen)
        assert again == []  # no scaler left at all: nothing to say about update()

        client.notebook_document_did_save(
            types.DidSaveNotebookDocumentParams(
                notebook_document=types.NotebookDocumentIdentifier(uri=editor.uri)
            )
        )
        seen = len(received[loop_cell])
        client.notebook_document_did_close(
            types.DidCloseNotebookDocumentParams(
                notebook_document=types.NotebookDocumentIdentifier(uri=editor.uri),
                cell_text_documents=[
                    types.TextDocumentIdentifier(uri=editor.cell_uri(i)) for i in range(3)
                ],
            )
        )
        assert await next_diagnostics(loop_cell, seen) == []
        await client.shutdown_async(None)
        client.exit(None)
    finally:
        server = client._server
        if server is not None and server.returncode is None:
            try:
                await asyncio.wait_for(server.wait(), timeout=5)
            except TimeoutError:
                server.kill()  # a failed assertion left it running
        await asyncio.wait_for(client.stop(), timeout=TIMEOUT)


def test_notebook_documents_get_diagnostics_and_fixes_per_cell(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_session(tmp_path), timeout=60))
