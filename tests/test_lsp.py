"""The language server end to end: a real client talking JSON-RPC to ``amplint server``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("pygls", reason="the language server needs the lsp extra")

from lsp_helpers import (
    LspClient,
    apply_text_edits,
    utf16_len,
    workspace_edits,
)
from lsprotocol import types

from amplint.api import check_source
from amplint.catalog import default_codes
from amplint.engine.registry import rule_by_code
from amplint.engine.run import fix_bytes
from amplint.findings import Edit, Position
from amplint.lsp import actions, convert
from amplint.lsp.document import uri_to_path
from amplint.lsp.settings import ClientOptions

BUGGY = """\
import torch

for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
        loss.backward()
    optimizer.step()
"""

# The same bug behind non-BMP and non-ASCII characters: UTF-16 columns differ from code points.
NON_ASCII = BUGGY.replace("        loss.backward()", '        tag = "é😀"; loss.backward()')

CLEAN = """\
import torch

scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
"""

UNPARSEABLE = BUGGY.replace("loss = model(x)", "loss = model(x")

SERVER = [sys.executable, "-m", "amplint", "server"]

#: What `amplint check` reports on the text with the default selection.
DEFAULT_CODES = frozenset(default_codes())


def engine_codes(text: str) -> set[str]:
    return {finding.code for finding in check_source(text.encode(), "t.py", DEFAULT_CODES)}


def start(root: Path, cache: Path, options: object = None) -> LspClient:
    client = LspClient(SERVER, cwd=root, env={"AMPLINT_CACHE_DIR": str(cache)})
    try:
        client.initialize(root, options={"debounceMs": 50, **(options or {})})  # type: ignore[dict-item]
    except BaseException:
        client.kill()
        raise
    return client


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("workspace")


@pytest.fixture(scope="module")
def client(workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LspClient]:
    """One server for the tests that only open their own documents."""
    lsp = start(workspace, tmp_path_factory.mktemp("cache"))
    yield lsp
    assert lsp.shutdown() == 0


class Document:
    """The client's copy of one open document, kept in sync with the server."""

    def __init__(self, client: LspClient, uri: str, text: str) -> None:
        self.client, self.uri, self.text, self.version = client, uri, text, 1
        mark = client.mark()
        client.open(uri, text)
        self.diagnostics = client.diagnostics(uri, mark, version=1)

    def replace(self, text: str) -> list[dict]:
        self.text, self.version = text, self.version + 1
        mark = self.client.mark()
        self.client.change(self.uri, text, self.version)
        self.diagnostics = self.client.diagnostics(self.uri, mark, version=self.version)
        return self.diagnostics

    def apply(self, action: dict) -> list[dict]:
        return self.replace(apply_text_edits(self.text, workspace_edits(action["edit"], self.uri)))

    def code_actions(self, rng: dict, only: list[str] | None = None) -> list[dict]:
        context: dict = {"diagnostics": self.diagnostics}
        if only is not None:
            context["only"] = only
        params = {"textDocument": {"uri": self.uri}, "range": rng, "context": context}
        return self.client.request("textDocument/codeAction", params) or []


def open_document(client: LspClient, workspace: Path, name: str, text: str) -> Document:
    return Document(client, (workspace / name).as_uri(), text)


def by_code(diagnostics: list[dict]) -> dict[str, dict]:
    return {diagnostic["code"]: diagnostic for diagnostic in diagnostics}


def rng(line: int, start: int, end: int) -> dict:
    return {"start": {"line": line, "character": start}, "end": {"line": line, "character": end}}


# ---------------------------------------------------------------------- end to end


