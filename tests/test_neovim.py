"""The language server in a real editor's own LSP client: Neovim, run headless.

Neovim (Debian's 0.7: ``vim.lsp.start_client``) opens a Python file, receives amplint's
diagnostics, asks for the quick fix and applies it with its own
``vim.lsp.util.apply_workspace_edit``; the buffer must then read exactly as ``amplint fix``
leaves the same file. ``.ci/run`` installs ``neovim`` where apt is available.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("nvim") is None,
    reason="Neovim is not installed (apt-get install neovim; .ci/run does it where it can)",
)

BUGGY = """\
import torch

scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    optimizer.zero_grad()
"""

# Runs inside Neovim. Paths and the server command come in through the environment.
SCRIPT = r"""
local out = os.getenv("AMPLINT_NVIM_OUT")
local result = {diagnostics = nil, actions = {}, lines = nil, error = nil}
local function finish()
  local handle = io.open(out, "w")
  handle:write(vim.fn.json_encode(result))
  handle:close()
  vim.cmd("qa!")
end
local ok, err = pcall(function()
  local client_id = vim.lsp.start_client({
    name = "amplint",
    cmd = {os.getenv("AMPLINT_PYTHON"), "-m", "amplint", "server"},
    root_dir = os.getenv("AMPLINT_ROOT"),
    handlers = {
      ["textDocument/publishDiagnostics"] = function(_, params)
        if #params.diagnostics > 0 then result.diagnostics = params.diagnostics end
      end,
    },
  })
  vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("AMPLINT_FILE")))
  local bufnr = vim.api.nvim_get_current_buf()
  vim.lsp.buf_attach_client(bufnr, client_id)
  if not vim.wait(20000, function() return result.diagnostics ~= nil end, 50) then
    error("no diagnostics from amplint within 20 s")
  end
  local client = vim.lsp.get_client_by_id(client_id)
  local diagnostic = result.diagnostics[1]
  local params = {
    textDocument = vim.lsp.util.make_text_document_params(bufnr),
    range = diagnostic.range,
    context = {diagnostics = {diagnostic}, only = {"quickfix"}},
  }
  local response = client.request_sync("textDocument/codeAction", params, 20000, bufnr)
  if response == nil or response.err then error("codeAction failed: " .. vim.inspect(response)) end
  for _, action in ipairs(response.result or {}) do
    table.insert(result.actions, action.title)
  end
  local fix = response.result[1]
  vim.lsp.util.apply_workspace_edit(fix.edit, client.offset_encoding)
  result.lines = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)
  client.stop()
end)
if not ok then result.error = tostring(err) end
finish()
"""


def test_neovim_gets_diagnostics_and_applies_the_quick_fix_as_amplint_fix(
    tmp_path: Path,
) -> None:
    source = tmp_path / "train.py"
    source.write_text(BUGGY)
    script = tmp_path / "client.lua"
    script.write_text(SCRIPT)
    out = tmp_path / "result.json"
    env = {
        **os.environ,
        "AMPLINT_NVIM_OUT": str(out),
        "AMPLINT_PYTHON": sys.executable,
        "AMPLINT_ROOT": str(tmp_path),
        "AMPLINT_FILE": str(source),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    subprocess.run(
        ["nvim", "--headless", "-u", "NONE", "-i", "NONE", "-n", "-c", f"luafile {script}"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=90,
        check=False,
    )
    result = json.loads(out.read_text())
    assert result.get("error") is None, result.get("error")
    [diagnostic] = result["diagnostics"]
    assert diagnostic["code"] == "AMP002"
    assert diagnostic["range"]["start"] == {"line": 7, "character": 4}
    assert result["actions"][0] == "Insert `scaler.update()` after `scaler.step(...)` (AMP002)"

    fixed = tmp_path / "fixed.py"
    fixed.write_text(BUGGY)
    subprocess.run(
        [sys.executable, "-m", "amplint", "fix", "--no-cache", str(fixed)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    # Neovim keeps the final newline apart from the buffer's lines ('eol').
    assert "\n".join(result["lines"]) + "\n" == fixed.read_text()
    assert fixed.read_text() != BUGGY
