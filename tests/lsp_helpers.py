"""A small JSON-RPC client that speaks LSP to a server subprocess over stdio.

Deliberately independent of pygls: the tests exercise the wire protocol an editor sees.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

JSON = Any

#: How long any single wait may take before the test fails instead of hanging.
TIMEOUT = 10.0


class LspError(Exception):
    pass


class LspClient:
    def __init__(self, command: Sequence[str], cwd: Path, env: dict[str, str] | None = None):
        self.process = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
        self._ids = itertools.count(1)
        self._responses: dict[int, queue.Queue[JSON]] = {}
        self._lock = threading.Lock()
        self._notifications: list[JSON] = []
        self._arrived = threading.Condition()
        #: requests the server sent us (method, params), answered with ``null``.
        self.server_requests: list[tuple[str, JSON]] = []
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        # Drain stderr so a chatty server can never block on a full pipe.
        self.stderr_lines: list[bytes] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    # ------------------------------------------------------------------ wire

    def _send(self, message: JSON) -> None:
        body = json.dumps(message).encode("utf-8")
        assert self.process.stdin is not None
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def _read_message(self) -> JSON | None:
        stream = self.process.stdout
        assert stream is not None
        length = None
        while True:
            line = stream.readline()
            if not line:
                return None
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("ascii").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:
            raise LspError("message without Content-Length")
        return json.loads(stream.read(length))

    def _read_loop(self) -> None:
        while True:
            message = self._read_message()
            if message is None:
                with self._arrived:
                    self._arrived.notify_all()
                return
            if "id" in message and "method" in message:
                self.server_requests.append((message["method"], message.get("params")))
                self._send({"jsonrpc": "2.0", "id": message["id"], "result": None})
            elif "id" in message:
                with self._lock:
                    box = self._responses.get(message["id"])
                if box is not None:
                    box.put(message)
            else:
                with self._arrived:
                    self._notifications.append(message)
                    self._arrived.notify_all()

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line)

    # ------------------------------------------------------------------ API

    def request(self, method: str, params: JSON = None, timeout: float = TIMEOUT) -> JSON:
        message_id = next(self._ids)
        box: queue.Queue[JSON] = queue.Queue()
        with self._lock:
            self._responses[message_id] = box
        self._send({"jsonrpc": "2.0", "id": message_id, "method": method, "params": params})
        try:
            response = box.get(timeout=timeout)
        except queue.Empty:
            raise LspError(f"no answer to {method} within {timeout}s") from None
        if "error" in response:
            raise LspError(f"{method}: {response['error']}")
        return response.get("result")

    def notify(self, method: str, params: JSON = None) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def mark(self) -> int:
        """A bookmark in the notification stream; waits only look at what comes after it."""
        with self._arrived:
            return len(self._notifications)

    def wait_for(
        self,
        method: str,
        predicate: Callable[[JSON], bool] = lambda params: True,
        after: int = 0,
        timeout: float = TIMEOUT,
    ) -> JSON:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for message in self._notifications[after:]:
                    if message.get("method") == method and predicate(message.get("params")):
                        return message["params"]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    stderr = b"".join(self.stderr_lines).decode(errors="replace")
                    raise LspError(f"no {method} within {timeout}s; server stderr:\n{stderr}")
                self._arrived.wait(remaining)

    def diagnostics(self, uri: str, after: int, version: int | None = None) -> list[JSON]:
        """The next diagnostics published for ``uri`` (for ``version`` when given)."""

        def matches(params: JSON) -> bool:
            return params["uri"] == uri and (version is None or params.get("version") == version)

        return self.wait_for("textDocument/publishDiagnostics", matches, after)["diagnostics"]

    # ------------------------------------------------------------------ lifecycle

    def initialize(self, root: Path, options: JSON = None, capabilities: JSON = None) -> JSON:
        result = self.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": root.as_uri(),
                "workspaceFolders": [{"uri": root.as_uri(), "name": root.name}],
                "capabilities": capabilities if capabilities is not None else CAPABILITIES,
                "initializationOptions": options,
            },
        )
        self.notify("initialized", {})
        return result

    def open(self, uri: str, text: str, version: int = 1) -> None:
        self.notify(
            "textDocument/didOpen",
            {
                "textDocument": {
                    "uri": uri,
                    "languageId": "python",
                    "version": version,
                    "text": text,
                }
            },
        )

    def change(self, uri: str, text: str, version: int) -> None:
        self.notify(
            "textDocument/didChange",
            {"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": text}]},
        )

    def shutdown(self, timeout: float = TIMEOUT) -> int:
        """shutdown + exit; the server's exit status."""
        if self.process.poll() is None:
            self.request("shutdown", None, timeout=timeout)
            self.notify("exit", None)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


#: What a typical editor announces: dynamic file watching and versioned workspace edits.
CAPABILITIES: JSON = {
    "workspace": {
        "didChangeWatchedFiles": {"dynamicRegistration": True},
        "workspaceEdit": {"documentChanges": True},
    },
    "textDocument": {
        "publishDiagnostics": {"versionSupport": True, "codeDescriptionSupport": True},
        "codeAction": {
            "codeActionLiteralSupport": {
                "codeActionKind": {"valueSet": ["quickfix", "source", "source.fixAll"]}
            }
        },
        "hover": {"contentFormat": ["markdown", "plaintext"]},
    },
}


def server_command(module: str = "amplint") -> list[str]:
    return (
        [sys.executable, "-m", module, "server"]
        if module == "amplint"
        else [
            sys.executable,
            "-m",
            module,
        ]
    )


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def apply_text_edits(text: str, edits: Sequence[JSON]) -> str:
    """Apply LSP TextEdits (UTF-16 positions) the way an editor does: back to front."""
    lines = text.split("\n")

    def offset(position: JSON) -> int:
        line = position["line"]
        if line >= len(lines):
            return len(text)
        before = sum(len(item) + 1 for item in lines[:line])
        units, index = 0, 0
        current = lines[line]
        while index < len(current) and units < position["character"]:
            units += utf16_len(current[index])
            index += 1
        return before + index

    spans = sorted(
        ((offset(e["range"]["start"]), offset(e["range"]["end"]), e["newText"]) for e in edits),
        reverse=True,
    )
    for start, end, new in spans:
        text = text[:start] + new + text[end:]
    return text


def workspace_edits(edit: JSON, uri: str) -> list[JSON]:
    """The TextEdits for ``uri`` in a WorkspaceEdit, in either of its two shapes."""
    if edit.get("documentChanges"):
        return [
            text_edit
            for change in edit["documentChanges"]
            if change["textDocument"]["uri"] == uri
            for text_edit in change["edits"]
        ]
    return list(edit.get("changes", {}).get(uri, []))