def test_initialize_advertises_actions_hover_and_sync(workspace: Path, tmp_path: Path) -> None:
    lsp = LspClient(SERVER, cwd=workspace, env={"AMPLINT_CACHE_DIR": str(tmp_path)})
    try:
        result = lsp.initialize(workspace)
        capabilities = result["capabilities"]
        assert result["serverInfo"]["name"] == "amplint"
        assert capabilities["hoverProvider"] is True
        assert "source.fixAll.amplint" in capabilities["codeActionProvider"]["codeActionKinds"]
        assert capabilities["textDocumentSync"]["save"]
        assert capabilities["positionEncoding"] == "utf-16"
        assert lsp.shutdown() == 0
        # The configuration watchers were registered dynamically with the client.
        (registration,) = [p for m, p in lsp.server_requests if m == "client/registerCapability"]
        watchers = registration["registrations"][0]["registerOptions"]["watchers"]
        assert {"globPattern": "**/pyproject.toml"} in watchers
    finally:
        lsp.kill()


def test_open_publishes_diagnostics_with_codes_links_and_fix_titles(
    client: LspClient, workspace: Path
) -> None:
    document = open_document(client, workspace, "open.py", BUGGY)
    found = by_code(document.diagnostics)
    assert set(found) == engine_codes(BUGGY) >= {"AMP001", "AMP003"}
    amp001 = found["AMP001"]
    # `amplint check` says 6:9-6:24 (1-based, end exclusive).
    assert amp001["range"] == rng(5, 8, 23)
    assert amp001["severity"] == types.DiagnosticSeverity.Warning
    assert amp001["source"] == "amplint"
    assert amp001["data"]["fix"].startswith("Move the backward pass")
    assert amp001["data"]["applicability"] == "safe"
    # The link is a Markdown copy of `amplint rule AMP001` in the (test's) cache directory.
    page = uri_to_path(amp001["codeDescription"]["href"])
    assert page is not None and page.name == "AMP001.md"
    assert page.read_text(encoding="utf-8") == rule_by_code("AMP001").documentation()  # type: ignore[union-attr]
    assert found["AMP003"]["range"]["start"] == {"line": 3, "character": 9}


def test_quick_fix_edit_clears_the_diagnostic(client: LspClient, workspace: Path) -> None:
    document = open_document(client, workspace, "quickfix.py", BUGGY)
    amp001 = by_code(document.diagnostics)["AMP001"]
    found = document.code_actions(amp001["range"])
    fixes = [a for a in found if a["kind"] == "quickfix" and a["title"].endswith("(AMP001)")]
    assert len(fixes) == 1
    fix = fixes[0]
    assert fix["isPreferred"] is True
    assert fix["diagnostics"][0]["code"] == "AMP001"
    after = document.apply(fix)
    assert "AMP001" not in by_code(after)
    assert "    loss.backward()\n" in document.text


def test_code_actions_only_for_findings_in_the_requested_range(
    client: LspClient, workspace: Path
) -> None:
    document = open_document(client, workspace, "ranges.py", BUGGY)
    assert document.code_actions(rng(0, 0, 5)) == []
    titles = [action["title"] for action in document.code_actions(rng(3, 12, 12))]
    assert titles and all("AMP003" in title for title in titles)


def test_noqa_action_appends_a_comment_and_silences_the_line(
    client: LspClient, workspace: Path
) -> None:
    document = open_document(client, workspace, "noqa.py", BUGGY)
    amp001 = by_code(document.diagnostics)["AMP001"]
    (action,) = [
        a for a in document.code_actions(amp001["range"]) if a["title"].startswith("Disable")
    ]
    assert action["title"] == "Disable AMP001 for this line"
    after = document.apply(action)
    assert "        loss.backward()  # noqa: AMP001\n" in document.text
    assert set(by_code(after)) == engine_codes(BUGGY) - {"AMP001"}


