"""``%load_ext amplint.runtime``: in IPython's own shell, and in a real Jupyter kernel."""

from __future__ import annotations

import queue
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import amplint.runtime as ar
import pytest

IPython = pytest.importorskip("IPython")
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

SETUP = """\
import torch
torch.manual_seed(0)
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)"""
# Backward inside a bfloat16 CPU autocast region (AMP001), on line 4 of the cell.
BUGGY_LOOP = """\
for _ in range(3):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(torch.randn(8, 4)).float().sum()
        loss.backward()
    opt.step()
    opt.zero_grad()"""
GOOD_LOOP = """\
for _ in range(2):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(torch.randn(8, 4)).float().sum()
    loss.backward()
    opt.step()
    opt.zero_grad()"""


@pytest.fixture
def shell() -> Iterator[InteractiveShell]:
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance()
    yield shell
    shell.run_cell("%unload_ext amplint.runtime")
    InteractiveShell.clear_instance()


def _run(shell: InteractiveShell, code: str, capsys: pytest.CaptureFixture[str]) -> str:
    result = shell.run_cell(code, store_history=True)
    assert result.error_in_exec is None, result.error_in_exec
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_findings_show_under_the_cell_that_caused_them(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = _run(shell, "%load_ext amplint.runtime", capsys)
    assert "runtime checks on (mode warn)" in loaded
    assert ar.installed()
    assert _run(shell, SETUP, capsys) == ""
    out = _run(shell, BUGGY_LOOP, capsys)
    # One line, once, naming the cell as IPython's tracebacks do; no compiled file name.
    assert out.count("AMP001") == 1, out
    assert out.startswith("amplint: In [3], line 4: AMP001 backward-inside-autocast"), out
    assert "ipython-input" not in out and "ipykernel" not in out
    # The cell run again is a new cell (In [4]): shown under it; a correct loop says nothing.
    again = _run(shell, BUGGY_LOOP, capsys)
    assert again.startswith("amplint: In [4], line 4: AMP001") and again.count("\n") == 1
    assert _run(shell, GOOD_LOOP, capsys) == ""

    report = _run(shell, "%amplint report", capsys)
    assert "In [3]:4  AMP001  3" in report
    assert "In [4]:4  AMP001  3" in report

    off = _run(shell, "%amplint off", capsys)
    assert "In [3]:4" in off and off.rstrip().endswith("amplint: runtime checks off")
    assert not ar.installed()
    assert _run(shell, BUGGY_LOOP, capsys) == ""


def test_options_as_install_takes_them(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(shell, "%load_ext amplint.runtime", capsys)
    out = _run(shell, "%amplint on --mode raise --ignore AMP021", capsys)
    assert "mode raise" in out
    assert ar.reporting.get_mode() == "raise"
    assert ar.reporting.get_ignored() == frozenset({"AMP021"})
    _run(shell, SETUP, capsys)
    result = shell.run_cell(BUGGY_LOOP, store_history=True)
    assert isinstance(result.error_in_exec, ar.AmpUsageError)
    assert result.error_in_exec.code == "AMP001"
    # The error names the cell as IPython's tracebacks do, not the kernel's file.
    assert str(result.error_in_exec).startswith("In [4], line 4: AMP001")
    capsys.readouterr()
    assert "invalid choice" in _run(shell, "%amplint on --mode loud", capsys)
    assert ar.reporting.get_mode() == "raise"  # a bad option changes nothing


def test_log_mode_says_each_finding_once_and_a_reload_repeats_none(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    _run(shell, "%load_ext amplint.runtime", capsys)
    _run(shell, "%amplint on --mode log", capsys)
    _run(shell, SETUP, capsys)
    with caplog.at_level("WARNING", logger="amplint.runtime"):
        out = _run(shell, BUGGY_LOOP, capsys)
    assert "AMP001" not in out  # the log says it, not a second line under the cell
    (record,) = [r for r in caplog.records if "AMP001" in r.getMessage()]
    assert record.getMessage().startswith("In [4], line 4: AMP001")
    _run(shell, "%amplint on", capsys)
    reloaded = _run(shell, "%reload_ext amplint.runtime", capsys)
    assert "AMP001" not in reloaded


def test_an_ipy_script_shows_its_findings_when_it_ends(tmp_path: Path) -> None:
    """`ipython script.ipy` runs its cells silently (no post_run_cell): said at exit."""
    script = tmp_path / "train.ipy"
    script.write_text("%load_ext amplint.runtime\n" + SETUP + "\n" + BUGGY_LOOP + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "AMP001" in line]
    assert len(lines) == 1 and lines[0].startswith("amplint: In [1], line "), done.stderr


def test_in_a_real_jupyter_kernel() -> None:
    manager_module = pytest.importorskip("jupyter_client.manager")
    manager, client = manager_module.start_new_kernel(
        kernel_name="python3", extra_arguments=["--HistoryManager.enabled=False"]
    )
    try:
        outputs = [
            _execute(client, code)
            for code in ("%load_ext amplint.runtime", SETUP, BUGGY_LOOP, "%amplint off")
        ]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert "runtime checks on" in outputs[0]
    assert "AMP001" not in outputs[1]
    # The finding is in the output of the cell that caused it, named by its execution count.
    assert "amplint: In [3], line 4: AMP001 backward-inside-autocast" in outputs[2], outputs
    assert "ipykernel_" not in outputs[2]
    assert "In [3]:4  AMP001  3" in outputs[3] and "runtime checks off" in outputs[3]


def _execute(client, code: str) -> str:  # type: ignore[no-untyped-def]
    """Run one cell; the text of the streams and errors it produced (its output area)."""
    msg_id = client.execute(code)
    texts = []
    while True:
        try:
            message = client.get_iopub_msg(timeout=60)
        except queue.Empty:
            pytest.fail(f"no output from the kernel for {code!r}")
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            texts.append(content["text"])
        elif kind == "error":
            texts.append("\n".join(content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(texts)


if sys.platform == "win32":  # pragma: no cover - the kernel test needs POSIX process groups
    test_in_a_real_jupyter_kernel = pytest.mark.skip(reason="POSIX only")(
        test_in_a_real_jupyter_kernel
    )
