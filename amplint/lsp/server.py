"""The ``amplint server`` language server: pygls plumbing around the ordinary engine.

Concurrency model: pygls runs handlers on one asyncio loop. Checks run on a single worker
thread, so a long check never blocks reading the client's messages and two checks never
compete for the GIL. Each document has at most one pending check task; a newer change
cancels it, and results for a version the client has already replaced are thrown away.

Latency: a check computes no fix edits (only whether a finding has a fix, and its title);
the edits of a quick fix are made when the client asks for code actions, from the syntax
tree kept with the version's findings. The next check re-parses only the statements the
edit touched. A change after a quiet spell is checked at once; only changes that follow
each other within the debounce interval (typing) wait for the interval's quiet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from amplint import __version__
from amplint.api import tune_collector
from amplint.catalog import PARSE_ERROR_CODE
from amplint.engine.project import Project
from amplint.engine.run import LintResult, lint_bytes
from amplint.findings import Finding
from amplint.lsp.actions import KINDS, code_actions
from amplint.lsp.convert import contains
from amplint.lsp.diagnostics import finding_range, to_diagnostic
from amplint.lsp.docs import DocLinks, rule_markdown
from amplint.lsp.document import Snapshot, uri_to_path
from amplint.lsp.notebook import SYNC_OPTIONS as NOTEBOOK_SYNC
from amplint.lsp.notebook import NotebookChecks
from amplint.lsp.settings import ClientOptions, CodeSelection, is_config_file

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Configuration files the client is asked to watch (the engine's lookup names).
CONFIG_GLOBS = ("**/pyproject.toml", "**/amplint.toml", "**/.amplint.toml")
_WATCHER_REGISTRATION_ID = "amplint-config-watcher"
_PYTHON_SUFFIXES = (".py", ".pyi")


@dataclass(frozen=True)
class Checked:
    """The findings of one document version, kept for code actions and hover."""

    snapshot: Snapshot
    codes: frozenset[str]
    #: the engine's result, fixes still as plans (computed by code actions on demand).
    result: LintResult

    @property
    def findings(self) -> list[Finding]:
        return self.result.findings


class AmplintServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("amplint", __version__, notebook_document_sync=NOTEBOOK_SYNC)
        self.options = ClientOptions()
        self.links = DocLinks()
        self.selection = CodeSelection(self.options, Path.cwd(), self.show_error)
        # One worker: checks are CPU-bound, so more threads would only fight over the GIL.
        self.checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amplint-check")
        self.pending: dict[str, asyncio.Task[None]] = {}
        self.checked: dict[str, Checked] = {}
        #: the newest check of each document (published or not), whose syntax tree the next
        #: check of that document reuses; touched by the checker thread only.
        self.latest: dict[str, Checked] = {}
        #: when each document last changed (``time.monotonic()``), for the debounce.
        self.changed_at: dict[str, float] = {}
        self.event_loop: asyncio.AbstractEventLoop | None = None
        self.notebooks = NotebookChecks(
            workspace=lambda: self.workspace,
            codes_for=lambda path: self.selection.codes_for(path),
            run_checker=self.run_checker,
            publish=self.publish_cell,
            links=lambda: self.links,
            encoding=lambda: self.workspace.position_encoding or types.PositionEncodingKind.Utf16,
        )
        #: the project the documents belong to: open buffers first, then files on disk.
        self.project = Project(None, self.buffer_bytes, stable=False)
        #: the project files each document's last check read (re-checked when they change).
        self.imports: dict[str, frozenset[str]] = {}

    # ------------------------------------------------------------------ configuration

    def configure(self, params: types.InitializeParams) -> None:
        self.event_loop = asyncio.get_running_loop()
        self.options = ClientOptions.from_json(params.initialization_options)
        self.links = DocLinks(self.options.docs_url)
        self.selection = CodeSelection(self.options, self._root(params), self.show_error)

    @staticmethod
    def _root(params: types.InitializeParams) -> Path:
        """Where configuration is looked up for documents that are not files (untitled)."""
        uris = [folder.uri for folder in params.workspace_folders or ()]
        if params.root_uri:
            uris.append(params.root_uri)
        for uri in uris:
            path = uri_to_path(uri)
            if path is not None:
                return path
        if params.root_path:
            return Path(params.root_path)
        return Path.cwd()

    def show_error(self, message: str) -> None:
        """Tell the user about a configuration problem; callable from the checker thread."""
        logger.warning("%s", message)
        params = types.ShowMessageParams(type=types.MessageType.Error, message=message)
        if self.event_loop is None:
            self.window_show_message(params)
        else:
            # The JSON-RPC writer belongs to the event loop; never write from the worker.
            self.event_loop.call_soon_threadsafe(self.window_show_message, params)

    async def watch_config_files(self) -> None:
        capability = self.client_capabilities.workspace
        watched = capability.did_change_watched_files if capability else None
        if not (watched and watched.dynamic_registration):
            # Clients without dynamic registration (Helix) are told about configuration
            # changes through didSave of an open pyproject.toml, or by a restart.
            return
        watchers = [types.FileSystemWatcher(glob_pattern=glob) for glob in CONFIG_GLOBS]
        registration = types.Registration(
            id=_WATCHER_REGISTRATION_ID,
            method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
            register_options=types.DidChangeWatchedFilesRegistrationOptions(watchers=watchers),
        )
        try:
            await self.client_register_capability_async(
                types.RegistrationParams(registrations=[registration])
            )
        except Exception as error:  # a refusal must not take the server down
            logger.warning("could not register configuration watchers: %s", error)

    def reload_config(self) -> None:
        self.selection.reload()
        self.checked.clear()
        for uri in list(self.workspace.text_documents):
            self.schedule(uri, delay=0.0)
        self.notebooks.schedule_all()

    def publish_cell(self, uri: str, diagnostics: list[types.Diagnostic]) -> None:
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics)
        )

    # ------------------------------------------------------------------ checking

    def snapshot(self, uri: str) -> Snapshot | None:
        document = self.workspace.text_documents.get(uri)
        if document is None:
            return None
        return Snapshot(uri, document.version, document.source)

    def is_python(self, uri: str) -> bool:
        document = self.workspace.text_documents.get(uri)
        if document is None or self.workspace.get_notebook_document(cell_uri=uri) is not None:
            return False  # a notebook cell is checked with its notebook
        if document.language_id:
            return document.language_id == "python"
        return uri.endswith(_PYTHON_SUFFIXES)

    def is_current(self, snapshot: Snapshot) -> bool:
        document = self.workspace.text_documents.get(snapshot.uri)
        return (
            document is not None
            and document.version == snapshot.version
            and document.source == snapshot.text
        )

    def check(self, snapshot: Snapshot) -> Checked | None:
        """Runs on the checker thread; ``None`` when the text went stale while queued."""
        if not self.is_current(snapshot):
            return None
        codes = self.selection.codes_for(snapshot.path)
        latest = self.latest.get(snapshot.uri)
        previous = latest.result if latest is not None and latest.codes == codes else None
        view = self.project.view(str(snapshot.path)) if snapshot.path is not None else None
        result = lint_bytes(
            snapshot.data, snapshot.filename, codes, fixes=False, previous=previous, project=view
        )
        if view is not None:
            self.imports[snapshot.uri] = frozenset(view.deps)
        checked = Checked(snapshot, codes, result)
        if result.parsed is not None:
            self.latest[snapshot.uri] = checked
        return checked

    def buffer_bytes(self, path: str) -> bytes | None:
        """An open document's current bytes, for the project's modules (None: not open)."""
        for document in list(self.workspace.text_documents.values()):
            if str(uri_to_path(document.uri)) == path:
                return Snapshot(document.uri, document.version, document.source).data
        return None

    def on_change(self, uri: str) -> None:
        """Check after a change: now after a quiet spell, else after the debounce's quiet."""
        debounce = self.options.debounce_ms / 1000
        now = time.monotonic()
        last = self.changed_at.get(uri)
        self.changed_at[uri] = now
        quiet = last is None or now - last >= debounce
        self.schedule(uri, delay=0.0 if quiet and uri not in self.pending else debounce)
        # Open documents that import this one see its new text too.
        path = uri_to_path(uri)
        if path is not None:
            for other, read in list(self.imports.items()):
                if other != uri and str(path) in read:
                    self.schedule(other, delay=debounce)

    async def run_checker(self, function: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.checker, function)

    def schedule(self, uri: str, delay: float) -> None:
        """(Re)start the check of ``uri``, replacing any check still waiting for it."""
        previous = self.pending.pop(uri, None)
        if previous is not None:
            previous.cancel()
        if not self.is_python(uri):
            return
        task = asyncio.get_running_loop().create_task(self._check_later(uri, delay))
        self.pending[uri] = task
        task.add_done_callback(lambda done: self._forget(uri, done))

    def _forget(self, uri: str, task: asyncio.Task[None]) -> None:
        if self.pending.get(uri) is task:
            del self.pending[uri]
        if not task.cancelled() and task.exception() is not None:
            logger.error("checking %s failed", uri, exc_info=task.exception())

    async def _check_later(self, uri: str, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        snapshot = self.snapshot(uri)
        if snapshot is None:
            return
        checked = await self.run_checker(lambda: self.check(snapshot))
        if checked is None or not self.is_current(snapshot):
            return
        self.checked[uri] = checked
        self.publish(checked)

    def publish(self, checked: Checked) -> None:
        snapshot = checked.snapshot
        encoding = self.workspace.position_encoding or types.PositionEncodingKind.Utf16
        # The whole set is replaced every time: a parse error's single AMP999 diagnostic
        # takes the place of the findings the last parsable version had.
        diagnostics = [
            to_diagnostic(
                snapshot.lines, finding, self.links, encoding, checked.result.fix_summary(finding)
            )
            for finding in checked.findings
        ]
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(
                uri=snapshot.uri, version=snapshot.version, diagnostics=diagnostics
            )
        )

    async def current(self, uri: str) -> Checked | None:
        """Findings of the document's current text: cached, or checked now."""
        snapshot = self.snapshot(uri)
        if snapshot is None or not self.is_python(uri):
            return None
        cached = self.checked.get(uri)
        if cached is not None and cached.snapshot == snapshot:
            return cached
        return await self.run_checker(lambda: self.check(snapshot))

    def close(self, uri: str) -> None:
        task = self.pending.pop(uri, None)
        if task is not None:
            task.cancel()
        self.checked.pop(uri, None)
        self.changed_at.pop(uri, None)
        self.imports.pop(uri, None)
        # The checker thread owns ``latest``; drop the tree there, after any queued check.
        self.checker.submit(self.latest.pop, uri, None)
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=[])
        )

    # ------------------------------------------------------------------ requests

    async def actions(self, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        if self.notebooks.notebook_of(params.text_document.uri) is not None:
            return await self.notebooks.actions(params)
        checked = await self.current(params.text_document.uri)
        if checked is None:
            return None
        encoding = self.workspace.position_encoding or types.PositionEncodingKind.Utf16
        only = params.context.only
        return await self.run_checker(
            lambda: code_actions(
                checked.snapshot,
                checked.result,
                checked.codes,
                params.range,
                only,
                self.links,
                encoding,
            )
        )

    async def hover(self, params: types.HoverParams) -> types.Hover | None:
        hits = await self.notebooks.hover_findings(params)
        if hits is None:
            checked = await self.current(params.text_document.uri)
            if checked is None:
                return None
            encoding = self.workspace.position_encoding or types.PositionEncodingKind.Utf16
            lines = checked.snapshot.lines
            ranged = (
                (finding, finding_range(lines, finding, encoding)) for finding in checked.findings
            )
            hits = [(finding, rng) for finding, rng in ranged if contains(rng, params.position)]
        if not hits:
            return None
        return types.Hover(
            contents=types.MarkupContent(
                kind=types.MarkupKind.Markdown,
                value="\n\n---\n\n".join(hover_text(finding) for finding, _ in hits),
            ),
            range=hits[0][1],
        )


def hover_text(finding: Finding) -> str:
    docs = rule_markdown(finding.code)
    if docs is None or finding.code == PARSE_ERROR_CODE:
        return f"**{finding.code}**: {finding.message}"
    return docs


def _watched_config_changed(changes: Sequence[types.FileEvent]) -> bool:
    paths = (uri_to_path(change.uri) for change in changes)
    return any(path is not None and is_config_file(path) for path in paths)


def create_server() -> AmplintServer:
    server = AmplintServer()

    @server.feature(types.INITIALIZE)
    def initialize(params: types.InitializeParams) -> None:
        server.configure(params)

    @server.feature(types.INITIALIZED)
    async def initialized(params: types.InitializedParams) -> None:
        await server.watch_config_files()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(params: types.DidOpenTextDocumentParams) -> None:
        server.schedule(params.text_document.uri, delay=0.0)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(params: types.DidChangeTextDocumentParams) -> None:
        server.on_change(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(params: types.DidSaveTextDocumentParams) -> None:
        uri = params.text_document.uri
        path = uri_to_path(uri)
        if path is not None and is_config_file(path):
            server.reload_config()
        else:
            server.schedule(uri, delay=0.0)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(params: types.DidCloseTextDocumentParams) -> None:
        server.close(params.text_document.uri)

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_OPEN)
    def notebook_did_open(params: types.DidOpenNotebookDocumentParams) -> None:
        server.notebooks.schedule(params.notebook_document.uri)

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_CHANGE)
    def notebook_did_change(params: types.DidChangeNotebookDocumentParams) -> None:
        server.notebooks.schedule(params.notebook_document.uri, server.options.debounce_ms / 1000)

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_SAVE)
    def notebook_did_save(params: types.DidSaveNotebookDocumentParams) -> None:
        server.notebooks.schedule(params.notebook_document.uri)

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_CLOSE)
    def notebook_did_close(params: types.DidCloseNotebookDocumentParams) -> None:
        cells = [cell.uri for cell in params.cell_text_documents]
        server.notebooks.close(params.notebook_document.uri, cells)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(params: types.DidChangeWatchedFilesParams) -> None:
        if _watched_config_changed(params.changes):
            server.reload_config()

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=KINDS, resolve_provider=False),
    )
    async def code_action(params: types.CodeActionParams) -> list[types.CodeAction] | None:
        return await server.actions(params)

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def hover(params: types.HoverParams) -> types.Hover | None:
        return await server.hover(params)

    return server


def serve() -> None:
    """Run the language server on stdin/stdout until the client says exit."""
    tune_collector()
    create_server().start_io()


__all__ = ["AmplintServer", "Checked", "create_server", "serve"]