def test_noqa_action_extends_an_existing_noqa_list(client: LspClient, workspace: Path) -> None:
    text = BUGGY.replace("loss.backward()", "loss.backward()  # noqa: AMP005")
    document = open_document(client, workspace, "noqa_list.py", text)
    amp001 = by_code(document.diagnostics)["AMP001"]
    (action,) = [
        a for a in document.code_actions(amp001["range"]) if a["title"].startswith("Disable")
    ]
    after = document.apply(action)
    assert "loss.backward()  # noqa: AMP005, AMP001\n" in document.text
    assert "AMP001" not in by_code(after)


def test_fix_all_source_action_matches_amplint_fix(client: LspClient, workspace: Path) -> None:
    document = open_document(client, workspace, "fixall.py", BUGGY)
    everything = rng(0, 0, 0)
    assert all(a["kind"] == "quickfix" for a in document.code_actions(everything))
    (action,) = document.code_actions(everything, only=["source.fixAll"])
    assert action["title"] == "Fix all amplint findings"
    assert action["kind"] == "source.fixAll.amplint"
    expected = fix_bytes(BUGGY.encode(), "fixall.py", DEFAULT_CODES).data
    assert expected is not None
    after = document.apply(action)
    assert document.text == expected.decode()
    assert after == []
    assert document.code_actions(everything, only=["source.fixAll.amplint"]) == []


def test_unparseable_text_replaces_findings_with_one_error(
    client: LspClient, workspace: Path
) -> None:
    document = open_document(client, workspace, "broken.py", BUGGY)
    assert set(by_code(document.diagnostics)) == engine_codes(BUGGY)
    broken = document.replace(UNPARSEABLE)
    assert [d["code"] for d in broken] == ["AMP999"]
    assert broken[0]["severity"] == types.DiagnosticSeverity.Error
    assert broken[0]["range"]["end"] != broken[0]["range"]["start"]
    # No action may fail on a file that does not parse; fix-all simply has nothing to offer.
    assert document.code_actions(broken[0]["range"]) == []
    assert document.replace(CLEAN) == []


def test_non_ascii_columns_are_utf16_code_units(client: LspClient, workspace: Path) -> None:
    document = open_document(client, workspace, "unicode.py", NON_ASCII)
    line = NON_ASCII.splitlines()[5]
    start = utf16_len(line[: line.index("loss.backward()")])
    assert start == line.index("loss.backward()") + 1  # the emoji is a surrogate pair
    amp001 = by_code(document.diagnostics)["AMP001"]
    assert amp001["range"] == rng(5, start, start + len("loss.backward()"))
    (fix,) = [a for a in document.code_actions(amp001["range"]) if "(AMP001)" in a["title"]]
    document.apply(fix)
    expected = fix_bytes(NON_ASCII.encode(), "u.py", {"AMP001"}).data
    assert expected is not None and document.text == expected.decode()


def test_hover_on_a_diagnostic_shows_the_rule_documentation(
    client: LspClient, workspace: Path
) -> None:
    document = open_document(client, workspace, "hover.py", BUGGY)
    params = {"textDocument": {"uri": document.uri}, "position": {"line": 5, "character": 12}}
    hover = client.request("textDocument/hover", params)
    assert hover["contents"]["kind"] == "markdown"
    assert "backward-inside-autocast (AMP001)" in hover["contents"]["value"]
    assert hover["range"] == rng(5, 8, 23)
    params["position"] = {"line": 0, "character": 0}
    assert client.request("textDocument/hover", params) is None


def test_rapid_changes_publish_only_the_latest_version(client: LspClient, workspace: Path) -> None:
    document = open_document(client, workspace, "typing.py", CLEAN)
    mark = client.mark()
    # The first change after a quiet spell is checked at once; the ones that follow it
    # within the debounce interval are coalesced: only the last of them is published.
    client.change(document.uri, BUGGY, 2)
    client.change(document.uri, BUGGY.replace("loss = ", "out = loss = "), 3)
    client.change(document.uri, CLEAN, 4)
    assert client.diagnostics(document.uri, mark, version=4) == []
    stale = [
        n
        for n in client._notifications[mark:]
        if n.get("method") == "textDocument/publishDiagnostics"
        and n["params"]["uri"] == document.uri
        and n["params"].get("version") == 3
    ]
    assert stale == []


def test_a_change_after_a_pause_is_checked_without_the_debounce(tmp_path: Path) -> None:
    client = start(tmp_path, tmp_path / "cache", {"debounceMs": 5000})
    try:
        document = open_document(client, tmp_path, "pause.py", CLEAN)
        mark = client.mark()
        client.change(document.uri, BUGGY, 2)
        # Well inside the 5 s debounce: the change came after quiet, so no waiting.
        diagnostics = client.wait_for(
            "textDocument/publishDiagnostics",
            lambda params: params["uri"] == document.uri and params.get("version") == 2,
            mark,
            timeout=4.0,
        )["diagnostics"]
        assert {d["code"] for d in diagnostics} == engine_codes(BUGGY)
    finally:
        client.kill()


def test_code_action_after_an_edit_reuses_the_tree_and_fixes(
    client: LspClient, workspace: Path
) -> None:
    # Diagnostics carry the fix title without computing the fix; the quick fix computes it
    # on request from the kept tree (re-parsed incrementally after the edit).
    padding = "".join(f"def helper_{i}(x):\n    return x + {i}\n\n\n" for i in range(5))
    before = padding + BUGGY
    document = open_document(client, workspace, "lazy.py", before)
    edited = before.replace("return x + 2", "return x + 22")
    fixable = [d for d in document.replace(edited) if d["data"]["fix"]]
    assert fixable
    actions = document.code_actions(fixable[0]["range"], only=["quickfix"])
    fixes = [a for a in actions if a["title"].startswith(fixable[0]["data"]["fix"])]
    assert fixes
    fixed = apply_text_edits(edited, workspace_edits(fixes[0]["edit"], document.uri))
    assert fixable[0]["code"] not in engine_codes(fixed)


def test_close_clears_diagnostics(client: LspClient, workspace: Path) -> None:
    document = open_document(client, workspace, "close.py", BUGGY)
    mark = client.mark()
    client.notify("textDocument/didClose", {"textDocument": {"uri": document.uri}})
    assert client.diagnostics(document.uri, mark) == []


def test_config_change_reloads_settings(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    lsp = start(root, tmp_path / "cache")
    try:
        document = open_document(lsp, root, "train.py", BUGGY)
        assert "AMP001" in by_code(document.diagnostics)
        pyproject = root / "pyproject.toml"
        pyproject.write_text('[tool.amplint]\nignore = ["AMP001"]\n')
        mark = lsp.mark()
        lsp.notify(
            "workspace/didChangeWatchedFiles",
            {"changes": [{"uri": pyproject.as_uri(), "type": 1}]},
        )
        remaining = set(by_code(lsp.diagnostics(document.uri, mark)))
        assert remaining == engine_codes(BUGGY) - {"AMP001"}

        # A broken configuration is reported, and checking goes on with the defaults.
        pyproject.write_text('[tool.amplint]\nselekt = ["AMP001"]\n')
        mark = lsp.mark()
        lsp.notify("textDocument/didSave", {"textDocument": {"uri": pyproject.as_uri()}})
        message = lsp.wait_for("window/showMessage", after=mark)
        assert "selekt" in message["message"] and message["type"] == 1
        assert set(by_code(lsp.diagnostics(document.uri, mark))) == engine_codes(BUGGY)
        assert lsp.shutdown() == 0
    finally:
        lsp.kill()


def test_initialization_options_select_and_ignore(tmp_path: Path) -> None:
    lsp = start(tmp_path, tmp_path / "cache", {"ignore": ["AMP003"], "docsUrl": "https://x/{code}"})
    try:
        document = open_document(lsp, tmp_path, "train.py", BUGGY)
        (diagnostic,) = document.diagnostics
        assert diagnostic["code"] == "AMP001"
        assert diagnostic["codeDescription"]["href"] == "https://x/AMP001"
        assert lsp.shutdown() == 0
    finally:
        lsp.kill()


# ---------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("line", "column", "utf16", "utf8"),
    [("abc", 3, 2, 2), ("é😀x", 3, 3, 6), ("é😀x", 4, 4, 7), ("", 1, 0, 0), ("ab", 9, 8, 8)],
)
def test_position_conversion(line: str, column: int, utf16: int, utf8: int) -> None:
    position = Position(1, column)
    assert convert.to_lsp_position([line], position).character == utf16
    assert convert.to_lsp_position([line], position, convert.UTF8).character == utf8
    assert convert.to_lsp_position([line], position, convert.UTF32).character == column - 1


def test_position_past_the_last_line_clamps_to_its_end() -> None:
    assert convert.to_lsp_position(["a", "😀"], Position(3, 1)) == types.Position(1, 2)


def test_split_lines_uses_only_lsp_line_breaks() -> None:
    assert convert.split_lines("a\r\nb\rc\nd\x0ce") == ["a", "b", "c", "d\x0ce"]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("a\nb\nc\n", "a\nB\nc\n"),
        ("a\nb", "a\nb\nc"),
        ("x = 1\n", ""),
        ("", "new\n"),
        ("😀\nb\n", "😀\nc\nd\n"),
        ("a\r\nb\r\n", "a\r\nz\r\n"),
    ],
)
def test_minimal_edits_round_trip(before: str, after: str) -> None:
    edits = convert.minimal_edits(before, after)
    as_json = [
        {
            "range": {
                "start": {"line": e.range.start.line, "character": e.range.start.character},
                "end": {"line": e.range.end.line, "character": e.range.end.character},
            },
            "newText": e.new_text,
        }
        for e in edits
    ]
    if "\r" not in before:  # the helper splits on "\n" only, as the test texts do
        assert apply_text_edits(before, as_json) == after


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x()\n", Edit("  # noqa: AMP001", Position(1, 4), Position(1, 4))),
        ("x()   \n", Edit("  # noqa: AMP001", Position(1, 4), Position(1, 7))),
        ("x()  # noqa: AMP002\n", Edit(", AMP001", Position(1, 20), Position(1, 20))),
        ("x()  # type: ignore\n", Edit("  # noqa: AMP001", Position(1, 20), Position(1, 20))),
        ('x("#")\n', Edit("  # noqa: AMP001", Position(1, 7), Position(1, 7))),
        ("x()  # noqa\n", None),
        ('x("""\n""")\n', None),
        ("x = 1 + \\\n    2\n", None),
        ("x(\n", None),
    ],
)
def test_noqa_edit(text: str, expected: Edit | None) -> None:
    assert actions.noqa_edit(text, 1, "AMP001") == expected


@pytest.mark.parametrize(
    ("kind", "only", "expected"),
    [
        ("quickfix", None, True),
        ("source.fixAll.amplint", None, False),
        ("source.fixAll.amplint", ["source.fixAll"], True),
        ("source.fixAll.amplint", ["source"], True),
        ("quickfix", ["source.fixAll"], False),
        ("source.fixAll.amplint", ["source.fixAll.amplintx"], False),
    ],
)
def test_requested_kinds(kind: str, only: list[str] | None, expected: bool) -> None:
    assert actions.wanted(kind, only) is expected


def test_client_options_accept_lists_strings_and_nesting() -> None:
    options = ClientOptions.from_json(
        {"amplint": {"select": "amp001, AMP002", "ignore": [], "debounceMs": 0}}
    )
    assert options.select == ("AMP001", "AMP002")
    assert options.ignore is None
    assert options.debounce_ms == 0
    assert ClientOptions.from_json(None) == ClientOptions()
    assert ClientOptions.from_json({"debounceMs": True}).debounce_ms == 150
